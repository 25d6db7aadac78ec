//! Attachment blobs: opaque ciphertext a device uploaded for one of its
//! conversations ([`keepwire_protocol::attachment`]). The server never
//! holds a key to them; what it keeps is who uploaded each, for which
//! conversation, how large it is and its SHA-256, so that it can refuse a
//! message naming a blob that is not its sender's, serve a blob only to
//! that conversation's members, and keep it exactly as long as the log
//! entry that carries it.
//!
//! A blob's life: created by its uploader (a row, no bytes), appended
//! to in order (an upload that broke off resumes from what was
//! received), completed once the bytes read back hash to what the
//! uploader declared ([`BlobStore::blob_finish`]), bound to the log entry
//! of the message that carries it in that entry's own append
//! ([`crate::store::Append::blobs`]), and collected once that entry has
//! left the relay ([`BlobStore::blobs_to_collect`]) — or, never bound,
//! after the agency's time for unsent uploads.
//!
//! Where the bytes live is the backend's business: files under the data
//! directory for SQLite (large writes kept out of the WAL the log's group
//! commits flush), rows of at most [`CHUNK_BYTES`] for PostgreSQL.

use keepwire_protocol::attachment::BlobId;
use sha2::{Digest, Sha256};

use crate::ServerError;

/// The most bytes one append or one read moves: the size of an upload or
/// download frame, and of a PostgreSQL chunk row.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// What the agency allows for attachments (store settings, with
/// defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentPolicy {
    /// The largest file (its ciphertext), in bytes.
    pub max_file_bytes: u64,
    /// Bytes of attachments one user's uploads may hold on the server.
    pub quota_bytes: u64,
    /// How long an upload no message carried is kept.
    pub unsent_ttl_ms: u64,
}

impl Default for AttachmentPolicy {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 << 20,
            quota_bytes: 10 << 30,
            unsent_ttl_ms: 24 * 3600 * 1000,
        }
    }
}

/// What the server knows of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub id: BlobId,
    /// The uploader, whose quota it counts against.
    pub user: String,
    pub device: String,
    /// The conversation it was uploaded for; only a message of that
    /// conversation may carry it.
    pub conv: String,
    /// Ciphertext bytes, as declared at creation.
    pub size: u64,
    /// SHA-256 of the ciphertext, hex, as declared at creation.
    pub cipher_sha256: String,
    /// Bytes received so far.
    pub received: u64,
    /// Received in full and checked against `cipher_sha256`.
    pub complete: bool,
    pub created_ms: u64,
    /// The log entry that carries it, once a message named it.
    pub seq: Option<u64>,
}

/// The blobs of every conversation.
pub trait BlobStore {
    /// Start an upload: the row, no bytes yet. An id taken is an error.
    fn blob_create(&self, row: &BlobRow) -> Result<(), ServerError>;

    fn blob(&self, id: &BlobId) -> Result<Option<BlobRow>, ServerError>;

    /// Append `bytes` at `offset`, which must be exactly what was received
    /// (an upload resumes where it stopped; a frame sent twice or out of
    /// order is refused, never written twice); never past the declared
    /// size, never to a complete blob. Returns the bytes received since.
    /// Not flushed: [`Self::blob_finish`] makes the whole blob durable.
    fn blob_append(&self, id: &BlobId, offset: u64, bytes: &[u8]) -> Result<u64, ServerError>;

    /// Up to `len` bytes (at most [`CHUNK_BYTES`]) from `offset` of what
    /// was received.
    fn blob_read(&self, id: &BlobId, offset: u64, len: usize) -> Result<Vec<u8>, ServerError>;

    /// Mark a blob received in full complete, durably (its bytes too).
    fn blob_set_complete(&self, id: &BlobId) -> Result<(), ServerError>;

    /// Forget a blob and its bytes. Deleting one that is gone is no error.
    fn blob_delete(&self, id: &BlobId) -> Result<(), ServerError>;

    /// Up to `limit` blobs that may go: those bound to a log entry that
    /// has left the relay, and those never bound created before
    /// `unbound_before_ms`.
    fn blobs_to_collect(
        &self,
        unbound_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<BlobId>, ServerError>;

    /// Bytes of the blobs `user` uploaded that the server still holds.
    fn blob_usage(&self, user: &str) -> Result<u64, ServerError>;

    /// Check a blob received in full against what its uploader declared,
    /// reading it back a chunk at a time, and complete it; one that does
    /// not match is deleted (its uploader starts again) and named.
    fn blob_finish(&self, id: &BlobId) -> Result<BlobRow, ServerError> {
        let row = self
            .blob(id)?
            .ok_or_else(|| ServerError::Invalid(format!("no blob {id}")))?;
        if row.complete {
            return Ok(row);
        }
        if row.received != row.size {
            return Err(ServerError::Invalid(format!(
                "blob {id} has {} of its {} bytes",
                row.received, row.size
            )));
        }
        let mut hash = Sha256::new();
        let mut at = 0u64;
        while at < row.size {
            let chunk = self.blob_read(id, at, CHUNK_BYTES)?;
            if chunk.is_empty() {
                break;
            }
            at += chunk.len() as u64;
            hash.update(&chunk);
        }
        if at != row.size || hex::encode(hash.finalize()) != row.cipher_sha256 {
            self.blob_delete(id)?;
            return Err(ServerError::Invalid(format!(
                "blob {id} does not hash to the SHA-256 its uploader declared; it was discarded"
            )));
        }
        self.blob_set_complete(id)?;
        Ok(BlobRow {
            complete: true,
            ..row
        })
    }
}

/// What an append must satisfy, on either backend.
pub(crate) fn check_append(row: &BlobRow, offset: u64, bytes: &[u8]) -> Result<(), ServerError> {
    if row.complete {
        return Err(ServerError::Invalid(format!("blob {} is complete", row.id)));
    }
    if offset != row.received {
        return Err(ServerError::Invalid(format!(
            "blob {} has {} bytes; an append at {offset} does not follow them",
            row.id, row.received
        )));
    }
    if bytes.len() > CHUNK_BYTES || offset + bytes.len() as u64 > row.size {
        return Err(ServerError::Invalid(format!(
            "blob {} was declared {} bytes; {} more at {offset} pass it",
            row.id,
            row.size,
            bytes.len()
        )));
    }
    Ok(())
}
