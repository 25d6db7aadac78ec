//! What the delivery server keeps, as five traits — accounts, key
//! packages, the log, checkpoints and receipt keys, capture failures —
//! that together make a [`ServerStore`], with two implementations:
//! [`SqliteStore`](super::SqliteStore), the embedded default, and
//! [`PgStore`](super::PgStore), for PostgreSQL. No backend type crosses
//! them: rows are plain data and errors carry the backend's message.
//!
//! Methods are synchronous: the core calls them under its lock, as
//! SQLite wants, and a networked backend waits for its answer on the
//! calling thread (see `keepwire_schema::pg`). What a backend must
//! guarantee beyond each method's contract:
//!
//! - a write that returns Ok is durable (on disk, or flushed to the
//!   database server's WAL) unless its docs say otherwise — acknowledgements
//!   and garbage collection, whose loss only means redelivery, may skip the
//!   flush;
//! - [`LogStore::append_collecting`] is one transaction: all or nothing,
//!   one flush for the whole group commit.
//!
//! The behaviour of every method is pinned by the contract tests in
//! `store/tests.rs`, which run against both backends. Rules that do not
//! depend on the backend (the policy's defaults, user names, enrolment
//! codes, an audit reason being required) are here, once.

use rand::Rng;

use super::withheld::{AdminAction, BlockedDevice, SuspendedConversation, WithheldEntry};
use super::{
    Append, Collectable, ConversationRow, DeviceRow, LogEntry, ReceiptKey, RosterUpdate,
    StoreStatus, UserRow, ENROLMENT_CODE_TTL_MS,
};
use crate::ServerError;

/// Everything the delivery server keeps.
pub trait ServerStore:
    AccountStore
    + KeyPackageStore
    + LogStore
    + CheckpointStore
    + CaptureFailureStore
    + super::BlobStore
    + Send
{
    /// Another handle on the same store, for work beside the core (the
    /// off-lock checks of handshakes, the log writer); None where there
    /// cannot be one (an in-memory database).
    fn reopen(&self) -> Option<Result<Box<dyn ServerStore>, ServerError>>;

    /// Which backend this is, and where (for `admin status` and logs;
    /// never a password).
    fn describe(&self) -> String;

    /// Bytes free for the store to grow into, where the server can tell
    /// (the file system of a SQLite file); None for a database server,
    /// which watches its own disk.
    fn free_space(&self) -> Option<u64>;
}

/// Users, enrolment codes, devices, the records notice, policy and
/// settings.
pub trait AccountStore {
    fn meta(&self, k: &str) -> Result<Option<String>, ServerError>;

    fn set_meta(&self, k: &str, v: &str) -> Result<(), ServerError>;

    /// The agency's messaging policy. Unset settings take their defaults
    /// (a week's longest timer, guests allowed); an unreadable one is an
    /// error, never a default (a failing read must not let guests in).
    fn policy(&self) -> Result<keepwire_protocol::Policy, ServerError> {
        let max_timer_secs = match self.meta(POLICY_MAX_TIMER)? {
            None => 7 * 24 * 3600,
            Some(v) => v.parse().map_err(|_| {
                ServerError::Invalid(format!(
                    "policy: {POLICY_MAX_TIMER} is {v:?}, not a number of seconds"
                ))
            })?,
        };
        let flag = |key: &str, default: bool| -> Result<bool, ServerError> {
            match self.meta(key)?.as_deref() {
                None => Ok(default),
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(v) => Err(ServerError::Invalid(format!(
                    "policy: {key} is {v:?}, not true or false"
                ))),
            }
        };
        Ok(keepwire_protocol::Policy {
            max_timer_secs,
            guests_allowed: flag(POLICY_GUESTS, true)?,
            keep_photo_metadata: flag(POLICY_PHOTO_METADATA, false)?,
            max_attachment_bytes: self.attachment_policy()?.max_file_bytes,
        })
    }

