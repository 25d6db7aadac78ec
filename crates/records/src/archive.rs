//! The archive: one row per log entry of every conversation, application
//! messages with their decrypted content sealed under a per-record data key.
//!
//! Each record's plaintext is encrypted with its own random data key
//! (XChaCha20-Poly1305); the data key is stored wrapped by the archive key
//! ([`key`]), which the archive keeps sealed by the key provider's root key
//! ([`crate::keys`]). Destroying one wrapped key later crypto-shreds one
//! record without touching any other.

use std::path::Path;

use chacha20poly1305::XChaCha20Poly1305;
use keepwire_protocol::Receipt;
use serde::Serialize;

use crate::keys::escrow::Escrowed;
use crate::keys::{open, seal, KeyProvider};
use crate::record::{RecordKind, RecordMeta};
use crate::tlog::Leaf;
use crate::RecordsError;

mod files;
pub use files::FileOut;
pub mod key;
mod pg;
mod sqlite;
pub mod store;
pub use pg::PgArchive;
pub use sqlite::{SqliteArchive, FILES_DIR, SCHEMA};
pub use store::ArchiveStore;
use store::{parse_attachments, SealedRecord, StoredRecord, Which};

pub const ARCHIVE_DB: &str = "archive.db";

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
    /// The files the message carried, as its sealed content names them
    /// (present when the record was opened with the key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ShownFile>,
}

/// A file of an opened record, as people see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShownFile {
    pub name: String,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_type: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// The malware scanner's verdict at capture, where one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<String>,
}

/// What capture hands to the archive for one entry.
pub struct NewRecord<'a> {
    pub meta: &'a RecordMeta,
    pub receipt: &'a Receipt,
    pub plaintext: Option<&'a [u8]>,
}

pub struct Archive {
    store: Box<dyn ArchiveStore>,
    key: Option<key::ArchiveKey>,
}

impl Archive {
    /// Open the archive in `dir` (SQLite, `archive.db`), with its archive
    /// key opened by `keys` (made on first use); without a provider, for
    /// metadata only (no content).
    pub fn open(dir: &Path, keys: Option<&dyn KeyProvider>) -> Result<Self, RecordsError> {
        std::fs::create_dir_all(dir)?;
        let store = SqliteArchive::open(&dir.join(ARCHIVE_DB))?;
        Self::with_store(Box::new(store), dir, keys)
    }

    /// The archive kept in `store` (SQLite or PostgreSQL); `dir` is its
    /// records directory, where an archive made before key providers kept
    /// its key ([`key::load`] moves it).
    pub fn with_store(
        store: Box<dyn ArchiveStore>,
        dir: &Path,
        keys: Option<&dyn KeyProvider>,
    ) -> Result<Self, RecordsError> {
        let key = keys.map(|k| key::load(dir, &*store, k)).transpose()?;
        Ok(Self { store, key })
    }

    /// The archive in `store` with its archive key recovered from escrow
    /// `shares` and sealed under `keys` (after the provider was lost);
    /// logged as a privileged action. Returns it with what else the
    /// escrow held, for the caller to put back.
    pub fn restore_key(
        store: Box<dyn ArchiveStore>,
        keys: &dyn KeyProvider,
        shares: &[String],
        actor: &str,
        at_ms: u64,
    ) -> Result<(Self, Escrowed), RecordsError> {
        let (key, secrets) = key::restore(&*store, keys, shares)?;
        let mut archive = Self {
            store,
            key: Some(key),
        };
        let target = format!(
            "archive key {}: {} restored from {} escrow shares",
            archive.key_id().unwrap_or_default(),
            secrets.describe(),
            shares.len()
        );
        archive.log_action(actor, "restore-key", &target, at_ms)?;
        Ok((archive, secrets))
    }

