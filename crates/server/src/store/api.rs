//! The server's storage interface ([`ServerStore`]) and its SQLite
//! implementation by [`Store`] (delegating to its inherent methods).

use super::withheld::{AdminAction, BlockedDevice, SuspendedConversation, WithheldEntry};
use super::{
    Append, Collectable, ConversationRow, DeviceRow, LogEntry, ReceiptKey, RosterUpdate, Store,
    StoreStatus, UserRow,
};
use crate::ServerError;

/// Everything the delivery server keeps, behind one interface with a
/// SQLite implementation ([`Store`], the embedded default) and room for
/// others (PostgreSQL, for several nodes). No backend type crosses it:
/// rows are plain data and errors carry the backend's message. Methods
/// are synchronous — the core calls them under its lock, as SQLite wants
/// — so a networked backend answers from a thread of its own.
pub trait ServerStore: Send {
    /// Another handle on the same store, for work beside the core (the
    /// off-lock checks of handshakes); None where there cannot be one.
    fn reopen(&self) -> Option<Result<Box<dyn ServerStore>, ServerError>>;

    // Accounts: users, enrolment codes, devices, the records notice, policy and settings.

    fn meta(&self, k: &str) -> Result<Option<String>, ServerError>;

    fn set_meta(&self, k: &str, v: &str) -> Result<(), ServerError>;

    /// The agency's messaging policy. Unset settings take their defaults
    /// (a week's longest timer, guests allowed); an unreadable one is an
    /// error, never a default (a failing read must not let guests in).
    fn policy(&self) -> Result<keepwire_protocol::Policy, ServerError>;

    /// Change the messaging policy (each setting left as it is when None).
    fn set_policy(
        &self,
        max_timer_secs: Option<u64>,
        guests_allowed: Option<bool>,
    ) -> Result<(), ServerError>;

    fn add_user(
        &self,
        name: &str,
        display: &str,
        category: &str,
        now_ms: u64,
    ) -> Result<(), ServerError>;

