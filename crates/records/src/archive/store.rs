//! What the archive keeps, behind one trait ([`ArchiveStore`]) with a
//! SQLite implementation (the embedded default) and a PostgreSQL one.
//!
//! The store holds rows and bytes; it never sees a key. [`Archive`]
//! (super) seals each record's content under its own data key and wraps
//! that under the archive key before the store gets it, builds every
//! transparency-log leaf, and signs checkpoints through a closure, so the
//! same cryptography runs over either backend. What a backend must do
//! beyond each method's contract:
//!
//! - a write that returns Ok is durable (fsync, or the WAL flushed);
//! - a record, its leaf and everything else one method writes are one
//!   transaction, and leaves are appended only at the log's end, one
//!   writer at a time (two writers never compute the same next leaf);
//! - reads are tolerant: a row or leaf an insider altered is returned as
//!   it is stored (kinds as text, JSON as text), so `verify` can name the
//!   damage instead of failing to read it.
//!
//! [`Archive`]: super::Archive

use tlog_tiles::tlog::Hash;

pub use crate::accounts::Account;
use crate::tlog::Leaf;
use crate::{RecordMeta, RecordsError};

/// Everything the archive keeps: records, the transparency log,
/// checkpoints, settings.
pub trait ArchiveStore: Send {
    /// Another handle on the same store (for work beside this one, such as
    /// hashing leaves on a second core); None where there cannot be one.
    fn reopen(&self) -> Option<Result<Box<dyn ArchiveStore>, RecordsError>>;

    /// Which backend this is, and where (never a password).
    fn describe(&self) -> String;

    // Records.