    /// Split the archive key — with the records device's secret and the
    /// checkpoint key, when given — into `shares` escrow shares, any
    /// `threshold` of which recover them ([`crate::keys::escrow`]); logged.
    pub fn escrow_key(
        &mut self,
        threshold: u8,
        shares: u8,
        device_secret: Option<String>,
        checkpoint_key: Option<String>,
        actor: &str,
        at_ms: u64,
    ) -> Result<Vec<String>, RecordsError> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| RecordsError::Archive("archive key not loaded".into()))?;
        let secrets = Escrowed::new(key.raw(), device_secret, checkpoint_key);
        let out = crate::keys::escrow::split(&secrets, &key.id, threshold, shares)?;
        let target = format!(
            "archive key {}: {} ({threshold} of {shares} shares)",
            key.id,
            secrets.describe()
        );
        self.log_action(actor, "escrow-key", &target, at_ms)?;
        Ok(out)
    }

    /// The public id of the archive key, when it is loaded.
    pub fn key_id(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.id.clone())
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
            .map(|r| seal_record(self.key.as_ref().map(|k| &k.cipher), r))
            .collect::<Result<Vec<_>, _>>()?;
        self.store.insert_records(&sealed)
    }

    /// Keep a checked file's bytes (the ciphertext spooled at `path`,
    /// consumed) before the record that carries it is inserted, which
    /// then links them ([`ArchiveStore::put_file`]).
    pub fn put_file(
        &mut self,
        cipher_sha256: &str,
        path: &std::path::Path,
        now_ms: u64,
    ) -> Result<(), RecordsError> {
        self.store.put_file(cipher_sha256, path, now_ms)
    }

    /// The store, for the checks of this crate (`verify`).
    pub(crate) fn store(&self) -> &dyn ArchiveStore {
        &*self.store
    }

    /// The store, for the writes of this crate (`accounts`).
    pub(crate) fn store_mut(&mut self) -> &mut dyn ArchiveStore {
        &mut *self.store
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

    /// The checkpoint issued last: its size and note, with the
    /// cosignatures gathered for it so far.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, RecordsError> {
        self.store.latest_checkpoint()
    }

    /// The C2SP tlog-witness `add-checkpoint` body taking a witness that
    /// last cosigned `old` leaves of this log to the checkpoint `note` of
    /// `size` leaves. A witness that cosigned more than the log holds is
    /// evidence the log was cut back: [`RecordsError::Diverged`].
    pub fn witness_request(
        &self,
        old: u64,
        size: u64,
        note: &str,
    ) -> Result<Vec<u8>, RecordsError> {
        if old > size {
            return Err(RecordsError::Diverged(format!(
                "a witness cosigned a checkpoint of {old} leaves, but this log's latest covers                  {size}: the archive was cut back or restored from an older copy"
            )));
        }
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            self.prove_consistency(old, size)?
        };
        Ok(crate::witness::quorum::add_checkpoint_request(
            old, &proof, note,
        ))
    }

    /// Keep `witness`'s cosignature `line` on the checkpoint of `size`
    /// leaves (checked to cosign exactly that checkpoint first). Returns
    /// the cosigned note.
    pub fn add_cosignature(
        &self,
        size: u64,
        line: &str,
        witness: &crate::witness::CosignatureVerifier,
    ) -> Result<String, RecordsError> {
        self.store
            .cosign_checkpoint(size, &mut |note| {
                crate::witness::quorum::with_cosignature(note, line, witness)
            })?
            .ok_or_else(|| {
                RecordsError::Log(format!("no checkpoint of {size} leaves was issued here"))
            })
    }

    /// The newest checkpoint issued here that `quorum` accepts: its size
    /// and note.
    pub fn witnessed(
        &self,
        quorum: &crate::witness::quorum::Quorum,
    ) -> Result<Option<(u64, String)>, RecordsError> {
        Ok(self
            .store
            .checkpoints()?
            .into_iter()
            .rev()
            .find(|(_, _, note)| quorum.met(note))
            .map(|(_, size, note)| (size, note)))
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
        let k = &self
            .key
            .as_ref()
            .ok_or_else(|| RecordsError::Archive("archive key not loaded".into()))?
            .cipher;
        let aad = format!("{conv}:{seq}");
        let data_key = open(k, aad.as_bytes(), w, "record data key")?;
        let data_key: [u8; 32] = data_key
            .as_slice()
            .try_into()
            .map_err(|_| RecordsError::Archive("record data key has the wrong length".into()))?;
        let cipher = crate::keys::cipher(&data_key);
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
    /// wrapped again under a new archive key, and the new key, sealed by
    /// `keys`, takes the old one's place — all in one transaction, logged;
    /// no content is re-encrypted. Escrow shares of the old key open
    /// nothing afterwards: split the new one. Returns how many data keys
    /// were re-wrapped.
    pub fn rotate_key(
        &mut self,
        keys: &dyn KeyProvider,
        actor: &str,
        at_ms: u64,
    ) -> Result<u64, RecordsError> {
        let old = self
            .key
            .as_ref()
            .ok_or_else(|| RecordsError::Archive("archive key not loaded".into()))?
            .cipher
            .clone();
        let new = key::ArchiveKey::fresh();
        let settings = new.settings(keys)?;
        let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let id = new.id.clone();
        let count = self.store.rewrap_keys(
            &mut |conv, seq, wrapped| {
                let aad = format!("{conv}:{seq}");
                let data_key = open(&old, aad.as_bytes(), wrapped, "record data key")?;
                seal(&new.cipher, aad.as_bytes(), &data_key)
            },
            &settings,
            &|count| {
                action_leaf(
                    actor,
                    "rotate-key",
                    &format!("archive key {id} ({count} data keys re-wrapped)"),
                    at_ms,
                )
            },
        )?;
        self.key = Some(new);
        Ok(count)
    }

    pub fn contains(&self, conv: &str, seq: u64) -> Result<bool, RecordsError> {
        Ok(self.archived_as(conv, seq)?.is_some())
    }

    /// The kind, note and receipt of the record of `conv`#`seq`, if
    /// archived.
    pub fn archived_as(
        &self,
        conv: &str,
        seq: u64,
    ) -> Result<Option<(RecordKind, Option<String>, Receipt)>, RecordsError> {
        self.store
            .archived_as(conv, seq)?
            .map(|(kind, note, receipt)| {
                let receipt = serde_json::from_str(&receipt).map_err(|e| {
                    RecordsError::Archive(format!("{conv}#{seq}: the archived receipt: {e}"))
                })?;
                Ok((kind.parse()?, note, receipt))
            })
            .transpose()
    }

    /// Each conversation's highest sequence number archived.
    pub fn heads(&self) -> Result<Vec<(String, u64)>, RecordsError> {
        self.store.heads()
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
            let mut files = Vec::new();
            let text = self.unseal_row(&row)?.map(|(_, plain)| {
                match keepwire_protocol::content::Content::decode(&plain) {
                    Ok(content) => {
                        files = content
                            .attachments
                            .into_iter()
                            .map(|a| ShownFile {
                                name: a.name,
                                media_type: a.media_type,
                                detected_type: a.detected_type,
                                size: a.size,
                                sha256: a.sha256,
                                scan: None,
                            })
                            .collect();
                        content.text
                    }
                    Err(_) => String::from_utf8_lossy(&plain).into_owned(),
                }
            });
            let attachments = parse_attachments(row.attachments.as_deref())?;
            for (f, a) in files.iter_mut().zip(&attachments) {
                f.scan = a.scan.clone();
            }
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
                    attachments,
                },
                receipt: serde_json::from_str(&row.receipt)
                    .map_err(|e| RecordsError::Archive(e.to_string()))?,
                leaf: row.leaf,
                has_content: row.has_content,
                text,
                files,
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
            let data_key = crate::keys::fresh_key();
            let cipher = crate::keys::cipher(&data_key);
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

#[cfg(test)]
mod tests;
