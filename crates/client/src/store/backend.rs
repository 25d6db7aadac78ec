//! Where a device store keeps its bytes: [`DeviceBackend`], with SQLite
//! ([`SqliteDevice`], every device's default) here, and PostgreSQL in the
//! records crate (a records worker's state, so that another worker can
//! take it over). The backend sees only sealed values: [`Store`](super::Store)
//! seals every value and message body before it gets there.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::ClientError;

/// The raw storage of a device: settings, sealed key-value pairs, and
/// messages with their expiry. Every write that returns Ok is durable.
pub trait DeviceBackend: Send {
    /// Which backend this is, and where (never a password).
    fn describe(&self) -> String;

    /// A setting kept in the clear (the key derivation's salt, the check
    /// value).
    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, ClientError>;

    /// Keep settings, in one transaction.
    fn set_meta(&mut self, kvs: &[(&str, &[u8])]) -> Result<(), ClientError>;

    fn get(&self, ns: &str, k: &[u8]) -> Result<Option<Vec<u8>>, ClientError>;

    /// Keys of namespace `ns` that start with `prefix`, in byte order.
    fn keys(&self, ns: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ClientError>;

    /// Put (replacing) and delete, all in one transaction.
    fn write(
        &mut self,
        puts: &[(&str, &[u8], &[u8])],
        deletes: &[(&str, &[u8])],
    ) -> Result<(), ClientError>;

    /// Keep a message (its body sealed); a second one at the same
    /// (conversation, seq) is ignored: redelivery after a crash.
    fn insert_message(&mut self, m: &MessageRow) -> Result<(), ClientError>;

    /// Messages (of `conv`, if given), by conversation and seq.
    fn messages(&self, conv: Option<&str>) -> Result<Vec<MessageRow>, ClientError>;

    /// Mark messages read, then delete those that burn on read; how many
    /// were deleted.
    fn mark_read(&mut self, conv: Option<&str>) -> Result<usize, ClientError>;

    /// Delete every message whose timer fired by `now_ms`; how many.
    fn purge_expired(&mut self, now_ms: u64) -> Result<usize, ClientError>;

    fn message_count(&self) -> Result<u64, ClientError>;

    /// The earliest pending expiry.
    fn next_expiry(&self) -> Result<Option<u64>, ClientError>;
}

/// A message as the backend keeps it: what deletion needs in the clear,
/// the rest sealed in `body`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub conv: String,
    pub seq: u64,
    pub server_time_ms: u64,
    pub expire_at_ms: Option<u64>,
    pub burn_on_read: bool,
    pub read: bool,
    pub body: Vec<u8>,
}

/// A device store in one SQLite file: WAL, `synchronous=FULL`, and
/// `secure_delete`, so a disappearing message's pages are overwritten
/// instead of left (encrypted) in free space.
pub struct SqliteDevice {
    conn: Connection,
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

impl SqliteDevice {
    /// Open (or create) the file at `path`.
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;",
        )?;
        Self::ready(conn)
    }

    /// In memory only (nothing outlives the process).
    pub fn in_memory() -> Result<Self, ClientError> {
        Self::ready(Connection::open_in_memory()?)
    }

    fn ready(mut conn: Connection) -> Result<Self, ClientError> {
        // Every statement is prepared once per connection (parsing was a
        // tenth of the server's CPU under load); room for all of them.
        conn.set_prepared_statement_cache_capacity(128);
        keepwire_schema::migrate(&mut conn, &SCHEMA)?;
        Ok(Self { conn })
    }
}

impl DeviceBackend for SqliteDevice {
    fn describe(&self) -> String {
        keepwire_schema::describe(&self.conn)
    }

    fn meta(&self, k: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k=?1")?
            .query_row(params![k], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(&mut self, kvs: &[(&str, &[u8])]) -> Result<(), ClientError> {
        let tx = self.conn.transaction()?;
        for (k, v) in kvs {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")?
                .execute(params![k, v])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&self, ns: &str, k: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM kv WHERE ns=?1 AND k=?2")?
            .query_row(params![ns, k], |r| r.get(0))
            .optional()?)
    }

    fn keys(&self, ns: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT k FROM kv WHERE ns=?1 ORDER BY k")?;
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

    fn write(
        &mut self,
        puts: &[(&str, &[u8], &[u8])],
        deletes: &[(&str, &[u8])],
    ) -> Result<(), ClientError> {
        let tx = self.conn.transaction()?;
        for (ns, k, v) in puts {
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

    fn insert_message(&mut self, m: &MessageRow) -> Result<(), ClientError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO messages (conv, seq, sender, server_time_ms, expire_at_ms,
                    burn_on_read, read, body)
                 VALUES (?1, ?2, '', ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                m.conv,
                m.seq as i64,
                m.server_time_ms as i64,
                m.expire_at_ms.map(|v| v as i64),
                m.burn_on_read,
                m.read,
                m.body
            ])?;
        Ok(())
    }

    fn messages(&self, conv: Option<&str>) -> Result<Vec<MessageRow>, ClientError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT conv, seq, server_time_ms, expire_at_ms, burn_on_read, read, body FROM messages
             WHERE ?1 IS NULL OR conv = ?1 ORDER BY conv, seq",
        )?;
        let rows = stmt.query_map(params![conv], |r| {
            Ok(MessageRow {
                conv: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                server_time_ms: r.get::<_, i64>(2)? as u64,
                expire_at_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                burn_on_read: r.get(4)?,
                read: r.get(5)?,
                body: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn mark_read(&mut self, conv: Option<&str>) -> Result<usize, ClientError> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached("UPDATE messages SET read = 1 WHERE ?1 IS NULL OR conv = ?1")?
            .execute(params![conv])?;
        let n = tx
            .prepare_cached("DELETE FROM messages WHERE burn_on_read = 1 AND read = 1")?
            .execute([])?;
        tx.commit()?;
        Ok(n)
    }

    fn purge_expired(&mut self, now_ms: u64) -> Result<usize, ClientError> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM messages WHERE expire_at_ms IS NOT NULL AND expire_at_ms <= ?1",
            )?
            .execute(params![now_ms as i64])?)
    }

    fn message_count(&self) -> Result<u64, ClientError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM messages")?
            .query_row([], |r| r.get::<_, i64>(0))? as u64)
    }

    fn next_expiry(&self) -> Result<Option<u64>, ClientError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(expire_at_ms) FROM messages")?
            .query_row([], |r| r.get(0))?;
        Ok(v.map(|v| v as u64))
    }
}
