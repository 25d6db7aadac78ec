//! The lifecycle's events on the embedded archive: `lifecycle_events`,
//! each row written in the transaction that appends its leaf.

use rusqlite::params;

use super::super::store::{StoredEvent, Tombstone};
use super::{append, destroy_in, SqliteArchive};
use crate::tlog::Leaf;
use crate::RecordsError;

impl SqliteArchive {
    pub(super) fn insert_event(
        &mut self,
        event: &StoredEvent,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError> {
        let tx = self.write()?;
        let last: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(n), 0) FROM lifecycle_events")?
            .query_row([], |r| r.get(0))?;
        if event.n != last as u64 + 1 {
            return Ok(false);
        }
        let leaf_n = append(&tx, leaf, None)?;
        insert_row(&tx, event, leaf_n)?;
        tx.commit()?;
        Ok(true)
    }

    pub(super) fn event_rows(&self, after: u64) -> Result<Vec<StoredEvent>, RecordsError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT n, kind, actor, at_ms, body, leaf FROM lifecycle_events WHERE n > ?1 ORDER BY n",
        )?;
        let rows = stmt.query_map(params![after as i64], |r| {
            Ok(StoredEvent {
                n: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                actor: r.get(2)?,
                at_ms: r.get::<_, i64>(3)? as u64,
                body: r.get(4)?,
                leaf: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl SqliteArchive {
    pub(super) fn dispose_batch(
        &mut self,
        ids: &[i64],
        tombstone: &Tombstone<'_>,
        events: &[(StoredEvent, Leaf)],
    ) -> Result<bool, RecordsError> {
        let tx = self.write()?;
        let last: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(n), 0) FROM lifecycle_events")?
            .query_row([], |r| r.get(0))?;
        if events.first().is_none_or(|(e, _)| e.n != last as u64 + 1) {
            return Ok(false);
        }
        let mut unlinked = Vec::new();
        for &id in ids {
            unlinked.extend(destroy_in(&tx, id, &|conv, seq, leaf| {
                tombstone(id, conv, seq, leaf)
            })?);
        }
        for (event, leaf) in events {
            let leaf_n = append(&tx, leaf, None)?;
            insert_row(&tx, event, leaf_n)?;
        }
        tx.commit()?;
        // Committed: the batch ran. Bytes left behind are only space
        // (their rows are gone), never a reason to say it did not.
        if let Err(e) = self.delete_bytes(&unlinked) {
            tracing::warn!(error = %e, "a disposed record's file bytes were not deleted");
        }
        Ok(true)
    }
}

fn insert_row(
    tx: &rusqlite::Connection,
    event: &StoredEvent,
    leaf_n: u64,
) -> Result<(), RecordsError> {
    tx.prepare_cached(
        "INSERT INTO lifecycle_events (n, kind, actor, at_ms, body, leaf)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        event.n as i64,
        event.kind,
        event.actor,
        event.at_ms as i64,
        event.body,
        leaf_n as i64
    ])?;
    Ok(())
}
