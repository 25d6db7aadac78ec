//! Blobs in PostgreSQL: the row in `blobs`, the bytes as rows of
//! `blob_chunks`, one per append (at most [`CHUNK_BYTES`]) keyed by where
//! it starts, so every delivery node reads the same bytes and a backup of
//! the database holds them. What was received is where the last chunk
//! ends; two appends at one offset collide on the key, and only one
//! lands.

use keepwire_protocol::attachment::BlobId;

use super::super::blobs::{check_append, BlobRow, BlobStore, CHUNK_BYTES};
use super::*;

pub(super) const SCHEMA: &str = r#"
    CREATE TABLE blobs (id TEXT PRIMARY KEY, "user" TEXT NOT NULL, device TEXT NOT NULL,
        conv TEXT NOT NULL, size BIGINT NOT NULL, cipher_sha256 TEXT NOT NULL,
        complete BOOLEAN NOT NULL DEFAULT FALSE, created_ms BIGINT NOT NULL, seq BIGINT);
    CREATE INDEX blobs_user ON blobs ("user");
    CREATE INDEX blobs_unbound ON blobs (seq, created_ms);
    CREATE INDEX blobs_entry ON blobs (conv, seq);
    CREATE TABLE blob_chunks (id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
        start BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (id, start));
"#;

fn blob_id(s: String) -> Result<BlobId, ServerError> {
    BlobId::try_from(s).map_err(|e| ServerError::Storage(e.to_string()))
}

impl BlobStore for PgStore {
    fn blob_create(&self, row: &BlobRow) -> Result<(), ServerError> {
        self.pg.execute(
            r#"INSERT INTO blobs (id, "user", device, conv, size, cipher_sha256, complete, created_ms, seq)
               VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, NULL)"#,
            &[
                &row.id.as_str(),
                &row.user,
                &row.device,
                &row.conv,
                &(row.size as i64),
                &row.cipher_sha256,
                &(row.created_ms as i64),
            ],
        )?;
        Ok(())
    }

    fn blob(&self, id: &BlobId) -> Result<Option<BlobRow>, ServerError> {
        let Some(r) = self.pg.query_opt(
            r#"SELECT "user", device, conv, size, cipher_sha256, complete, created_ms, seq,
                  (SELECT COALESCE(MAX(start + length(data)), 0) FROM blob_chunks c WHERE c.id = b.id)
               FROM blobs b WHERE id=$1"#,
            &[&id.as_str()],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(BlobRow {
            id: id.clone(),
            user: r.try_get(0)?,
            device: r.try_get(1)?,
            conv: r.try_get(2)?,
            size: u64_at(&r, 3)?,
            cipher_sha256: r.try_get(4)?,
            complete: r.try_get(5)?,
            created_ms: u64_at(&r, 6)?,
            seq: opt_u64_at(&r, 7)?,
            received: u64_at(&r, 8)?,
        }))
    }

    fn blob_append(&self, id: &BlobId, offset: u64, bytes: &[u8]) -> Result<u64, ServerError> {
        let row = self
            .blob(id)?
            .ok_or_else(|| ServerError::Invalid(format!("no blob {id}")))?;
        check_append(&row, offset, bytes)?;
        // Not flushed: completion is the durable step.
        self.pg.transaction_unflushed(|pg| {
            pg.execute(
                "INSERT INTO blob_chunks (id, start, data) VALUES ($1, $2, $3)",
                &[&id.as_str(), &(offset as i64), &bytes],
            )
        })?;
        Ok(offset + bytes.len() as u64)
    }

    fn blob_read(&self, id: &BlobId, offset: u64, len: usize) -> Result<Vec<u8>, ServerError> {
        let len = len.min(CHUNK_BYTES) as i64;
        let end = offset as i64 + len;
        let rows = self.pg.query(
            "SELECT start, data FROM blob_chunks
             WHERE id=$1 AND start < $3 AND start + length(data) > $2 ORDER BY start",
            &[&id.as_str(), &(offset as i64), &end],
        )?;
        let mut out = Vec::with_capacity(len as usize);
        for r in rows {
            let start: i64 = r.try_get(0)?;
            let data: &[u8] = r.try_get(1)?;
            let from = (offset as i64).max(start);
            let to = end.min(start + data.len() as i64);
            if from as usize != offset as usize + out.len() {
                break;
            }
            out.extend_from_slice(&data[(from - start) as usize..(to - start) as usize]);
        }
        Ok(out)
    }

    fn blob_set_complete(&self, id: &BlobId) -> Result<(), ServerError> {
        // A flushed commit: the chunks' unflushed commits before it are
        // flushed with it.
        self.pg.execute(
            "UPDATE blobs SET complete=TRUE WHERE id=$1",
            &[&id.as_str()],
        )?;
        Ok(())
    }

    fn blob_delete(&self, id: &BlobId) -> Result<(), ServerError> {
        self.pg
            .execute("DELETE FROM blobs WHERE id=$1", &[&id.as_str()])?;
        Ok(())
    }

    fn blobs_to_collect(
        &self,
        unbound_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<BlobId>, ServerError> {
        all(
            self.pg.query(
                "SELECT id FROM blobs b WHERE (b.seq IS NULL AND b.created_ms < $1)
                   OR (b.seq IS NOT NULL AND NOT EXISTS
                       (SELECT 1 FROM log l WHERE l.conv = b.conv AND l.seq = b.seq))
                 LIMIT $2",
                &[&(unbound_before_ms as i64), &(limit as i64)],
            )?,
            |r| blob_id(r.try_get(0)?),
        )
    }

    fn blob_usage(&self, user: &str) -> Result<u64, ServerError> {
        let r = self.pg.query_one(
            r#"SELECT COALESCE(SUM(size), 0)::BIGINT FROM blobs WHERE "user"=$1"#,
            &[&user],
        )?;
        u64_at(&r, 0)
    }
}

/// Bind the blobs a log entry carries to it, inside that entry's append.
pub(super) fn bind_in(pg: &Pg, blobs: &[BlobId], conv: &str, seq: u64) -> Result<(), ServerError> {
    for id in blobs {
        let n = pg.execute(
            "UPDATE blobs SET seq=$3 WHERE id=$1 AND conv=$2 AND complete AND seq IS NULL",
            &[&id.as_str(), &conv, &(seq as i64)],
        )?;
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
