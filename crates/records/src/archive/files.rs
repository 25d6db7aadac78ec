//! A record's files, for the records office: the reference of one (its
//! key, from the record's sealed content — releasing it is the
//! privileged act, logged like a view) and its stored bytes (ciphertext,
//! useless without that key), read a chunk at a time, so that whoever
//! extracts a file checks it against its reference as the records
//! service did at capture.

use keepwire_protocol::attachment::Attachment;

use super::Archive;
use crate::RecordsError;

/// A record's file as the office releases it.
pub struct FileOut {
    pub conv: String,
    pub seq: u64,
    pub reference: Attachment,
    pub scan: Option<String>,
}

impl Archive {
    /// File `n` of record `id`: where the record is (`conv`, `seq`), the
    /// file's reference, and the malware scanner's verdict at capture.
    /// None when the record holds no such file, or no content any more
    /// (destroyed).
    pub fn file_reference(&self, id: i64, n: u32) -> Result<Option<FileOut>, RecordsError> {
        let Some(c) = self.store.sealed_content(id)? else {
            return Ok(None);
        };
        let (_, plain) = self.unseal(&c.conv, c.seq, &c.wrapped_key, &c.body)?;
        let content = keepwire_protocol::content::Content::decode(&plain)
            .map_err(|e| RecordsError::Archive(format!("record {id}'s content: {e}")))?;
        let scan = match self.store.records(super::Which::One(id), false)?.first() {
            Some(row) => super::parse_attachments(row.attachments.as_deref())?
                .into_iter()
                .nth(n as usize)
                .and_then(|a| a.scan),
            None => None,
        };
        Ok(content
            .attachments
            .into_iter()
            .nth(n as usize)
            .map(|reference| FileOut {
                conv: c.conv,
                seq: c.seq,
                reference,
                scan,
            }))
    }

    /// Up to `len` stored bytes of file `n` of record `id` from `offset`.
    pub fn file_bytes(
        &self,
        id: i64,
        n: u32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RecordsError> {
        let mut out = Vec::new();
        while out.len() < len {
            let part =
                self.store
                    .attachment_read(id, n, offset + out.len() as u64, len - out.len())?;
            if part.is_empty() {
                break;
            }
            out.extend_from_slice(&part);
        }
        Ok(out)
    }
}
