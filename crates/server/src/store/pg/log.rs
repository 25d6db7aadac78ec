//! The log in PostgreSQL: conversations, appends in group commits,
//! cursors and Welcomes, and relay garbage, deleted a bounded chunk at a
//! time.

use super::*;

impl LogStore for PgStore {
    fn conversations(&self) -> Result<Vec<ConversationRow>, ServerError> {
        all(
            self.pg.query(
                "SELECT conv, snapshot, last_seq, records_acked, suspended FROM conversations",
                &[],
            )?,
            |r| {
                Ok(ConversationRow {
                    conv: r.try_get(0)?,
                    snapshot: r.try_get(1)?,
                    last_seq: u64_at(r, 2)?,
                    records_acked: u64_at(r, 3)?,
                    suspended: r.try_get(4)?,
                })
            },
        )
    }

    fn append_collecting(
        &mut self,
        batch: &[Append<'_>],
        garbage: &mut std::collections::VecDeque<Collectable>,
        limit: usize,
    ) -> Result<usize, ServerError> {
        self.pg.transaction(|pg| {
            for a in batch {
                append_in(pg, a.entry, a.roster, a.create)?;
                super::blobs::bind_in(pg, a.blobs, &a.entry.conv, a.entry.seq)?;
            }
            let mut deleted = 0;
            let mut passes = 0;
            while deleted < limit && passes < GC_PASSES_PER_COMMIT {
                let Some(p) = garbage.front() else { break };
                let want = limit - deleted;
                let n = collect_in(pg, p, Some(want))?;
                deleted += n;
                passes += 1;
                if n < want {
                    garbage.pop_front();
                }
            }
            Ok(deleted)
        })
    }

    fn group_info(&self, conv: &str) -> Result<Option<Vec<u8>>, ServerError> {
        Ok(self
            .pg
            .query_opt(
                "SELECT group_info FROM conversations WHERE conv=$1",
                &[&conv],
            )?
            .map(|r| r.try_get::<_, Option<Vec<u8>>>(0))
            .transpose()?
            .flatten())
    }

    fn log_range(&self, conv: &str, from: u64, to: u64) -> Result<Vec<LogEntry>, ServerError> {
        all(
            self.pg.query(
                "SELECT conv, seq, sender_user, sender_device, server_time_ms, message, sha256, signature
                 FROM log WHERE conv=$1 AND seq>=$2 AND seq<=$3 ORDER BY seq",
                &[&conv, &(from as i64), &(to as i64)],
            )?,
            |r| {
                Ok(LogEntry {
                    conv: r.try_get(0)?,
                    seq: u64_at(r, 1)?,
                    sender_user: r.try_get(2)?,
                    sender_device: r.try_get(3)?,
                    server_time_ms: u64_at(r, 4)?,
                    message: r.try_get(5)?,
                    sha256: r.try_get(6)?,
                    signature: r.try_get(7)?,
                })
            },
        )
    }

    fn log_senders(&self, conv: &str, after: u64) -> Result<Vec<(u64, String, u64)>, ServerError> {
        all(
            self.pg.query(
                "SELECT seq, sender_device, server_time_ms FROM log WHERE conv=$1 AND seq>$2 ORDER BY seq",
                &[&conv, &(after as i64)],
            )?,
            |r| Ok((u64_at(r, 0)?, r.try_get(1)?, u64_at(r, 2)?)),
        )
    }

    fn latest_entry_time(&self) -> Result<Option<u64>, ServerError> {
        let row = self
            .pg
            .query_one("SELECT MAX(server_time_ms) FROM log", &[])?;
        Ok(row.try_get::<_, Option<i64>>(0)?.map(|t| t as u64))
    }

    fn log_len(&self) -> Result<u64, ServerError> {
        u64_at(&self.pg.query_one("SELECT COUNT(*) FROM log", &[])?, 0)
    }

    fn cursors_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        all(
            self.pg
                .query("SELECT device, acked FROM cursors WHERE conv=$1", &[&conv])?,
            |r| Ok((r.try_get(0)?, u64_at(r, 1)?)),
        )
    }