    /// Provision many users at once, each with a fresh enrolment code, in
    /// one transaction (one durable write instead of two per user): for
    /// bulk onboarding and the load generator. All or none are added.
    fn add_users_with_codes(
        &mut self,
        names: &[String],
        category: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, ServerError>;

    fn user(&self, name: &str) -> Result<Option<UserRow>, ServerError>;

    fn users(&self) -> Result<Vec<UserRow>, ServerError>;

    /// A fresh one-time enrolment code for `user`, valid for 24 hours.
    fn new_enrolment_code(&self, user: &str, now_ms: u64) -> Result<String, ServerError>;

    /// Redeem a code: creates the device and burns the code, atomically.
    fn redeem_code(
        &mut self,
        code: &str,
        signature_key: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRow, ServerError>;

    fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError>;

    fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, ServerError>;

    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, ServerError>;

    fn revoked_devices(&self) -> Result<Vec<String>, ServerError>;

    fn acknowledge_notice(&self, user: &str, now_ms: u64) -> Result<(), ServerError>;

    // Key packages: uploaded, claimed, and remembered once handed out.

    /// Add to `device`'s pool of key packages (at most `MAX_KEY_PACKAGES`
    /// are kept, the newest) and replace its last-resort one if given.
    fn add_key_packages(
        &mut self,
        device: &str,
        kps: &[Vec<u8>],
        last_resort: Option<&[u8]>,
    ) -> Result<(), ServerError>;

    /// Take one key package of `device`: from the pool if any is left,
    /// otherwise its last-resort one (which stays).
    fn claim_key_package(&self, device: &str) -> Result<Option<Vec<u8>>, ServerError>;

    /// Remember that the key package with reference `kp_ref` was handed
    /// out for `device`: only such key packages may be added to a
    /// conversation. References older than `HANDED_OUT_TTL_MS` go.
    fn hand_out(&self, device: &str, kp_ref: &[u8], now_ms: u64) -> Result<(), ServerError>;

    fn handed_out(&self, device: &str, kp_ref: &[u8]) -> Result<bool, ServerError>;

    fn key_package_count(&self, device: &str) -> Result<u64, ServerError>;

    // The log: conversations, appends (group commit), cursors, Welcomes, relay garbage.

    fn conversations(&self) -> Result<Vec<ConversationRow>, ServerError>;

    /// Append one entry to its conversation's log, together with what a
    /// commit changes (roster snapshot, GroupInfo, new members' cursors and
    /// Welcome), in one durable transaction.
    fn append(
        &mut self,
        entry: &LogEntry,
        roster: Option<&RosterUpdate<'_>>,
        create: bool,
    ) -> Result<(), ServerError>;

    /// Append several entries in one transaction: one fsync for all of
    /// them (group commit). All or nothing.
    fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<(), ServerError>;

    /// Append `batch` and, in the same transaction (the same fsync),
    /// delete up to `limit` entries of relay garbage from `garbage`,
    /// dropping the passes that are done. The log writer runs garbage
    fn append_collecting(
        &mut self,
        batch: &[Append<'_>],
        garbage: &mut std::collections::VecDeque<Collectable>,
        limit: usize,
    ) -> Result<usize, ServerError>;

    /// The latest GroupInfo of `conv` (for external joins).
    fn group_info(&self, conv: &str) -> Result<Option<Vec<u8>>, ServerError>;

    fn log_after(&self, conv: &str, after: u64) -> Result<Vec<LogEntry>, ServerError>;

    /// Entries `from..=to` of `conv` still on the relay, in order.
    fn log_range(&self, conv: &str, from: u64, to: u64) -> Result<Vec<LogEntry>, ServerError>;

    /// (seq, sender device) of the entries of `conv` after `after`, without
    /// their messages.
    fn log_senders(&self, conv: &str, after: u64) -> Result<Vec<(u64, String)>, ServerError>;

    fn log_len(&self) -> Result<u64, ServerError>;

    /// Every device's cursor in `conv`.
    fn cursors_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError>;

    fn cursor(&self, device: &str, conv: &str) -> Result<Option<u64>, ServerError>;

    /// Record a device's acknowledgement (never moves a cursor backwards)
    /// and drop its Welcome once it has moved past it.
    fn ack(&mut self, device: &str, conv: &str, seq: u64, records: bool)
        -> Result<(), ServerError>;

    /// The Welcome waiting for `device` in `conv`: (seq of the commit, message).
    fn welcome(&self, device: &str, conv: &str) -> Result<Option<(u64, Vec<u8>)>, ServerError>;

    /// (device, seq) of every Welcome waiting in `conv`.
    fn welcomes_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError>;

    fn welcomes_for(&self, device: &str) -> Result<Vec<(String, u64, Vec<u8>)>, ServerError>;

    /// Delete, in one transaction without waiting for the disk, everything
    /// `passes` allows (a server without a log writer; see
    /// [`Store::append_batch`] for the usual way). Returns how many went.
    fn collect(&mut self, passes: &[Collectable]) -> Result<usize, ServerError>;

    /// How far the records service has captured each conversation
    /// (conversation, highest sequence number acknowledged as archived).
    fn records_progress(&self) -> Result<Vec<(String, u64)>, ServerError>;

    /// Counts an admin checks: what is on the relay, how far capture lags.
    fn status(&self) -> Result<StoreStatus, ServerError>;

    // Receipt keys and the archive checkpoints the server keeps.

    /// List a receipt-signing public key (idempotent).
    fn record_receipt_key(&self, key: &[u8], from_ms: u64) -> Result<(), ServerError>;

    fn retire_receipt_key(&self, key: &[u8], until_ms: u64) -> Result<(), ServerError>;

    /// Every receipt key the server has used, oldest first.
    fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, ServerError>;

    /// Keep a checkpoint the records service published, with its proof.
    fn add_checkpoint(
        &self,
        size: u64,
        note: &str,
        from_size: Option<u64>,
        path: &[Vec<u8>],
    ) -> Result<(), ServerError>;

    /// Published checkpoints after `since_size`, oldest first.
    /// Up to 256 checkpoints after `since_size`, oldest first: a device
    /// far behind walks the chain a page at a time, pinning as it goes.
    fn checkpoints_after(
        &self,
        since_size: u64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError>;

    /// The latest published checkpoint (one indexed read, however long the
    /// history).
    fn latest_checkpoint(
        &self,
    ) -> Result<Option<keepwire_protocol::PublishedCheckpoint>, ServerError>;

    // Capture failures: withheld entries, blocked devices, suspensions, decisions.

    /// The records service archived `from..=to` of `conv`, of which
    /// `withheld` could not be captured: in one transaction, its cursor
    /// moves, each withheld entry is marked, its sender blocked (never a
    fn records_archived(
        &mut self,
        records_device: &str,
        conv: &str,
        to: u64,
        withheld: &[WithheldEntry],
        why: Option<&str>,
    ) -> Result<(), ServerError>;

    /// Every withheld entry, oldest first (per conversation, by seq).
    fn withheld(&self, conv: Option<&str>) -> Result<Vec<WithheldEntry>, ServerError>;

    fn blocked_devices(&self) -> Result<Vec<BlockedDevice>, ServerError>;

    fn suspended_conversations(&self) -> Result<Vec<SuspendedConversation>, ServerError>;

    /// Why `conv` is suspended, if it is (the running server re-reads this
    /// to notice an administrator's resumption).
    fn suspension(&self, conv: &str) -> Result<Option<String>, ServerError>;

    /// An administrator resumes `conv` after dealing with the device that
    /// sent what was withheld. Refused when a withheld entry is a
    /// handshake (see the module docs) or the conversation is not
    fn resume_conversation(
        &mut self,
        conv: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError>;

    /// An administrator unblocks `device` (logged with `actor`, `reason`).
    fn unblock_device(
        &mut self,
        device: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError>;

    /// The administrators' decisions after `after` (an id), oldest first.
    fn admin_actions(&self, after: u64) -> Result<Vec<AdminAction>, ServerError>;
}

impl ServerStore for Store {
    fn reopen(&self) -> Option<Result<Box<dyn ServerStore>, ServerError>> {
        Store::reopen(self).map(|r| r.map(|s| Box::new(s) as Box<dyn ServerStore>))
    }

    fn meta(&self, k: &str) -> Result<Option<String>, ServerError> {
        Store::meta(self, k)
    }

    fn set_meta(&self, k: &str, v: &str) -> Result<(), ServerError> {
        Store::set_meta(self, k, v)
    }

    fn policy(&self) -> Result<keepwire_protocol::Policy, ServerError> {
        Store::policy(self)
    }

    fn set_policy(
        &self,
        max_timer_secs: Option<u64>,
        guests_allowed: Option<bool>,
    ) -> Result<(), ServerError> {
        Store::set_policy(self, max_timer_secs, guests_allowed)
    }

    fn add_user(
        &self,
        name: &str,
        display: &str,
        category: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        Store::add_user(self, name, display, category, now_ms)
    }

    fn add_users_with_codes(
        &mut self,
        names: &[String],
        category: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, ServerError> {
        Store::add_users_with_codes(self, names, category, now_ms)
    }

    fn user(&self, name: &str) -> Result<Option<UserRow>, ServerError> {
        Store::user(self, name)
    }

    fn users(&self) -> Result<Vec<UserRow>, ServerError> {
        Store::users(self)
    }

    fn new_enrolment_code(&self, user: &str, now_ms: u64) -> Result<String, ServerError> {
        Store::new_enrolment_code(self, user, now_ms)
    }

    fn redeem_code(
        &mut self,
        code: &str,
        signature_key: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRow, ServerError> {
        Store::redeem_code(self, code, signature_key, now_ms)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError> {
        Store::device(self, id)
    }

    fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, ServerError> {
        Store::devices(self, user)
    }

    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, ServerError> {
        Store::revoke_device(self, id, now_ms)
    }

    fn revoked_devices(&self) -> Result<Vec<String>, ServerError> {
        Store::revoked_devices(self)
    }

    fn acknowledge_notice(&self, user: &str, now_ms: u64) -> Result<(), ServerError> {
        Store::acknowledge_notice(self, user, now_ms)
    }

    fn add_key_packages(
        &mut self,
        device: &str,
        kps: &[Vec<u8>],
        last_resort: Option<&[u8]>,
    ) -> Result<(), ServerError> {
        Store::add_key_packages(self, device, kps, last_resort)
    }

    fn claim_key_package(&self, device: &str) -> Result<Option<Vec<u8>>, ServerError> {
        Store::claim_key_package(self, device)
    }

    fn hand_out(&self, device: &str, kp_ref: &[u8], now_ms: u64) -> Result<(), ServerError> {
        Store::hand_out(self, device, kp_ref, now_ms)
    }

    fn handed_out(&self, device: &str, kp_ref: &[u8]) -> Result<bool, ServerError> {
        Store::handed_out(self, device, kp_ref)
    }

    fn key_package_count(&self, device: &str) -> Result<u64, ServerError> {
        Store::key_package_count(self, device)
    }

    fn conversations(&self) -> Result<Vec<ConversationRow>, ServerError> {
        Store::conversations(self)
    }

    fn append(
        &mut self,
        entry: &LogEntry,
        roster: Option<&RosterUpdate<'_>>,
        create: bool,
    ) -> Result<(), ServerError> {
        Store::append(self, entry, roster, create)
    }

    fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<(), ServerError> {
        Store::append_batch(self, batch)
    }

    fn append_collecting(
        &mut self,
        batch: &[Append<'_>],
        garbage: &mut std::collections::VecDeque<Collectable>,
        limit: usize,
    ) -> Result<usize, ServerError> {
        Store::append_collecting(self, batch, garbage, limit)
    }

    fn group_info(&self, conv: &str) -> Result<Option<Vec<u8>>, ServerError> {
        Store::group_info(self, conv)
    }

    fn log_after(&self, conv: &str, after: u64) -> Result<Vec<LogEntry>, ServerError> {
        Store::log_after(self, conv, after)
    }

    fn log_range(&self, conv: &str, from: u64, to: u64) -> Result<Vec<LogEntry>, ServerError> {
        Store::log_range(self, conv, from, to)
    }

    fn log_senders(&self, conv: &str, after: u64) -> Result<Vec<(u64, String)>, ServerError> {
        Store::log_senders(self, conv, after)
    }

    fn log_len(&self) -> Result<u64, ServerError> {
        Store::log_len(self)
    }

    fn cursors_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        Store::cursors_in(self, conv)
    }

    fn cursor(&self, device: &str, conv: &str) -> Result<Option<u64>, ServerError> {
        Store::cursor(self, device, conv)
    }

    fn ack(
        &mut self,
        device: &str,
        conv: &str,
        seq: u64,
        records: bool,
    ) -> Result<(), ServerError> {
        Store::ack(self, device, conv, seq, records)
    }

    fn welcome(&self, device: &str, conv: &str) -> Result<Option<(u64, Vec<u8>)>, ServerError> {
        Store::welcome(self, device, conv)
    }

    fn welcomes_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError> {
        Store::welcomes_in(self, conv)
    }

    fn welcomes_for(&self, device: &str) -> Result<Vec<(String, u64, Vec<u8>)>, ServerError> {
        Store::welcomes_for(self, device)
    }

    fn collect(&mut self, passes: &[Collectable]) -> Result<usize, ServerError> {
        Store::collect(self, passes)
    }

    fn records_progress(&self) -> Result<Vec<(String, u64)>, ServerError> {
        Store::records_progress(self)
    }

    fn status(&self) -> Result<StoreStatus, ServerError> {
        Store::status(self)
    }

    fn record_receipt_key(&self, key: &[u8], from_ms: u64) -> Result<(), ServerError> {
        Store::record_receipt_key(self, key, from_ms)
    }

    fn retire_receipt_key(&self, key: &[u8], until_ms: u64) -> Result<(), ServerError> {
        Store::retire_receipt_key(self, key, until_ms)
    }

    fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, ServerError> {
        Store::receipt_keys(self)
    }

    fn add_checkpoint(
        &self,
        size: u64,
        note: &str,
        from_size: Option<u64>,
        path: &[Vec<u8>],
    ) -> Result<(), ServerError> {
        Store::add_checkpoint(self, size, note, from_size, path)
    }

    fn checkpoints_after(
        &self,
        since_size: u64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        Store::checkpoints_after(self, since_size)
    }

    fn latest_checkpoint(
        &self,
    ) -> Result<Option<keepwire_protocol::PublishedCheckpoint>, ServerError> {
        Store::latest_checkpoint(self)
    }

    fn records_archived(
        &mut self,
        records_device: &str,
        conv: &str,
        to: u64,
        withheld: &[WithheldEntry],
        why: Option<&str>,
    ) -> Result<(), ServerError> {
        Store::records_archived(self, records_device, conv, to, withheld, why)
    }

    fn withheld(&self, conv: Option<&str>) -> Result<Vec<WithheldEntry>, ServerError> {
        Store::withheld(self, conv)
    }

    fn blocked_devices(&self) -> Result<Vec<BlockedDevice>, ServerError> {
        Store::blocked_devices(self)
    }

    fn suspended_conversations(&self) -> Result<Vec<SuspendedConversation>, ServerError> {
        Store::suspended_conversations(self)
    }

    fn suspension(&self, conv: &str) -> Result<Option<String>, ServerError> {
        Store::suspension(self, conv)
    }

    fn resume_conversation(
        &mut self,
        conv: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        Store::resume_conversation(self, conv, actor, reason, now_ms)
    }

    fn unblock_device(
        &mut self,
        device: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        Store::unblock_device(self, device, actor, reason, now_ms)
    }

    fn admin_actions(&self, after: u64) -> Result<Vec<AdminAction>, ServerError> {
        Store::admin_actions(self, after)
    }
}
