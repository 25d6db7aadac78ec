//! Attachments: what a message says about the files it carries.
//!
//! A file never travels inside the MLS message. The sending device
//! encrypts it with a fresh key (the STREAM construction over AES-256-GCM,
//! [`SEGMENT_BYTES`] at a time, so a cut or reordered file fails to
//! decrypt and neither end holds the whole file in memory), uploads the
//! ciphertext as an opaque blob, and puts an [`Attachment`] — the blob's
//! id, the key, both hashes, the size, the types and a safe file name —
//! inside the encrypted [`crate::content::Content`]. Only the members and
//! the records service ever read it.
//!
//! The server still has to know which blobs a message carries, to serve
//! them only to that conversation's members and to keep them until the
//! records service has captured them. So the blob ids also travel in the
//! clear, in the MLS message's `authenticated_data` ([`BlobList`]),
//! which MLS authenticates but does not encrypt; the records service
//! checks that this list and the encrypted references name the same
//! blobs, and withholds a message where they differ (a modified client
//! pointing the server at one blob and the members at another).

use serde::{Deserialize, Serialize};

/// Plaintext bytes per STREAM segment; each segment's ciphertext carries
/// a 16-byte tag.
pub const SEGMENT_BYTES: usize = 64 * 1024;
/// The AEAD tag added to every segment.
pub const TAG_BYTES: u64 = 16;
/// Attachments in one message at most, thumbnails included.
pub const MAX_ATTACHMENTS: usize = 16;
/// What one attachment adds to a message at most: its encrypted reference
/// and its id in the clear (measured on the largest reference:
/// `the_largest_reference_fits_its_allowance`).
pub const MAX_REFERENCE_BYTES: usize = 1280;
/// A file name at most, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;
/// A media type at most.
const MAX_MEDIA_TYPE_BYTES: usize = 127;
/// The STREAM nonce prefix: AES-GCM's 12-byte nonce less the 5 bytes
/// STREAM (big-endian 32-bit counter and last-block flag) takes.
pub const NONCE_PREFIX_BYTES: usize = 7;
/// The largest blob the format can describe: 2^32 segments.
pub const MAX_FORMAT_BYTES: u64 = (u32::MAX as u64) * SEGMENT_BYTES as u64;

/// A blob's id: 16 random bytes the server assigns at upload, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobId(String);

impl BlobId {
    /// A fresh id from 16 random bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        BlobId(hex(&bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BlobId {
    type Error = AttachmentError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(BlobId(s))
        } else {
            Err(AttachmentError::Invalid(format!(
                "a blob id is 32 lowercase hex digits, not {:?}",
                s.chars().take(40).collect::<String>()
            )))
        }
    }
}

impl From<BlobId> for String {
    fn from(b: BlobId) -> String {
        b.0
    }
}

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One attached file, as the members and the records service read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Where the ciphertext is on the server.
    pub blob: BlobId,
    /// The file's own AES-256-GCM key.
    #[serde(with = "crate::b64")]
    pub key: Vec<u8>,
    /// The STREAM nonce prefix.
    #[serde(with = "crate::b64")]
    pub nonce: Vec<u8>,
    /// Plaintext bytes.
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// SHA-256 of the ciphertext (the blob), hex.
    pub cipher_sha256: String,
    /// The media type the sender's device declared (from the file's name
    /// or what the user said).
    pub media_type: String,
    /// The media type the sender's device found in the file's first bytes,
    /// where it knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_type: Option<String>,
    /// The file's name, made safe ([`safe_name`]).
    pub name: String,
    /// This attachment is a thumbnail of the attachment at that index of
    /// the same message (made on the sending device: the server renders
    /// nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_of: Option<u32>,
}

impl Attachment {
    /// The ciphertext's length: every segment adds a tag, and an empty
    /// file is one empty segment.
    pub fn cipher_size(&self) -> u64 {
        cipher_size(self.size)
    }

    /// Whether this reference is well formed; a message with one that is
    /// not is refused as a whole.
    pub fn check(&self) -> Result<(), AttachmentError> {
        let bad = |m: String| Err(AttachmentError::Invalid(m));
        if self.key.len() != 32 {
            return bad(format!("a key of {} bytes (not 32)", self.key.len()));
        }
        if self.nonce.len() != NONCE_PREFIX_BYTES {
            return bad(format!("a nonce of {} bytes", self.nonce.len()));
        }
        if self.size > MAX_FORMAT_BYTES {
            return bad(format!("{} bytes is more than a blob can hold", self.size));
        }
        for (what, h) in [
            ("sha256", &self.sha256),
            ("cipher_sha256", &self.cipher_sha256),
        ] {
            if !is_sha256_hex(h) {
                return bad(format!("{what} is not 64 lowercase hex digits"));
            }
        }
        if self.name != safe_name(&self.name) {
            return bad(format!("the file name {:?} is not a safe name", self.name));
        }
        for t in std::iter::once(&self.media_type).chain(self.detected_type.as_ref()) {
            if !is_media_type(t) {
                return bad(format!("{t:?} is not a media type"));
            }
        }
        Ok(())
    }
}