    fn cursor(&self, device: &str, conv: &str) -> Result<Option<u64>, ServerError> {
        self.pg
            .query_opt(
                "SELECT acked FROM cursors WHERE device=$1 AND conv=$2",
                &[&device, &conv],
            )?
            .map(|r| u64_at(&r, 0))
            .transpose()
    }

    fn ack(
        &mut self,
        device: &str,
        conv: &str,
        seq: u64,
        records: bool,
    ) -> Result<(), ServerError> {
        // Losing an acknowledgement only means redelivery: no WAL flush.
        self.pg
            .transaction_unflushed(|pg| ack_in(pg, device, conv, seq, records))
    }

    fn welcome(&self, device: &str, conv: &str) -> Result<Option<(u64, Vec<u8>)>, ServerError> {
        self.pg
            .query_opt(
                "SELECT seq, message FROM welcomes WHERE device=$1 AND conv=$2",
                &[&device, &conv],
            )?
            .map(|r| Ok((u64_at(&r, 0)?, r.try_get(1)?)))
            .transpose()
    }

    fn welcomes_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        all(
            self.pg
                .query("SELECT device, seq FROM welcomes WHERE conv=$1", &[&conv])?,
            |r| Ok((r.try_get(0)?, u64_at(r, 1)?)),
        )
    }

    fn welcomes_for(&self, device: &str) -> Result<Vec<(String, u64, Vec<u8>)>, ServerError> {
        all(
            self.pg.query(
                "SELECT conv, seq, message FROM welcomes WHERE device=$1 ORDER BY conv",
                &[&device],
            )?,
            |r| Ok((r.try_get(0)?, u64_at(r, 1)?, r.try_get(2)?)),
        )
    }

    fn collect(&mut self, passes: &[Collectable]) -> Result<usize, ServerError> {
        self.pg.transaction_unflushed(|pg| {
            let mut deleted = 0;
            for p in passes {
                deleted += collect_in(pg, p, None)?;
            }
            Ok(deleted)
        })
    }

    fn records_progress(&self) -> Result<Vec<(String, u64)>, ServerError> {
        all(
            self.pg
                .query("SELECT conv, records_acked FROM conversations", &[])?,
            |r| Ok((r.try_get(0)?, u64_at(r, 1)?)),
        )
    }

    fn status(&self) -> Result<StoreStatus, ServerError> {
        let r = self.pg.query_one(
            "SELECT
               (SELECT COUNT(*) FROM users),
               (SELECT COUNT(*) FROM devices WHERE revoked_ms IS NULL),
               (SELECT COUNT(*) FROM devices WHERE revoked_ms IS NOT NULL),
               (SELECT COUNT(*) FROM conversations),
               (SELECT COUNT(*) FROM log),
               (SELECT COALESCE(SUM(last_seq - records_acked), 0)::BIGINT FROM conversations),
               (SELECT COUNT(*) FROM conversations WHERE suspended IS NOT NULL),
               (SELECT COUNT(*) FROM blocked_devices),
               (SELECT COUNT(*) FROM withheld)",
            &[],
        )?;
        Ok(StoreStatus {
            users: u64_at(&r, 0)?,
            active_devices: u64_at(&r, 1)?,
            revoked_devices: u64_at(&r, 2)?,
            conversations: u64_at(&r, 3)?,
            relay_entries: u64_at(&r, 4)?,
            capture_backlog: u64_at(&r, 5)?,
            suspended_conversations: u64_at(&r, 6)?,
            blocked_devices: u64_at(&r, 7)?,
            withheld_entries: u64_at(&r, 8)?,
        })
    }
}

