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

use rusqlite::Connection;

use crate::ServerError;

mod accounts;
mod api;
mod checkpoints;
mod keys;
mod log;
mod withheld;
pub use api::ServerStore;
pub use log::Collectable;
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
}

#[cfg(test)]
mod tests;
