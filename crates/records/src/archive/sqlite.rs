//! The archive in SQLite, the embedded default: `records/archive.db`, WAL
//! with `synchronous=FULL`. Every write takes the write lock up front (an
//! IMMEDIATE transaction), so a second writer on the same archive (a CLI
//! beside the running service) waits instead of both computing the same
//! next leaf.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use tlog_tiles::tlog::{self, Hash, HashReader};

use super::store::*;
use crate::tlog::Leaf;
use crate::RecordsError;

pub struct SqliteArchive {
    conn: Connection,
    /// Opened for reading only (`verify`, `proof`): SQLite refuses writes.
    read_only: bool,
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
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS tlog_leaves (n INTEGER PRIMARY KEY, kind TEXT NOT NULL, record_id INTEGER,
                data BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS tlog_leaves_record ON tlog_leaves (record_id);
             CREATE TABLE IF NOT EXISTS tlog_hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS checkpoints (id INTEGER PRIMARY KEY, size INTEGER NOT NULL, note TEXT NOT NULL,
                issued_ms INTEGER NOT NULL);",
        )
    }),
    // 2: accounts (`crate::accounts`).
    keepwire_schema::Migration::Sql(
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
            created_ms INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0);",
    ),
    // 3: attachments (issue 13): what the leaf says of each file, and
    // the files' bytes as they arrived.
    keepwire_schema::Migration::Sql(
        "ALTER TABLE records ADD COLUMN attachments TEXT;
         CREATE TABLE attachment_chunks (record_id INTEGER NOT NULL, n INTEGER NOT NULL,
            start INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (record_id, n, start));",
    ),
    // 4: files apart from records (issue 13): a file's bytes are stored
    // before its record, addressed by their hash, in `files/` beside the
    // database (never through the WAL every record's commit flushes); a
    // record links them. `attachment_chunks` is read for records stored
    // under 3.
    keepwire_schema::Migration::Sql(
        "CREATE TABLE files (cipher_sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL,
            stored_at_ms INTEGER NOT NULL);
         CREATE TABLE record_files (record_id INTEGER NOT NULL, n INTEGER NOT NULL,
            cipher_sha256 TEXT NOT NULL, PRIMARY KEY (record_id, n));
         CREATE INDEX record_files_by_file ON record_files (cipher_sha256);",
    ),
    // 5: the records lifecycle (issue 14): the records officer's events,
    // each committed to by its leaf (`crate::lifecycle`).
    keepwire_schema::Migration::Sql(
        "CREATE TABLE lifecycle_events (n INTEGER PRIMARY KEY, kind TEXT NOT NULL, actor TEXT NOT NULL,
            at_ms INTEGER NOT NULL, body TEXT NOT NULL, leaf INTEGER);",
    )],
};

mod files;
mod lifecycle;
pub use files::FILES_DIR;

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64, bool)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_account(
    (name, role, password_hash, created_ms, disabled): (String, String, String, i64, bool),
) -> Result<Account, RecordsError> {
    Ok(Account {
        role: role.parse()?,
        name,
        password_hash,
        created_ms: created_ms as u64,
        disabled,
    })
}

impl SqliteArchive {
    /// Open (creating) the archive database at `path`.
    pub fn open(path: &Path) -> Result<Self, RecordsError> {
        let mut conn = Connection::open(path)?;
        // Every statement is prepared once per connection (parsing was a
        // tenth of the server's CPU under load); room for all of them.
        conn.set_prepared_statement_cache_capacity(128);
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;
             PRAGMA mmap_size=1073741824; PRAGMA cache_size=-65536;",
        )?;
        keepwire_schema::migrate(&mut conn, &SCHEMA)?;
        Ok(Self {
            conn,
            read_only: false,
        })
    }

    /// Open an existing archive database for reading only, as `verify`
    /// and `proof` do: nothing is created, migrated or written (SQLite
    /// refuses writes on this connection), so an auditor needs no write
    /// access to the archive.
    pub fn open_read_only(path: &Path) -> Result<Self, RecordsError> {
        if !path.is_file() {
            return Err(RecordsError::Archive(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA busy_timeout=5000;")?;
        let version = keepwire_schema::version(&conn, &SCHEMA)?;
        if version != SCHEMA.latest() {
            return Err(RecordsError::Archive(format!(
                "{} is at schema version {version}, this keepwire reads {}: open it once with \
                 the records service (which migrates it) first",
                path.display(),
                SCHEMA.latest()
            )));
        }
        Ok(Self {
            conn,
            read_only: true,
        })
    }

    fn write(&mut self) -> Result<rusqlite::Transaction<'_>, RecordsError> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }
}

/// Stored hashes read through a connection (or a transaction).
struct Stored<'a>(&'a Connection);

impl HashReader for Stored<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT hash FROM tlog_hashes WHERE idx=?1")
            .map_err(|e| tlog::Error::InvalidInput(e.to_string()))?;
        indexes
            .iter()
            .map(|i| {
                let h: Vec<u8> = stmt
                    .query_row(params![*i as i64], |r| r.get(0))
                    .map_err(|_| tlog::Error::IndexesNotInTree)?;
                Ok(Hash(h.try_into().map_err(|_| tlog::Error::MalformedHash)?))
            })
            .collect()
    }
}

