//! Blob bytes on the device's own WebSocket: binary frames, so that a
//! megabyte of ciphertext is not a megabyte and a third of base64.
//!
//! Uploading, the device sends `BlobChunk` frames, each a request with
//! an id the server answers in JSON (`blob`: how much it now holds), so an
//! upload is paced by its answers and resumes, after a broken connection,
//! from the `received` that `blob_status` reports. Downloading, the device
//! pulls: each `blob_fetch` request is answered by one `BlobData` binary
//! frame of at most [`MAX_BLOB_CHUNK`] bytes, so the server never queues
//! more of a blob than the device asked for. Both carry the request id
//! first, as every JSON frame does.
//!
//! ```text
//! upload    0x01 | id: u64 BE | blob: 16 bytes | offset: u64 BE | bytes (≤ 1 MiB)
//! download  0x02 | id: u64 BE | bytes (≤ 1 MiB)
//! ```

use super::{ErrorCode, ProtocolError};
use crate::attachment::BlobId;

/// The most blob bytes one binary frame carries.
pub const MAX_BLOB_CHUNK: usize = 1024 * 1024;

const UPLOAD: u8 = 0x01;
const DOWNLOAD: u8 = 0x02;
const UPLOAD_HEADER: usize = 1 + 8 + 16 + 8;
const DOWNLOAD_HEADER: usize = 1 + 8;

/// Bytes of a blob being uploaded, at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobChunk {
    pub id: u64,
    pub blob: BlobId,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl BlobChunk {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(UPLOAD_HEADER + self.bytes.len());
        out.push(UPLOAD);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&blob_bytes(&self.blob));
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.bytes);
        out
    }

    /// A binary frame from a device: an upload chunk, or a precise
    /// refusal (with the request id where it could be read).
    pub fn decode(frame: &[u8]) -> Result<Self, (Option<u64>, ProtocolError)> {
        let bad = |id, m: String| Err((id, ProtocolError::new(ErrorCode::BadFrame, m)));
        if frame.first() != Some(&UPLOAD) {
            return bad(
                None,
                "a binary frame from a device is a blob chunk (first byte 0x01)".into(),
            );
        }
        if frame.len() < UPLOAD_HEADER {
            return bad(
                None,
                format!(
                    "a blob chunk's header is {UPLOAD_HEADER} bytes; this frame has {}",
                    frame.len()
                ),
            );
        }
        let id = u64::from_be_bytes(frame[1..9].try_into().expect("8 bytes"));
        let blob = BlobId::from_bytes(frame[9..25].try_into().expect("16 bytes"));
        let offset = u64::from_be_bytes(frame[25..33].try_into().expect("8 bytes"));
        let bytes = &frame[UPLOAD_HEADER..];
        if bytes.len() > MAX_BLOB_CHUNK {
            return Err((
                Some(id),
                ProtocolError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "a blob chunk carries at most {MAX_BLOB_CHUNK} bytes; this one {}",
                        bytes.len()
                    ),
                ),
            ));
        }
        if bytes.is_empty() {
            return bad(Some(id), "an empty blob chunk".into());
        }
        Ok(BlobChunk {
            id,
            blob,
            offset,
            bytes: bytes.to_vec(),
        })
    }
}

/// Bytes of a blob a device asked for with `blob_fetch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobData {
    pub id: u64,
    pub bytes: Vec<u8>,
}

impl BlobData {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOWNLOAD_HEADER + self.bytes.len());
        out.push(DOWNLOAD);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.bytes);
        out
    }

    pub fn decode(frame: &[u8]) -> Result<Self, String> {
        if frame.first() != Some(&DOWNLOAD) || frame.len() < DOWNLOAD_HEADER {
            return Err("a binary frame from the server is blob data (0x02, then the id)".into());
        }
        if frame.len() - DOWNLOAD_HEADER > MAX_BLOB_CHUNK {
            return Err(format!(
                "blob data of {} bytes is more than a frame carries",
                frame.len() - DOWNLOAD_HEADER
            ));
        }
        Ok(BlobData {
            id: u64::from_be_bytes(frame[1..9].try_into().expect("8 bytes")),
            bytes: frame[DOWNLOAD_HEADER..].to_vec(),
        })
    }
}

/// A blob id's 16 bytes (its hex is checked when it is made).
fn blob_bytes(blob: &BlobId) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&blob.as_str()[2 * i..2 * i + 2], 16).expect("a blob id is hex");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_data_survive_the_wire_and_bad_ones_are_named() {
        let chunk = BlobChunk {
            id: 7,
            blob: BlobId::from_bytes([0xab; 16]),
            offset: 1 << 33,
            bytes: vec![1, 2, 3],
        };
        assert_eq!(BlobChunk::decode(&chunk.encode()).unwrap(), chunk);
        let data = BlobData {
            id: 9,
            bytes: vec![4; 10],
        };
        assert_eq!(BlobData::decode(&data.encode()).unwrap(), data);

        let code = |f: &[u8]| BlobChunk::decode(f).map(|_| ()).unwrap_err();
        assert_eq!(code(b"").1.code, ErrorCode::BadFrame);
        assert_eq!(code(&[0x02; 40]).1.code, ErrorCode::BadFrame);
        assert_eq!(code(&chunk.encode()[..20]).1.code, ErrorCode::BadFrame);
        let empty = BlobChunk {
            bytes: vec![],
            ..chunk.clone()
        };
        assert_eq!(
            code(&empty.encode()),
            (
                Some(7),
                ProtocolError::new(ErrorCode::BadFrame, "an empty blob chunk")
            )
        );
        let huge = BlobChunk {
            bytes: vec![0; MAX_BLOB_CHUNK + 1],
            ..chunk
        };
        let (id, e) = code(&huge.encode());
        assert_eq!((id, e.code), (Some(7), ErrorCode::TooLarge));
        assert!(BlobData::decode(&[0x01; 9]).is_err());
    }
}
