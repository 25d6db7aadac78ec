//! The archive: one row per log entry of every conversation, application
//! messages with their decrypted content sealed under a per-record data key.
//!
//! Each record's plaintext is encrypted with its own random data key
//! (XChaCha20-Poly1305); the data key is stored wrapped by the archive key,
//! which only the records service holds (`archive.key`, owner-only; an
//! HSM/KMS can take its place). Destroying one wrapped key later
//! crypto-shreds one record without touching any other.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use keepwire_protocol::Receipt;
use rand::RngCore;
use serde::Serialize;

use crate::record::{RecordKind, RecordMeta};
use crate::tlog::Leaf;
use crate::RecordsError;

mod pg;
mod sqlite;
pub mod store;
pub use pg::PgArchive;
pub use sqlite::{SqliteArchive, SCHEMA};
pub use store::ArchiveStore;
use store::{SealedRecord, StoredRecord, Which};

pub const ARCHIVE_DB: &str = "archive.db";
pub const ARCHIVE_KEY: &str = "archive.key";

/// One archived log entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    pub id: i64,
    #[serde(flatten)]
    pub meta: RecordMeta,
    pub receipt: Receipt,
    /// Its leaf in the transparency log.
    pub leaf: Option<u64>,
    /// Whether its content is still held (false once destroyed).
    pub has_content: bool,
    /// Decrypted text, present when the record was opened with the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What capture hands to the archive for one entry.
pub struct NewRecord<'a> {
    pub meta: &'a RecordMeta,
    pub receipt: &'a Receipt,
    pub plaintext: Option<&'a [u8]>,
}

pub struct Archive {
    store: Box<dyn ArchiveStore>,
    key: Option<XChaCha20Poly1305>,
}

fn seal(cipher: &XChaCha20Poly1305, aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| RecordsError::Archive("encryption failed".into()))?;
    Ok([nonce.as_slice(), &ct].concat())
}

