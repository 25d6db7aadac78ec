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
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::record::{RecordKind, RecordMeta};
use crate::RecordsError;

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
    conn: Connection,
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

/// The archive's schema, one migration per step; append, never edit (see
/// `keepwire_schema`). Version 1 is keepwire 0.1's tables (idempotent over
/// the unversioned layouts that shipped).
pub static SCHEMA: keepwire_schema::Schema = keepwire_schema::Schema {
    name: "archive",
    // "KWAR"
    application_id: 0x4b57_4152,
    marker_table: "records",
    migrations: &[keepwire_schema::Migration::Code(|tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
                epoch INTEGER NOT NULL, sender TEXT NOT NULL, participants TEXT NOT NULL,
                server_time_ms INTEGER NOT NULL, captured_at_ms INTEGER NOT NULL, expire_after_secs INTEGER,
                burn_on_read INTEGER NOT NULL, receipt TEXT NOT NULL, wrapped_key BLOB, body BLOB, note TEXT,
                leaf INTEGER, UNIQUE (conv, seq));
             CREATE TABLE IF NOT EXISTS server_keys (key BLOB PRIMARY KEY, first_seen_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS archive_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);",
        )?;
        // Columns that early development layouts lacked (an archive from
        // before the transparency log is not given leaves here).
        keepwire_schema::add_column_if_missing(tx, "records", "note", "TEXT")?;
        keepwire_schema::add_column_if_missing(tx, "records", "leaf", "INTEGER")?;
        tx.execute_batch(crate::tlog::SCHEMA)?;
        tx.execute_batch(crate::checkpoint::SCHEMA)
    })],
};

