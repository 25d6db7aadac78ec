//! Receipt keys (current and retired) and the chain of archive
//! checkpoints the server keeps.

use rusqlite::params;

use super::*;
use crate::ServerError;

impl CheckpointStore for SqliteStore {
    fn record_receipt_key(&self, key: &[u8], from_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO receipt_keys (key, from_ms) VALUES (?1, ?2)")?
            .execute(params![key, from_ms as i64])?;
        Ok(())
    }

    fn retire_receipt_key(&self, key: &[u8], until_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached(
                "UPDATE receipt_keys SET until_ms=?1 WHERE key=?2 AND until_ms IS NULL",
            )?
            .execute(params![until_ms as i64, key])?;
        Ok(())
    }

    fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, from_ms, until_ms FROM receipt_keys ORDER BY from_ms")?;
        let rows = stmt.query_map([], |r| {
            Ok(ReceiptKey {
                key: r.get(0)?,
                from_ms: r.get::<_, i64>(1)? as u64,
                until_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_checkpoint(
        &self,
        size: u64,
        note: &str,
        from_size: Option<u64>,
        path: &[Vec<u8>],
    ) -> Result<(), ServerError> {
        self.conn.prepare_cached("INSERT OR REPLACE INTO checkpoints (size, note, from_size, path) VALUES (?1, ?2, ?3, ?4)")?.execute(params![size as i64, note, from_size.map(|v| v as i64), path.concat()],
        )?;
        Ok(())
    }

    fn checkpoints_after(
        &self,
        since_size: u64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        self.query_checkpoints(
            "SELECT note, from_size, path FROM checkpoints WHERE size > ?1 ORDER BY size LIMIT ?2",
            since_size,
            CHECKPOINT_PAGE,
        )
    }

    fn latest_checkpoint(
        &self,
    ) -> Result<Option<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        Ok(self
            .query_checkpoints(
                "SELECT note, from_size, path FROM checkpoints WHERE size >= ?1 ORDER BY size DESC LIMIT ?2",
                0,
                1,
            )?
            .pop())
    }
}

impl SqliteStore {
    fn query_checkpoints(
        &self,
        sql: &str,
        size: u64,
        limit: i64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![size as i64, limit], |r| {
            let path: Vec<u8> = r.get(2)?;
            Ok(keepwire_protocol::PublishedCheckpoint {
                checkpoint: r.get(0)?,
                link: keepwire_protocol::CheckpointProof {
                    from_size: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                    consistency_path: api::split_path(&path),
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
