//! The delivery server's durable state in SQLite (WAL, `synchronous=FULL`,
//! so a commit is on disk before the server acknowledges anything).
//!
//! What lives here: users and their records-notice acknowledgements,
//! enrolment codes, devices and their key packages, each conversation's
//! followed MLS roster (an external-group snapshot), the conversation logs,
//! pending Welcomes, and every device's and the records service's
//! acknowledgement cursor. No group secret is ever stored here: the server
//! cannot have one.

use std::path::Path;

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};

use crate::ServerError;

mod api;
mod withheld;
pub use api::ServerStore;
pub use withheld::{AdminAction, BlockedDevice, SuspendedConversation, WithheldEntry};

pub const ENROLMENT_CODE_TTL_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceRow {
    pub device_id: String,
    pub user: String,
    pub signature_key: Vec<u8>,
    pub revoked: bool,
    /// Why the device is blocked (the records service could not capture
    /// something it sent), if it is.
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UserRow {
    pub name: String,
    pub display: String,
    pub category: String,
    pub notice_acknowledged_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct LogEntry {
    pub conv: String,
    pub seq: u64,
    pub sender_user: String,
    pub sender_device: String,
    pub server_time_ms: u64,
    pub message: Vec<u8>,
    pub sha256: Vec<u8>,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub conv: String,
    pub snapshot: Vec<u8>,
    pub last_seq: u64,
    pub records_acked: u64,
    /// Why the conversation is suspended, if it is.
    pub suspended: Option<String>,
}

/// How long the server remembers a key package it handed out (a member
/// adds what it claimed within moments; a device's key packages last far
/// less than this).
pub const HANDED_OUT_TTL_MS: u64 = 90 * 24 * 3600 * 1000;

/// The most one-time key packages the server keeps for one device.
pub const MAX_KEY_PACKAGES: usize = 1000;

pub struct Store {
    conn: Connection,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStatus {
    pub users: u64,
    pub active_devices: u64,
    pub revoked_devices: u64,
    pub conversations: u64,
    /// Log entries still held for delivery or capture.
    pub relay_entries: u64,
    /// Entries the records service has not acknowledged yet.
    pub capture_backlog: u64,
    /// Conversations suspended after a capture failure.
    pub suspended_conversations: u64,
    /// Devices blocked after a capture failure.
    pub blocked_devices: u64,
    /// Entries withheld from every member (never delivered).
    pub withheld_entries: u64,
}

/// A key that signs, or signed, receipts.
pub struct ReceiptKey {
    pub key: Vec<u8>,
    pub from_ms: u64,
    /// When it stopped signing (None: the current key).
    pub until_ms: Option<u64>,
}

/// One entry of a group commit.
pub struct Append<'a> {
    pub entry: &'a LogEntry,
    pub roster: Option<&'a RosterUpdate<'a>>,
    /// The entry creates its conversation.
    pub create: bool,
}

/// What an accepted commit changes besides the log.
pub struct RosterUpdate<'a> {
    /// The followed group's new snapshot.
    pub snapshot: &'a [u8],
    /// The new epoch's GroupInfo, for external joins (none for a
    /// proposal, which changes no epoch).
    pub group_info: Option<&'a [u8]>,
    /// Devices the commit adds, each with the cursor it starts from.
    pub added: &'a [(String, u64)],
    /// The Welcome for `added` (none for an external join).
    pub welcome: Option<&'a [u8]>,
}

/// The server store's schema, one migration per step it took; append,
/// never edit (see `keepwire_schema`). Version 1 is keepwire 0.1's
/// tables; every step is idempotent over the unversioned layouts that
/// shipped before versions existed.
pub static SCHEMA: keepwire_schema::Schema = keepwire_schema::Schema {
    name: "server store",
    // "KWSV"
    application_id: 0x4b57_5356,
    marker_table: "log",
    migrations: &[
        keepwire_schema::Migration::Code(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, display TEXT NOT NULL, category TEXT NOT NULL,
                created_ms INTEGER NOT NULL, notice_acked_ms INTEGER);
             CREATE TABLE IF NOT EXISTS enrolment_codes (code TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
                expires_ms INTEGER NOT NULL, used_ms INTEGER);
             CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
                signature_key BLOB NOT NULL UNIQUE, created_ms INTEGER NOT NULL, revoked_ms INTEGER);
             CREATE TABLE IF NOT EXISTS key_packages (id INTEGER PRIMARY KEY, device TEXT NOT NULL REFERENCES devices(id),
                kp BLOB NOT NULL, last_resort INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS key_packages_device ON key_packages (device, last_resort);
             CREATE TABLE IF NOT EXISTS conversations (conv TEXT PRIMARY KEY, snapshot BLOB NOT NULL, created_ms INTEGER NOT NULL,
                last_seq INTEGER NOT NULL, records_acked INTEGER NOT NULL DEFAULT 0, group_info BLOB,
                suspended TEXT);
             CREATE TABLE IF NOT EXISTS log (conv TEXT NOT NULL, seq INTEGER NOT NULL, sender_user TEXT NOT NULL,
                sender_device TEXT NOT NULL, server_time_ms INTEGER NOT NULL, message BLOB NOT NULL, sha256 BLOB NOT NULL,
                signature BLOB NOT NULL, PRIMARY KEY (conv, seq));
             CREATE TABLE IF NOT EXISTS welcomes (device TEXT NOT NULL, conv TEXT NOT NULL, seq INTEGER NOT NULL,
                message BLOB NOT NULL, PRIMARY KEY (device, conv));
             CREATE TABLE IF NOT EXISTS cursors (device TEXT NOT NULL, conv TEXT NOT NULL, acked INTEGER NOT NULL,
                PRIMARY KEY (device, conv));
             CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL, from_size INTEGER,
                path BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS receipt_keys (key BLOB PRIMARY KEY, from_ms INTEGER NOT NULL, until_ms INTEGER);",
            )?;
            // Columns that early development layouts lacked.
            keepwire_schema::add_column_if_missing(tx, "conversations", "group_info", "BLOB")?;
            keepwire_schema::add_column_if_missing(tx, "conversations", "suspended", "TEXT")
        }),
        // Capture failures: withheld entries, blocked devices, suspensions,
        // administrators' decisions (issue 10).
        keepwire_schema::Migration::Sql(withheld::SCHEMA),
        // Key packages handed out, by reference (issue 10).
        keepwire_schema::Migration::Sql(
            "CREATE TABLE IF NOT EXISTS handed_out (ref BLOB PRIMARY KEY, device TEXT NOT NULL, at_ms INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS handed_out_at ON handed_out (at_ms);",
        ),
    ],
};

