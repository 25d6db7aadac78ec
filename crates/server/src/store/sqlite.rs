//! The server store in SQLite, the embedded default: one file, WAL with
//! `synchronous=FULL` (a commit is on disk before it returns); writes
//! whose loss only means redelivery (acknowledgements, garbage
//! collection) commit with `synchronous=NORMAL` instead, still atomic and
//! ordered. Group commit is one transaction per batch, so one fsync.

use std::path::Path;

use rusqlite::Connection;

use super::api::{self, *};
use super::*;
use crate::ServerError;

mod accounts;
mod blobs;
mod checkpoints;
mod keys;
mod log;
mod withheld;

pub struct SqliteStore {
    conn: Connection,
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
        // Enrolment codes kept as their SHA-256 only (`api::code_digest`):
        // those issued before are hashed in place (issue 12).
        keepwire_schema::Migration::Code(|tx| {
            let plain: Vec<String> = tx
                .prepare("SELECT code FROM enrolment_codes WHERE length(code) <> 64")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for code in plain {
                tx.execute(
                    "UPDATE enrolment_codes SET code=?1 WHERE code=?2",
                    rusqlite::params![api::code_digest(&code), code],
                )?;
            }
            Ok(())
        }),
        // Attachment blobs (issue 13).
        keepwire_schema::Migration::Sql(blobs::SCHEMA),
    ],
};

impl SqliteStore {
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
}

impl ServerStore for SqliteStore {
    fn reopen(&self) -> Option<Result<Box<dyn ServerStore>, ServerError>> {
        SqliteStore::reopen(self).map(|r| r.map(|s| Box::new(s) as Box<dyn ServerStore>))
    }

    fn describe(&self) -> String {
        keepwire_schema::describe(&self.conn)
    }

    fn free_space(&self) -> Option<u64> {
        let path = self.conn.path().filter(|p| !p.is_empty())?;
        free_bytes(Path::new(path).parent()?)
    }
}

/// Bytes an unprivileged writer may still use on the file system holding
/// `dir` (`statvfs`: blocks available to non-root, times their size).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written in full by
    // statvfs when it returns 0; it is read only then.
    let r = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