/// The ciphertext length of a `size`-byte plaintext.
pub fn cipher_size(size: u64) -> u64 {
    let segments = size.div_ceil(SEGMENT_BYTES as u64).max(1);
    size + segments * TAG_BYTES
}

/// Check a message's attachments together: each well formed, not too
/// many, each blob named once, a thumbnail pointing at another
/// attachment that is not itself a thumbnail.
pub fn check_all(attachments: &[Attachment]) -> Result<(), AttachmentError> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(AttachmentError::Invalid(format!(
            "{} attachments; at most {MAX_ATTACHMENTS}",
            attachments.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, a) in attachments.iter().enumerate() {
        a.check()?;
        if !seen.insert(&a.blob) {
            return Err(AttachmentError::Invalid(format!(
                "blob {} is attached twice",
                a.blob
            )));
        }
        if let Some(of) = a.thumbnail_of {
            let target = attachments.get(of as usize);
            if of as usize == i || target.is_none_or(|t| t.thumbnail_of.is_some()) {
                return Err(AttachmentError::Invalid(format!(
                    "attachment {i} is a thumbnail of {of}, which is not an attachment"
                )));
            }
        }
    }
    Ok(())
}

/// The blobs a message carries, in the clear: the MLS message's
/// `authenticated_data`. Empty bytes (every message without attachments,
/// and every message from before attachments) name none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobList {
    pub blobs: Vec<BlobId>,
}

impl BlobList {
    pub fn of(attachments: &[Attachment]) -> Self {
        BlobList {
            blobs: attachments.iter().map(|a| a.blob.clone()).collect(),
        }
    }

