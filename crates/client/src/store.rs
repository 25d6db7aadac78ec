//! The device's local store: every secret and every message encrypted at
//! rest.
//!
//! The store key comes from the user's passphrase through Argon2id (salt
//! and parameters kept in the clear in `meta`, with a check value so a wrong
//! passphrase is refused rather than producing garbage). Values are sealed
//! with XChaCha20-Poly1305, the table and key bound in as associated data so
//! a row cannot be moved to another place without detection.
//!
//! The bytes live in a [`DeviceBackend`]: SQLite by default
//! ([`SqliteDevice`], with `secure_delete`, so a deleted disappearing
//! message's pages are overwritten rather than left, encrypted, in free
//! space), or PostgreSQL for a records worker (in the records crate). The
//! backend only ever sees sealed values.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::ClientError;

pub mod backend;
mod files;
pub use files::{FileWriter, FILE_CHUNK};
#[doc(hidden)]
pub mod contract;
pub use backend::{DeviceBackend, MessageRow, SqliteDevice, SCHEMA};

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
    /// The files it carried, as the device holds them ([`Store::read_file`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileInfo>,
}

/// A file of a stored message, as people see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub media_type: String,
    pub size: u64,
    pub sha256: String,
    /// The device could not get or open it (the message is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// A thumbnail of the message's file at that index (made by the
    /// sending device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_of: Option<u32>,
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
    backend: Mutex<Box<dyn DeviceBackend>>,
    cipher: XChaCha20Poly1305,
}

impl Store {
    /// Open (or create) the store at `path`, unlocking it with `passphrase`.
    pub fn open(path: &Path, passphrase: &str) -> Result<Self, ClientError> {
        Self::unlock(Box::new(SqliteDevice::open(path)?), passphrase)
    }

    /// The store kept by `backend`, unlocked with `passphrase` (set up on
    /// first use: a fresh salt and a check value, so a wrong passphrase is
    /// refused rather than producing garbage).
    pub fn unlock(
        mut backend: Box<dyn DeviceBackend>,
        passphrase: &str,
    ) -> Result<Self, ClientError> {
        let (salt, fresh) = match backend.meta("salt")? {
            Some(s) => (s, false),
            None => {
                let mut s = vec![0u8; 16];
                rand::thread_rng().fill_bytes(&mut s);
                (s, true)
            }
        };
        let key = derive_key(passphrase, &salt)?;
        let cipher = XChaCha20Poly1305::new((&key).into());
        if fresh {
            let check = seal(&cipher, "meta", b"check", CHECK_PLAINTEXT)?;
            backend.set_meta(&[("salt", &salt), ("check", &check)])?;
        } else {
            let check = backend.meta("check")?.ok_or_else(|| {
                ClientError::Store("the store has a salt but no check value".into())
            })?;
            if open_sealed(&cipher, "meta", b"check", &check)
                .ok()
                .as_deref()
                != Some(CHECK_PLAINTEXT)
            {
                return Err(ClientError::WrongPassphrase);
            }
        }
        Ok(Self::with(backend, cipher))
    }

    /// A store that lives in memory only, under a random key: for load
    /// generation, where thousands of devices run in one process and
    /// nothing must outlive the run. It skips the passphrase's Argon2 (about
    /// 20 MiB and tens of milliseconds per device) and every disk write.
    pub fn in_memory() -> Result<Self, ClientError> {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Ok(Self::with(
            Box::new(SqliteDevice::in_memory()?),
            XChaCha20Poly1305::new((&key).into()),
        ))
    }

    fn with(backend: Box<dyn DeviceBackend>, cipher: XChaCha20Poly1305) -> Self {
        Store {
            inner: Arc::new(Inner {
                backend: Mutex::new(backend),
                cipher,
            }),
        }
    }

    /// Which backend keeps the store, and where.
    pub fn describe(&self) -> String {
        self.backend().describe()
    }

    fn backend(&self) -> MutexGuard<'_, Box<dyn DeviceBackend>> {
        // A poisoned lock means another thread panicked mid-operation; the
        // backend itself is still consistent (transactions roll back), so
        // carry on with it.
        self.inner.backend.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seal(&self, table: &str, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        seal(&self.inner.cipher, table, key, plaintext)
    }