    /// What the agency allows for attachments; unset settings take their
    /// defaults, an unreadable one is an error.
    fn attachment_policy(&self) -> Result<super::AttachmentPolicy, ServerError> {
        let d = super::AttachmentPolicy::default();
        let read = |key: &str, default: u64| -> Result<u64, ServerError> {
            match self.meta(key)? {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    ServerError::Invalid(format!("policy: {key} is {v:?}, not a number"))
                }),
            }
        };
        Ok(super::AttachmentPolicy {
            max_file_bytes: read(POLICY_MAX_FILE, d.max_file_bytes)?,
            quota_bytes: read(POLICY_QUOTA, d.quota_bytes)?,
            unsent_ttl_ms: read(POLICY_UNSENT_TTL, d.unsent_ttl_ms)?,
        })
    }

    /// Change what the agency allows for attachments (each setting left as
    /// it is when None).
    fn set_attachment_policy(&self, p: AttachmentPolicyChange) -> Result<(), ServerError> {
        for (key, v) in [
            (POLICY_MAX_FILE, p.max_file_bytes),
            (POLICY_QUOTA, p.quota_bytes),
            (POLICY_UNSENT_TTL, p.unsent_ttl_ms),
        ] {
            if let Some(v) = v {
                self.set_meta(key, &v.to_string())?;
            }
        }
        Ok(())
    }

    /// Change the messaging policy (each setting left as it is when None).
    fn set_policy(&self, p: PolicyChange) -> Result<(), ServerError> {
        if let Some(t) = p.max_timer_secs {
            self.set_meta(POLICY_MAX_TIMER, &t.to_string())?;
        }
        for (key, v) in [
            (POLICY_GUESTS, p.guests_allowed),
            (POLICY_PHOTO_METADATA, p.keep_photo_metadata),
        ] {
            if let Some(v) = v {
                self.set_meta(key, &v.to_string())?;
            }
        }
        Ok(())
    }

    /// Add a user (names: see [`check_user_name`]); an existing name is
    /// refused.
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

    /// Every user, by name.
    fn users(&self) -> Result<Vec<UserRow>, ServerError>;

    /// A fresh one-time enrolment code for `user`, valid for 24 hours.
    fn new_enrolment_code(&self, user: &str, now_ms: u64) -> Result<String, ServerError>;

    /// Redeem a code: creates the device and burns the code, atomically.
    /// Refused: an unknown, used or expired code; a signature key that is
    /// already enrolled.
    fn redeem_code(
        &mut self,
        code: &str,
        signature_key: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRow, ServerError>;

    fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError>;

    /// Every device (of `user`, if given), by user, oldest first.
    fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, ServerError>;

    /// Revoke a device; false if it was not there or already revoked.
    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, ServerError>;

    fn revoked_devices(&self) -> Result<Vec<String>, ServerError>;

    /// The user acknowledged the records notice (the first time counts).
    fn acknowledge_notice(&self, user: &str, now_ms: u64) -> Result<(), ServerError>;
}

/// Key packages: uploaded, claimed, and remembered once handed out.
pub trait KeyPackageStore {
    /// Add to `device`'s pool of key packages (at most
    /// [`MAX_KEY_PACKAGES`](super::MAX_KEY_PACKAGES) are kept, the newest)
    /// and replace its last-resort one if given.
    fn add_key_packages(
        &mut self,
        device: &str,
        kps: &[Vec<u8>],
        last_resort: Option<&[u8]>,
    ) -> Result<(), ServerError>;

    /// Take one key package of `device`: from the pool if any is left,
    /// oldest first, otherwise its last-resort one (which stays). Two
    /// claimers never get the same one-time key package.
    fn claim_key_package(&self, device: &str) -> Result<Option<Vec<u8>>, ServerError>;

    /// Remember that the key package with reference `kp_ref` was handed
    /// out for `device`: only such key packages may be added to a
    /// conversation. References older than
    /// [`HANDED_OUT_TTL_MS`](super::HANDED_OUT_TTL_MS) go.
    fn hand_out(&self, device: &str, kp_ref: &[u8], now_ms: u64) -> Result<(), ServerError>;

    fn handed_out(&self, device: &str, kp_ref: &[u8]) -> Result<bool, ServerError>;

    /// How many one-time key packages `device` has left.
    fn key_package_count(&self, device: &str) -> Result<u64, ServerError>;
}

/// The log: conversations, appends (group commit), cursors, Welcomes,
/// relay garbage.
pub trait LogStore {
    fn conversations(&self) -> Result<Vec<ConversationRow>, ServerError>;

