//! Sealing and opening attachment files ([`keepwire_protocol::attachment`]
//! says what a message carries about them).
//!
//! A file is sealed with a key of its own under the STREAM construction
//! (RustCrypto `aead-stream`, big-endian 32-bit counter) over
//! AES-256-GCM, [`SEGMENT_BYTES`] of plaintext per segment: each segment's
//! nonce holds its position and whether it is the last, so a blob cut
//! short, extended or reordered does not open. Both directions read and
//! write one segment at a time, whatever the file's size — the memory a
//! transfer holds is two segments, not the file.
//!
//! Opening writes plaintext as segments authenticate; the caller writes
//! into a file of its own and keeps it only once [`open`] returned `Ok`,
//! which also means the size and both SHA-256 hashes matched the
//! reference.

use std::io::{Read, Write};

use aead_stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::{Aes256Gcm, KeyInit};
use keepwire_protocol::attachment::{
    cipher_size, hex, safe_name, Attachment, BlobId, NONCE_PREFIX_BYTES, SEGMENT_BYTES, TAG_BYTES,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A file sealed: everything its reference holds but where it was
/// uploaded, its name and types.
pub struct Sealed {
    pub key: Zeroizing<[u8; 32]>,
    pub nonce: [u8; NONCE_PREFIX_BYTES],
    pub size: u64,
    pub sha256: String,
    pub cipher_sha256: String,
}

impl Sealed {
    /// The reference a message carries, once the blob has its id.
    pub fn reference(&self, blob: BlobId, name: &str, media_type: &str) -> Attachment {
        Attachment {
            blob,
            key: self.key.to_vec(),
            nonce: self.nonce.to_vec(),
            size: self.size,
            sha256: self.sha256.clone(),
            cipher_sha256: self.cipher_sha256.clone(),
            media_type: media_type.to_string(),
            detected_type: None,
            name: safe_name(name),
            thumbnail_of: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment: {0}")]
    Io(#[from] std::io::Error),
    /// The blob does not open with its reference's key, or is cut short,
    /// extended or reordered.
    #[error("attachment {blob}: its ciphertext does not decrypt at segment {segment} (altered, cut short or reordered)")]
    Corrupt { blob: BlobId, segment: u64 },
    /// It opened, but is not the file the reference describes.
    #[error("attachment {blob}: {what}")]
    Mismatch { blob: BlobId, what: String },
    #[error("attachment: a file of more than 2^32 segments cannot be sealed")]
    TooLarge,
}

/// Seal what `input` holds into `output`, a segment at a time, under a
/// fresh key.
pub fn seal(input: &mut impl Read, output: &mut impl Write) -> Result<Sealed, AttachmentError> {
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; NONCE_PREFIX_BYTES];
    rand::rngs::OsRng.fill_bytes(key.as_mut());
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new((&*key).into());
    let mut stream = EncryptorBE32::from_aead(cipher, (&nonce).into());
    let (mut plain_hash, mut cipher_hash) = (Sha256::new(), Sha256::new());
    let mut size = 0u64;
    // One segment read ahead: only then is it known whether the current
    // one is the last.
    let mut current = Vec::with_capacity(SEGMENT_BYTES + TAG_BYTES as usize);
    let mut next = Vec::with_capacity(SEGMENT_BYTES + TAG_BYTES as usize);
    read_segment(input, &mut current, SEGMENT_BYTES)?;
    loop {
        read_segment(input, &mut next, SEGMENT_BYTES)?;
        let last = next.is_empty();
        plain_hash.update(&current);
        size += current.len() as u64;
        if last {
            stream
                .encrypt_last_in_place(b"", &mut current)
                .map_err(|_| AttachmentError::TooLarge)?;
            cipher_hash.update(&current);
            output.write_all(&current)?;
            break;
        }
        stream
            .encrypt_next_in_place(b"", &mut current)
            .map_err(|_| AttachmentError::TooLarge)?;
        cipher_hash.update(&current);
        output.write_all(&current)?;
        std::mem::swap(&mut current, &mut next);
    }
    output.flush()?;
    Ok(Sealed {
        key,
        nonce,
        size,
        sha256: hex(&plain_hash.finalize()),
        cipher_sha256: hex(&cipher_hash.finalize()),
    })
}

/// Open the blob `input` holds as `reference` describes it into
/// `output`; `Ok` only if every segment authenticated and the size and
/// both hashes are the reference's.
pub fn open(
    reference: &Attachment,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), AttachmentError> {
    let blob = reference.blob.clone();
    let mismatch = |what: String| AttachmentError::Mismatch {
        blob: blob.clone(),
        what,
    };
    let key: [u8; 32] = reference
        .key
        .as_slice()
        .try_into()
        .map_err(|_| mismatch("its key is not 32 bytes".into()))?;
    let key = Zeroizing::new(key);
    let nonce: [u8; NONCE_PREFIX_BYTES] = reference
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| mismatch("its nonce is not 7 bytes".into()))?;
    let cipher = Aes256Gcm::new((&*key).into());
    let mut stream = DecryptorBE32::from_aead(cipher, (&nonce).into());
    let (mut plain_hash, mut cipher_hash) = (Sha256::new(), Sha256::new());
    let (mut size, mut read) = (0u64, 0u64);
    let whole = SEGMENT_BYTES + TAG_BYTES as usize;
    let mut current = Vec::with_capacity(whole);
    let mut next = Vec::with_capacity(whole);
    read_segment(input, &mut current, whole)?;
    let mut segment = 0u64;
    loop {
        read_segment(input, &mut next, whole)?;
        let last = next.is_empty();
        cipher_hash.update(&current);
        read += current.len() as u64;
        let corrupt = |_| AttachmentError::Corrupt {
            blob: blob.clone(),
            segment,
        };
        if last {
            stream
                .decrypt_last_in_place(b"", &mut current)
                .map_err(corrupt)?;
            plain_hash.update(&current);
            size += current.len() as u64;
            output.write_all(&current)?;
            break;
        }
        stream
            .decrypt_next_in_place(b"", &mut current)
            .map_err(corrupt)?;
        plain_hash.update(&current);
        size += current.len() as u64;
        output.write_all(&current)?;
        std::mem::swap(&mut current, &mut next);
        segment += 1;
    }
    output.flush()?;
    if size != reference.size || read != cipher_size(reference.size) {
        return Err(mismatch(format!(
            "{size} bytes, but its reference says {}",
            reference.size
        )));
    }
    if hex(&cipher_hash.finalize()) != reference.cipher_sha256 {
        return Err(mismatch(
            "its ciphertext's SHA-256 is not the reference's".into(),
        ));
    }
    if hex(&plain_hash.finalize()) != reference.sha256 {
        return Err(mismatch("its SHA-256 is not the reference's".into()));
    }
    Ok(())
}

/// Fill `buf` with up to `len` bytes: less only at the end of `input`.
fn read_segment(input: &mut impl Read, buf: &mut Vec<u8>, len: usize) -> std::io::Result<()> {
    buf.clear();
    input.take(len as u64).read_to_end(buf)?;
    Ok(())
}

/// The media type a file's first bytes show, for the types people send
/// from the field; `None` where they show none of these.
pub fn detect_type(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], usize, &str)] = &[
        (b"\xff\xd8\xff", 0, "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
        (b"GIF87a", 0, "image/gif"),
        (b"GIF89a", 0, "image/gif"),
        (b"%PDF-", 0, "application/pdf"),
        (b"WEBP", 8, "image/webp"),
        (b"WAVE", 8, "audio/wav"),
        (b"OggS", 0, "audio/ogg"),
        (b"ID3", 0, "audio/mpeg"),
        (b"ftypheic", 4, "image/heic"),
        (b"ftypM4A", 4, "audio/mp4"),
        (b"ftyp", 4, "video/mp4"),
        (b"PK\x03\x04", 0, "application/zip"),
    ];
    MAGIC
        .iter()
        .find(|(magic, at, _)| head.get(*at..*at + magic.len()) == Some(*magic))
        .map(|(_, _, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(data: &[u8]) -> (Attachment, Vec<u8>) {
        let mut blob = Vec::new();
        let s = seal(&mut &data[..], &mut blob).unwrap();
        let r = s.reference(
            BlobId::from_bytes([9; 16]),
            "f.bin",
            "application/octet-stream",
        );
        (r, blob)
    }

    fn opened(r: &Attachment, blob: &[u8]) -> Result<Vec<u8>, AttachmentError> {
        let mut out = Vec::new();
        open(r, &mut &blob[..], &mut out).map(|()| out)
    }

    #[test]
    fn files_of_every_size_around_the_segment_open_to_what_was_sealed() {
        for len in [
            0,
            1,
            SEGMENT_BYTES - 1,
            SEGMENT_BYTES,
            SEGMENT_BYTES + 1,
            3 * SEGMENT_BYTES + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (r, blob) = sealed(&data);
            assert_eq!(blob.len() as u64, r.cipher_size(), "{len}");
            assert_eq!(r.size, len as u64);
            assert_eq!(r.sha256, hex(&Sha256::digest(&data)));
            assert_eq!(r.cipher_sha256, hex(&Sha256::digest(&blob)));
            assert_eq!(opened(&r, &blob).unwrap(), data, "{len}");
            r.check().unwrap();
        }
    }

    #[test]
    fn a_blob_cut_extended_reordered_or_altered_does_not_open() {
        let data = vec![7u8; 3 * SEGMENT_BYTES + 100];
        let (r, blob) = sealed(&data);
        let whole = SEGMENT_BYTES + 16;
        let corrupt = |b: &[u8]| matches!(opened(&r, b), Err(AttachmentError::Corrupt { .. }));
        // Cut at a segment boundary: the last segment seen is not marked last.
        assert!(corrupt(&blob[..2 * whole]), "cut at a boundary");
        assert!(corrupt(&blob[..blob.len() - 1]), "cut inside");
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0; 17]);
        assert!(corrupt(&longer), "extended");
        let mut swapped = blob[whole..2 * whole].to_vec();
        swapped.extend_from_slice(&blob[..whole]);
        swapped.extend_from_slice(&blob[2 * whole..]);
        assert!(corrupt(&swapped), "reordered");
        let mut flipped = blob.clone();
        flipped[whole + 5] ^= 1;
        assert!(corrupt(&flipped), "a bit flipped");
        // Another key, or a reference with another hash, refuses it too.
        let (other, _) = sealed(&data);
        assert!(matches!(
            opened(&other, &blob),
            Err(AttachmentError::Corrupt { .. })
        ));
        let lying = Attachment {
            sha256: "0".repeat(64),
            ..r.clone()
        };
        assert!(matches!(
            opened(&lying, &blob),
            Err(AttachmentError::Mismatch { .. })
        ));
        let lying = Attachment {
            size: r.size + 1,
            ..r.clone()
        };
        assert!(matches!(
            opened(&lying, &blob),
            Err(AttachmentError::Mismatch { .. })
        ));
    }

    #[test]
    fn every_file_gets_a_key_of_its_own() {
        let (a, blob_a) = sealed(b"same");
        let (b, blob_b) = sealed(b"same");
        assert_ne!(a.key, b.key);
        assert_ne!(blob_a, blob_b);
    }

    #[test]
    fn types_are_told_by_their_first_bytes() {
        assert_eq!(
            detect_type(b"\xff\xd8\xff\xe0\0\x10JFIF"),
            Some("image/jpeg")
        );
        assert_eq!(detect_type(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(detect_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(detect_type(b"\0\0\0\x18ftypmp42"), Some("video/mp4"));
        assert_eq!(detect_type(b"hello"), None);
        assert_eq!(detect_type(b""), None);
    }
}