/// See the SQLite twin, `sqlite::log::ack_in`.
pub(super) fn ack_in(
    pg: &Pg,
    device: &str,
    conv: &str,
    seq: u64,
    records: bool,
) -> Result<(), ServerError> {
    let seq = seq as i64;
    pg.execute(
        "INSERT INTO cursors (device, conv, acked) VALUES ($1, $2, $3)
         ON CONFLICT (device, conv) DO UPDATE SET acked = GREATEST(cursors.acked, excluded.acked)",
        &[&device, &conv, &seq],
    )?;
    pg.execute(
        "DELETE FROM welcomes WHERE device=$1 AND conv=$2 AND seq<=$3",
        &[&device, &conv, &seq],
    )?;
    if records {
        pg.execute(
            "UPDATE conversations SET records_acked = GREATEST(records_acked, $1) WHERE conv=$2",
            &[&seq, &conv],
        )?;
    }
    Ok(())
}

/// Delete up to `limit` (all, if none: `LIMIT NULL`) of what `p` allows,
/// oldest first; returns how many went.
fn collect_in(pg: &Pg, p: &Collectable, limit: Option<usize>) -> Result<usize, ServerError> {
    Ok(pg.execute(
        "DELETE FROM log WHERE conv=$1 AND seq IN (SELECT l.seq FROM log l WHERE l.conv=$1
           AND l.seq<=$3 AND (l.seq<=$2 OR l.server_time_ms<$4)
           AND NOT EXISTS (SELECT 1 FROM withheld w WHERE w.conv=$1 AND w.seq=l.seq)
           ORDER BY l.seq LIMIT $5)",
        &[
            &p.conv,
            &(p.delivered_upto as i64),
            &(p.records_acked as i64),
            &(p.expired_before_ms as i64),
            &limit.map(|l| l as i64),
        ],
    )? as usize)
}

/// See the SQLite twin, `sqlite::log::append_in`, for why each step is.
fn append_in(
    pg: &Pg,
    entry: &LogEntry,
    roster: Option<&RosterUpdate<'_>>,
    create: bool,
) -> Result<(), ServerError> {
    let seq = entry.seq as i64;
    if create {
        pg.execute(
            "INSERT INTO conversations (conv, snapshot, created_ms, last_seq) VALUES ($1, ''::BYTEA, $2, 0)",
            &[&entry.conv, &(entry.server_time_ms as i64)],
        )?;
    }
    pg.execute(
        "INSERT INTO log (conv, seq, sender_user, sender_device, server_time_ms, message, sha256, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &entry.conv,
            &seq,
            &entry.sender_user,
            &entry.sender_device,
            &(entry.server_time_ms as i64),
            &entry.message,
            &entry.sha256,
            &entry.signature,
        ],
    )?;
    if roster.is_none() {
        pg.execute(
            "UPDATE cursors SET acked=$1 WHERE device=$2 AND conv=$3 AND acked=$4",
            &[&seq, &entry.sender_device, &entry.conv, &(seq - 1)],
        )?;
    }
    if create {
        pg.execute(
            "INSERT INTO cursors (device, conv, acked) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            &[&entry.sender_device, &entry.conv],
        )?;
    }
    match roster {
        Some(r) => {
            pg.execute(
                "UPDATE conversations SET last_seq=$1, snapshot=$2, group_info=COALESCE($3, group_info)
                 WHERE conv=$4",
                &[&seq, &r.snapshot, &r.group_info, &entry.conv],
            )?;
            for (d, cursor) in r.added {
                pg.execute(
                    "INSERT INTO cursors (device, conv, acked) VALUES ($1, $2, $3)
                     ON CONFLICT (device, conv) DO UPDATE SET acked = excluded.acked",
                    &[d, &entry.conv, &(*cursor as i64)],
                )?;
                if let Some(welcome) = r.welcome {
                    pg.execute(
                        "INSERT INTO welcomes (device, conv, seq, message) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (device, conv) DO UPDATE SET seq = excluded.seq, message = excluded.message",
                        &[d, &entry.conv, &seq, &welcome],
                    )?;
                }
            }
        }
        None => {
            pg.execute(
                "UPDATE conversations SET last_seq=$1 WHERE conv=$2",
                &[&seq, &entry.conv],
            )?;
        }
    }
    Ok(())
}