    /// Append one entry to its conversation's log, together with what a
    /// commit changes (roster snapshot, GroupInfo, new members' cursors and
    /// Welcome), in one durable transaction.
    fn append(
        &mut self,
        entry: &LogEntry,
        roster: Option<&RosterUpdate<'_>>,
        create: bool,
    ) -> Result<(), ServerError> {
        self.append_batch(&[Append {
            entry,
            roster,
            create,
            blobs: &[],
        }])
    }

    /// Append several entries in one transaction: one flush for all of
    /// them (group commit). All or nothing.
    fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<(), ServerError> {
        self.append_collecting(batch, &mut Default::default(), 0)
            .map(|_| ())
    }

    /// Append `batch` and, in the same transaction (the same flush),
    /// delete up to `limit` entries of relay garbage from `garbage`,
    /// dropping the passes that are done. The log writer runs garbage
    /// collection this way: a little with each group commit, never holding
    /// the server's lock nor the database's write lock for a long delete.
    /// At most [`GC_PASSES_PER_COMMIT`] passes are looked at per call.
    /// Returns how many entries were deleted.
    fn append_collecting(
        &mut self,
        batch: &[Append<'_>],
        garbage: &mut std::collections::VecDeque<Collectable>,
        limit: usize,
    ) -> Result<usize, ServerError>;

    /// The latest GroupInfo of `conv` (for external joins).
    fn group_info(&self, conv: &str) -> Result<Option<Vec<u8>>, ServerError>;

    /// Entries of `conv` after `after` still on the relay, in order.
    fn log_after(&self, conv: &str, after: u64) -> Result<Vec<LogEntry>, ServerError> {
        self.log_range(conv, after + 1, u64::MAX >> 1)
    }

    /// Entries `from..=to` of `conv` still on the relay, in order.
    fn log_range(&self, conv: &str, from: u64, to: u64) -> Result<Vec<LogEntry>, ServerError>;

    /// (seq, sender device, server time) of the entries of `conv` after
    /// `after`, without their messages.
    fn log_senders(&self, conv: &str, after: u64) -> Result<Vec<(u64, String, u64)>, ServerError>;

    /// Entries on the relay, all conversations together.
    fn log_len(&self) -> Result<u64, ServerError>;

    /// The latest server time any entry on the relay was stamped with.
    fn latest_entry_time(&self) -> Result<Option<u64>, ServerError>;

    /// Every device's cursor in `conv`.
    fn cursors_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError>;

    fn cursor(&self, device: &str, conv: &str) -> Result<Option<u64>, ServerError>;

    /// Record a device's acknowledgement (never moves a cursor backwards)
    /// and drop its Welcome once it has moved past it; for the records
    /// device, also the conversation's archived mark. Need not be durable
    /// when it returns: losing one only means redelivery.
    fn ack(&mut self, device: &str, conv: &str, seq: u64, records: bool)
        -> Result<(), ServerError>;

    /// The Welcome waiting for `device` in `conv`: (seq of the commit, message).
    fn welcome(&self, device: &str, conv: &str) -> Result<Option<(u64, Vec<u8>)>, ServerError>;

    /// (device, seq) of every Welcome waiting in `conv`.
    fn welcomes_in(&self, conv: &str) -> Result<Vec<(String, u64)>, ServerError>;

    /// (conversation, seq, message) of every Welcome waiting for `device`.
    fn welcomes_for(&self, device: &str) -> Result<Vec<(String, u64, Vec<u8>)>, ServerError>;

    /// Delete, in one transaction that need not be durable, everything
    /// `passes` allows (a server without a log writer; see
    /// [`LogStore::append_collecting`] for the usual way). Returns how many
    /// went.
    fn collect(&mut self, passes: &[Collectable]) -> Result<usize, ServerError>;

    /// How far the records service has captured each conversation
    /// (conversation, highest sequence number acknowledged as archived).
    fn records_progress(&self) -> Result<Vec<(String, u64)>, ServerError>;

    /// Counts an admin checks: what is on the relay, how far capture lags.
    fn status(&self) -> Result<StoreStatus, ServerError>;
}

/// Receipt keys and the archive checkpoints the server keeps.
pub trait CheckpointStore {
    /// List a receipt-signing public key (idempotent).
    fn record_receipt_key(&self, key: &[u8], from_ms: u64) -> Result<(), ServerError>;

    /// The key stopped signing at `until_ms` (the first time counts).
    fn retire_receipt_key(&self, key: &[u8], until_ms: u64) -> Result<(), ServerError>;