impl Archive {
    /// Open the archive in `dir`, creating the archive key on first use.
    /// `with_key = false` opens it read-only for metadata (no content).
    pub fn open(dir: &Path, with_key: bool) -> Result<Self, RecordsError> {
        std::fs::create_dir_all(dir)?;
        let mut conn = Connection::open(dir.join(ARCHIVE_DB))?;
        // Every statement is prepared once per connection (parsing was a
        // tenth of the server's CPU under load); room for all of them.
        conn.set_prepared_statement_cache_capacity(128);
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;
             PRAGMA mmap_size=1073741824; PRAGMA cache_size=-65536;",
        )?;
        keepwire_schema::migrate(&mut conn, &SCHEMA)?;
        let key = if with_key {
            Some(load_key(dir, &conn)?)
        } else {
            None
        };
        Ok(Self { conn, key })
    }

    /// Store one record durably, with its transparency-log leaf, in one
    /// transaction. Idempotent per (conv, seq): an entry redelivered after
    /// a crash is archived exactly once.
    pub fn insert(&mut self, r: &NewRecord<'_>) -> Result<bool, RecordsError> {
        Ok(self.insert_many(std::slice::from_ref(r))? == 1)
    }

    /// Store several records in one transaction (one fsync); returns how
    /// many were new. Every write to the log takes the write lock up front
    /// (an IMMEDIATE transaction), so a second writer on the same archive
    /// (a CLI beside the running service) waits instead of both computing
    /// the same next leaf.
    pub fn insert_many(&mut self, records: &[NewRecord<'_>]) -> Result<usize, RecordsError> {
        let archive_key = self.key.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut new = 0;
        let mut key_seen: Option<&[u8]> = None;
        for r in records {
            if insert_in(&tx, archive_key.as_ref(), r, &mut key_seen)? {
                new += 1;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// The connection, for the transparency log and its checks inside
    /// this crate; outside it, the archive's methods below are the way in
    /// (no SQL, no rusqlite type, leaves the crate).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Leaves in the transparency log.
    pub fn log_size(&self) -> Result<u64, RecordsError> {
        crate::tlog::size(&self.conn)
    }

    /// The root hash of the log's first `size` leaves.
    pub fn log_root(&self, size: u64) -> Result<tlog_tiles::tlog::Hash, RecordsError> {
        crate::tlog::root(&self.conn, size)
    }

    /// Leaf `n`, as stored.
    pub fn log_leaf(&self, n: u64) -> Result<Option<crate::tlog::StoredLeaf>, RecordsError> {
        crate::tlog::leaf(&self.conn, n)
    }

    /// Inclusion proof of leaf `n` in the tree of size `tree_size`.
    pub fn prove_inclusion(
        &self,
        tree_size: u64,
        n: u64,
    ) -> Result<Vec<tlog_tiles::tlog::Hash>, RecordsError> {
        crate::tlog::prove_inclusion(&self.conn, tree_size, n)
    }

    /// Consistency proof from the tree of size `old` to that of size `new`.
    pub fn prove_consistency(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<tlog_tiles::tlog::Hash>, RecordsError> {
        crate::tlog::prove_consistency(&self.conn, old, new)
    }

    /// Recompute every stored hash of the log from its leaves (see
    /// [`crate::tlog::recompute`]).
    pub fn recompute_log(
        &self,
        on_leaf: impl FnMut(u64),
    ) -> Result<crate::tlog::TreeCheck, RecordsError> {
        crate::tlog::recompute(&self.conn, on_leaf)
    }

    /// Sign a checkpoint of the log as it stands (see
    /// [`crate::checkpoint::issue`]): its size and note.
    pub fn issue_checkpoint(
        &self,
        notary: &crate::checkpoint::Notary,
        now_ms: u64,
    ) -> Result<(u64, String), RecordsError> {
        crate::checkpoint::issue(&self.conn, notary, now_ms)
    }

    /// Append a privileged action (view, search, export, …) to the log.
    pub fn log_action(
        &mut self,
        actor: &str,
        action: &str,
        target: &str,
        at_ms: u64,
    ) -> Result<u64, RecordsError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = append_action(&tx, actor, action, target, at_ms)?;
        tx.commit()?;
        Ok(n)
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
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: u64 = tx
            .prepare_cached("SELECT v FROM archive_meta WHERE k='server_decisions.logged'")?
            .query_row([], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if id <= done {
            return Ok(false);
        }
        append_action(&tx, actor, action, target, at_ms)?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO archive_meta (k, v) VALUES ('server_decisions.logged', ?1)",
        )?
        .execute(params![id.to_string()])?;
        tx.commit()?;
        Ok(true)
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
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (conv, seq, leaf, has_key): (String, i64, Option<i64>, bool) = tx
            .prepare_cached(
                "SELECT conv, seq, leaf, wrapped_key IS NOT NULL FROM records WHERE id=?1",
            )?
            .query_row(params![id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?
            .ok_or_else(|| RecordsError::Archive(format!("no record {id}")))?;
        if !has_key {
            return Err(RecordsError::Archive(format!(
                "record {id} holds no content to destroy (none captured, or already destroyed)"
            )));
        }
        let leaf = leaf.ok_or_else(|| {
            RecordsError::Archive(format!("record {id} has no transparency-log leaf"))
        })?;
        tx.prepare_cached("UPDATE records SET wrapped_key=NULL, body=NULL WHERE id=?1")?
            .execute(params![id])?;
        crate::tlog::append(
            &tx,
            &crate::tlog::Leaf::Tombstone {
                conv,
                seq: seq as u64,
                record_leaf: leaf as u64,
                authority: authority.to_string(),
                by: by.to_string(),
                at_ms,
            },
            Some(id),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The record's content commitment recomputed from its stored content:
    /// `Ok(None)` when it has no content (or no longer has it).
    pub fn recompute_commitment(&self, id: i64) -> Result<Option<String>, RecordsError> {
        type Sealed = (String, i64, Option<Vec<u8>>, Option<Vec<u8>>);
        let row: Option<Sealed> = self
            .conn
            .prepare_cached("SELECT conv, seq, wrapped_key, body FROM records WHERE id=?1")?
            .query_row(params![id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((conv, seq, Some(w), Some(b))) = row else {
            return Ok(None);
        };
        let k = self
            .key
            .as_ref()
            .ok_or_else(|| RecordsError::Archive("archive key not loaded".into()))?;
        let aad = format!("{conv}:{seq}");
        let data_key = open(k, aad.as_bytes(), &w, "record data key")?;
        let cipher = XChaCha20Poly1305::new_from_slice(&data_key)
            .map_err(|_| RecordsError::Archive("record data key has the wrong length".into()))?;
        let plain = open(&cipher, aad.as_bytes(), &b, "record content")?;
        let data_key: [u8; 32] = data_key
            .as_slice()
            .try_into()
            .map_err(|_| RecordsError::Archive("record data key has the wrong length".into()))?;
        Ok(Some(content_commitment(&data_key, &plain)))
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub fn meta(&self, k: &str) -> Result<Option<String>, RecordsError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM archive_meta WHERE k=?1")?
            .query_row(params![k], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, k: &str, v: &str) -> Result<(), RecordsError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO archive_meta (k, v) VALUES (?1, ?2)")?
            .execute(params![k, v])?;
        Ok(())
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
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut count = 0u64;
        {
            let mut read = tx.prepare(
                "SELECT id, conv, seq, wrapped_key FROM records WHERE wrapped_key IS NOT NULL",
            )?;
            let mut write = tx.prepare_cached("UPDATE records SET wrapped_key=?1 WHERE id=?2")?;
            let mut rows = read.query([])?;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let aad = format!("{}:{}", r.get::<_, String>(1)?, r.get::<_, i64>(2)?);
                let wrapped: Vec<u8> = r.get(3)?;
                let data_key = open(&old, aad.as_bytes(), &wrapped, "record data key")?;
                write.execute(params![seal(&new, aad.as_bytes(), &data_key)?, id])?;
                count += 1;
            }
        }
        let id = key_id(&fresh);
        tx.prepare_cached("INSERT OR REPLACE INTO archive_meta (k, v) VALUES ('key_id', ?1)")?
            .execute(params![id])?;
        append_action(
            &tx,
            actor,
            "rotate-key",
            &format!("archive key {id} ({count} data keys re-wrapped)"),
            at_ms,
        )?;
        tx.commit()?;
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
        let row: Option<(String, Option<String>)> = self
            .conn
            .prepare_cached("SELECT kind, note FROM records WHERE conv=?1 AND seq=?2")?
            .query_row(params![conv, seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(kind, note)| Ok((kind.parse()?, note)))
            .transpose()
    }

    pub fn count(&self, kind: Option<RecordKind>) -> Result<u64, RecordsError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM records WHERE ?1 IS NULL OR kind=?1")?
            .query_row(params![kind.map(RecordKind::as_str)], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Records in capture order; application messages only unless `all`.
    pub fn list(&self, all: bool, decrypt: bool) -> Result<Vec<Record>, RecordsError> {
        self.query(
            "WHERE ?1 OR kind IN ('application', 'withheld', 'undecryptable') ORDER BY id", // RecordKind::is_message
            params![all],
            decrypt,
        )
    }

    pub fn get(&self, id: i64, decrypt: bool) -> Result<Option<Record>, RecordsError> {
        Ok(self
            .query("WHERE id=?1", params![id], decrypt)?
            .into_iter()
            .next())
    }

    fn query(
        &self,
        clause: &str,
        p: impl rusqlite::Params,
        decrypt: bool,
    ) -> Result<Vec<Record>, RecordsError> {
        let sql = format!(
            "SELECT id, conv, seq, kind, epoch, sender, participants, server_time_ms, captured_at_ms, expire_after_secs,
                burn_on_read, receipt, wrapped_key, body, note, leaf FROM records {clause}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(p)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let conv: String = r.get(1)?;
            let seq = r.get::<_, i64>(2)? as u64;
            let wrapped: Option<Vec<u8>> = r.get(12)?;
            let body: Option<Vec<u8>> = r.get(13)?;
            let has_content = wrapped.is_some() && body.is_some();
            let text = match (decrypt, &self.key, wrapped, body) {
                (true, Some(k), Some(w), Some(b)) => {
                    let aad = format!("{conv}:{seq}");
                    let data_key = open(k, aad.as_bytes(), &w, "record data key")?;
                    let cipher = XChaCha20Poly1305::new_from_slice(&data_key).map_err(|_| {
                        RecordsError::Archive("record data key has the wrong length".into())
                    })?;
                    let plain = open(&cipher, aad.as_bytes(), &b, "record content")?;
                    // Content that does not parse (a modified client) is
                    // still shown, as the bytes that were sent.
                    Some(match keepwire_protocol::content::Content::decode(&plain) {
                        Ok(content) => content.text,
                        Err(_) => String::from_utf8_lossy(&plain).into_owned(),
                    })
                }
                _ => None,
            };
            let participants: String = r.get(6)?;
            let receipt: String = r.get(11)?;
            let kind: String = r.get(3)?;
            out.push(Record {
                id: r.get(0)?,
                meta: RecordMeta {
                    conv,
                    seq,
                    kind: kind.parse()?,
                    epoch: r.get::<_, i64>(4)? as u64,
                    sender: r.get(5)?,
                    participants: serde_json::from_str(&participants)
                        .map_err(|e| RecordsError::Archive(e.to_string()))?,
                    server_time_ms: r.get::<_, i64>(7)? as u64,
                    captured_at_ms: r.get::<_, i64>(8)? as u64,
                    expire_after_secs: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                    burn_on_read: r.get(10)?,
                    note: r.get(14)?,
                },
                receipt: serde_json::from_str(&receipt)
                    .map_err(|e| RecordsError::Archive(e.to_string()))?,
                leaf: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
                has_content,
                text,
            });
        }
        Ok(out)
    }
}

/// `key_seen`: the receipt key already listed in this transaction (one
/// key signs nearly every receipt; listing it once per batch is enough).
fn insert_in<'r>(
    tx: &rusqlite::Transaction<'_>,
    archive_key: Option<&XChaCha20Poly1305>,
    r: &NewRecord<'r>,
    key_seen: &mut Option<&'r [u8]>,
) -> Result<bool, RecordsError> {
    let m = r.meta;
    let aad = format!("{}:{}", m.conv, m.seq);
    let (wrapped, body, commitment) = match r.plaintext {
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
    let receipt =
        serde_json::to_string(r.receipt).map_err(|e| RecordsError::Archive(e.to_string()))?;
    let participants =
        serde_json::to_string(&m.participants).map_err(|e| RecordsError::Archive(e.to_string()))?;
    // The leaf this record will get if it is new: the log's next index
    // (the IMMEDIATE transaction holds the write lock, so nothing else can
    // take it), written with the row instead of by a second update.
    let next_leaf = crate::tlog::size(tx)?;
    let n = tx.prepare_cached("INSERT OR IGNORE INTO records (conv, seq, kind, epoch, sender, participants, server_time_ms, captured_at_ms,
            expire_after_secs, burn_on_read, receipt, wrapped_key, body, note, leaf)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)")?.execute(params![
            m.conv,
            m.seq as i64,
            m.kind.as_str(),
            m.epoch as i64,
            m.sender,
            participants,
            m.server_time_ms as i64,
            m.captured_at_ms as i64,
            m.expire_after_secs.map(|v| v as i64),
            m.burn_on_read,
            receipt,
            wrapped,
            body,
            m.note,
            next_leaf as i64
        ],
    )?;
    if n == 1 {
        let id = tx.last_insert_rowid();
        // The server keys receipts were signed with, as the records
        // service saw them (rotation adds one; old ones stay).
        if *key_seen != Some(r.receipt.server_key.as_slice()) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO server_keys (key, first_seen_ms) VALUES (?1, ?2)",
            )?
            .execute(params![r.receipt.server_key, m.captured_at_ms as i64])?;
            *key_seen = Some(r.receipt.server_key.as_slice());
        }
        let leaf = record_leaf(m, r.receipt, commitment);
        crate::tlog::append_at(tx, next_leaf, &leaf, Some(id))?;
    }
    Ok(n == 1)
}

/// HMAC-SHA256 of the plaintext under the record's own data key: binds the
/// log to the content, and stops binding anything once the key is gone.
/// A privileged action's leaf, appended in `tx`; returns its index.
fn append_action(
    tx: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    at_ms: u64,
) -> Result<u64, RecordsError> {
    crate::tlog::append(
        tx,
        &crate::tlog::Leaf::Action {
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            at_ms,
        },
        None,
    )
}

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
fn load_key(dir: &Path, conn: &Connection) -> Result<XChaCha20Poly1305, RecordsError> {
    let path = dir.join(ARCHIVE_KEY);
    let expected: Option<String> = conn
        .prepare_cached("SELECT v FROM archive_meta WHERE k='key_id'")?
        .query_row([], |r| r.get(0))
        .optional()?;
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
        conn.prepare_cached("INSERT OR IGNORE INTO archive_meta (k, v) VALUES ('key_id', ?1)")?
            .execute(params![key_id(&key)])?;
    }
    Ok(XChaCha20Poly1305::new((&key).into()))
}

use keepwire_protocol::files::write_private;

#[cfg(test)]
mod tests {
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
