//! The lifecycle's events in PostgreSQL: `lifecycle_events`, each row
//! written in the transaction that appends its leaf, under the writers'
//! lock (so two events never take the same number).

use keepwire_schema::pg::Pg;

use super::super::store::{StoredEvent, Tombstone};
use super::{append, destroy_in, PgArchive};
use crate::tlog::Leaf;
use crate::RecordsError;

impl PgArchive {
    pub(super) fn insert_event(
        &mut self,
        event: &StoredEvent,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError> {
        self.write(|pg| {
            if event.n != last_event(pg)? + 1 {
                return Ok(false);
            }
            let leaf_n = append(pg, leaf, None)?;
            insert_row(pg, event, leaf_n)?;
            Ok(true)
        })
    }

    pub(super) fn event_rows(&self, after: u64) -> Result<Vec<StoredEvent>, RecordsError> {
        let rows = self.pg.query(
            "SELECT n, kind, actor, at_ms, body, leaf FROM lifecycle_events WHERE n > $1 ORDER BY n",
            &[&(after as i64)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    n: r.try_get::<_, i64>(0)? as u64,
                    kind: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    at_ms: r.try_get::<_, i64>(3)? as u64,
                    body: r.try_get(4)?,
                    leaf: r.try_get::<_, Option<i64>>(5)?.map(|v| v as u64),
                })
            })
            .collect()
    }
}

impl PgArchive {
    pub(super) fn dispose_batch(
        &mut self,
        ids: &[i64],
        tombstone: &Tombstone<'_>,
        events: &[(StoredEvent, Leaf)],
    ) -> Result<bool, RecordsError> {
        self.write(|pg| {
            let next = last_event(pg)? + 1;
            if events.first().is_none_or(|(e, _)| e.n != next) {
                return Ok(false);
            }
            for &id in ids {
                destroy_in(pg, id, &|conv, seq, leaf| tombstone(id, conv, seq, leaf))?;
            }
            for (event, leaf) in events {
                let leaf_n = append(pg, leaf, None)?;
                insert_row(pg, event, leaf_n)?;
            }
            Ok(true)
        })
    }
}

fn last_event(pg: &Pg) -> Result<u64, RecordsError> {
    let last: i64 = pg
        .query_one(
            "SELECT COALESCE(MAX(n), 0)::BIGINT FROM lifecycle_events",
            &[],
        )?
        .try_get(0)?;
    Ok(last as u64)
}

fn insert_row(pg: &Pg, event: &StoredEvent, leaf_n: u64) -> Result<(), RecordsError> {
    pg.execute(
        "INSERT INTO lifecycle_events (n, kind, actor, at_ms, body, leaf)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &(event.n as i64),
            &event.kind,
            &event.actor,
            &(event.at_ms as i64),
            &event.body,
            &(leaf_n as i64),
        ],
    )?;
    Ok(())
}