    /// Every receipt key the server has used, oldest first.
    fn receipt_keys(&self) -> Result<Vec<ReceiptKey>, ServerError>;

    /// Keep a checkpoint the records service published, with its proof
    /// (one per size: a second for the same size replaces the first).
    fn add_checkpoint(
        &self,
        size: u64,
        note: &str,
        from_size: Option<u64>,
        path: &[Vec<u8>],
    ) -> Result<(), ServerError>;

    /// Up to [`CHECKPOINT_PAGE`] checkpoints after `since_size`, oldest
    /// first: a device far behind walks the chain a page at a time,
    /// pinning as it goes.
    fn checkpoints_after(
        &self,
        since_size: u64,
    ) -> Result<Vec<keepwire_protocol::PublishedCheckpoint>, ServerError>;

    /// The latest published checkpoint (one indexed read, however long the
    /// history).
    fn latest_checkpoint(
        &self,
    ) -> Result<Option<keepwire_protocol::PublishedCheckpoint>, ServerError>;
}

/// Capture failures: withheld entries, blocked devices, suspensions, and
/// the administrators' decisions about them (see the `withheld` module).
pub trait CaptureFailureStore {
    /// The records service archived `conv` up to `to`, of which `withheld`
    /// could not be captured: in one transaction, its cursor moves, each
    /// withheld entry is marked, its sender blocked (never a records
    /// device) and the conversation suspended with `why`. Durable before
    /// it returns when anything was withheld (the marks must survive a
    /// crash before the entries after them are released); a plain
    /// acknowledgement need not be, as [`LogStore::ack`].
    fn records_archived(
        &mut self,
        records_device: &str,
        conv: &str,
        to: u64,
        withheld: &[WithheldEntry],
        why: Option<&str>,
    ) -> Result<(), ServerError>;

    /// Every withheld entry (of `conv`, if given), by conversation and seq.
    fn withheld(&self, conv: Option<&str>) -> Result<Vec<WithheldEntry>, ServerError>;

    /// Every blocked device, oldest block first.
    fn blocked_devices(&self) -> Result<Vec<BlockedDevice>, ServerError>;

    fn suspended_conversations(&self) -> Result<Vec<SuspendedConversation>, ServerError>;

    /// Why `conv` is suspended, if it is (the running server re-reads this
    /// to notice an administrator's resumption).
    fn suspension(&self, conv: &str) -> Result<Option<String>, ServerError>;

    /// An administrator resumes `conv` after dealing with the device that
    /// sent what was withheld. Refused when a withheld entry is a
    /// handshake (see [`check_resumable`]) or the conversation is not
    /// suspended. Logged with `actor` and `reason` (required).
    fn resume_conversation(
        &mut self,
        conv: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError>;

    /// An administrator unblocks `device` (logged with `actor`, `reason`,
    /// which is required); refused if it is not blocked.
    fn unblock_device(
        &mut self,
        device: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError>;

    /// Up to 100 of the administrators' decisions after `after` (an id),
    /// oldest first.
    fn admin_actions(&self, after: u64) -> Result<Vec<AdminAction>, ServerError>;
}

pub(crate) const POLICY_MAX_TIMER: &str = "policy.max_timer_secs";

pub(crate) const POLICY_GUESTS: &str = "policy.guests_allowed";
/// Whether devices send photos as taken (location and camera data
/// included) instead of cleaned of them.
pub(crate) const POLICY_PHOTO_METADATA: &str = "policy.keep_photo_metadata";
const POLICY_MAX_FILE: &str = "policy.attachment_max_file_bytes";
const POLICY_QUOTA: &str = "policy.attachment_quota_bytes";
const POLICY_UNSENT_TTL: &str = "policy.attachment_unsent_ttl_ms";

/// A change to the messaging policy: each setting left as it is when
/// None.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyChange {
    pub max_timer_secs: Option<u64>,
    pub guests_allowed: Option<bool>,
    /// Photos keep their EXIF/GPS data (evidence photos may need where
    /// they were taken); by default devices remove it before sending.
    pub keep_photo_metadata: Option<bool>,
}

/// A change to [`super::AttachmentPolicy`]: the settings given.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachmentPolicyChange {
    pub max_file_bytes: Option<u64>,
    pub quota_bytes: Option<u64>,
    pub unsent_ttl_ms: Option<u64>,
}

/// Conversations relay garbage collection looks at per group commit:
/// passes with nothing to delete still cost a lookup each (thousands of
/// conversations, most of them quiet).
pub const GC_PASSES_PER_COMMIT: usize = 32;

/// The most checkpoints one `checkpoints_after` answer holds.
pub const CHECKPOINT_PAGE: i64 = 256;

/// A user name: 1-64 characters of a-z, 0-9, '-', '_' or '.' (it names
/// directories and appears in receipts).
pub fn check_user_name(name: &str) -> Result<(), ServerError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ServerError::Invalid(format!(
            "user name {name:?} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"
        )));
    }
    Ok(())
}