fn open(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Vec<u8>, RecordsError> {
    if sealed.len() < 24 {
        return Err(RecordsError::Archive(format!("{what} is truncated")));
    }
    cipher
        .decrypt(
            XNonce::from_slice(&sealed[..24]),
            Payload {
                msg: &sealed[24..],
                aad,
            },
        )
        .map_err(|_| {
            RecordsError::Archive(format!(
                "{what} failed authentication: altered, or wrong archive key"
            ))
        })
}

impl Archive {
    /// Open the archive in `dir` (SQLite, `archive.db`), creating the
    /// archive key on first use. `with_key = false` opens it for metadata
    /// only (no content).
    pub fn open(dir: &Path, with_key: bool) -> Result<Self, RecordsError> {
        std::fs::create_dir_all(dir)?;
        let store = SqliteArchive::open(&dir.join(ARCHIVE_DB))?;
        Self::with_store(Box::new(store), dir, with_key)
    }

    /// The archive kept in `store` (SQLite or PostgreSQL), its keys in
    /// `dir`.
    pub fn with_store(
        store: Box<dyn ArchiveStore>,
        dir: &Path,
        with_key: bool,
    ) -> Result<Self, RecordsError> {
        let key = if with_key {
            Some(load_key(dir, &*store)?)
        } else {
            None
        };
        Ok(Self { store, key })
    }

    /// Store one record durably, with its transparency-log leaf, in one
    /// transaction. Idempotent per (conv, seq): an entry redelivered after
    /// a crash is archived exactly once.
    pub fn insert(&mut self, r: &NewRecord<'_>) -> Result<bool, RecordsError> {
        Ok(self.insert_many(std::slice::from_ref(r))? == 1)
    }

    /// Store several records in one transaction (one flush); returns how
    /// many were new. Each record's content is sealed under a fresh data
    /// key, wrapped by the archive key, before the store sees it.
    pub fn insert_many(&mut self, records: &[NewRecord<'_>]) -> Result<usize, RecordsError> {
        let sealed = records
            .iter()
            .map(|r| seal_record(self.key.as_ref(), r))
            .collect::<Result<Vec<_>, _>>()?;
        self.store.insert_records(&sealed)
    }

    /// The store, for the checks of this crate (`verify`).
    pub(crate) fn store(&self) -> &dyn ArchiveStore {
        &*self.store
    }

    /// Which backend keeps the archive, and where.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Leaves in the transparency log.
    pub fn log_size(&self) -> Result<u64, RecordsError> {
        self.store.log_size()
    }

    /// The root hash of the log's first `size` leaves.
    pub fn log_root(&self, size: u64) -> Result<tlog_tiles::tlog::Hash, RecordsError> {
        crate::tlog::root(&*self.store, size)
    }

    /// Leaf `n`, as stored.
    pub fn log_leaf(&self, n: u64) -> Result<Option<crate::tlog::StoredLeaf>, RecordsError> {
        self.store.leaf(n)
    }

    /// Inclusion proof of leaf `n` in the tree of size `tree_size`.
    pub fn prove_inclusion(
        &self,
        tree_size: u64,
        n: u64,
    ) -> Result<Vec<tlog_tiles::tlog::Hash>, RecordsError> {
        crate::tlog::prove_inclusion(&*self.store, tree_size, n)
    }

    /// Consistency proof from the tree of size `old` to that of size `new`.
    pub fn prove_consistency(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<tlog_tiles::tlog::Hash>, RecordsError> {
        crate::tlog::prove_consistency(&*self.store, old, new)
    }

    /// Recompute every stored hash of the log from its leaves (see
    /// [`crate::tlog::recompute`]).
    pub fn recompute_log(
        &self,
        on_leaf: impl FnMut(u64),
    ) -> Result<crate::tlog::TreeCheck, RecordsError> {
        crate::tlog::recompute(&*self.store, on_leaf)
    }

    /// Sign a checkpoint of the log as it stands, unless the latest one
    /// covers it, and keep it: its size and note. Never one the last
    /// checkpoint issued is not a prefix of (C2SP: a log never signs an
    /// inconsistent checkpoint): a log cut back or rewritten since is
    /// [`RecordsError::Diverged`]. Each checkpoint is checked against the
    /// one before when it is signed, so the latest stands for them all.
    pub fn issue_checkpoint(
        &self,
        notary: &crate::checkpoint::Notary,
        now_ms: u64,
    ) -> Result<(u64, String), RecordsError> {
        if let Some((_, note)) = self.store.latest_checkpoint()? {
            crate::checkpoint::check_against(self, &note, &notary.verifier_key)?;
        }
        self.store
            .checkpoint(&mut |size, root| notary.sign(size, root), now_ms)
    }

    /// Every checkpoint issued, oldest first: (id, size, note).
    pub fn checkpoints(&self) -> Result<Vec<(i64, u64, String)>, RecordsError> {
        self.store.checkpoints()
    }

    /// Append a privileged action (view, search, export, …) to the log.
    pub fn log_action(
        &mut self,
        actor: &str,
        action: &str,
        target: &str,
        at_ms: u64,
    ) -> Result<u64, RecordsError> {
        self.store
            .append_leaf(&action_leaf(actor, action, target, at_ms))
    }

    /// Log an administrator's decision the server relayed (numbered by
    /// the server): once, however often it is relayed, in the same
    /// transaction as the mark of the last one logged.
    pub fn log_decision(
        &mut self,
        id: u64,
        actor: &str,
        action: &str,
        target: &str,
        at_ms: u64,
    ) -> Result<bool, RecordsError> {
        self.store
            .append_decision(id, &action_leaf(actor, action, target, at_ms))
    }

    /// Destroy a record's content: delete its data key (and ciphertext) and
    /// append a tombstone naming the authority. The leaf, metadata and
    /// tombstone stay verifiable; the content is gone for good.
    pub fn destroy(
        &mut self,
        id: i64,
        authority: &str,
        by: &str,
        at_ms: u64,
    ) -> Result<(), RecordsError> {
        self.store
            .destroy(id, &|conv, seq, record_leaf| Leaf::Tombstone {
                conv: conv.to_string(),
                seq,
                record_leaf,
                authority: authority.to_string(),
                by: by.to_string(),
                at_ms,
            })
    }

    /// The record's content commitment recomputed from its stored content:
    /// `Ok(None)` when it has no content (or no longer has it).
    pub fn recompute_commitment(&self, id: i64) -> Result<Option<String>, RecordsError> {
        let Some(c) = self.store.sealed_content(id)? else {
            return Ok(None);
        };
        let (data_key, plain) = self.unseal(&c.conv, c.seq, &c.wrapped_key, &c.body)?;
        Ok(Some(content_commitment(&data_key, &plain)))
    }

    /// A row's data key and plaintext, if it holds content (an error if the
    /// key is not loaded, or the content was altered).
    fn unseal_row(&self, row: &StoredRecord) -> Result<Option<Unsealed>, RecordsError> {
        match (&row.wrapped_key, &row.body) {
            (Some(w), Some(b)) => self.unseal(&row.conv, row.seq, w, b).map(Some),
            _ => Ok(None),
        }
    }

    /// The data key and plaintext sealed for `conv`#`seq`.
    fn unseal(&self, conv: &str, seq: u64, w: &[u8], b: &[u8]) -> Result<Unsealed, RecordsError> {
        let k = self
            .key
            .as_ref()
            .ok_or_else(|| RecordsError::Archive("archive key not loaded".into()))?;
        let aad = format!("{conv}:{seq}");
        let data_key = open(k, aad.as_bytes(), w, "record data key")?;
        let data_key: [u8; 32] = data_key
            .as_slice()
            .try_into()
            .map_err(|_| RecordsError::Archive("record data key has the wrong length".into()))?;
        let cipher = XChaCha20Poly1305::new((&data_key).into());
        let plain = open(&cipher, aad.as_bytes(), b, "record content")?;
        Ok((data_key, plain))
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub fn meta(&self, k: &str) -> Result<Option<String>, RecordsError> {
        self.store.meta(k)
    }

    pub fn set_meta(&self, k: &str, v: &str) -> Result<(), RecordsError> {
        self.store.set_meta(k, v)
    }

    /// Replace the archive key: every record's data key is unwrapped and
    /// wrapped again under a new archive key, in one transaction, and the
    /// rotation is logged; no content is re-encrypted. The new key is on
    /// disk (as `archive.key.next`) before the transaction and takes the
    /// old one's place after it, so a crash at any point leaves a key that
    /// opens the archive. Run it with the records service stopped (the
    /// binary holds the service lock to make sure). Returns how many data
    /// keys were re-wrapped.
    pub fn rotate_key(&mut self, dir: &Path, actor: &str, at_ms: u64) -> Result<u64, RecordsError> {
        let old = self
            .key
            .clone()
            .ok_or_else(|| RecordsError::Archive("archive key not loaded".into()))?;
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        let next_path = dir.join(NEXT_KEY);
        let _ = std::fs::remove_file(&next_path);
        write_private(&next_path, &fresh)?;
        // The new key's directory entry is durable before any data key
        // depends on it.
        sync_dir(dir)?;
        let new = XChaCha20Poly1305::new((&fresh).into());
        let id = key_id(&fresh);
        let count = self.store.rewrap_keys(
            &mut |conv, seq, wrapped| {
                let aad = format!("{conv}:{seq}");
                let data_key = open(&old, aad.as_bytes(), wrapped, "record data key")?;
                seal(&new, aad.as_bytes(), &data_key)
            },
            &id,
            &|count| {
                action_leaf(
                    actor,
                    "rotate-key",
                    &format!("archive key {id} ({count} data keys re-wrapped)"),
                    at_ms,
                )
            },
        )?;
        std::fs::rename(&next_path, dir.join(ARCHIVE_KEY))?;
        sync_dir(dir)?;
        self.key = Some(new);
        Ok(count)
    }

    pub fn contains(&self, conv: &str, seq: u64) -> Result<bool, RecordsError> {
        Ok(self.archived_as(conv, seq)?.is_some())
    }

    /// The kind and note of the record of `conv`#`seq`, if archived.
    pub fn archived_as(
        &self,
        conv: &str,
        seq: u64,
    ) -> Result<Option<(RecordKind, Option<String>)>, RecordsError> {
        self.store
            .archived_as(conv, seq)?
            .map(|(kind, note)| Ok((kind.parse()?, note)))
            .transpose()
    }

    pub fn count(&self, kind: Option<RecordKind>) -> Result<u64, RecordsError> {
        self.store.count(kind.map(RecordKind::as_str))
    }

    /// Records in capture order; application messages only unless `all`.
    pub fn list(&self, all: bool, decrypt: bool) -> Result<Vec<Record>, RecordsError> {
        let which = if all { Which::All } else { Which::Messages };
        self.read(which, decrypt)
    }

    pub fn get(&self, id: i64, decrypt: bool) -> Result<Option<Record>, RecordsError> {
        Ok(self.read(Which::One(id), decrypt)?.into_iter().next())
    }

    fn read(&self, which: Which, decrypt: bool) -> Result<Vec<Record>, RecordsError> {
        let rows = self.store.records(which, decrypt && self.key.is_some())?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            // Content that does not parse (a modified client) is still
            // shown, as the bytes that were sent.
            let text = self.unseal_row(&row)?.map(|(_, plain)| {
                match keepwire_protocol::content::Content::decode(&plain) {
                    Ok(content) => content.text,
                    Err(_) => String::from_utf8_lossy(&plain).into_owned(),
                }
            });
            out.push(Record {
                id: row.id,
                meta: RecordMeta {
                    conv: row.conv,
                    seq: row.seq,
                    kind: row.kind.parse()?,
                    epoch: row.epoch,
                    sender: row.sender,
                    participants: serde_json::from_str(&row.participants)
                        .map_err(|e| RecordsError::Archive(e.to_string()))?,
                    server_time_ms: row.server_time_ms,
                    captured_at_ms: row.captured_at_ms,
                    expire_after_secs: row.expire_after_secs,
                    burn_on_read: row.burn_on_read,
                    note: row.note,
                },
                receipt: serde_json::from_str(&row.receipt)
                    .map_err(|e| RecordsError::Archive(e.to_string()))?,
                leaf: row.leaf,
                has_content: row.has_content,
                text,
            });
        }
        Ok(out)
    }
}

/// A record's data key and plaintext.
type Unsealed = ([u8; 32], Vec<u8>);

/// Seal one record for the store: a fresh data key encrypts its content
/// and is wrapped by the archive key (both bound to `conv:seq`), and its
/// leaf commits to the content through that data key.
fn seal_record<'a>(
    archive_key: Option<&XChaCha20Poly1305>,
    r: &NewRecord<'a>,
) -> Result<SealedRecord<'a>, RecordsError> {
    let m = r.meta;
    let aad = format!("{}:{}", m.conv, m.seq);
    let (wrapped_key, body, commitment) = match r.plaintext {
        Some(p) => {
            let archive_key = archive_key
                .ok_or_else(|| RecordsError::Archive("archive key not loaded".into()))?;
            let mut data_key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut data_key);
            let cipher = XChaCha20Poly1305::new((&data_key).into());
            let body = seal(&cipher, aad.as_bytes(), p)?;
            (
                Some(seal(archive_key, aad.as_bytes(), &data_key)?),
                Some(body),
                Some(content_commitment(&data_key, p)),
            )
        }
        None => (None, None, None),
    };
    Ok(SealedRecord {
        meta: m,
        participants_json: serde_json::to_string(&m.participants)
            .map_err(|e| RecordsError::Archive(e.to_string()))?,
        receipt_json: serde_json::to_string(r.receipt)
            .map_err(|e| RecordsError::Archive(e.to_string()))?,
        server_key: &r.receipt.server_key,
        wrapped_key,
        body,
        leaf: record_leaf(m, r.receipt, commitment),
    })
}

