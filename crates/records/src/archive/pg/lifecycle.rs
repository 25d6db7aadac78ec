//! The lifecycle's events in PostgreSQL: `lifecycle_events`, each row
//! written in the transaction that appends its leaf, under the writers'
//! lock (so two events never take the same number).

use super::super::store::StoredEvent;
use super::{append, PgArchive};
use crate::tlog::Leaf;
use crate::RecordsError;

impl PgArchive {
    pub(super) fn insert_event(
        &mut self,
        event: &StoredEvent,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError> {
        self.write(|pg| {
            let last: i64 = pg
                .query_one(
                    "SELECT COALESCE(MAX(n), 0)::BIGINT FROM lifecycle_events",
                    &[],
                )?
                .try_get(0)?;
            if event.n != last as u64 + 1 {
                return Ok(false);
            }
            let leaf_n = append(pg, leaf, None)?;
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