    /// The bytes for `authenticated_data`: none when there is no blob.
    pub fn encode(&self) -> Vec<u8> {
        if self.blobs.is_empty() {
            return Vec::new();
        }
        serde_json::to_vec(self).expect("a list of ids serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, AttachmentError> {
        if bytes.is_empty() {
            return Ok(BlobList::default());
        }
        let list: BlobList = serde_json::from_slice(bytes).map_err(|e| {
            AttachmentError::Invalid(format!("the message's authenticated data: {e}"))
        })?;
        if list.blobs.len() > MAX_ATTACHMENTS {
            return Err(AttachmentError::Invalid(format!(
                "{} blobs named; at most {MAX_ATTACHMENTS}",
                list.blobs.len()
            )));
        }
        let distinct: std::collections::BTreeSet<_> = list.blobs.iter().collect();
        if distinct.len() != list.blobs.len() {
            return Err(AttachmentError::Invalid("a blob is named twice".into()));
        }
        Ok(list)
    }

    /// Whether the encrypted references name exactly these blobs, in
    /// order: what the records service checks before it captures.
    pub fn matches(&self, attachments: &[Attachment]) -> bool {
        self.blobs.len() == attachments.len()
            && self
                .blobs
                .iter()
                .zip(attachments)
                .all(|(b, a)| *b == a.blob)
    }
}

/// A file name that is safe to write anywhere and to show: the last
/// component of a path only, no control or reserved characters, no
/// leading dot (no hidden or `..` files), at most [`MAX_NAME_BYTES`],
/// and never empty.
pub fn safe_name(given: &str) -> String {
    let base = given.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = base
        .chars()
        .map(|c| match c {
            c if c.is_control() => '_',
            ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            // Bidirectional overrides disguise an extension
            // ("invoice\u{202e}fdp.exe").
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '_',
            c => c,
        })
        .collect();
    name = name.trim().trim_start_matches('.').trim().to_string();
    if name.len() > MAX_NAME_BYTES {
        // Keep the extension where there is room for it.
        let ext = name
            .rfind('.')
            .map(|i| name[i..].to_string())
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        let mut cut = MAX_NAME_BYTES - ext.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{ext}", name[..cut].trim_end());
    }
    if name.is_empty() {
        "attachment".into()
    } else {
        name
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `type/subtype`, the characters RFC 6838 allows in each.
fn is_media_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    s.len() <= MAX_MEDIA_TYPE_BYTES && s.split_once('/').is_some_and(|(a, b)| token(a) && token(b))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(blob: u8) -> Attachment {
        Attachment {
            blob: BlobId::from_bytes([blob; 16]),
            key: vec![1; 32],
            nonce: vec![2; NONCE_PREFIX_BYTES],
            size: 70_000,
            sha256: "a".repeat(64),
            cipher_sha256: "b".repeat(64),
            media_type: "image/jpeg".into(),
            detected_type: Some("image/jpeg".into()),
            name: "scene.jpg".into(),
            thumbnail_of: None,
        }
    }

    #[test]
    fn names_are_made_safe_to_write_and_to_show() {
        for (given, safe) in [
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\ada\\report.pdf", "report.pdf"),
            (".bashrc", "bashrc"),
            ("..", "attachment"),
            ("", "attachment"),
            ("a\nb\u{0}c.txt", "a_b_c.txt"),
            ("invoice\u{202e}fdp.exe", "invoice_fdp.exe"),
            ("what?.txt", "what_.txt"),
            ("  photo 1.jpg ", "photo 1.jpg"),
        ] {
            assert_eq!(safe_name(given), safe, "{given:?}");
            assert_eq!(safe_name(safe), safe, "safe names are kept as they are");
        }
        let long = format!("{}.jpeg", "é".repeat(300));
        let cut = safe_name(&long);
        assert!(
            cut.len() <= MAX_NAME_BYTES && cut.ends_with(".jpeg"),
            "{cut}"
        );
    }

    #[test]
    fn a_reference_that_is_not_well_formed_is_refused() {
        assert_eq!(check_all(&[attachment(1), attachment(2)]), Ok(()));
        let mut bad = vec![
            Attachment {
                key: vec![0; 16],
                ..attachment(1)
            },
            Attachment {
                nonce: vec![0; 12],
                ..attachment(1)
            },
            Attachment {
                sha256: "A".repeat(64),
                ..attachment(1)
            },
            Attachment {
                name: "../x".into(),
                ..attachment(1)
            },
            Attachment {
                media_type: "jpeg".into(),
                ..attachment(1)
            },
            Attachment {
                size: MAX_FORMAT_BYTES + 1,
                ..attachment(1)
            },
            Attachment {
                thumbnail_of: Some(0),
                ..attachment(1)
            },
        ]
        .into_iter()
        .map(|a| check_all(&[a]))
        .collect::<Vec<_>>();
        bad.push(check_all(&[attachment(1), attachment(1)]));
        bad.push(check_all(&vec![attachment(1); MAX_ATTACHMENTS + 1]));
        for r in bad {
            assert!(matches!(r, Err(AttachmentError::Invalid(_))), "{r:?}");
        }
        let thumb = Attachment {
            thumbnail_of: Some(0),
            ..attachment(2)
        };
        assert_eq!(check_all(&[attachment(1), thumb]), Ok(()));
    }

    #[test]
    fn the_blob_list_in_the_clear_must_name_the_encrypted_references() {
        let refs = [attachment(1), attachment(2)];
        let list = BlobList::of(&refs);
        assert_eq!(BlobList::decode(&list.encode()).unwrap(), list);
        assert!(list.matches(&refs));
        assert!(!list.matches(&refs[..1]));
        let other = BlobList::of(&[attachment(1), attachment(3)]);
        assert!(!other.matches(&refs), "a swapped blob is a mismatch");
        assert_eq!(BlobList::decode(b"").unwrap(), BlobList::default());
        assert!(BlobList::default().encode().is_empty());
        for bad in [&b"{"[..], br#"{"blobs":["nothex"]}"#] {
            assert!(BlobList::decode(bad).is_err());
        }
        let twice = format!(r#"{{"blobs":["{0}","{0}"]}}"#, "a".repeat(32));
        assert!(BlobList::decode(twice.as_bytes()).is_err());
    }

    #[test]
    fn the_largest_reference_fits_its_allowance() {
        let largest = Attachment {
            size: MAX_FORMAT_BYTES,
            media_type: format!("{}/{}", "a".repeat(63), "b".repeat(63)),
            detected_type: Some(format!("{}/{}", "a".repeat(63), "b".repeat(63))),
            name: safe_name(&"\u{10ffff}".repeat(200)),
            thumbnail_of: Some(u32::MAX),
            ..attachment(1)
        };
        let encrypted = serde_json::to_vec(&largest).unwrap().len();
        let clear = largest.blob.as_str().len() + 3;
        assert!(
            encrypted + clear <= MAX_REFERENCE_BYTES,
            "{encrypted} + {clear} bytes"
        );
    }

    #[test]
    fn the_ciphertext_size_follows_from_the_plaintext_size() {
        assert_eq!(cipher_size(0), 16, "an empty file is one empty segment");
        assert_eq!(cipher_size(1), 17);
        assert_eq!(cipher_size(SEGMENT_BYTES as u64), SEGMENT_BYTES as u64 + 16);
        assert_eq!(
            cipher_size(SEGMENT_BYTES as u64 + 1),
            SEGMENT_BYTES as u64 + 33
        );
    }
}
