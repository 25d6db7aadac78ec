//! Attachment blobs in the core: who may upload one, who may read one,
//! and which a message may carry ([`crate::store::blobs`] says what a
//! blob is and how long it lives).
//!
//! The core decides; the shell moves the bytes. Appending a megabyte,
//! reading one, and hashing a whole blob back when its last byte arrives
//! take milliseconds to seconds, and every other request waits while the
//! core's lock is held, so [`Core::blob_chunk_allowed`] and
//! [`Core::blob_fetch_allowed`] only check, under the lock, and hand the
//! shell the blob's row; the shell writes or reads on a store handle of
//! its own.
//!
//! The rules:
//! - a device uploads only into a conversation it is a member of, within
//!   the agency's size limit and its user's quota, and only while the disk
//!   has room ([`Core::capture_open`]);
//! - a chunk goes only into its own device's unfinished upload;
//! - a message carries only complete blobs its own device uploaded for that
//!   conversation, each once (bound to the entry in the entry's own write);
//! - a blob is read by its uploader, by the records member once the entry
//!   carrying it is durable, and by any other member device of the
//!   conversation once that entry is released to members (captured, not
//!   withheld) — the same marks as the entry itself.

use keepwire_protocol::attachment::{BlobId, BlobList};
use keepwire_protocol::{BlobChunk, ErrorCode, ProtocolError, ServerBody, RECORDS_USER};

use super::{internal, refuse, Core, Session};
use crate::store::{BlobRow, DeviceRow};

