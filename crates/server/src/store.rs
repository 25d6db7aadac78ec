//! The delivery server's durable state, behind the traits of [`api`]
//! (see there for what every backend guarantees), in SQLite
//! ([`SqliteStore`], the embedded default: WAL, `synchronous=FULL`, so a
//! commit is on disk before the server acknowledges anything) or
//! PostgreSQL ([`PgStore`], for deployments that outgrow one machine).
//!
//! What lives here: users and their records-notice acknowledgements,
//! enrolment codes, devices and their key packages, each conversation's
//! followed MLS roster (an external-group snapshot), the conversation logs,
//! pending Welcomes, and every device's and the records service's
//! acknowledgement cursor. No group secret is ever stored here: the server
//! cannot have one.

pub mod api;
pub mod blobs;
mod pg;
mod sqlite;
mod withheld;
pub use api::{
    AccountStore, CaptureFailureStore, CheckpointStore, KeyPackageStore, LogStore, ServerStore,
};
pub use blobs::{AttachmentPolicy, BlobRow, BlobStore};
pub use pg::PgStore;
pub use sqlite::SqliteStore;
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

/// How long the server remembers a key package it handed out (a member
/// adds what it claimed within moments; a device's key packages last far
/// less than this).
pub const HANDED_OUT_TTL_MS: u64 = 90 * 24 * 3600 * 1000;

/// The most one-time key packages the server keeps for one device.
pub const MAX_KEY_PACKAGES: usize = 1000;

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
    /// The attachment blobs the entry's message carries, bound to it in
    /// the same transaction ([`blobs`]).
    pub blobs: &'a [keepwire_protocol::attachment::BlobId],
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

#[cfg(test)]
mod tests;
