//! The device's local store: one SQLite file, every secret and every
//! message encrypted at rest.
//!
//! The store key comes from the user's passphrase through Argon2id (salt
//! and parameters kept in the clear in `meta`, with a check value so a wrong
//! passphrase is refused rather than producing garbage). Values are sealed
//! with XChaCha20-Poly1305, the table and key bound in as associated data so
//! a row cannot be moved to another place without detection.
//!
//! `secure_delete` is on: when a disappearing message is deleted, SQLite
//! overwrites its pages instead of leaving the (encrypted) bytes in free
//! space.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};

use crate::ClientError;

const CHECK_PLAINTEXT: &[u8] = b"keepwire-device-store-v1";

/// Where the store keeps, per conversation, how far it is archived.
const CAPTURED_NS: &str = "captured";

/// A message as the device keeps it until it expires.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredMessage {
    pub conv: String,
    pub seq: u64,
    pub sender: String,
    pub text: String,
    pub sent_at_ms: u64,
    pub server_time_ms: u64,
    pub expire_at_ms: Option<u64>,
    pub burn_on_read: bool,
    pub read: bool,
    /// The records service has archived it (so it could be delivered): a
    /// message from someone else always is; one this device sent once the
    /// server says so.
    pub captured: bool,
}

impl StoredMessage {
    /// How long this message stays on the device, as a person reads it.
    pub fn remaining(&self, now_ms: u64) -> String {
        match self.expire_at_ms {
            Some(t) => {
                let s = t.saturating_sub(now_ms) / 1000;
                match s {
                    s if s >= 86_400 => format!("{}d {}h left", s / 86_400, s % 86_400 / 3600),
                    s if s >= 3600 => format!("{}h {}m left", s / 3600, s % 3600 / 60),
                    s if s >= 60 => format!("{}m {}s left", s / 60, s % 60),
                    s => format!("{s}s left"),
                }
            }
            None if self.burn_on_read => "burns on read".to_string(),
            None => "kept".to_string(),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    cipher: XChaCha20Poly1305,
}

impl Store {
    /// Open (or create) the store at `path`, unlocking it with `passphrase`.
    pub fn open(path: &Path, passphrase: &str) -> Result<Self, ClientError> {
        let mut conn = Connection::open(path)?;
        // Every statement is prepared once per connection (parsing was a
        // tenth of the server's CPU under load); room for all of them.
        conn.set_prepared_statement_cache_capacity(128);
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;",
        )?;
        keepwire_schema::migrate(&mut conn, &SCHEMA)?;
        let salt: Option<Vec<u8>> = conn
            .prepare_cached("SELECT v FROM meta WHERE k='salt'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        let (salt, fresh) = match salt {
            Some(s) => (s, false),
            None => {
                let mut s = vec![0u8; 16];
                rand::thread_rng().fill_bytes(&mut s);
                (s, true)
            }
        };
        let key = derive_key(passphrase, &salt)?;
        let cipher = XChaCha20Poly1305::new((&key).into());
        let store = Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                cipher,
            }),
        };
        if fresh {
            let check = store.seal("meta", b"check", CHECK_PLAINTEXT)?;
            let conn = store.conn();
            conn.prepare_cached("INSERT INTO meta (k, v) VALUES ('salt', ?1)")?
                .execute(params![salt])?;
            conn.prepare_cached("INSERT INTO meta (k, v) VALUES ('check', ?1)")?
                .execute(params![check])?;
        } else {
            let check: Vec<u8> = store
                .conn()
                .prepare_cached("SELECT v FROM meta WHERE k='check'")?
                .query_row([], |r| r.get(0))?;
            if store.open_sealed("meta", b"check", &check).ok().as_deref() != Some(CHECK_PLAINTEXT)
            {
                return Err(ClientError::WrongPassphrase);
            }
        }
        Ok(store)
    }

    /// A store that lives in memory only, under a random key: for load
    /// generation, where thousands of devices run in one process and
    /// nothing must outlive the run. It skips the passphrase's Argon2 (about
    /// 20 MiB and tens of milliseconds per device) and every disk write.
    pub fn in_memory() -> Result<Self, ClientError> {
        let mut conn = Connection::open_in_memory()?;
        // Every statement is prepared once per connection (parsing was a
        // tenth of the server's CPU under load); room for all of them.
        conn.set_prepared_statement_cache_capacity(128);
        keepwire_schema::migrate(&mut conn, &SCHEMA)?;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Ok(Store {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                cipher: XChaCha20Poly1305::new((&key).into()),
            }),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock means another thread panicked mid-operation; the
        // SQLite connection itself is still consistent (transactions roll
        // back), so carry on with it.
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seal(&self, table: &str, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = [table.as_bytes(), b"\0", key].concat();
        let ct = self
            .inner
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| ClientError::Store("encryption failed".into()))?;
        Ok([nonce.as_slice(), &ct].concat())
    }

    fn open_sealed(&self, table: &str, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ClientError> {
        if sealed.len() < 24 {
            return Err(ClientError::Store(format!(
                "sealed value in {table} is truncated"
            )));
        }
        let aad = [table.as_bytes(), b"\0", key].concat();
        self.inner
            .cipher
            .decrypt(
                XNonce::from_slice(&sealed[..24]),
                Payload {
                    msg: &sealed[24..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                ClientError::Store(format!(
                    "a value in {table} failed authentication (tampered or wrong key)"
                ))
            })
    }

    pub fn get(&self, ns: &str, k: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let v: Option<Vec<u8>> = self
            .conn()
            .prepare_cached("SELECT v FROM kv WHERE ns=?1 AND k=?2")?
            .query_row(params![ns, k], |r| r.get(0))
            .optional()?;
        v.map(|v| self.open_sealed(ns, k, &v)).transpose()
    }

    pub fn put(&self, ns: &str, k: &[u8], v: &[u8]) -> Result<(), ClientError> {
        let sealed = self.seal(ns, k, v)?;
        self.conn()
            .prepare_cached("INSERT OR REPLACE INTO kv (ns, k, v) VALUES (?1, ?2, ?3)")?
            .execute(params![ns, k, sealed])?;
        Ok(())
    }

    pub fn delete(&self, ns: &str, k: &[u8]) -> Result<(), ClientError> {
        self.conn()
            .prepare_cached("DELETE FROM kv WHERE ns=?1 AND k=?2")?
            .execute(params![ns, k])?;
        Ok(())
    }

    /// Keys of a namespace that start with `prefix`, in order.
    pub fn keys(&self, ns: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT k FROM kv WHERE ns=?1 ORDER BY k")?;
        let rows = stmt.query_map(params![ns], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for k in rows {
            let k = k?;
            if k.starts_with(prefix) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Write several values and deletions in one transaction.
    pub fn write_batch(
        &self,
        puts: &[(&str, Vec<u8>, &[u8])],
        deletes: &[(&str, Vec<u8>)],
    ) -> Result<(), ClientError> {
        let sealed: Vec<(&str, &Vec<u8>, Vec<u8>)> = puts
            .iter()
            .map(|(ns, k, v)| Ok((*ns, k, self.seal(ns, k, v)?)))
            .collect::<Result<_, ClientError>>()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (ns, k, v) in &sealed {
            tx.prepare_cached("INSERT OR REPLACE INTO kv (ns, k, v) VALUES (?1, ?2, ?3)")?
                .execute(params![ns, k, v])?;
        }
        for (ns, k) in deletes {
            tx.prepare_cached("DELETE FROM kv WHERE ns=?1 AND k=?2")?
                .execute(params![ns, k])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Store a received (or sent) message. Idempotent per (conv, seq): a
    /// message redelivered after a crash is stored once.
    pub fn insert_message(&self, m: &StoredMessage) -> Result<(), ClientError> {
        let key = format!("{}:{}", m.conv, m.seq);
        let body = serde_json::to_vec(&(&m.sender, &m.text, m.sent_at_ms))
            .map_err(|e| ClientError::Store(e.to_string()))?;
        let sealed = self.seal("messages", key.as_bytes(), &body)?;
        self.conn().prepare_cached("INSERT OR IGNORE INTO messages (conv, seq, sender, server_time_ms, expire_at_ms, burn_on_read, read, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?.execute(params![m.conv, m.seq as i64, "", m.server_time_ms as i64, m.expire_at_ms.map(|v| v as i64), m.burn_on_read, m.read, sealed],
        )?;
        Ok(())
    }

    pub fn messages(&self, conv: Option<&str>) -> Result<Vec<StoredMessage>, ClientError> {
        type Row = (String, i64, i64, Option<i64>, bool, bool, Vec<u8>);
        let rows: Vec<Row> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT conv, seq, server_time_ms, expire_at_ms, burn_on_read, read, body FROM messages
                 WHERE ?1 IS NULL OR conv = ?1 ORDER BY conv, seq",
            )?;
            let rows = stmt.query_map(params![conv], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        let mut captured: std::collections::HashMap<String, u64> = Default::default();
        for (conv, seq, server_time_ms, expire_at_ms, burn_on_read, read, body) in rows {
            let upto = match captured.get(&conv) {
                Some(u) => *u,
                None => {
                    let u = self.captured_upto(&conv)?;
                    captured.insert(conv.clone(), u);
                    u
                }
            };
            let key = format!("{conv}:{seq}");
            let plain = self.open_sealed("messages", key.as_bytes(), &body)?;
            let (sender, text, sent_at_ms): (String, String, u64) =
                serde_json::from_slice(&plain).map_err(|e| ClientError::Store(e.to_string()))?;
            out.push(StoredMessage {
                conv,
                seq: seq as u64,
                sender,
                text,
                sent_at_ms,
                server_time_ms: server_time_ms as u64,
                expire_at_ms: expire_at_ms.map(|v| v as u64),
                burn_on_read,
                read,
                captured: seq as u64 <= upto,
            });
        }
        Ok(out)
    }

    /// Everything in `conv` up to `upto` is archived by the records service
    /// (the server says so, or delivered it, which it does only then).
    pub fn set_captured(&self, conv: &str, upto: u64) -> Result<(), ClientError> {
        if upto > self.captured_upto(conv)? {
            self.put(CAPTURED_NS, conv.as_bytes(), &upto.to_be_bytes())?;
        }
        Ok(())
    }

    /// How far `conv` is known to be archived.
    pub fn captured_upto(&self, conv: &str) -> Result<u64, ClientError> {
        Ok(self
            .get(CAPTURED_NS, conv.as_bytes())?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Mark messages as read; burn-on-read messages are deleted right away.
    pub fn mark_read(&self, conv: Option<&str>) -> Result<usize, ClientError> {
        let conn = self.conn();
        conn.prepare_cached("UPDATE messages SET read = 1 WHERE ?1 IS NULL OR conv = ?1")?
            .execute(params![conv])?;
        let n = conn
            .prepare_cached("DELETE FROM messages WHERE burn_on_read = 1 AND read = 1")?
            .execute([])?;
        Ok(n)
    }

    /// Delete every message whose timer has fired by `now_ms`. Returns how
    /// many were deleted.
    pub fn purge_expired(&self, now_ms: u64) -> Result<usize, ClientError> {
        Ok(self
            .conn()
            .prepare_cached(
                "DELETE FROM messages WHERE expire_at_ms IS NOT NULL AND expire_at_ms <= ?1",
            )?
            .execute(params![now_ms as i64])?)
    }

    pub fn message_count(&self) -> Result<u64, ClientError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT COUNT(*) FROM messages")?
            .query_row([], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Earliest pending expiry, so a running client can sleep until then.
    pub fn next_expiry(&self) -> Result<Option<u64>, ClientError> {
        let v: Option<i64> = self
            .conn()
            .prepare_cached("SELECT MIN(expire_at_ms) FROM messages")?
            .query_row([], |r| r.get(0))?;
        Ok(v.map(|v| v as u64))
    }
}

/// The device store's schema, one migration per step; append, never edit
/// (see `keepwire_schema`). Version 1 is keepwire 0.1's tables.
pub static SCHEMA: keepwire_schema::Schema = keepwire_schema::Schema {
    name: "device store",
    // "KWDV"
    application_id: 0x4b57_4456,
    marker_table: "kv",
    migrations: &[keepwire_schema::Migration::Sql(
        "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL, PRIMARY KEY (ns, k));
         CREATE TABLE IF NOT EXISTS messages (
            conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
            server_time_ms INTEGER NOT NULL, expire_at_ms INTEGER, burn_on_read INTEGER NOT NULL,
            read INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL, PRIMARY KEY (conv, seq));
         CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expire_at_ms) WHERE expire_at_ms IS NOT NULL;",
    )],
};

fn derive_key(passphrase: &str, salt: &[u8]) -> Result<[u8; 32], ClientError> {
    let mut key = [0u8; 32];
    // Argon2id with the crate's defaults (19 MiB, 2 passes), the OWASP
    // recommendation for interactive logins.
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| ClientError::Store(format!("key derivation failed: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_wrong_passphrase_and_keeps_values_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        {
            let s = Store::open(&path, "correct horse").unwrap();
            s.put("ns", b"k", b"secret value").unwrap();
        }
        assert!(matches!(
            Store::open(&path, "wrong"),
            Err(ClientError::WrongPassphrase)
        ));
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
        let needle = b"secret value";
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
        assert!(!wal.windows(needle.len()).any(|w| w == needle));
        let s = Store::open(&path, "correct horse").unwrap();
        assert_eq!(
            s.get("ns", b"k").unwrap().as_deref(),
            Some(&b"secret value"[..])
        );
    }

    #[test]
    fn expired_and_burned_messages_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("d.db"), "p").unwrap();
        let m = |seq, expire_at_ms, burn_on_read| StoredMessage {
            captured: false,
            conv: "c".into(),
            seq,
            sender: "alice".into(),
            text: format!("m{seq}"),
            sent_at_ms: 1,
            server_time_ms: 1,
            expire_at_ms,
            burn_on_read,
            read: false,
        };
        s.insert_message(&m(1, Some(1_000), false)).unwrap();
        s.insert_message(&m(2, Some(5_000), false)).unwrap();
        s.insert_message(&m(3, None, true)).unwrap();
        s.insert_message(&m(3, None, true)).unwrap(); // redelivery is a no-op
        assert_eq!(s.message_count().unwrap(), 3);
        assert_eq!(s.purge_expired(999).unwrap(), 0);
        assert_eq!(s.purge_expired(1_000).unwrap(), 1);
        assert_eq!(s.next_expiry().unwrap(), Some(5_000));
        assert_eq!(s.mark_read(Some("c")).unwrap(), 1);
        let left = s.messages(None).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].text, "m2");
    }
}