/// A fresh enrolment code and when it expires: 16 characters from a
/// 32-symbol alphabet without look-alikes (80 bits), in groups of four.
pub(super) fn new_code(now_ms: u64) -> (String, u64) {
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
    (code, now_ms + ENROLMENT_CODE_TTL_MS)
}

/// What the store keeps of an enrolment code: its SHA-256, hex, never
/// the code itself — someone who can read the database (a backup, a
/// misconfigured permission) must not be able to enrol a device with
/// what they read. A fast hash is enough: a code has 80 random bits, is
/// used once and expires in a day. Case and surrounding space do not
/// matter (the alphabet is upper-case; people type what they read).
pub fn code_digest(code: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(code.trim().to_ascii_uppercase().as_bytes()))
}

/// A fresh device id (64 random bits, hex).
pub(super) fn new_device_id() -> String {
    let mut id = [0u8; 8];
    rand::thread_rng().fill(&mut id);
    hex::encode(id)
}

/// Whether a code found as (user, expires, used) may be redeemed at
/// `now_ms`; the user it enrols if so.
pub(super) fn check_code(
    row: Option<(String, u64, Option<u64>)>,
    now_ms: u64,
) -> Result<String, ServerError> {
    match row {
        None => Err(ServerError::Invalid("enrolment code is not known".into())),
        Some((_, _, Some(_))) => Err(ServerError::Invalid(
            "enrolment code was already used".into(),
        )),
        Some((_, expires, None)) if expires < now_ms => Err(ServerError::Invalid(
            "enrolment code has expired (codes are valid for 24 hours)".into(),
        )),
        Some((user, _, None)) => Ok(user),
    }
}

pub(super) fn already_enrolled() -> ServerError {
    ServerError::Invalid("this signature key is already enrolled".into())
}

/// Why a device is blocked after what it sent could not be captured.
pub(super) fn blocked_reason(w: &WithheldEntry) -> String {
    format!(
        "the records service could not capture {}#{} sent by this device: {}",
        w.conv, w.seq, w.reason
    )
}

/// An administrator's decision is kept for audit, with its reason.
pub(super) fn check_reason(reason: &str) -> Result<(), ServerError> {
    if reason.trim().is_empty() {
        return Err(ServerError::Invalid(
            "say why (--reason): the decision is kept for audit".into(),
        ));
    }
    Ok(())
}

/// Whether `conv` may be resumed: it is suspended, and nothing withheld
/// in it is a commit or proposal — the followed roster moved past a
/// handshake the records member could not apply, and no resumption can
/// repair that (members start a new conversation).
pub(super) fn check_resumable(
    store: &(impl CaptureFailureStore + ?Sized),
    conv: &str,
) -> Result<(), ServerError> {
    if store.suspension(conv)?.is_none() {
        return Err(ServerError::Invalid(format!(
            "conversation {conv} is not suspended"
        )));
    }
    if let Some(w) = store
        .withheld(Some(conv))?
        .into_iter()
        .find(|w| w.handshake)
    {
        return Err(ServerError::Invalid(format!(
            "conversation {conv} cannot be resumed: its entry #{} (a commit or proposal from device {}) \
             could not be applied by the records member, so the conversation's group moved on without \
             it; its members must start a new conversation",
            w.seq, w.device
        )));
    }
    Ok(())
}

/// The 32-byte hashes of a consistency path, stored end to end.
pub(super) fn split_path(path: &[u8]) -> Vec<Vec<u8>> {
    path.chunks(32).map(<[u8]>::to_vec).collect()
}