const POLICY_MAX_TIMER: &str = "policy.max_timer_secs";
const POLICY_GUESTS: &str = "policy.guests_allowed";

impl Store {
    /// A second connection to the same database file (none for an
    /// in-memory one), for work done beside the core's (see
    /// `service::check`).
    pub fn reopen(&self) -> Option<Result<Self, ServerError>> {
        match self.conn.path() {
            Some(p) if !p.is_empty() => Some(Self::open(Path::new(p))),
            _ => None,
        }
    }

    pub fn open(path: &Path) -> Result<Self, ServerError> {
        let mut conn = Connection::open(path)?;
        // Every statement is prepared once per connection (parsing was a
        // tenth of the server's CPU under load); room for all of them.
        conn.set_prepared_statement_cache_capacity(128);
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
        )?;
        keepwire_schema::migrate(&mut conn, &SCHEMA)?;
        Ok(Self { conn })
    }

    pub fn meta(&self, k: &str) -> Result<Option<String>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k=?1")?
            .query_row(params![k], |r| r.get(0))
            .optional()?)
    }

    /// The agency's messaging policy. Unset settings take their defaults
    /// (a week's longest timer, guests allowed); an unreadable one is an
    /// error, never a default (a failing read must not let guests in).
    pub fn policy(&self) -> Result<keepwire_protocol::Policy, ServerError> {
        let max_timer_secs = match self.meta(POLICY_MAX_TIMER)? {
            None => 7 * 24 * 3600,
            Some(v) => v.parse().map_err(|_| {
                ServerError::Invalid(format!(
                    "policy: {POLICY_MAX_TIMER} is {v:?}, not a number of seconds"
                ))
            })?,
        };
        let guests_allowed = match self.meta(POLICY_GUESTS)?.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(ServerError::Invalid(format!(
                    "policy: {POLICY_GUESTS} is {v:?}, not true or false"
                )))
            }
        };
        Ok(keepwire_protocol::Policy {
            max_timer_secs,
            guests_allowed,
        })
    }

    /// Change the messaging policy (each setting left as it is when None).
    pub fn set_policy(
        &self,
        max_timer_secs: Option<u64>,
        guests_allowed: Option<bool>,
    ) -> Result<(), ServerError> {
        if let Some(t) = max_timer_secs {
            self.set_meta(POLICY_MAX_TIMER, &t.to_string())?;
        }
        if let Some(g) = guests_allowed {
            self.set_meta(POLICY_GUESTS, &g.to_string())?;
        }
        Ok(())
    }

    pub fn set_meta(&self, k: &str, v: &str) -> Result<(), ServerError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")?
            .execute(params![k, v])?;
        Ok(())
    }

    pub fn add_user(
        &self,
        name: &str,
        display: &str,
        category: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        insert_user(&self.conn, name, display, category, now_ms)
    }

    /// Provision many users at once, each with a fresh enrolment code, in
    /// one transaction (one durable write instead of two per user): for
    /// bulk onboarding and the load generator. All or none are added.
    pub fn add_users_with_codes(
        &mut self,
        names: &[String],
        category: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, ServerError> {
        let tx = self.conn.transaction()?;
        let mut codes = Vec::with_capacity(names.len());
        for name in names {
            insert_user(&tx, name, name, category, now_ms)?;
            codes.push(insert_code(&tx, name, now_ms)?);
        }
        tx.commit()?;
        Ok(codes)
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRow>, ServerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT name, display, category, notice_acked_ms FROM users WHERE name=?1",
            )?
            .query_row(params![name], user_row)
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<UserRow>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, display, category, notice_acked_ms FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A fresh one-time enrolment code for `user`, valid for 24 hours.
    pub fn new_enrolment_code(&self, user: &str, now_ms: u64) -> Result<String, ServerError> {
        if self.user(user)?.is_none() {
            return Err(ServerError::Invalid(format!("no user named {user}")));
        }
        insert_code(&self.conn, user, now_ms)
    }

    /// Redeem a code: creates the device and burns the code, atomically.
    pub fn redeem_code(
        &mut self,
        code: &str,
        signature_key: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRow, ServerError> {
        let tx = self.conn.transaction()?;
        let row: Option<(String, i64, Option<i64>)> = tx
            .prepare_cached("SELECT user, expires_ms, used_ms FROM enrolment_codes WHERE code=?1")?
            .query_row(params![code], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let user = match row {
            None => return Err(ServerError::Invalid("enrolment code is not known".into())),
            Some((_, _, Some(_))) => {
                return Err(ServerError::Invalid(
                    "enrolment code was already used".into(),
                ))
            }
            Some((_, expires, None)) if (expires as u64) < now_ms => {
                return Err(ServerError::Invalid(
                    "enrolment code has expired (codes are valid for 24 hours)".into(),
                ))
            }
            Some((user, _, None)) => user,
        };
        let mut id = [0u8; 8];
        rand::thread_rng().fill(&mut id);
        let device_id = hex::encode(id);
        tx.prepare_cached("UPDATE enrolment_codes SET used_ms=?1 WHERE code=?2")?
            .execute(params![now_ms as i64, code])?;
        let n = tx.prepare_cached("INSERT OR IGNORE INTO devices (id, user, signature_key, created_ms) VALUES (?1, ?2, ?3, ?4)")?.execute(params![device_id, user, signature_key, now_ms as i64],
        )?;
        if n == 0 {
            return Err(ServerError::Invalid(
                "this signature key is already enrolled".into(),
            ));
        }
        tx.commit()?;
        Ok(DeviceRow {
            device_id,
            user,
            signature_key: signature_key.to_vec(),
            revoked: false,
            blocked: None,
        })
    }

    pub fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT d.id, d.user, d.signature_key, d.revoked_ms, b.reason FROM devices d
                 LEFT JOIN blocked_devices b ON b.device = d.id WHERE d.id=?1",
            )?
            .query_row(params![id], device_row)
            .optional()?)
    }

    pub fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, ServerError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.id, d.user, d.signature_key, d.revoked_ms, b.reason FROM devices d
             LEFT JOIN blocked_devices b ON b.device = d.id
             WHERE ?1 IS NULL OR d.user=?1 ORDER BY d.user, d.created_ms",
        )?;
        let rows = stmt.query_map(params![user], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, ServerError> {
        Ok(self
            .conn
            .prepare_cached("UPDATE devices SET revoked_ms=?1 WHERE id=?2 AND revoked_ms IS NULL")?
            .execute(params![now_ms as i64, id])?
            > 0)
    }

    pub fn acknowledge_notice(&self, user: &str, now_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached(
                "UPDATE users SET notice_acked_ms=?1 WHERE name=?2 AND notice_acked_ms IS NULL",
            )?
            .execute(params![now_ms as i64, user])?;
        Ok(())
    }

    /// Add to `device`'s pool of key packages (at most [`MAX_KEY_PACKAGES`]
    /// are kept, the newest) and replace its last-resort one if given.
    pub fn add_key_packages(
        &mut self,
        device: &str,
        kps: &[Vec<u8>],
        last_resort: Option<&[u8]>,
    ) -> Result<(), ServerError> {
        let tx = self.conn.transaction()?;
        for kp in kps {
            tx.prepare_cached(
                "INSERT INTO key_packages (device, kp, last_resort) VALUES (?1, ?2, 0)",
            )?
            .execute(params![device, kp])?;
        }
        // A device that uploads on every connection (the records service
        // does) must not grow its pool without bound: keep the newest.
        tx.prepare_cached(
            "DELETE FROM key_packages WHERE device=?1 AND last_resort=0 AND id NOT IN
               (SELECT id FROM key_packages WHERE device=?1 AND last_resort=0 ORDER BY id DESC LIMIT ?2)",
        )?
        .execute(params![device, MAX_KEY_PACKAGES as i64])?;
        if let Some(lr) = last_resort {
            tx.prepare_cached("DELETE FROM key_packages WHERE device=?1 AND last_resort=1")?
                .execute(params![device])?;
            tx.prepare_cached(
                "INSERT INTO key_packages (device, kp, last_resort) VALUES (?1, ?2, 1)",
            )?
            .execute(params![device, lr])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Take one key package of `device`: from the pool if any is left,
    /// otherwise its last-resort one (which stays).
    pub fn claim_key_package(&self, device: &str) -> Result<Option<Vec<u8>>, ServerError> {
        let row: Option<(i64, Vec<u8>, bool)> = self
            .conn
            .prepare_cached("SELECT id, kp, last_resort FROM key_packages WHERE device=?1 ORDER BY last_resort, id LIMIT 1")?.query_row(params![device],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            None => None,
            Some((id, kp, last_resort)) => {
                if !last_resort {
                    self.conn
                        .prepare_cached("DELETE FROM key_packages WHERE id=?1")?
                        .execute(params![id])?;
                }
                Some(kp)
            }
        })
    }

    /// Remember that the key package with reference `kp_ref` was handed
    /// out for `device`: only such key packages may be added to a
    /// conversation. References older than [`HANDED_OUT_TTL_MS`] go.
    pub fn hand_out(&self, device: &str, kp_ref: &[u8], now_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO handed_out (ref, device, at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![kp_ref, device, now_ms as i64])?;
        self.conn
            .prepare_cached("DELETE FROM handed_out WHERE at_ms < ?1")?
            .execute(params![now_ms.saturating_sub(HANDED_OUT_TTL_MS) as i64])?;
        Ok(())
    }

    pub fn handed_out(&self, device: &str, kp_ref: &[u8]) -> Result<bool, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM handed_out WHERE ref=?1 AND device=?2")?
            .query_row(params![kp_ref, device], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn key_package_count(&self, device: &str) -> Result<u64, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM key_packages WHERE device=?1 AND last_resort=0")?
            .query_row(params![device], |r| r.get::<_, i64>(0))? as u64)
    }

    /// How far the records service has captured each conversation
    /// (conversation, highest sequence number acknowledged as archived).
    pub fn records_progress(&self) -> Result<Vec<(String, u64)>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT conv, records_acked FROM conversations")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn conversations(&self) -> Result<Vec<ConversationRow>, ServerError> {
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

    /// Append one entry to its conversation's log, together with what a
    /// commit changes (roster snapshot, GroupInfo, new members' cursors and
    /// Welcome), in one durable transaction.
    pub fn append(
        &mut self,
        entry: &LogEntry,
        roster: Option<&RosterUpdate<'_>>,
        create: bool,
    ) -> Result<(), ServerError> {
        self.append_batch(&[Append {
            entry,
            roster,
            create,
        }])
    }

    /// Append several entries in one transaction: one fsync for all of
    /// them (group commit). All or nothing.
    pub fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<(), ServerError> {
        self.append_collecting(batch, &mut Default::default(), 0)
            .map(|_| ())
    }

    /// Append `batch` and, in the same transaction (the same fsync),
    /// delete up to `limit` entries of relay garbage from `garbage`,
    /// dropping the passes that are done. The log writer runs garbage
    /// collection this way: a little with each group commit, never holding
    /// the server's lock nor the database's write lock for a long delete.
    /// Returns how many entries were deleted.
    pub fn append_collecting(
        &mut self,
        batch: &[Append<'_>],
        garbage: &mut std::collections::VecDeque<Collectable>,
        limit: usize,
    ) -> Result<usize, ServerError> {
        let tx = self.conn.transaction()?;
        for a in batch {
            append_in(&tx, a.entry, a.roster, a.create)?;
        }
        let mut deleted = 0;
        // Passes with nothing to delete still cost a lookup each (thousands
        // of conversations, most of them quiet): a few per commit.
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

    /// Counts an admin checks: what is on the relay, how far capture lags.
    pub fn status(&self) -> Result<StoreStatus, ServerError> {
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

    /// List a receipt-signing public key (idempotent).
    pub fn record_receipt_key(&self, key: &[u8], from_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO receipt_keys (key, from_ms) VALUES (?1, ?2)")?
            .execute(params![key, from_ms as i64])?;
        Ok(())
    }

    pub fn retire_receipt_key(&self, key: &[u8], until_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached(
                "UPDATE receipt_keys SET until_ms=?1 WHERE key=?2 AND until_ms IS NULL",
            )?
            .execute(params![until_ms as i64, key])?;
        Ok(())
    }

    /// Every receipt key the server has used, oldest first.
    pub fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, ServerError> {
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

    /// Keep a checkpoint the records service published, with its proof.
    pub fn add_checkpoint(
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

    /// Published checkpoints after `since_size`, oldest first.
    /// Up to 256 checkpoints after `since_size`, oldest first: a device
    /// far behind walks the chain a page at a time, pinning as it goes.
    pub fn checkpoints_after(
        &self,
        since_size: u64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        self.query_checkpoints(
            "SELECT note, from_size, path FROM checkpoints WHERE size > ?1 ORDER BY size LIMIT 256",
            since_size,
        )
    }

    /// The latest published checkpoint (one indexed read, however long the
    /// history).
    pub fn latest_checkpoint(
        &self,
    ) -> Result<Option<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        Ok(self
            .query_checkpoints(
                "SELECT note, from_size, path FROM checkpoints WHERE size >= ?1 ORDER BY size DESC LIMIT 1",
                0,
            )?
            .pop())
    }

    fn query_checkpoints(
        &self,
        sql: &str,
        size: u64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![size as i64], |r| {
            let path: Vec<u8> = r.get(2)?;
            Ok(keepwire_protocol::PublishedCheckpoint {
                checkpoint: r.get(0)?,
                link: keepwire_protocol::CheckpointProof {
                    from_size: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                    consistency_path: path.chunks(32).map(<[u8]>::to_vec).collect(),
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest GroupInfo of `conv` (for external joins).
    pub fn group_info(&self, conv: &str) -> Result<Option<Vec<u8>>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT group_info FROM conversations WHERE conv=?1")?
            .query_row(params![conv], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()?
            .flatten())
    }

    pub fn revoked_devices(&self) -> Result<Vec<String>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM devices WHERE revoked_ms IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn log_after(&self, conv: &str, after: u64) -> Result<Vec<LogEntry>, ServerError> {
        self.log_range(conv, after + 1, u64::MAX >> 1)
    }

    /// Entries `from..=to` of `conv` still on the relay, in order.
    pub fn log_range(&self, conv: &str, from: u64, to: u64) -> Result<Vec<LogEntry>, ServerError> {
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

    /// (seq, sender device) of the entries of `conv` after `after`, without
    /// their messages.
    pub fn log_senders(&self, conv: &str, after: u64) -> Result<Vec<(u64, String)>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, sender_device FROM log WHERE conv=?1 AND seq>?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![conv, after as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every device's cursor in `conv`.
    pub fn cursors_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device, acked FROM cursors WHERE conv=?1")?;
        let rows = stmt.query_map(params![conv], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The Welcome waiting for `device` in `conv`: (seq of the commit, message).
    pub fn welcome(&self, device: &str, conv: &str) -> Result<Option<(u64, Vec<u8>)>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq, message FROM welcomes WHERE device=?1 AND conv=?2")?
            .query_row(params![device, conv], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()?)
    }

    /// (device, seq) of every Welcome waiting in `conv`.
    pub fn welcomes_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device, seq FROM welcomes WHERE conv=?1")?;
        let rows = stmt.query_map(params![conv], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn log_len(&self) -> Result<u64, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM log")?
            .query_row([], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn welcomes_for(&self, device: &str) -> Result<Vec<(String, u64, Vec<u8>)>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT conv, seq, message FROM welcomes WHERE device=?1 ORDER BY conv",
        )?;
        let rows = stmt.query_map(params![device], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn cursor(&self, device: &str, conv: &str) -> Result<Option<u64>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT acked FROM cursors WHERE device=?1 AND conv=?2")?
            .query_row(params![device, conv], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|v| v as u64))
    }

    /// Record a device's acknowledgement (never moves a cursor backwards)
    /// and drop its Welcome once it has moved past it.
    pub fn ack(
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

    /// Delete, in one transaction without waiting for the disk, everything
    /// `passes` allows (a server without a log writer; see
    /// [`Store::append_batch`] for the usual way). Returns how many went.
    pub fn collect(&mut self, passes: &[Collectable]) -> Result<usize, ServerError> {
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

/// Move `device`'s cursor in `conv` to `seq` (never backwards), drop its
/// Welcome once past it, and for the records service move the
/// conversation's archived mark.
fn ack_in(
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

/// Conversations relay garbage collection looks at per group commit.
const GC_PASSES_PER_COMMIT: usize = 32;

/// What relay garbage collection may delete in one conversation (the
/// caller, [`crate::Core::collect_garbage`], has checked): entries up to
/// `delivered_upto` (archived by the records service and acknowledged by
/// every member device), and entries up to `records_acked` older than
/// `expired_before_ms` (the relay TTL). Both bounds only ever grow, so a
/// pass stays true however late it is carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct Collectable {
    pub conv: String,
    pub delivered_upto: u64,
    pub records_acked: u64,
    pub expired_before_ms: u64,
}

/// Delete up to `limit` (all, if none) of what `p` allows, oldest first;
/// returns how many went.
fn collect_in(
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

fn append_in(
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

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        display: r.get(1)?,
        category: r.get(2)?,
        notice_acknowledged_at_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
    })
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        device_id: r.get(0)?,
        user: r.get(1)?,
        signature_key: r.get(2)?,
        revoked: r.get::<_, Option<i64>>(3)?.is_some(),
        blocked: r.get(4)?,
    })
}

fn insert_user(
    conn: &Connection,
    name: &str,
    display: &str,
    category: &str,
    now_ms: u64,
) -> Result<(), ServerError> {
    if name.is_empty()
        || name.contains('/')
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ServerError::Invalid(format!(
            "user name {name:?} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"
        )));
    }
    let n = conn.prepare_cached("INSERT OR IGNORE INTO users (name, display, category, created_ms) VALUES (?1, ?2, ?3, ?4)")?.execute(params![name, display, category, now_ms as i64],
    )?;
    if n == 0 {
        return Err(ServerError::Invalid(format!("user {name} already exists")));
    }
    Ok(())
}

/// A one-time enrolment code for an existing `user`, valid for 24 hours.
fn insert_code(conn: &Connection, user: &str, now_ms: u64) -> Result<String, ServerError> {
    // 16 characters from a 32-symbol alphabet without look-alikes: 80 bits.
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    let raw: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let code = format!(
        "{}-{}-{}-{}",
        &raw[0..4],
        &raw[4..8],
        &raw[8..12],
        &raw[12..16]
    );
    conn.prepare_cached(
        "INSERT INTO enrolment_codes (code, user, expires_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![code, user, (now_ms + ENROLMENT_CODE_TTL_MS) as i64])?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conv: &str, seq: u64) -> LogEntry {
        LogEntry {
            conv: conv.into(),
            seq,
            sender_user: "alice".into(),
            sender_device: "d1".into(),
            server_time_ms: 1,
            message: vec![seq as u8],
            sha256: vec![0; 32],
            signature: vec![0; 64],
        }
    }

    #[test]
    fn the_policy_has_defaults_and_an_unreadable_setting_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let p = store.policy().unwrap();
        assert_eq!((p.max_timer_secs, p.guests_allowed), (7 * 24 * 3600, true));
        store.set_policy(Some(3600), Some(false)).unwrap();
        let p = store.policy().unwrap();
        assert_eq!((p.max_timer_secs, p.guests_allowed), (3600, false));
        // Never a default for what cannot be read: no guests let in by a
        // damaged setting.
        store.set_meta(POLICY_GUESTS, "nope").unwrap();
        assert!(store.policy().is_err());
    }

    #[test]
    fn a_device_pool_of_key_packages_is_bounded_keeping_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let codes = store
            .add_users_with_codes(&["r".to_string()], "staff", 1)
            .unwrap();
        let d = store.redeem_code(&codes[0], b"key", 2).unwrap();
        let batch = |tag: u8| -> Vec<Vec<u8>> {
            (0..600u16)
                .map(|i| [vec![tag], i.to_be_bytes().to_vec()].concat())
                .collect()
        };
        store
            .add_key_packages(&d.device_id, &batch(1), Some(b"lr"))
            .unwrap();
        store
            .add_key_packages(&d.device_id, &batch(2), None)
            .unwrap();
        assert_eq!(
            store.key_package_count(&d.device_id).unwrap(),
            MAX_KEY_PACKAGES as u64
        );
        // The oldest 200 of the first upload went; claims start at the oldest kept.
        let first = store.claim_key_package(&d.device_id).unwrap().unwrap();
        assert_eq!(first, [vec![1u8], 200u16.to_be_bytes().to_vec()].concat());
    }

    #[test]
    fn bulk_provisioning_is_all_or_nothing_and_codes_redeem() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let bad = ["ok-1".to_string(), "not ok/2".to_string()];
        let e = store.add_users_with_codes(&bad, "staff", 1).unwrap_err();
        assert!(e.to_string().contains("not ok/2"), "{e}");
        assert!(store.user("ok-1").unwrap().is_none(), "nothing was added");

        let names = ["u1".to_string(), "u2".to_string()];
        let codes = store.add_users_with_codes(&names, "staff", 1).unwrap();
        assert_eq!(codes.len(), 2);
        assert_ne!(codes[0], codes[1]);
        let d = store.redeem_code(&codes[1], b"key-2", 2).unwrap();
        assert_eq!(d.user, "u2");
        assert!(
            store.add_users_with_codes(&names[..1], "staff", 3).is_err(),
            "u1 exists"
        );
    }

    #[test]
    fn a_group_commit_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let update = RosterUpdate {
            snapshot: b"s",
            group_info: Some(b"g"),
            added: &[("d2".to_string(), 1)],
            welcome: Some(b"w"),
        };
        let (e1, e2, e3) = (entry("c", 1), entry("c", 2), entry("c", 3));
        store
            .append_batch(&[
                Append {
                    entry: &e1,
                    roster: Some(&update),
                    create: true,
                },
                Append {
                    entry: &e2,
                    roster: None,
                    create: false,
                },
            ])
            .unwrap();
        assert_eq!(store.log_after("c", 0).unwrap().len(), 2);
        assert_eq!(store.cursor("d2", "c").unwrap(), Some(1));
        assert_eq!(store.group_info("c").unwrap().as_deref(), Some(&b"g"[..]));

        // seq 2 again in the middle of a batch: the whole batch is refused,
        // seq 3 included, and the log is as before.
        let dup = entry("c", 2);
        assert!(store
            .append_batch(&[
                Append {
                    entry: &e3,
                    roster: None,
                    create: false
                },
                Append {
                    entry: &dup,
                    roster: None,
                    create: false
                },
            ])
            .is_err());
        let log = store.log_after("c", 0).unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(store.conversations().unwrap()[0].last_seq, 2);
    }

    #[test]
    fn garbage_goes_a_bounded_chunk_per_commit_never_past_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let seqs = |store: &Store, conv: &str| -> Vec<u64> {
            store
                .log_after(conv, 0)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        // Two conversations of 10 entries; in "b", entries 1-4 are old.
        for conv in ["a", "b"] {
            let entries: Vec<LogEntry> = (1..=10)
                .map(|seq| LogEntry {
                    server_time_ms: if conv == "b" && seq <= 4 { 10 } else { 1_000 },
                    ..entry(conv, seq)
                })
                .collect();
            let appends: Vec<Append<'_>> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| Append {
                    entry: e,
                    roster: None,
                    create: i == 0,
                })
                .collect();
            store.append_batch(&appends).unwrap();
        }
        // "a": everyone has 1-6 and the records service up to 8.
        // "b": a member is at 0, the records service at 6, 1-4 expired.
        let mut garbage: std::collections::VecDeque<Collectable> = [
            Collectable {
                conv: "a".into(),
                delivered_upto: 6,
                records_acked: 8,
                expired_before_ms: 500,
            },
            Collectable {
                conv: "b".into(),
                delivered_upto: 0,
                records_acked: 6,
                expired_before_ms: 500,
            },
        ]
        .into();
        let e11 = entry("a", 11);
        let one = [Append {
            entry: &e11,
            roster: None,
            create: false,
        }];
        // A commit carries at most `limit` deletions, oldest first.
        assert_eq!(store.append_collecting(&one, &mut garbage, 4).unwrap(), 4);
        assert_eq!(seqs(&store, "a"), [5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(garbage.len(), 2);
        // The rest of "a" (two), then "b"'s expired entries.
        assert_eq!(store.append_collecting(&[], &mut garbage, 100).unwrap(), 6);
        assert_eq!(
            seqs(&store, "a"),
            [7, 8, 9, 10, 11],
            "nothing past delivered_upto"
        );
        assert_eq!(seqs(&store, "b"), [5, 6, 7, 8, 9, 10], "only what expired");
        assert!(garbage.is_empty());
        // A pass carried out late deletes nothing it should not.
        let mut late: std::collections::VecDeque<Collectable> = [Collectable {
            conv: "b".into(),
            delivered_upto: 0,
            records_acked: 6,
            expired_before_ms: 500,
        }]
        .into();
        assert_eq!(store.append_collecting(&[], &mut late, 100).unwrap(), 0);
        assert_eq!(seqs(&store, "b"), [5, 6, 7, 8, 9, 10]);
    }
}
