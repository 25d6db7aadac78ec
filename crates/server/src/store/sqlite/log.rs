//! The log: conversations and their followed rosters, appends in group
//! commits, cursors and Welcomes, and relay garbage, deleted a bounded
//! chunk at a time.

use rusqlite::{params, OptionalExtension};

use super::*;
use crate::ServerError;

impl LogStore for SqliteStore {
    fn records_progress(&self) -> Result<Vec<(String, u64)>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT conv, records_acked FROM conversations")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn conversations(&self) -> Result<Vec<ConversationRow>, ServerError> {
        let mut stmt = self.conn.prepare(
            "SELECT conv, snapshot, last_seq, records_acked, suspended FROM conversations",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ConversationRow {
                conv: r.get(0)?,
                snapshot: r.get(1)?,
                last_seq: r.get::<_, i64>(2)? as u64,
                records_acked: r.get::<_, i64>(3)? as u64,
                suspended: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn append_collecting(
        &mut self,
        batch: &[Append<'_>],
        garbage: &mut std::collections::VecDeque<Collectable>,
        limit: usize,
    ) -> Result<usize, ServerError> {
        let tx = self.conn.transaction()?;
        for a in batch {
            append_in(&tx, a.entry, a.roster, a.create)?;
            super::blobs::bind_in(&tx, a.blobs, &a.entry.conv, a.entry.seq)?;
        }
        let mut deleted = 0;
        let mut passes = 0;
        while deleted < limit && passes < GC_PASSES_PER_COMMIT {
            let Some(p) = garbage.front() else { break };
            let want = limit - deleted;
            let n = collect_in(&tx, p, Some(want))?;
            deleted += n;
            passes += 1;
            if n < want {
                garbage.pop_front();
            }
        }
        tx.commit()?;
        Ok(deleted)
    }

    fn status(&self) -> Result<StoreStatus, ServerError> {
        let one = |sql: &str| -> Result<u64, ServerError> {
            Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        Ok(StoreStatus {
            users: one("SELECT COUNT(*) FROM users")?,
            active_devices: one("SELECT COUNT(*) FROM devices WHERE revoked_ms IS NULL")?,
            revoked_devices: one("SELECT COUNT(*) FROM devices WHERE revoked_ms IS NOT NULL")?,
            conversations: one("SELECT COUNT(*) FROM conversations")?,
            relay_entries: one("SELECT COUNT(*) FROM log")?,
            capture_backlog: one(
                "SELECT COALESCE(SUM(last_seq - records_acked), 0) FROM conversations",
            )?,
            suspended_conversations: one(
                "SELECT COUNT(*) FROM conversations WHERE suspended IS NOT NULL",
            )?,
            blocked_devices: one("SELECT COUNT(*) FROM blocked_devices")?,
            withheld_entries: one("SELECT COUNT(*) FROM withheld")?,
        })
    }

    fn group_info(&self, conv: &str) -> Result<Option<Vec<u8>>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT group_info FROM conversations WHERE conv=?1")?
            .query_row(params![conv], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    fn log_range(&self, conv: &str, from: u64, to: u64) -> Result<Vec<LogEntry>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT conv, seq, sender_user, sender_device, server_time_ms, message, sha256, signature
             FROM log WHERE conv=?1 AND seq>=?2 AND seq<=?3 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![conv, from as i64, to as i64], |r| {
            Ok(LogEntry {
                conv: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                sender_user: r.get(2)?,
                sender_device: r.get(3)?,
                server_time_ms: r.get::<_, i64>(4)? as u64,
                message: r.get(5)?,
                sha256: r.get(6)?,
                signature: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn log_senders(&self, conv: &str, after: u64) -> Result<Vec<(u64, String, u64)>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, sender_device, server_time_ms FROM log WHERE conv=?1 AND seq>?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![conv, after as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn cursors_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device, acked FROM cursors WHERE conv=?1")?;
        let rows = stmt.query_map(params![conv], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn welcome(&self, device: &str, conv: &str) -> Result<Option<(u64, Vec<u8>)>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq, message FROM welcomes WHERE device=?1 AND conv=?2")?
            .query_row(params![device, conv], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()?)
    }

    fn welcomes_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device, seq FROM welcomes WHERE conv=?1")?;
        let rows = stmt.query_map(params![conv], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latest_entry_time(&self) -> Result<Option<u64>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT MAX(server_time_ms) FROM log")?
            .query_row([], |r| r.get::<_, Option<i64>>(0))?
            .map(|t| t as u64))
    }

    fn log_len(&self) -> Result<u64, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM log")?
            .query_row([], |r| r.get::<_, i64>(0))? as u64)
    }

    fn welcomes_for(&self, device: &str) -> Result<Vec<(String, u64, Vec<u8>)>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT conv, seq, message FROM welcomes WHERE device=?1 ORDER BY conv",
        )?;
        let rows = stmt.query_map(params![device], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn cursor(&self, device: &str, conv: &str) -> Result<Option<u64>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT acked FROM cursors WHERE device=?1 AND conv=?2")?
            .query_row(params![device, conv], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|v| v as u64))
    }

    fn ack(
        &mut self,
        device: &str,
        conv: &str,
        seq: u64,
        records: bool,
    ) -> Result<(), ServerError> {
        // An acknowledgement need not survive a power cut: losing one only
        // means the entries are delivered again, which devices and the
        // records service recognise. So it is committed without waiting for
        // the disk (WAL, synchronous=NORMAL: still atomic and ordered; the
        // next durable commit carries it to disk), which keeps the fsync
        // off the core's lock for the most frequent request there is.
        self.without_fsync(|store| store.ack_in_tx(device, conv, seq, records))
    }

    fn collect(&mut self, passes: &[Collectable]) -> Result<usize, ServerError> {
        self.without_fsync(|store| {
            let tx = store.conn.transaction()?;
            let mut deleted = 0;
            for p in passes {
                deleted += collect_in(&tx, p, None)?;
            }
            tx.commit()?;
            Ok(deleted)
        })
    }
}

impl SqliteStore {
    /// Run `write` committing without waiting for the disk (WAL,
    /// synchronous=NORMAL: atomic and ordered; the next durable commit
    /// carries it to disk), for writes whose loss after a power cut is
    /// harmless. Back to fsync-before-commit after; a failure there must not
    /// hide that the write itself committed, so it is logged, not returned.
    fn without_fsync<T>(
        &mut self,
        write: impl FnOnce(&mut Self) -> Result<T, ServerError>,
    ) -> Result<T, ServerError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let r = write(self);
        if let Err(e) = self.conn.pragma_update(None, "synchronous", "FULL") {
            tracing::error!(error = %e, "could not restore synchronous=FULL on the server store");
        }
        r
    }

    fn ack_in_tx(
        &mut self,
        device: &str,
        conv: &str,
        seq: u64,
        records: bool,
    ) -> Result<(), ServerError> {
        let tx = self.conn.transaction()?;
        ack_in(&tx, device, conv, seq, records)?;
        tx.commit()?;
        Ok(())
    }
}

/// Move `device`'s cursor in `conv` to `seq` (never backwards), drop its
/// Welcome once past it, and for the records service move the
/// conversation's archived mark.
pub(super) fn ack_in(
    tx: &rusqlite::Transaction<'_>,
    device: &str,
    conv: &str,
    seq: u64,
    records: bool,
) -> Result<(), ServerError> {
    tx.prepare_cached(
        "INSERT INTO cursors (device, conv, acked) VALUES (?1, ?2, ?3)
         ON CONFLICT (device, conv) DO UPDATE SET acked = MAX(acked, excluded.acked)",
    )?
    .execute(params![device, conv, seq as i64])?;
    tx.prepare_cached("DELETE FROM welcomes WHERE device=?1 AND conv=?2 AND seq<=?3")?
        .execute(params![device, conv, seq as i64])?;
    if records {
        tx.prepare_cached(
            "UPDATE conversations SET records_acked = MAX(records_acked, ?1) WHERE conv=?2",
        )?
        .execute(params![seq as i64, conv])?;
    }
    Ok(())
}

/// Delete up to `limit` (all, if none) of what `p` allows, oldest first;
/// returns how many went.
pub(super) fn collect_in(
    tx: &rusqlite::Transaction<'_>,
    p: &Collectable,
    limit: Option<usize>,
) -> Result<usize, ServerError> {
    let limit = limit.map(|l| l as i64).unwrap_or(-1); // -1: no limit
    Ok(tx
        .prepare_cached(
            "DELETE FROM log WHERE conv=?1 AND seq IN (SELECT seq FROM log WHERE conv=?1
               AND seq<=?3 AND (seq<=?2 OR server_time_ms<?4)
               AND NOT EXISTS (SELECT 1 FROM withheld w WHERE w.conv=?1 AND w.seq=log.seq)
               ORDER BY seq LIMIT ?5)",
        )?
        .execute(params![
            p.conv,
            p.delivered_upto as i64,
            p.records_acked as i64,
            p.expired_before_ms as i64,
            limit
        ])?)
}

pub(super) fn append_in(
    tx: &rusqlite::Transaction<'_>,
    entry: &LogEntry,
    roster: Option<&RosterUpdate<'_>>,
    create: bool,
) -> Result<(), ServerError> {
    if create {
        tx.prepare_cached("INSERT INTO conversations (conv, snapshot, created_ms, last_seq) VALUES (?1, x'', ?2, 0)")?.execute(params![entry.conv, entry.server_time_ms as i64],
        )?;
    }
    tx.prepare_cached("INSERT INTO log (conv, seq, sender_user, sender_device, server_time_ms, message, sha256, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(params![
            entry.conv,
            entry.seq as i64,
            entry.sender_user,
            entry.sender_device,
            entry.server_time_ms as i64,
            entry.message,
            entry.sha256,
            entry.signature
        ],
    )?;
    // The sender has its own application message; if it had everything
    // before it, its cursor moves on without an acknowledgement round trip.
    // Not for commits and proposals: a sender that crashes before their
    // receipt must get them replayed to apply its pending commit.
    if roster.is_none() {
        tx.prepare_cached("UPDATE cursors SET acked=?1 WHERE device=?2 AND conv=?3 AND acked=?4")?
            .execute(params![
                entry.seq as i64,
                entry.sender_device,
                entry.conv,
                entry.seq as i64 - 1
            ])?;
    }
    if create {
        // The creator replays from the start until it acknowledges.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO cursors (device, conv, acked) VALUES (?1, ?2, 0)",
        )?
        .execute(params![entry.sender_device, entry.conv])?;
    }
    match roster {
        Some(r) => {
            tx.prepare_cached("UPDATE conversations SET last_seq=?1, snapshot=?2, group_info=COALESCE(?3, group_info) WHERE conv=?4")?.execute(params![entry.seq as i64, r.snapshot, r.group_info, entry.conv],
            )?;
            for (d, cursor) in r.added {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO cursors (device, conv, acked) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![d, entry.conv, *cursor as i64])?;
                if let Some(welcome) = r.welcome {
                    tx.prepare_cached("INSERT OR REPLACE INTO welcomes (device, conv, seq, message) VALUES (?1, ?2, ?3, ?4)")?.execute(params![d, entry.conv, entry.seq as i64, welcome],
                    )?;
                }
            }
        }
        None => {
            tx.prepare_cached("UPDATE conversations SET last_seq=?1 WHERE conv=?2")?
                .execute(params![entry.seq as i64, entry.conv])?;
        }
    }
    Ok(())
}
