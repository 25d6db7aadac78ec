//! Blobs in SQLite's deployment: the row in `server.db`, the bytes in a
//! file of their own under `blobs/` beside it. Megabytes of attachment
//! written through the database would pass through the WAL that every
//! group commit of the log flushes; in files they cost the log nothing.
//! What was received is the file's length: an append is a write at its
//! end, flushed only when the blob is complete (a crash loses at most the
//! unflushed tail, which the uploader sends again from the length it is
//! told).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use keepwire_protocol::attachment::BlobId;
use rusqlite::{params, OptionalExtension};

use super::super::blobs::{check_append, BlobRow, BlobStore, CHUNK_BYTES};
use super::SqliteStore;
use crate::ServerError;

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, user TEXT NOT NULL, device TEXT NOT NULL,
        conv TEXT NOT NULL, size INTEGER NOT NULL, cipher_sha256 TEXT NOT NULL,
        complete INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, seq INTEGER);
    CREATE INDEX IF NOT EXISTS blobs_user ON blobs (user);
    CREATE INDEX IF NOT EXISTS blobs_unbound ON blobs (seq, created_ms);
    CREATE INDEX IF NOT EXISTS blobs_entry ON blobs (conv, seq);";

impl SqliteStore {
    /// The directory of the blobs' bytes, beside the database file.
    fn blob_dir(&self) -> Result<PathBuf, ServerError> {
        let db = self
            .conn
            .path()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ServerError::Invalid("an in-memory store keeps no blobs".into()))?;
        let dir = std::path::Path::new(db)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("blobs");
        Ok(dir)
    }

    fn blob_path(&self, id: &BlobId) -> Result<PathBuf, ServerError> {
        Ok(self.blob_dir()?.join(id.as_str()))
    }

    fn received(&self, id: &BlobId) -> Result<u64, ServerError> {
        match std::fs::metadata(self.blob_path(id)?) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

impl BlobStore for SqliteStore {
    fn blob_create(&self, row: &BlobRow) -> Result<(), ServerError> {
        let dir = self.blob_dir()?;
        std::fs::create_dir_all(&dir)?;
        self.conn
            .prepare_cached(
                "INSERT INTO blobs (id, user, device, conv, size, cipher_sha256, complete, created_ms, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, NULL)",
            )?
            .execute(params![
                row.id.as_str(),
                row.user,
                row.device,
                row.conv,
                row.size as i64,
                row.cipher_sha256,
                row.created_ms as i64
            ])?;
        // A file left by a blob of that id deleted half-way is not this one's.
        match std::fs::remove_file(self.blob_path(&row.id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn blob(&self, id: &BlobId) -> Result<Option<BlobRow>, ServerError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT user, device, conv, size, cipher_sha256, complete, created_ms, seq
                 FROM blobs WHERE id=?1",
            )?
            .query_row(params![id.as_str()], |r| {
                Ok(BlobRow {
                    id: id.clone(),
                    user: r.get(0)?,
                    device: r.get(1)?,
                    conv: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    cipher_sha256: r.get(4)?,
                    received: 0,
                    complete: r.get(5)?,
                    created_ms: r.get::<_, i64>(6)? as u64,
                    seq: r.get::<_, Option<i64>>(7)?.map(|s| s as u64),
                })
            })
            .optional()?;
        match row {
            None => Ok(None),
            Some(mut row) => {
                row.received = self.received(id)?;
                Ok(Some(row))
            }
        }
    }

    fn blob_append(&self, id: &BlobId, offset: u64, bytes: &[u8]) -> Result<u64, ServerError> {
        let row = self
            .blob(id)?
            .ok_or_else(|| ServerError::Invalid(format!("no blob {id}")))?;
        check_append(&row, offset, bytes)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.blob_path(id)?)?;
        f.write_all(bytes)?;
        Ok(offset + bytes.len() as u64)
    }

    fn blob_read(&self, id: &BlobId, offset: u64, len: usize) -> Result<Vec<u8>, ServerError> {
        let mut f = match std::fs::File::open(self.blob_path(id)?) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut out = Vec::with_capacity(len.min(CHUNK_BYTES));
        f.take(len.min(CHUNK_BYTES) as u64).read_to_end(&mut out)?;
        Ok(out)
    }

    fn blob_set_complete(&self, id: &BlobId) -> Result<(), ServerError> {
        // The bytes first: a row saying complete over a file a crash cut
        // short would be served as whole.
        std::fs::File::open(self.blob_path(id)?)?.sync_all()?;
        keepwire_protocol::files::sync_dir(&self.blob_dir()?)?;
        self.conn
            .prepare_cached("UPDATE blobs SET complete=1 WHERE id=?1")?
            .execute(params![id.as_str()])?;
        Ok(())
    }

    fn blob_delete(&self, id: &BlobId) -> Result<(), ServerError> {
        // The row first: a file without a row is never served, and the
        // next blob_create of the id removes it.
        self.conn
            .prepare_cached("DELETE FROM blobs WHERE id=?1")?
            .execute(params![id.as_str()])?;
        match std::fs::remove_file(self.blob_path(id)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn blobs_to_collect(
        &self,
        unbound_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<BlobId>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM blobs b WHERE (b.seq IS NULL AND b.created_ms < ?1)
               OR (b.seq IS NOT NULL AND NOT EXISTS
                   (SELECT 1 FROM log l WHERE l.conv = b.conv AND l.seq = b.seq))
             LIMIT ?2",
        )?;
        let ids = stmt
            .query_map(params![unbound_before_ms as i64, limit as i64], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        ids.into_iter()
            .map(|s| BlobId::try_from(s).map_err(|e| ServerError::Storage(e.to_string())))
            .collect()
    }

    fn blob_usage(&self, user: &str) -> Result<u64, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE user=?1")?
            .query_row(params![user], |r| r.get::<_, i64>(0))? as u64)
    }
}

/// Bind the blobs a log entry carries to it, inside that entry's append.
pub(super) fn bind_in(
    tx: &rusqlite::Transaction<'_>,
    blobs: &[BlobId],
    conv: &str,
    seq: u64,
) -> Result<(), ServerError> {
    for id in blobs {
        let n = tx
            .prepare_cached(
                "UPDATE blobs SET seq=?3 WHERE id=?1 AND conv=?2 AND complete=1 AND seq IS NULL",
            )?
            .execute(params![id.as_str(), conv, seq as i64])?;
        if n != 1 {
            // The core checked it under its lock; reaching here is a bug,
            // and the append (the whole group commit) must not land.
            return Err(ServerError::Invalid(format!(
                "blob {id} cannot be bound to {conv}/{seq}: not a complete, unbound blob of that conversation"
            )));
        }
    }
    Ok(())
}