/// A privileged action's leaf.
fn action_leaf(actor: &str, action: &str, target: &str, at_ms: u64) -> Leaf {
    Leaf::Action {
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        at_ms,
    }
}

/// HMAC-SHA256 of the plaintext under the record's own data key: binds the
/// log to the content, and stops binding anything once the key is gone.
pub fn content_commitment(data_key: &[u8; 32], plaintext: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    // Invariant: HMAC takes keys of any length.
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(data_key).expect("HMAC accepts any key");
    mac.update(plaintext);
    hex::encode(mac.finalize().into_bytes())
}

/// The leaf a record's metadata and receipt make (the one place a record
/// leaf is built: capture uses it, and `verify` rebuilds it from the row).
pub fn record_leaf(
    meta: &RecordMeta,
    receipt: &Receipt,
    content_commitment: Option<String>,
) -> crate::tlog::Leaf {
    crate::tlog::Leaf::Record {
        meta: meta.clone(),
        message_sha256: hex::encode(&receipt.message_sha256),
        receipt_signature: hex::encode(&receipt.signature),
        receipt_key: hex::encode(&receipt.server_key),
        content_commitment,
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The setting naming the archive key that wraps the data keys.
const KEY_ID: &str = "key_id";

/// The archive key waiting to replace `archive.key` during a rotation.
const NEXT_KEY: &str = "archive.key.next";

/// A short public name for an archive key (not a secret).
fn key_id(key: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest([b"keepwire-archive-key:".as_slice(), key].concat())[..8])
}

fn read_key(path: &Path) -> Result<Option<[u8; 32]>, RecordsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b.as_slice().try_into().map_err(|_| {
            RecordsError::Archive(format!("{} is not a 32-byte key", path.display()))
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Load the archive key, creating it on first use, and finish a rotation
/// a crash interrupted: the archive records which key wraps its data keys.
fn load_key(dir: &Path, store: &dyn ArchiveStore) -> Result<XChaCha20Poly1305, RecordsError> {
    let path = dir.join(ARCHIVE_KEY);
    let expected = store.meta(KEY_ID)?;
    let key = match (read_key(&path)?, &expected) {
        (Some(k), Some(id)) if key_id(&k) == *id => k,
        (current, Some(id)) => match read_key(&dir.join(NEXT_KEY))? {
            Some(next) if key_id(&next) == *id => {
                std::fs::rename(dir.join(NEXT_KEY), &path)?;
                next
            }
            _ => {
                return Err(RecordsError::Archive(format!(
                    "the archive's data keys are wrapped by archive key {id}, but {} holds {}",
                    path.display(),
                    current
                        .map(|k| key_id(&k))
                        .unwrap_or_else(|| "nothing".into())
                )))
            }
        },
        (Some(k), None) => k,
        (None, None) => {
            let mut k = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            write_private(&path, &k)?;
            k
        }
    };
    if expected.is_none() {
        store.set_meta(KEY_ID, &key_id(&key))?;
    }
    Ok(XChaCha20Poly1305::new((&key).into()))
}

use keepwire_protocol::files::write_private;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod key_tests {
    use super::*;

    fn receipt() -> Receipt {
        Receipt {
            conv: "c".into(),
            seq: 1,
            message_sha256: vec![1; 32],
            server_time_ms: 1,
            signature: vec![2; 64],
            server_key: vec![3; 32],
        }
    }

    #[test]
    fn a_rotation_interrupted_after_its_commit_finishes_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let receipt = receipt();
        let participants = vec!["a/1".to_string()];
        {
            let mut a = Archive::open(dir.path(), true).unwrap();
            a.insert(&NewRecord {
                meta: &RecordMeta {
                    conv: "c".into(),
                    seq: 1,
                    kind: RecordKind::Application,
                    epoch: 1,
                    sender: "a/1".into(),
                    participants,
                    server_time_ms: 1,
                    captured_at_ms: 2,
                    expire_after_secs: None,
                    burn_on_read: false,
                    note: None,
                },
                receipt: &receipt,
                plaintext: Some(br#"{"format":1,"text":"kept","sent_at_ms":1}"#),
            })
            .unwrap();
            let old = std::fs::read(dir.path().join(ARCHIVE_KEY)).unwrap();
            a.rotate_key(dir.path(), "t", 3).unwrap();
            // The crash: the new key is still only `archive.key.next`.
            let new = std::fs::read(dir.path().join(ARCHIVE_KEY)).unwrap();
            std::fs::write(dir.path().join(NEXT_KEY), &new).unwrap();
            std::fs::write(dir.path().join(ARCHIVE_KEY), &old).unwrap();
        }
        let a = Archive::open(dir.path(), true).unwrap();
        let r = a.list(true, true).unwrap();
        assert_eq!(r[0].text.as_deref(), Some("kept"));
        assert!(!dir.path().join(NEXT_KEY).exists());

        // A wrong key is refused with a clear message, not used.
        std::fs::write(dir.path().join(ARCHIVE_KEY), [9u8; 32]).unwrap();
        let e = Archive::open(dir.path(), true).err().unwrap().to_string();
        assert!(e.contains("wrapped by archive key"), "{e}");
    }
}