impl Core {
    /// `blob_create`: a new upload's row, once the device may upload it.
    pub(super) fn blob_create(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        size: u64,
        cipher_sha256: String,
    ) -> Result<ServerBody, ProtocolError> {
        self.capture_open()?;
        self.check_sender(device)?;
        self.member_of(device, conv)?;
        if device.user != RECORDS_USER {
            self.check_suspension(conv)?;
        }
        if cipher_sha256.len() != 64 || !cipher_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse(
                ErrorCode::BadFrame,
                "cipher_sha256 is 64 hex digits",
            ));
        }
        let policy = self.store.attachment_policy().map_err(internal)?;
        if size > policy.max_file_bytes {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!(
                    "a file of {} MiB; the agency allows at most {} MiB",
                    size.div_ceil(1 << 20),
                    policy.max_file_bytes >> 20
                ),
            ));
        }
        let used = self.store.blob_usage(&device.user).map_err(internal)?;
        if used.saturating_add(size) > policy.quota_bytes {
            return Err(refuse(
                ErrorCode::QuotaExceeded,
                format!(
                    "{}'s attachments on the server take {} MiB of the {} MiB allowed; this file \
                     needs {} MiB more (space returns as messages are delivered and captured)",
                    device.user,
                    used >> 20,
                    policy.quota_bytes >> 20,
                    size.div_ceil(1 << 20)
                ),
            ));
        }
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let row = BlobRow {
            id: BlobId::from_bytes(id),
            user: device.user.clone(),
            device: device.device_id.clone(),
            conv: conv.to_string(),
            size,
            cipher_sha256: cipher_sha256.to_ascii_lowercase(),
            received: 0,
            complete: false,
            created_ms: self.now_ms,
            seq: None,
        };
        self.store.blob_create(&row).map_err(internal)?;
        Ok(blob_body(&row))
    }

    /// `blob_status`: where this device's upload stands.
    pub(super) fn blob_status(
        &self,
        device: &DeviceRow,
        blob: &BlobId,
    ) -> Result<ServerBody, ProtocolError> {
        let row = self.own_blob(device, blob)?;
        Ok(blob_body(&row))
    }

    /// May `session` append `chunk`? The row if so; the shell writes.
    pub fn blob_chunk_allowed(
        &self,
        session: &Session,
        chunk: &BlobChunk,
    ) -> Result<BlobRow, ProtocolError> {
        let device = signed_in(session)?;
        self.capture_open()?;
        let row = self.own_blob(device, &chunk.blob)?;
        if row.complete {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!("blob {} is complete", row.id),
            ));
        }
        if chunk.offset != row.received {
            return Err(refuse(
                ErrorCode::BadFrame,
                format!(
                    "blob {} holds {} bytes; send from there (this chunk starts at {})",
                    row.id, row.received, chunk.offset
                ),
            ));
        }
        if chunk.offset + chunk.bytes.len() as u64 > row.size {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("blob {} was declared {} bytes", row.id, row.size),
            ));
        }
        Ok(row)
    }

    /// May `session` read `blob`? The row if so; the shell reads.
    pub fn blob_fetch_allowed(
        &self,
        session: &Session,
        blob: &BlobId,
    ) -> Result<BlobRow, ProtocolError> {
        let device = signed_in(session)?;
        let unknown = || {
            refuse(
                ErrorCode::UnknownBlob,
                format!("no blob {blob} that this device may read"),
            )
        };
        let row = self
            .store
            .blob(blob)
            .map_err(internal)?
            .ok_or_else(unknown)?;
        if row.device == device.device_id {
            return Ok(row);
        }
        let (Some(seq), true) = (row.seq, row.complete) else {
            return Err(unknown());
        };
        let c = self.convs.get(&row.conv).ok_or_else(unknown)?;
        if !c.members.iter().any(|m| m.device_id == device.device_id) {
            return Err(unknown());
        }
        let readable = if device.user == RECORDS_USER {
            seq <= c.gate.durable_seq()
        } else {
            seq <= c.gate.released() && !c.gate.is_withheld(seq)
        };
        if readable {
            Ok(row)
        } else {
            Err(unknown())
        }
    }

    /// The blobs the application `message` for `conv` carries, each
    /// checked: complete, uploaded by this device for this conversation,
    /// not carried by another message.
    pub(super) fn carried_blobs(
        &self,
        device: &DeviceRow,
        conv: &str,
        message: &[u8],
    ) -> Result<Vec<BlobId>, ProtocolError> {
        let list: BlobList = crate::roster::carried_blobs(message)?;
        for id in &list.blobs {
            let row = self.own_blob(device, id)?;
            if row.conv != conv {
                return Err(refuse(
                    ErrorCode::UnknownBlob,
                    format!("blob {id} was uploaded for another conversation"),
                ));
            }
            if !row.complete {
                return Err(refuse(
                    ErrorCode::BadFrame,
                    format!(
                        "blob {id} has {} of its {} bytes: finish the upload first",
                        row.received, row.size
                    ),
                ));
            }
            if row.seq.is_some() || self.blobs_in_flight.contains(id) {
                return Err(refuse(
                    ErrorCode::BadFrame,
                    format!("blob {id} is already carried by a message"),
                ));
            }
        }
        Ok(list.blobs)
    }

    /// The device's own upload, or `unknown_blob`.
    fn own_blob(&self, device: &DeviceRow, blob: &BlobId) -> Result<BlobRow, ProtocolError> {
        self.store
            .blob(blob)
            .map_err(internal)?
            .filter(|r| r.device == device.device_id)
            .ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownBlob,
                    format!("no upload {blob} of this device"),
                )
            })
    }

    fn member_of(&self, device: &DeviceRow, conv: &str) -> Result<(), ProtocolError> {
        let c = self.convs.get(conv).ok_or_else(|| {
            refuse(
                ErrorCode::UnknownConversation,
                format!("no conversation {conv}"),
            )
        })?;
        if c.members.iter().any(|m| m.device_id == device.device_id) {
            Ok(())
        } else {
            Err(refuse(
                ErrorCode::NotMember,
                format!("this device is not a member of {conv}"),
            ))
        }
    }
}

/// The device `session` authenticated as.
fn signed_in(session: &Session) -> Result<&DeviceRow, ProtocolError> {
    session.device.as_ref().ok_or_else(|| {
        refuse(
            ErrorCode::Unauthorized,
            "authenticate first (auth or enroll)",
        )
    })
}

/// An upload's standing, as the device is told it.
pub fn blob_body(row: &BlobRow) -> ServerBody {
    ServerBody::Blob {
        blob: row.id.clone(),
        size: row.size,
        received: row.received,
        complete: row.complete,
    }
}