    fn open_sealed(&self, table: &str, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ClientError> {
        open_sealed(&self.inner.cipher, table, key, sealed)
    }

    pub fn get(&self, ns: &str, k: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let v = self.backend().get(ns, k)?;
        v.map(|v| self.open_sealed(ns, k, &v)).transpose()
    }

    pub fn put(&self, ns: &str, k: &[u8], v: &[u8]) -> Result<(), ClientError> {
        let sealed = self.seal(ns, k, v)?;
        self.backend().write(&[(ns, k, &sealed)], &[])
    }

    pub fn delete(&self, ns: &str, k: &[u8]) -> Result<(), ClientError> {
        self.backend().write(&[], &[(ns, k)])
    }

    /// Keys of a namespace that start with `prefix`, in order.
    pub fn keys(&self, ns: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        self.backend().keys(ns, prefix)
    }

    /// Write several values and deletions in one transaction.
    pub fn write_batch(
        &self,
        puts: &[(&str, Vec<u8>, &[u8])],
        deletes: &[(&str, Vec<u8>)],
    ) -> Result<(), ClientError> {
        let sealed: Vec<(&str, &[u8], Vec<u8>)> = puts
            .iter()
            .map(|(ns, k, v)| Ok((*ns, k.as_slice(), self.seal(ns, k, v)?)))
            .collect::<Result<_, ClientError>>()?;
        let puts: Vec<(&str, &[u8], &[u8])> = sealed
            .iter()
            .map(|(ns, k, v)| (*ns, *k, v.as_slice()))
            .collect();
        let deletes: Vec<(&str, &[u8])> =
            deletes.iter().map(|(ns, k)| (*ns, k.as_slice())).collect();
        self.backend().write(&puts, &deletes)
    }

    /// Store a received (or sent) message. Idempotent per (conv, seq): a
    /// message redelivered after a crash is stored once.
    pub fn insert_message(&self, m: &StoredMessage) -> Result<(), ClientError> {
        let key = format!("{}:{}", m.conv, m.seq);
        let body = serde_json::to_vec(&(&m.sender, &m.text, m.sent_at_ms, &m.files))
            .map_err(|e| ClientError::Store(e.to_string()))?;
        let body = self.seal("messages", key.as_bytes(), &body)?;
        self.backend().insert_message(&MessageRow {
            conv: m.conv.clone(),
            seq: m.seq,
            server_time_ms: m.server_time_ms,
            expire_at_ms: m.expire_at_ms,
            burn_on_read: m.burn_on_read,
            read: m.read,
            body,
        })
    }

    pub fn messages(&self, conv: Option<&str>) -> Result<Vec<StoredMessage>, ClientError> {
        let rows = self.backend().messages(conv)?;
        let mut out = Vec::new();
        let mut captured: std::collections::HashMap<String, u64> = Default::default();
        for row in rows {
            let upto = match captured.get(&row.conv) {
                Some(u) => *u,
                None => {
                    let u = self.captured_upto(&row.conv)?;
                    captured.insert(row.conv.clone(), u);
                    u
                }
            };
            let key = format!("{}:{}", row.conv, row.seq);
            let plain = self.open_sealed("messages", key.as_bytes(), &row.body)?;
            // Bodies stored before files had three fields.
            let (sender, text, sent_at_ms, files): (String, String, u64, Vec<FileInfo>) =
                serde_json::from_slice(&plain)
                    .or_else(|_| {
                        serde_json::from_slice::<(String, String, u64)>(&plain)
                            .map(|(a, b, c)| (a, b, c, Vec::new()))
                    })
                    .map_err(|e| ClientError::Store(e.to_string()))?;
            out.push(StoredMessage {
                captured: row.seq <= upto,
                conv: row.conv,
                seq: row.seq,
                sender,
                text,
                sent_at_ms,
                server_time_ms: row.server_time_ms,
                expire_at_ms: row.expire_at_ms,
                burn_on_read: row.burn_on_read,
                read: row.read,
                files,
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
        let n = self.backend().mark_read(conv)?;
        if n > 0 {
            self.purge_orphan_files()?;
        }
        Ok(n)
    }

    /// Delete every message whose timer has fired by `now_ms`. Returns how
    /// many were deleted.
    pub fn purge_expired(&self, now_ms: u64) -> Result<usize, ClientError> {
        let n = self.backend().purge_expired(now_ms)?;
        if n > 0 {
            self.purge_orphan_files()?;
        }
        Ok(n)
    }

    pub fn message_count(&self) -> Result<u64, ClientError> {
        self.backend().message_count()
    }

    /// Earliest pending expiry, so a running client can sleep until then.
    pub fn next_expiry(&self) -> Result<Option<u64>, ClientError> {
        self.backend().next_expiry()
    }
}

/// `plaintext` sealed for its place: the table and key are bound in as
/// associated data, so a value cannot be moved elsewhere undetected.
fn seal(
    cipher: &XChaCha20Poly1305,
    table: &str,
    key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let aad = [table.as_bytes(), b"\0", key].concat();
    let ct = cipher
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

fn open_sealed(
    cipher: &XChaCha20Poly1305,
    table: &str,
    key: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, ClientError> {
    if sealed.len() < 24 {
        return Err(ClientError::Store(format!(
            "sealed value in {table} is truncated"
        )));
    }
    let aad = [table.as_bytes(), b"\0", key].concat();
    cipher
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
    fn the_sqlite_backend_keeps_the_device_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        contract::run_all(|| {
            n += 1;
            Box::new(SqliteDevice::open(&dir.path().join(format!("d{n}.db"))).unwrap())
        });
        contract::run_all(|| Box::new(SqliteDevice::in_memory().unwrap()));
    }

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
            files: Vec::new(),
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