fn size(conn: &Connection) -> Result<u64, RecordsError> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(n) + 1, 0) FROM tlog_leaves")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

/// Append a leaf's bytes at `n` (the log's size, read in the same write
/// transaction) with its stored hashes; a wrong `n` fails on the leaf's
/// primary key or, past the end, on the stored hashes.
fn append_at(
    conn: &Connection,
    n: u64,
    kind: &str,
    data: &[u8],
    record_id: Option<i64>,
) -> Result<u64, RecordsError> {
    let hashes = crate::tlog::new_hashes(n, data, &Stored(conn))?;
    conn.prepare_cached(
        "INSERT INTO tlog_leaves (n, kind, record_id, data) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![n as i64, kind, record_id, data])?;
    let mut stmt = conn.prepare_cached("INSERT INTO tlog_hashes (idx, hash) VALUES (?1, ?2)")?;
    for (idx, h) in hashes {
        stmt.execute(params![idx as i64, &h.0[..]])?;
    }
    Ok(n)
}

/// Destroy record `id`'s content inside `tx` (its data key, body and
/// file links) and append its tombstone; the files no record links any
/// more, whose bytes go once `tx` commits.
fn destroy_in(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    tombstone: &dyn Fn(&str, u64, u64) -> Leaf,
) -> Result<Vec<String>, RecordsError> {
    let (conv, seq, leaf, has_key): (String, i64, Option<i64>, bool) = tx
        .prepare_cached("SELECT conv, seq, leaf, wrapped_key IS NOT NULL FROM records WHERE id=?1")?
        .query_row(params![id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?
        .ok_or_else(|| RecordsError::Archive(format!("no record {id}")))?;
    let leaf = check_destroyable(id, has_key, leaf.map(|l| l as u64))?;
    tx.prepare_cached("UPDATE records SET wrapped_key=NULL, body=NULL WHERE id=?1")?
        .execute(params![id])?;
    // Its files go unless another record links the same bytes.
    let unlinked = files::unlink(tx, id)?;
    append(tx, &tombstone(&conv, seq as u64, leaf), Some(id))?;
    Ok(unlinked)
}

fn append(conn: &Connection, leaf: &Leaf, record_id: Option<i64>) -> Result<u64, RecordsError> {
    append_at(conn, size(conn)?, leaf.kind(), &leaf.to_bytes(), record_id)
}

fn record_row(r: &rusqlite::Row<'_>, content: bool) -> rusqlite::Result<StoredRecord> {
    let (wrapped_key, body): (Option<Vec<u8>>, Option<Vec<u8>>) = if content {
        (r.get(12)?, r.get(13)?)
    } else {
        (None, None)
    };
    Ok(StoredRecord {
        id: r.get(0)?,
        conv: r.get(1)?,
        seq: r.get::<_, i64>(2)? as u64,
        kind: r.get(3)?,
        epoch: r.get::<_, i64>(4)? as u64,
        sender: r.get(5)?,
        participants: r.get(6)?,
        server_time_ms: r.get::<_, i64>(7)? as u64,
        captured_at_ms: r.get::<_, i64>(8)? as u64,
        expire_after_secs: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        burn_on_read: r.get(10)?,
        receipt: r.get(11)?,
        note: r.get(14)?,
        leaf: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        has_content: r.get(16)?,
        attachments: r.get(17)?,
        wrapped_key,
        body,
    })
}

impl ArchiveStore for SqliteArchive {
    fn reopen(&self) -> Option<Result<Box<dyn ArchiveStore>, RecordsError>> {
        match self.conn.path() {
            Some(p) if !p.is_empty() => Some(
                if self.read_only {
                    SqliteArchive::open_read_only(Path::new(p))
                } else {
                    SqliteArchive::open(Path::new(p))
                }
                .map(|a| Box::new(a) as Box<dyn ArchiveStore>),
            ),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        keepwire_schema::describe(&self.conn)
    }

    fn insert_records(&mut self, records: &[SealedRecord<'_>]) -> Result<usize, RecordsError> {
        let tx = self.write()?;
        let mut new = 0;
        // One key signs nearly every receipt: listed once per batch.
        let mut key_seen: Option<&[u8]> = None;
        for r in records {
            let m = r.meta;
            // The leaf this record will get if it is new: the log's next
            // index (the write lock is held), written with the row.
            let next_leaf = size(&tx)?;
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO records (conv, seq, kind, epoch, sender, participants,
                        server_time_ms, captured_at_ms, expire_after_secs, burn_on_read, receipt,
                        wrapped_key, body, note, leaf, attachments)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )?
                .execute(params![
                    m.conv,
                    m.seq as i64,
                    m.kind.as_str(),
                    m.epoch as i64,
                    m.sender,
                    r.participants_json,
                    m.server_time_ms as i64,
                    m.captured_at_ms as i64,
                    m.expire_after_secs.map(|v| v as i64),
                    m.burn_on_read,
                    r.receipt_json,
                    r.wrapped_key,
                    r.body,
                    m.note,
                    next_leaf as i64,
                    attachments_column(m)
                ])?;
            if n == 1 {
                new += 1;
                let id = tx.last_insert_rowid();
                files::link(&tx, id, m)?;
                if key_seen != Some(r.server_key) {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO server_keys (key, first_seen_ms) VALUES (?1, ?2)",
                    )?
                    .execute(params![r.server_key, m.captured_at_ms as i64])?;
                    key_seen = Some(r.server_key);
                }
                append_at(&tx, next_leaf, r.leaf.kind(), &r.leaf.to_bytes(), Some(id))?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn records(&self, which: Which, content: bool) -> Result<Vec<StoredRecord>, RecordsError> {
        // Without content the sealed columns are not even read (a body can
        // span overflow pages; verify reads every row).
        let sealed = if content {
            "wrapped_key, body"
        } else {
            "NULL, NULL"
        };
        let columns = format!(
            "SELECT id, conv, seq, kind, epoch, sender, participants, server_time_ms,
                captured_at_ms, expire_after_secs, burn_on_read, receipt, {sealed}, note, leaf,
                wrapped_key IS NOT NULL AND body IS NOT NULL, attachments FROM records"
        );
        let (clause, id) = match which {
            Which::All => ("ORDER BY id", None),
            Which::Messages => (
                "WHERE kind IN ('application', 'withheld', 'undecryptable') ORDER BY id",
                None,
            ),
            Which::One(id) => ("WHERE id = ?1", Some(id)),
        };
        let mut stmt = self.conn.prepare_cached(&format!("{columns} {clause}"))?;
        let row = |r: &rusqlite::Row<'_>| record_row(r, content);
        Ok(match id {
            Some(id) => stmt
                .query_map(params![id], row)?
                .collect::<Result<_, _>>()?,
            None => stmt.query_map([], row)?.collect::<Result<_, _>>()?,
        })
    }

    fn sealed_content(&self, id: i64) -> Result<Option<SealedContent>, RecordsError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT conv, seq, wrapped_key, body FROM records
                 WHERE id=?1 AND wrapped_key IS NOT NULL AND body IS NOT NULL",
            )?
            .query_row(params![id], |r| {
                Ok(SealedContent {
                    conv: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    wrapped_key: r.get(2)?,
                    body: r.get(3)?,
                })
            })
            .optional()?)
    }

    fn archived_as(
        &self,
        conv: &str,
        seq: u64,
    ) -> Result<Option<(String, Option<String>, String)>, RecordsError> {
        Ok(self
            .conn
            .prepare_cached("SELECT kind, note, receipt FROM records WHERE conv=?1 AND seq=?2")?
            .query_row(params![conv, seq as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?)
    }

    fn heads(&self) -> Result<Vec<(String, u64)>, RecordsError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT conv, MAX(seq) FROM records GROUP BY conv")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn count(&self, kind: Option<&str>) -> Result<u64, RecordsError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM records WHERE ?1 IS NULL OR kind=?1")?
            .query_row(params![kind], |r| r.get::<_, i64>(0))? as u64)
    }

    fn server_keys(&self) -> Result<Vec<Vec<u8>>, RecordsError> {
        let mut stmt = self.conn.prepare_cached("SELECT key FROM server_keys")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_file(
        &mut self,
        cipher_sha256: &str,
        path: &Path,
        now_ms: u64,
    ) -> Result<(), RecordsError> {
        self.store_file(cipher_sha256, path, now_ms)
    }

    fn attachment_read(
        &self,
        id: i64,
        n: u32,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RecordsError> {
        self.read_attachment(id, n, offset, len)
    }

    fn destroy(
        &mut self,
        id: i64,
        tombstone: &dyn Fn(&str, u64, u64) -> Leaf,
    ) -> Result<(), RecordsError> {
        let tx = self.write()?;
        let unlinked = destroy_in(&tx, id, tombstone)?;
        tx.commit()?;
        self.delete_bytes(&unlinked)?;
        Ok(())
    }

    fn rewrap_keys(
        &mut self,
        rewrap: &mut Rewrap<'_>,
        settings: &[(&str, &str)],
        leaf: &dyn Fn(u64) -> Leaf,
    ) -> Result<u64, RecordsError> {
        let tx = self.write()?;
        let mut count = 0u64;
        {
            let mut read = tx.prepare(
                "SELECT id, conv, seq, wrapped_key FROM records WHERE wrapped_key IS NOT NULL",
            )?;
            let mut write = tx.prepare_cached("UPDATE records SET wrapped_key=?1 WHERE id=?2")?;
            let mut rows = read.query([])?;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let conv: String = r.get(1)?;
                let seq = r.get::<_, i64>(2)? as u64;
                let wrapped: Vec<u8> = r.get(3)?;
                write.execute(params![rewrap(&conv, seq, &wrapped)?, id])?;
                count += 1;
            }
        }
        for (k, v) in settings {
            tx.prepare_cached("INSERT OR REPLACE INTO archive_meta (k, v) VALUES (?1, ?2)")?
                .execute(params![k, v])?;
        }
        append(&tx, &leaf(count), None)?;
        tx.commit()?;
        Ok(count)
    }

    fn accounts(&self) -> Result<Vec<Account>, RecordsError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, role, password_hash, created_ms, disabled FROM accounts ORDER BY name",
        )?;
        let rows = stmt.query_map([], account_row)?;
        rows.map(|r| to_account(r?)).collect()
    }

    fn account(&self, name: &str) -> Result<Option<Account>, RecordsError> {
        self.conn
            .prepare_cached(
                "SELECT name, role, password_hash, created_ms, disabled FROM accounts WHERE name=?1",
            )?
            .query_row(params![name], account_row)
            .optional()?
            .map(to_account)
            .transpose()
    }

    fn add_account(
        &mut self,
        account: &Account,
        only_if_none: bool,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError> {
        let tx = self.write()?;
        let taken: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM accounts WHERE name=?1 OR ?2)")?
            .query_row(params![account.name, only_if_none], |r| r.get(0))?;
        if taken {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT INTO accounts (name, role, password_hash, created_ms, disabled)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            account.name,
            account.role.as_str(),
            account.password_hash,
            account.created_ms as i64,
            account.disabled
        ])?;
        append(&tx, leaf, None)?;
        tx.commit()?;
        Ok(true)
    }

    fn set_account_disabled(
        &mut self,
        name: &str,
        disabled: bool,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError> {
        let tx = self.write()?;
        let n = tx
            .prepare_cached("UPDATE accounts SET disabled=?2 WHERE name=?1")?
            .execute(params![name, disabled])?;
        if n == 0 {
            return Ok(false);
        }
        append(&tx, leaf, None)?;
        tx.commit()?;
        Ok(true)
    }

    fn meta(&self, k: &str) -> Result<Option<String>, RecordsError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM archive_meta WHERE k=?1")?
            .query_row(params![k], |r| r.get(0))
            .optional()?)
    }

    fn append_event(&mut self, event: &StoredEvent, leaf: &Leaf) -> Result<bool, RecordsError> {
        self.insert_event(event, leaf)
    }

    fn events(&self, after: u64) -> Result<Vec<StoredEvent>, RecordsError> {
        self.event_rows(after)
    }

    fn dispose(
        &mut self,
        ids: &[i64],
        tombstone: &Tombstone<'_>,
        events: &[(StoredEvent, Leaf)],
    ) -> Result<bool, RecordsError> {
        self.dispose_batch(ids, tombstone, events)
    }

    fn set_meta(&self, k: &str, v: &str) -> Result<(), RecordsError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO archive_meta (k, v) VALUES (?1, ?2)")?
            .execute(params![k, v])?;
        Ok(())
    }

    fn append_leaf(&mut self, leaf: &Leaf) -> Result<u64, RecordsError> {
        let tx = self.write()?;
        let n = append(&tx, leaf, None)?;
        tx.commit()?;
        Ok(n)
    }

    fn append_decision(&mut self, id: u64, leaf: &Leaf) -> Result<bool, RecordsError> {
        let tx = self.write()?;
        let done: u64 = tx
            .prepare_cached("SELECT v FROM archive_meta WHERE k=?1")?
            .query_row(params![DECISIONS_LOGGED], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if id <= done {
            return Ok(false);
        }
        append(&tx, leaf, None)?;
        tx.prepare_cached("INSERT OR REPLACE INTO archive_meta (k, v) VALUES (?1, ?2)")?
            .execute(params![DECISIONS_LOGGED, id.to_string()])?;
        tx.commit()?;
        Ok(true)
    }

    fn log_size(&self) -> Result<u64, RecordsError> {
        size(&self.conn)
    }

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        Stored(&self.conn).read_hashes(indexes)
    }

    fn leaf(&self, n: u64) -> Result<Option<StoredLeaf>, RecordsError> {
        Ok(self
            .conn
            .prepare_cached("SELECT kind, record_id, data FROM tlog_leaves WHERE n=?1")?
            .query_row(params![n as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?)
    }

    fn for_each_leaf(
        &self,
        below: u64,
        f: &mut dyn FnMut(RawLeaf<'_>) -> Result<bool, RecordsError>,
    ) -> Result<(), RecordsError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT n, kind, record_id, data FROM tlog_leaves WHERE n < ?1 ORDER BY n",
        )?;
        let mut rows = stmt.query(params![below as i64])?;
        while let Some(r) = rows.next()? {
            // Tolerant: a column an insider changed to another type reads
            // as absent; the hashed data is what counts.
            let leaf = RawLeaf {
                n: r.get::<_, i64>(0)? as u64,
                kind: r.get_ref(1)?.as_str().ok(),
                record_id: r.get_ref(2)?.as_i64().ok(),
                data: r.get_ref(3)?.as_blob().unwrap_or_default(),
            };
            if !f(leaf)? {
                break;
            }
        }
        Ok(())
    }

    fn hashes(
        &self,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Option<Hash>)>, RecordsError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, hash FROM tlog_hashes WHERE idx >= ?1 AND idx < ?2 ORDER BY idx LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![from as i64, below as i64, limit as i64])?;
        let mut out = Vec::with_capacity(limit.min(4096));
        while let Some(r) = rows.next()? {
            let h = r
                .get_ref(1)?
                .as_blob()
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(Hash);
            out.push((r.get::<_, i64>(0)? as u64, h));
        }
        Ok(out)
    }

    fn checkpoint(
        &self,
        sign: &mut dyn FnMut(u64, Hash) -> Result<String, RecordsError>,
        now_ms: u64,
    ) -> Result<(u64, String), RecordsError> {
        // IMMEDIATE: the write lock from the start, so the archive writer
        // cannot append between this read and the insert (a deferred
        // transaction would then fail to upgrade, SQLITE_BUSY_SNAPSHOT).
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let size = size(&tx)?;
        let latest: Option<(i64, String)> = tx
            .prepare_cached("SELECT size, note FROM checkpoints ORDER BY id DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((latest_size, note)) = latest {
            if latest_size as u64 == size {
                return Ok((size, note));
            }
        }
        let root = tlog::tree_hash(size, &Stored(&tx)).map_err(crate::tlog::tlog_err)?;
        let note = sign(size, root)?;
        tx.prepare_cached("INSERT INTO checkpoints (size, note, issued_ms) VALUES (?1, ?2, ?3)")?
            .execute(params![size as i64, note, now_ms as i64])?;
        tx.commit()?;
        Ok((size, note))
    }

    fn checkpoints(&self) -> Result<Vec<(i64, u64, String)>, RecordsError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, size, note FROM checkpoints ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, RecordsError> {
        Ok(self
            .conn
            .prepare_cached("SELECT size, note FROM checkpoints ORDER BY id DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()?)
    }

    fn cosign_checkpoint(
        &self,
        size: u64,
        merge: &mut dyn FnMut(&str) -> Result<String, RecordsError>,
    ) -> Result<Option<String>, RecordsError> {
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let Some((id, note)) = tx
            .prepare_cached(
                "SELECT id, note FROM checkpoints WHERE size = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([size as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?
        else {
            return Ok(None);
        };
        let note = merge(&note)?;
        tx.prepare_cached("UPDATE checkpoints SET note = ?1 WHERE id = ?2")?
            .execute(params![note, id])?;
        tx.commit()?;
        Ok(Some(note))
    }

    fn read_snapshot(&self) -> Result<Box<dyn Snapshot + '_>, RecordsError> {
        Ok(Box::new(self.conn.unchecked_transaction()?))
    }
}