    /// Store the records not archived yet (by conversation and sequence
    /// number: an entry redelivered after a crash is archived once), each
    /// with its leaf appended at the log's end and linked to it, and list
    /// their receipt keys; one transaction. Returns how many were new.
    fn insert_records(&mut self, records: &[SealedRecord<'_>]) -> Result<usize, RecordsError>;

    /// Rows in capture order (see [`Which`]); with `content`, the sealed
    /// data key and body too.
    fn records(&self, which: Which, content: bool) -> Result<Vec<StoredRecord>, RecordsError>;

    /// Record `id`'s place and sealed content, if it still holds any (read
    /// once per record by `verify`: only what the commitment needs).
    fn sealed_content(&self, id: i64) -> Result<Option<SealedContent>, RecordsError>;

    /// The kind (as stored) and note of the record of `conv`#`seq`.
    fn archived_as(
        &self,
        conv: &str,
        seq: u64,
    ) -> Result<Option<(String, Option<String>, String)>, RecordsError>;

    /// Each conversation's highest sequence number archived.
    fn heads(&self) -> Result<Vec<(String, u64)>, RecordsError>;

    /// How many records (of `kind`, as stored, if given).
    fn count(&self, kind: Option<&str>) -> Result<u64, RecordsError>;

    /// Every receipt key the archived receipts were signed with.
    fn server_keys(&self) -> Result<Vec<Vec<u8>>, RecordsError>;

    /// Keep the bytes of a checked file (its ciphertext, at `path`, which
    /// this consumes) under their SHA-256, before any record names them:
    /// a record's insert then only links them, so a large file's bytes
    /// never pass through the transaction that makes its record and leaf
    /// durable, which every other record waits for. The bytes are durable
    /// before the store says it holds them. Bytes already held are kept
    /// as they are.
    fn put_file(
        &mut self,
        cipher_sha256: &str,
        path: &std::path::Path,
        now_ms: u64,
    ) -> Result<(), RecordsError>;

    /// Up to `len` (at most [`ATTACHMENT_CHUNK`]) bytes of attachment `n`
    /// of record `id` from `offset`; empty past its end, or once the
    /// record's content was destroyed.
    fn attachment_read(
        &self,
        id: i64,
        n: u32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RecordsError>;

    /// Delete record `id`'s content (data key and body) and its
    /// attachments' bytes, and append the
    /// leaf `tombstone(conv, seq, record's leaf)` makes, in one
    /// transaction. Refused: no such record, no content left, no leaf.
    fn destroy(
        &mut self,
        id: i64,
        tombstone: &dyn Fn(&str, u64, u64) -> Leaf,
    ) -> Result<(), RecordsError>;

    /// Replace every wrapped data key by what `rewrap(conv, seq, wrapped)`
    /// returns, store `settings` (the new archive key's id and its wrapped
    /// form), and append the leaf `leaf(how many were re-wrapped)` makes,
    /// in one transaction. Returns how many were re-wrapped.
    fn rewrap_keys(
        &mut self,
        rewrap: &mut Rewrap<'_>,
        settings: &[(&str, &str)],
        leaf: &dyn Fn(u64) -> Leaf,
    ) -> Result<u64, RecordsError>;

    // Accounts (`crate::accounts`).

    /// Every account, by name.
    fn accounts(&self) -> Result<Vec<Account>, RecordsError>;

    fn account(&self, name: &str) -> Result<Option<Account>, RecordsError>;

    /// Add `account` and append `leaf`, in one transaction. Returns false,
    /// writing nothing, if the name is taken or — with `only_if_none`, for
    /// an archive's first account — any account exists.
    fn add_account(
        &mut self,
        account: &Account,
        only_if_none: bool,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError>;

    /// Set an account's `disabled` and append `leaf`, in one transaction;
    /// false, writing nothing, if there is no such account.
    fn set_account_disabled(
        &mut self,
        name: &str,
        disabled: bool,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError>;

    // The lifecycle's events (`crate::lifecycle`).

    /// Append `event` with `leaf` (whose index is stored with it), in one
    /// transaction — only if `event.n` is the last event's number + 1:
    /// false, writing nothing, when another event came first (the
    /// decision was taken on a state that is no longer current).
    fn append_event(&mut self, event: &StoredEvent, leaf: &Leaf) -> Result<bool, RecordsError>;

    /// The events numbered above `after`, in order, as stored.
    fn events(&self, after: u64) -> Result<Vec<StoredEvent>, RecordsError>;

    /// A disposition's execution, in one transaction: each of `ids`
    /// destroyed as [`ArchiveStore::destroy`] does (its tombstone from
    /// `tombstone(id, conv, seq, record's leaf)`), then `events` appended,
    /// each with its leaf — only if the first event's number is the next
    /// (no event, such as a new hold, came since the records were
    /// checked): false, writing nothing, otherwise.
    fn dispose(
        &mut self,
        ids: &[i64],
        tombstone: &Tombstone<'_>,
        events: &[(StoredEvent, Leaf)],
    ) -> Result<bool, RecordsError>;

    // Settings.

    fn meta(&self, k: &str) -> Result<Option<String>, RecordsError>;

    fn set_meta(&self, k: &str, v: &str) -> Result<(), RecordsError>;

    // The transparency log.

    /// Append `leaf` at the end (a privileged action); its index.
    fn append_leaf(&mut self, leaf: &Leaf) -> Result<u64, RecordsError>;

    /// Append `leaf` for the server's decision `id` unless it, or a later
    /// one, was appended already; the mark moves in the same transaction.
    fn append_decision(&mut self, id: u64, leaf: &Leaf) -> Result<bool, RecordsError>;

    /// Leaves in the log.
    fn log_size(&self) -> Result<u64, RecordsError>;

    /// Stored hashes by index (tlog_tiles' `HashReader`).
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::tlog::Error>;

    /// Leaf `n` as stored.
    fn leaf(&self, n: u64) -> Result<Option<StoredLeaf>, RecordsError>;

    /// Leaves `0..below` in order, as stored, until `f` returns false.
    fn for_each_leaf(
        &self,
        below: u64,
        f: &mut dyn FnMut(RawLeaf<'_>) -> Result<bool, RecordsError>,
    ) -> Result<(), RecordsError>;

    /// Up to `limit` stored hashes with index in `from..below`, in order;
    /// None for a hash that is not 32 bytes.
    fn hashes(
        &self,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Option<Hash>)>, RecordsError>;

    // Checkpoints.

    /// In one snapshot: unless the latest checkpoint already covers the
    /// log, `sign(size, root)` and keep the note. Returns (size, note).
    fn checkpoint(
        &self,
        sign: &mut dyn FnMut(u64, Hash) -> Result<String, RecordsError>,
        now_ms: u64,
    ) -> Result<(u64, String), RecordsError>;

    /// Every checkpoint kept, oldest first: (id, size, note).
    fn checkpoints(&self) -> Result<Vec<(i64, u64, String)>, RecordsError>;

    /// The checkpoint issued last: (size, note).
    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, RecordsError>;

    /// In one transaction: the note of the latest checkpoint of `size`
    /// leaves replaced by `merge(note)` (a witness's cosignature added).
    /// The new note, or None when no checkpoint of that size was issued.
    fn cosign_checkpoint(
        &self,
        size: u64,
        merge: &mut dyn FnMut(&str) -> Result<String, RecordsError>,
    ) -> Result<Option<String>, RecordsError>;

    /// Read everything as of now until the guard is dropped (a live
    /// archive is verified as of one moment).
    fn read_snapshot(&self) -> Result<Box<dyn Snapshot + '_>, RecordsError>;
}

/// What [`ArchiveStore::dispose`] makes each record's tombstone with:
/// (record id, conversation, sequence number, the record's leaf).
pub type Tombstone<'a> = dyn Fn(i64, &str, u64, u64) -> Leaf + 'a;

/// What [`ArchiveStore::rewrap_keys`] calls for each wrapped data key:
/// (conversation, sequence number, wrapped key) to the key wrapped anew.
pub type Rewrap<'a> = dyn FnMut(&str, u64, &[u8]) -> Result<Vec<u8>, RecordsError> + 'a;

/// A consistent view held open; dropping it lets go.
pub trait Snapshot {}

impl<T> Snapshot for T {}

/// Which records [`ArchiveStore::records`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    /// Messages only ([`crate::RecordKind::is_message`]).
    Messages,
    One(i64),
}

/// A record ready to store: its metadata and receipt as JSON text, its
/// content sealed, its leaf built.
pub struct SealedRecord<'a> {
    pub meta: &'a RecordMeta,
    pub participants_json: String,
    pub receipt_json: String,
    /// The key that signed the receipt (listed in `server_keys`).
    pub server_key: &'a [u8],
    pub wrapped_key: Option<Vec<u8>>,
    pub body: Option<Vec<u8>>,
    pub leaf: Leaf,
}

/// The bytes of one stored attachment row at most.
pub const ATTACHMENT_CHUNK: usize = 1024 * 1024;

/// How a record's attachments are kept in its row: JSON, none when there
/// are none.
pub(crate) fn attachments_column(meta: &RecordMeta) -> Option<String> {
    (!meta.attachments.is_empty())
        .then(|| serde_json::to_string(&meta.attachments).expect("attachment metadata serializes"))
}

/// A row's attachments column read back; an altered one is an error the
/// caller names.
pub(crate) fn parse_attachments(
    column: Option<&str>,
) -> Result<Vec<crate::AttachmentMeta>, RecordsError> {
    column.map_or(Ok(Vec::new()), |s| {
        serde_json::from_str(s).map_err(|e| {
            RecordsError::Archive(format!("the attachments column does not parse: {e}"))
        })
    })
}

/// The bytes from `offset` to `end` out of stored chunks (`(start,
/// data)`, in order), stopping at a gap.
pub(crate) fn splice(chunks: Vec<(i64, Vec<u8>)>, offset: u64, end: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (start, data) in chunks {
        let from = (offset as i64).max(start);
        let to = end.min(start + data.len() as i64);
        if from != offset as i64 + out.len() as i64 || from >= to {
            break;
        }
        out.extend_from_slice(&data[(from - start) as usize..(to - start) as usize]);
    }
    out
}

/// A record's insert links the files its attachments describe, each
/// stored beforehand ([`ArchiveStore::put_file`]) with the size the
/// record says: never a record whose file is not held.
pub(crate) fn check_stored(
    meta: &RecordMeta,
    n: usize,
    a: &crate::AttachmentMeta,
    stored_size: Option<u64>,
) -> Result<(), RecordsError> {
    match stored_size {
        Some(size) if size == a.cipher_size => Ok(()),
        Some(size) => Err(RecordsError::Archive(format!(
            "{}#{}: file {n} is stored with {size} bytes, the record says {}",
            meta.conv, meta.seq, a.cipher_size
        ))),
        None => Err(RecordsError::Archive(format!(
            "{}#{}: file {n} ({}) is not stored: a record is never archived without its files",
            meta.conv, meta.seq, a.cipher_sha256
        ))),
    }
}

/// A file's name in the store is its SHA-256 in hex, nothing else (it
/// is read from rows an insider could have written).
pub(crate) fn check_file_name(cipher_sha256: &str) -> Result<(), RecordsError> {
    if cipher_sha256.len() == 64 && cipher_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(RecordsError::Archive(format!(
            "a stored file's name is not a SHA-256: {:?}",
            cipher_sha256.chars().take(80).collect::<String>()
        )))
    }
}

/// A record's row as stored: text where an insider could have written
/// anything (kind, participants, receipt), parsed by the reader.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub id: i64,
    pub conv: String,
    pub seq: u64,
    pub kind: String,
    pub epoch: u64,
    pub sender: String,
    pub participants: String,
    pub server_time_ms: u64,
    pub captured_at_ms: u64,
    pub expire_after_secs: Option<u64>,
    pub burn_on_read: bool,
    pub receipt: String,
    pub note: Option<String>,
    pub leaf: Option<u64>,
    /// The attachments column, as stored (JSON; none without files).
    pub attachments: Option<String>,
    /// Both the wrapped data key and the body are there.
    pub has_content: bool,
    /// With `content`: the wrapped data key and the sealed body.
    pub wrapped_key: Option<Vec<u8>>,
    pub body: Option<Vec<u8>>,
}

/// A record's sealed content and the place it is bound to.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedContent {
    pub conv: String,
    pub seq: u64,
    pub wrapped_key: Vec<u8>,
    pub body: Vec<u8>,
}

/// A lifecycle event as stored: numbered from 1, its body the event's
/// JSON ([`crate::lifecycle::Event`]), its leaf the transparency-log leaf
/// that commits to it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub n: u64,
    pub kind: String,
    pub actor: String,
    pub at_ms: u64,
    pub body: String,
    pub leaf: Option<u64>,
}

/// A stored leaf: its kind, the record it belongs to, its exact bytes.
pub type StoredLeaf = (String, Option<i64>, Vec<u8>);

/// A leaf as stored, borrowed while [`ArchiveStore::for_each_leaf`] runs.
pub struct RawLeaf<'a> {
    pub n: u64,
    /// The kind column (an index; the data is what is hashed).
    pub kind: Option<&'a str>,
    pub record_id: Option<i64>,
    pub data: &'a [u8],
}

/// The mark of the last server decision logged.
pub(crate) const DECISIONS_LOGGED: &str = "server_decisions.logged";

/// A record's content may be destroyed once: it must still hold content
/// and have a leaf for the tombstone to point at. Returns that leaf.
pub(crate) fn check_destroyable(
    id: i64,
    has_key: bool,
    leaf: Option<u64>,
) -> Result<u64, RecordsError> {
    if !has_key {
        return Err(RecordsError::Archive(format!(
            "record {id} holds no content to destroy (none captured, or already destroyed)"
        )));
    }
    leaf.ok_or_else(|| RecordsError::Archive(format!("record {id} has no transparency-log leaf")))
}
