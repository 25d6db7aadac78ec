//! Attachments at capture: the records member holds a message to the
//! blobs it names. What the server binds to a log entry and serves to
//! members is the blob list in the message's clear `authenticated_data`;
//! what the members open is the encrypted references. A message whose
//! two lists differ is withheld, so no member is ever served a file the
//! archive does not hold under that message.
//!
//! Until capture fetches and archives the files themselves (issue 13,
//! under way), a message that carries any is withheld too: the server
//! would otherwise release the message, and serve its files to members,
//! with the archive holding only their references. Withheld, it reaches
//! no one, and its files leave the server with nothing lost from the
//! record: the message itself is archived, saying why.

use keepwire_protocol::attachment::BlobList;
use keepwire_protocol::content::Content;

/// Why the blobs a message names in the clear (its `authenticated_data`,
/// what the server binds and serves) are not the attachments its
/// encrypted content references, if they are not.
pub(super) fn blobs_mismatch(content: &[u8], authenticated_data: &[u8]) -> Option<String> {
    let listed = match BlobList::decode(authenticated_data) {
        Ok(l) => l,
        Err(e) => return Some(format!("its blob list in the clear is malformed ({e})")),
    };
    let attachments = match Content::decode(content) {
        Ok(c) => c.attachments,
        // Without blobs, content that does not parse is still a record.
        Err(_) if listed.blobs.is_empty() => return None,
        Err(e) => {
            return Some(format!(
                "it names blobs but its content does not parse ({e})"
            ))
        }
    };
    if !listed.matches(&attachments) {
        return Some(format!(
            "the blobs it names in the clear ({}) are not the attachments it references ({})",
            listed.blobs.len(),
            attachments.len()
        ));
    }
    (!attachments.is_empty()).then(|| {
        format!(
            "it carries {} attachment(s), and this records service does not capture attachments \
             yet: withheld rather than delivered with files the archive does not hold",
            attachments.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use keepwire_protocol::attachment::{Attachment, BlobId, BlobList};
    use keepwire_protocol::content::Content;

    use super::blobs_mismatch;

    fn with(blobs: &[u8]) -> Content {
        let mut c = Content::text("see attached", None, false, 1);
        c.attachments = blobs
            .iter()
            .map(|&n| Attachment {
                blob: BlobId::from_bytes([n; 16]),
                key: vec![1; 32],
                nonce: vec![2; 7],
                size: 3,
                sha256: "a".repeat(64),
                cipher_sha256: "b".repeat(64),
                media_type: "image/png".into(),
                detected_type: None,
                name: format!("{n}.png"),
                thumbnail_of: None,
            })
            .collect();
        c
    }

    #[test]
    fn a_message_is_held_to_the_blobs_it_names_in_the_clear() {
        let both = with(&[1, 2]);
        let ad = BlobList::of(&both.attachments).encode();
        let carried = blobs_mismatch(&both.encode().unwrap(), &ad).unwrap();
        assert!(
            carried.contains("does not capture attachments yet"),
            "{carried}"
        );
        let plain = with(&[]).encode().unwrap();
        assert_eq!(
            blobs_mismatch(&plain, b""),
            None,
            "no attachments, nothing named"
        );
        assert_eq!(blobs_mismatch(b"not json", b""), None, "still a record");
        for (content, ad) in [
            (with(&[1]).encode().unwrap(), ad.clone()),
            (both.encode().unwrap(), Vec::new()),
            (with(&[1, 3]).encode().unwrap(), ad.clone()),
            (plain.clone(), ad.clone()),
            (b"not json".to_vec(), ad.clone()),
            (both.encode().unwrap(), b"{".to_vec()),
        ] {
            let why = blobs_mismatch(&content, &ad).unwrap();
            assert!(!why.contains("does not capture"), "{why}");
        }
    }
}
