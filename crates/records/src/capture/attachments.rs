//! Attachments at capture: a message is archived with its files, or not
//! at all. Staging decrypts the message and reads its references; before
//! its record is written, the records service fetches every file it
//! references from the server, checks it against its reference (the
//! ciphertext's hash and size, then every segment opened and the
//! plaintext's hash) and stores it in the archive, addressed by its hash
//! ([`crate::Archive::put_file`], [`StagedBatch::wanted`],
//! [`StagedBatch::attach`]); the record's transaction links the files,
//! and only then is anything acknowledged. A file
//! that is missing, altered or not what its reference says makes its
//! message withheld ([`StagedBatch::withhold`]): archived, saying why,
//! delivered to no one, its sender blocked.
//!
//! The records member also holds a message to the blobs it names. What
//! the server binds to a log entry and serves to members is the blob list
//! in the message's clear `authenticated_data`; what the members open is
//! the encrypted references. A message whose two lists differ is
//! withheld, so no member is ever served a file the archive does not
//! hold under that message.

use keepwire_protocol::attachment::{Attachment, BlobList};
use keepwire_protocol::content::{Content, ContentError};

use super::{Staged, StagedBatch};
use crate::RecordKind;

impl StagedBatch {
    /// The files this batch's messages reference and that are not
    /// spooled yet: `(record, its attachments)`.
    pub fn wanted(&self) -> Vec<(usize, Vec<Attachment>)> {
        self.records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.wants_files())
            .map(|(i, r)| (i, r.references.clone()))
            .collect()
    }

    /// Record `index`'s files are stored in the archive, each with the
    /// malware scanner's verdict where one ran (kept in the record's leaf).
    pub fn attach(&mut self, index: usize, verdicts: Vec<Option<String>>) {
        if let Some(r) = self.records.get_mut(index) {
            r.attach(verdicts);
        }
    }

    /// Record `index` cannot be archived with its files: archived as
    /// withheld instead (its content kept, no file), and reported so.
    pub fn withhold(&mut self, index: usize, reason: &str) {
        if let Some(r) = self.records.get_mut(index) {
            self.failures.push(r.withhold(reason));
        }
    }
}

impl Staged {
    /// Whether this record waits for its files to be stored.
    pub(super) fn wants_files(&self) -> bool {
        !self.references.is_empty() && !self.stored
    }

    pub(super) fn attach(&mut self, verdicts: Vec<Option<String>>) {
        for (a, v) in self.meta.attachments.iter_mut().zip(verdicts) {
            a.scan = v;
        }
        self.stored = true;
    }

    /// Make this record withheld for `reason`: the failure to report.
    pub(super) fn withhold(&mut self, reason: &str) -> (String, u64, String) {
        tracing::error!(conv = %self.meta.conv, seq = self.meta.seq, %reason, "entry withheld: its files could not be captured");
        self.meta.kind = RecordKind::Withheld;
        self.meta.note = Some(format!(
            "withheld from every member: {reason}; sent by {}",
            self.meta.sender
        ));
        self.meta.attachments.clear();
        self.references.clear();
        (
            self.meta.conv.clone(),
            self.meta.seq,
            reason.chars().take(300).collect(),
        )
    }
}

/// Why the blobs a message names in the clear (its `authenticated_data`,
/// what the server binds and serves) are not the attachments its
/// encrypted content references, if they are not.
pub(super) fn blobs_mismatch(
    content: &Result<Content, ContentError>,
    authenticated_data: &[u8],
) -> Option<String> {
    let listed = match BlobList::decode(authenticated_data) {
        Ok(l) => l,
        Err(e) => return Some(format!("its blob list in the clear is malformed ({e})")),
    };
    let attachments = match content {
        Ok(c) => &c.attachments,
        // Without blobs, content that does not parse is still a record.
        Err(_) if listed.blobs.is_empty() => return None,
        Err(e) => {
            return Some(format!(
                "it names blobs but its content does not parse ({e})"
            ))
        }
    };
    (!listed.matches(attachments)).then(|| {
        format!(
            "the blobs it names in the clear ({}) are not the attachments it references ({})",
            listed.blobs.len(),
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
        let parsed = |bytes: &[u8]| Content::decode(bytes);
        let both = with(&[1, 2]);
        let ad = BlobList::of(&both.attachments).encode();
        assert_eq!(blobs_mismatch(&parsed(&both.encode().unwrap()), &ad), None);
        let plain = with(&[]).encode().unwrap();
        assert_eq!(
            blobs_mismatch(&parsed(&plain), b""),
            None,
            "no attachments, nothing named"
        );
        assert_eq!(
            blobs_mismatch(&parsed(b"not json"), b""),
            None,
            "still a record"
        );
        for (content, ad) in [
            (with(&[1]).encode().unwrap(), ad.clone()),
            (both.encode().unwrap(), Vec::new()),
            (with(&[1, 3]).encode().unwrap(), ad.clone()),
            (plain.clone(), ad.clone()),
            (b"not json".to_vec(), ad.clone()),
            (both.encode().unwrap(), b"{".to_vec()),
        ] {
            assert!(blobs_mismatch(&parsed(&content), &ad).is_some());
        }
    }
}
