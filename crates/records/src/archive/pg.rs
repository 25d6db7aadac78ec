//! The archive in PostgreSQL: the same tables as SQLite in PostgreSQL's
//! types, on a database of its own (the records service's custody, apart
//! from the server's). Commits wait for the WAL flush (PostgreSQL's
//! default `synchronous_commit = on`), so a record is durable before the
//! records service reports it archived. Every writing transaction first
//! takes one advisory lock — SQLite's IMMEDIATE — so two writers never
//! compute the same next leaf; readers are not held up. `verify` reads
//! in one REPEATABLE READ snapshot.

use keepwire_schema::pg::tokio_postgres::Row;
use keepwire_schema::pg::{Pg, PgSchema};
use tlog_tiles::tlog::{self, Hash, HashReader};

use super::store::*;
use crate::tlog::Leaf;
use crate::RecordsError;

/// The archive on a PostgreSQL database of its own.
pub struct PgArchive {
    pg: Pg,
    /// Its session set read-only (`verify`, `proof`).
    read_only: bool,
}

/// The archive's schema in PostgreSQL; append, never edit.
pub static SCHEMA: PgSchema = PgSchema {
    name: "archive",
    // The records device's state may live beside it (same custody).
    companions: &["records device"],
    migrations: &[
        r#"
        CREATE TABLE records (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, conv TEXT NOT NULL,
            seq BIGINT NOT NULL, kind TEXT NOT NULL, epoch BIGINT NOT NULL, sender TEXT NOT NULL,
            participants TEXT NOT NULL, server_time_ms BIGINT NOT NULL, captured_at_ms BIGINT NOT NULL,
            expire_after_secs BIGINT, burn_on_read BOOLEAN NOT NULL, receipt TEXT NOT NULL,
            wrapped_key BYTEA, body BYTEA, note TEXT, leaf BIGINT, UNIQUE (conv, seq));
        CREATE TABLE server_keys (key BYTEA PRIMARY KEY, first_seen_ms BIGINT NOT NULL);
        CREATE TABLE archive_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
        CREATE TABLE tlog_leaves (n BIGINT PRIMARY KEY, kind TEXT NOT NULL, record_id BIGINT,
            data BYTEA NOT NULL);
        CREATE INDEX tlog_leaves_record ON tlog_leaves (record_id);
        CREATE TABLE tlog_hashes (idx BIGINT PRIMARY KEY, hash BYTEA NOT NULL);
        CREATE TABLE checkpoints (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, size BIGINT NOT NULL,
            note TEXT NOT NULL, issued_ms BIGINT NOT NULL);
    "#,
        // 2: accounts (`crate::accounts`).
        r#"
        CREATE TABLE accounts (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
            created_ms BIGINT NOT NULL, disabled BOOLEAN NOT NULL DEFAULT FALSE);
    "#,
        // 3: attachments (issue 13).
        r#"
        ALTER TABLE records ADD COLUMN attachments TEXT;
        CREATE TABLE attachment_chunks (record_id BIGINT NOT NULL, n INTEGER NOT NULL,
            start BIGINT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (record_id, n, start));
    "#,
        // 4: files apart from records (issue 13): stored before their
        // record, addressed by their hash, in chunks of their own
        // transactions; a record links them. `attachment_chunks` is read
        // for records stored under 3.
        r#"
        CREATE TABLE files (cipher_sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL,
            stored_at_ms BIGINT NOT NULL);
        CREATE TABLE file_chunks (cipher_sha256 TEXT NOT NULL, start BIGINT NOT NULL,
            data BYTEA NOT NULL, PRIMARY KEY (cipher_sha256, start));
        CREATE TABLE record_files (record_id BIGINT NOT NULL, n INTEGER NOT NULL,
            cipher_sha256 TEXT NOT NULL, PRIMARY KEY (record_id, n));
        CREATE INDEX record_files_by_file ON record_files (cipher_sha256);
    "#,
        // 5: the records lifecycle (issue 14): the records officer's
        // events, each committed to by its leaf.
        r#"
        CREATE TABLE lifecycle_events (n BIGINT PRIMARY KEY, kind TEXT NOT NULL, actor TEXT NOT NULL,
            at_ms BIGINT NOT NULL, body TEXT NOT NULL, leaf BIGINT);
    "#,
    ],
};

mod files;
mod lifecycle;

/// The advisory lock every writing transaction takes first.
const WRITER_LOCK: i64 = 0x4b57_4152;

impl PgArchive {
    /// Connect to the database at `url` and bring its schema up to date.
    pub fn open(url: &str) -> Result<Self, RecordsError> {
        let pg = Pg::connect(url)?;
        keepwire_schema::pg::migrate(&pg, &SCHEMA)?;
        Ok(Self {
            pg,
            read_only: false,
        })
    }

    /// The archive at `url` for reading only, as `verify` and `proof`
    /// open it: not migrated, and its session read-only, so PostgreSQL
    /// refuses any write (a role with SELECT alone is enough).
    pub fn open_read_only(url: &str) -> Result<Self, RecordsError> {
        let pg = Pg::connect(url)?;
        match keepwire_schema::pg::version(&pg, &SCHEMA)? {
            None => {
                return Err(RecordsError::Archive(format!(
                    "the PostgreSQL database at {} holds no keepwire archive: check --database \
                     (KEEPWIRE_RECORDS_DATABASE)",
                    pg.address()
                )))
            }
            Some(v) if v != SCHEMA.migrations.len() as i64 => {
                return Err(RecordsError::Archive(format!(
                    "the archive at {} is at schema version {v}, this keepwire reads {}: open it \
                     once with the records service (which migrates it) first",
                    pg.address(),
                    SCHEMA.migrations.len()
                )))
            }
            Some(_) => {}
        }
        read_only_session(&pg)?;
        Ok(Self {
            pg,
            read_only: true,
        })
    }

    /// The archive at `url` if that database holds one (for the commands
    /// that read or change an archive, which must not create an empty one
    /// where an address was mistyped).
    pub fn open_existing(url: &str) -> Result<Self, RecordsError> {
        let pg = Pg::connect(url)?;
        if keepwire_schema::pg::version(&pg, &SCHEMA)?.is_none() {
            return Err(RecordsError::Archive(format!(
                "the PostgreSQL database at {} holds no keepwire archive: check --database \
                 (KEEPWIRE_RECORDS_DATABASE)",
                pg.address()
            )));
        }
        keepwire_schema::pg::migrate(&pg, &SCHEMA)?;
        Ok(Self {
            pg,
            read_only: false,
        })
    }

    /// A writing transaction: the writer lock, then `f`.
    fn write<T>(&self, f: impl FnOnce(&Pg) -> Result<T, RecordsError>) -> Result<T, RecordsError> {
        self.pg.transaction(|pg| {
            pg.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])?;
            f(pg)
        })
    }
}

/// Every transaction of this session read-only.
fn read_only_session(pg: &Pg) -> Result<(), RecordsError> {
    pg.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", &[])?;
    Ok(())
}

/// Stored hashes read through the connection (inside its transaction).
struct Stored<'a>(&'a Pg);

impl HashReader for Stored<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        let wanted: Vec<i64> = indexes.iter().map(|&i| i as i64).collect();
        let rows = self
            .0
            .query(
                "SELECT idx, hash FROM tlog_hashes WHERE idx = ANY($1)",
                &[&wanted],
            )
            .map_err(|e| tlog::Error::InvalidInput(e.to_string()))?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            let idx: i64 = r.try_get(0).map_err(|_| tlog::Error::MalformedHash)?;
            let h: Vec<u8> = r.try_get(1).map_err(|_| tlog::Error::MalformedHash)?;
            found.insert(idx, h);
        }
        wanted
            .iter()
            .map(|i| {
                let h = found.get(i).ok_or(tlog::Error::IndexesNotInTree)?;
                Ok(Hash(
                    h.as_slice()
                        .try_into()
                        .map_err(|_| tlog::Error::MalformedHash)?,
                ))
            })
            .collect()
    }
}

fn size(pg: &Pg) -> Result<u64, RecordsError> {
    Ok(pg
        .query_one("SELECT COALESCE(MAX(n) + 1, 0) FROM tlog_leaves", &[])?
        .try_get::<_, i64>(0)? as u64)
}

/// Append a leaf's bytes at `n` (the log's size under the writer lock)
/// with its stored hashes, in two statements.
fn append_at(
    pg: &Pg,
    n: u64,
    kind: &str,
    data: &[u8],
    record_id: Option<i64>,
) -> Result<u64, RecordsError> {
    let hashes = crate::tlog::new_hashes(n, data, &Stored(pg))?;
    pg.execute(
        "INSERT INTO tlog_leaves (n, kind, record_id, data) VALUES ($1, $2, $3, $4)",
        &[&(n as i64), &kind, &record_id, &data],
    )?;
    let idx: Vec<i64> = hashes.iter().map(|(i, _)| *i as i64).collect();
    let hash: Vec<&[u8]> = hashes.iter().map(|(_, h)| &h.0[..]).collect();
    pg.execute(
        "INSERT INTO tlog_hashes (idx, hash) SELECT * FROM unnest($1::BIGINT[], $2::BYTEA[])",
        &[&idx, &hash],
    )?;
    Ok(n)
}

/// Destroy record `id`'s content inside the transaction (its data key,
/// body and file links; the bytes no record links any more with them)
/// and append its tombstone.
fn destroy_in(
    pg: &Pg,
    id: i64,
    tombstone: &dyn Fn(&str, u64, u64) -> Leaf,
) -> Result<(), RecordsError> {
    let row = pg
        .query_opt(
            "SELECT conv, seq, leaf, wrapped_key IS NOT NULL FROM records WHERE id=$1 FOR UPDATE",
            &[&id],
        )?
        .ok_or_else(|| RecordsError::Archive(format!("no record {id}")))?;
    let conv: String = row.try_get(0)?;
    let seq = u64_at(&row, 1)?;
    let leaf = row.try_get::<_, Option<i64>>(2)?.map(|l| l as u64);
    let leaf = check_destroyable(id, row.try_get(3)?, leaf)?;
    pg.execute(
        "UPDATE records SET wrapped_key=NULL, body=NULL WHERE id=$1",
        &[&id],
    )?;
    // Its files go unless another record links the same bytes.
    files::unlink(pg, id)?;
    append(pg, &tombstone(&conv, seq, leaf), Some(id))?;
    Ok(())
}

fn append(pg: &Pg, leaf: &Leaf, record_id: Option<i64>) -> Result<u64, RecordsError> {
    append_at(pg, size(pg)?, leaf.kind(), &leaf.to_bytes(), record_id)
}

fn to_account(r: &Row) -> Result<Account, RecordsError> {
    let role: String = r.try_get(1)?;
    Ok(Account {
        name: r.try_get(0)?,
        role: role.parse()?,
        password_hash: r.try_get(2)?,
        created_ms: u64_at(r, 3)?,
        disabled: r.try_get(4)?,
    })
}

fn u64_at(r: &Row, i: usize) -> Result<u64, RecordsError> {
    Ok(r.try_get::<_, i64>(i)? as u64)
}

fn record_row(r: &Row) -> Result<StoredRecord, RecordsError> {
    Ok(StoredRecord {
        id: r.try_get(0)?,
        conv: r.try_get(1)?,
        seq: u64_at(r, 2)?,
        kind: r.try_get(3)?,
        epoch: u64_at(r, 4)?,
        sender: r.try_get(5)?,
        participants: r.try_get(6)?,
        server_time_ms: u64_at(r, 7)?,
        captured_at_ms: u64_at(r, 8)?,
        expire_after_secs: r.try_get::<_, Option<i64>>(9)?.map(|v| v as u64),
        burn_on_read: r.try_get(10)?,
        receipt: r.try_get(11)?,
        wrapped_key: r.try_get(12)?,
        body: r.try_get(13)?,
        note: r.try_get(14)?,
        leaf: r.try_get::<_, Option<i64>>(15)?.map(|v| v as u64),
        has_content: r.try_get(16)?,
        attachments: r.try_get(17)?,
    })
}

/// Ends a read snapshot.
struct ReadSnapshot<'a>(&'a Pg);

impl Drop for ReadSnapshot<'_> {
    fn drop(&mut self) {
        let _ = self.0.batch("COMMIT");
    }
}

impl ArchiveStore for PgArchive {
    fn reopen(&self) -> Option<Result<Box<dyn ArchiveStore>, RecordsError>> {
        Some(
            self.pg
                .reconnect()
                .map_err(RecordsError::from)
                .and_then(|pg| {
                    if self.read_only {
                        read_only_session(&pg)?;
                    }
                    Ok(Box::new(PgArchive {
                        pg,
                        read_only: self.read_only,
                    }) as Box<dyn ArchiveStore>)
                }),
        )
    }

    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.pg.address())
    }

    fn insert_records(&mut self, records: &[SealedRecord<'_>]) -> Result<usize, RecordsError> {
        self.write(|pg| {
            let mut new = 0;
            let mut key_seen: Option<&[u8]> = None;
            for r in records {
                let m = r.meta;
                let next_leaf = size(pg)?;
                let inserted = pg.query_opt(
                    "INSERT INTO records (conv, seq, kind, epoch, sender, participants, server_time_ms,
                        captured_at_ms, expire_after_secs, burn_on_read, receipt, wrapped_key, body, note, leaf,
                        attachments)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                     ON CONFLICT (conv, seq) DO NOTHING RETURNING id",
                    &[
                        &m.conv,
                        &(m.seq as i64),
                        &m.kind.as_str(),
                        &(m.epoch as i64),
                        &m.sender,
                        &r.participants_json,
                        &(m.server_time_ms as i64),
                        &(m.captured_at_ms as i64),
                        &m.expire_after_secs.map(|v| v as i64),
                        &m.burn_on_read,
                        &r.receipt_json,
                        &r.wrapped_key,
                        &r.body,
                        &m.note,
                        &(next_leaf as i64),
                        &attachments_column(m),
                    ],
                )?;
                let Some(row) = inserted else { continue };
                new += 1;
                let id: i64 = row.try_get(0)?;
                files::link(pg, id, m)?;
                if key_seen != Some(r.server_key) {
                    pg.execute(
                        "INSERT INTO server_keys (key, first_seen_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&r.server_key, &(m.captured_at_ms as i64)],
                    )?;
                    key_seen = Some(r.server_key);
                }
                append_at(pg, next_leaf, r.leaf.kind(), &r.leaf.to_bytes(), Some(id))?;
            }
            Ok(new)
        })
    }

    fn records(&self, which: Which, content: bool) -> Result<Vec<StoredRecord>, RecordsError> {
        macro_rules! select {
            ($content:literal, $clause:literal) => {
                concat!(
                    "SELECT id, conv, seq, kind, epoch, sender, participants, server_time_ms,
                       captured_at_ms, expire_after_secs, burn_on_read, receipt, ",
                    $content,
                    ", note, leaf, wrapped_key IS NOT NULL AND body IS NOT NULL, attachments FROM records ",
                    $clause
                )
            };
        }
        let rows = match (which, content) {
            (Which::All, true) => self
                .pg
                .query(select!("wrapped_key, body", "ORDER BY id"), &[])?,
            (Which::All, false) => self
                .pg
                .query(select!("NULL::BYTEA, NULL::BYTEA", "ORDER BY id"), &[])?,
            (Which::Messages, true) => self.pg.query(
                select!(
                    "wrapped_key, body",
                    "WHERE kind IN ('application', 'withheld', 'undecryptable') ORDER BY id"
                ),
                &[],
            )?,
            (Which::Messages, false) => self.pg.query(
                select!(
                    "NULL::BYTEA, NULL::BYTEA",
                    "WHERE kind IN ('application', 'withheld', 'undecryptable') ORDER BY id"
                ),
                &[],
            )?,
            (Which::One(id), true) => self
                .pg
                .query(select!("wrapped_key, body", "WHERE id = $1"), &[&id])?,
            (Which::One(id), false) => self
                .pg
                .query(select!("NULL::BYTEA, NULL::BYTEA", "WHERE id = $1"), &[&id])?,
        };
        rows.iter().map(record_row).collect()
    }

    fn sealed_content(&self, id: i64) -> Result<Option<SealedContent>, RecordsError> {
        self.pg
            .query_opt(
                "SELECT conv, seq, wrapped_key, body FROM records
                 WHERE id=$1 AND wrapped_key IS NOT NULL AND body IS NOT NULL",
                &[&id],
            )?
            .map(|r| {
                Ok(SealedContent {
                    conv: r.try_get(0)?,
                    seq: u64_at(&r, 1)?,
                    wrapped_key: r.try_get(2)?,
                    body: r.try_get(3)?,
                })
            })
            .transpose()
    }

    fn archived_as(
        &self,
        conv: &str,
        seq: u64,
    ) -> Result<Option<(String, Option<String>, String)>, RecordsError> {
        self.pg
            .query_opt(
                "SELECT kind, note, receipt FROM records WHERE conv=$1 AND seq=$2",
                &[&conv, &(seq as i64)],
            )?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    fn heads(&self) -> Result<Vec<(String, u64)>, RecordsError> {
        self.pg
            .query("SELECT conv, MAX(seq) FROM records GROUP BY conv", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, u64_at(r, 1)?)))
            .collect()
    }

    fn count(&self, kind: Option<&str>) -> Result<u64, RecordsError> {
        u64_at(
            &self.pg.query_one(
                "SELECT COUNT(*) FROM records WHERE $1::TEXT IS NULL OR kind = $1::TEXT",
                &[&kind],
            )?,
            0,
        )
    }

    fn server_keys(&self) -> Result<Vec<Vec<u8>>, RecordsError> {
        self.pg
            .query("SELECT key FROM server_keys", &[])?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    fn put_file(
        &mut self,
        cipher_sha256: &str,
        path: &std::path::Path,
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
        self.write(|pg| destroy_in(pg, id, tombstone))
    }

    fn rewrap_keys(
        &mut self,
        rewrap: &mut Rewrap<'_>,
        settings: &[(&str, &str)],
        leaf: &dyn Fn(u64) -> Leaf,
    ) -> Result<u64, RecordsError> {
        self.write(|pg| {
            let mut count = 0u64;
            let mut after = 0i64;
            loop {
                // A page at a time: an archive of any size fits in memory.
                let page = pg.query(
                    "SELECT id, conv, seq, wrapped_key FROM records
                     WHERE wrapped_key IS NOT NULL AND id > $1 ORDER BY id LIMIT 1000",
                    &[&after],
                )?;
                let Some(last) = page.last() else { break };
                after = last.try_get(0)?;
                for r in &page {
                    let id: i64 = r.try_get(0)?;
                    let conv: String = r.try_get(1)?;
                    let wrapped: Vec<u8> = r.try_get(3)?;
                    let new = rewrap(&conv, u64_at(r, 2)?, &wrapped)?;
                    pg.execute(
                        "UPDATE records SET wrapped_key=$1 WHERE id=$2",
                        &[&new, &id],
                    )?;
                    count += 1;
                }
            }
            for (k, v) in settings {
                pg.execute(
                    "INSERT INTO archive_meta (k, v) VALUES ($1, $2)
                     ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    &[k, v],
                )?;
            }
            append(pg, &leaf(count), None)?;
            Ok(count)
        })
    }

    fn accounts(&self) -> Result<Vec<Account>, RecordsError> {
        self.pg
            .query(
                "SELECT name, role, password_hash, created_ms, disabled FROM accounts ORDER BY name",
                &[],
            )?
            .iter()
            .map(to_account)
            .collect()
    }

    fn account(&self, name: &str) -> Result<Option<Account>, RecordsError> {
        self.pg
            .query(
                "SELECT name, role, password_hash, created_ms, disabled FROM accounts WHERE name=$1",
                &[&name],
            )?
            .first()
            .map(to_account)
            .transpose()
    }

    fn add_account(
        &mut self,
        account: &Account,
        only_if_none: bool,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError> {
        self.write(|pg| {
            // Under the writer lock: two first admins cannot both be made.
            let taken: bool = pg
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM accounts WHERE name=$1 OR $2)",
                    &[&account.name, &only_if_none],
                )?
                .try_get(0)?;
            if taken {
                return Ok(false);
            }
            pg.execute(
                "INSERT INTO accounts (name, role, password_hash, created_ms, disabled)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &account.name,
                    &account.role.as_str(),
                    &account.password_hash,
                    &(account.created_ms as i64),
                    &account.disabled,
                ],
            )?;
            append(pg, leaf, None)?;
            Ok(true)
        })
    }

    fn set_account_disabled(
        &mut self,
        name: &str,
        disabled: bool,
        leaf: &Leaf,
    ) -> Result<bool, RecordsError> {
        self.write(|pg| {
            let n = pg.execute(
                "UPDATE accounts SET disabled=$2 WHERE name=$1",
                &[&name, &disabled],
            )?;
            if n == 0 {
                return Ok(false);
            }
            append(pg, leaf, None)?;
            Ok(true)
        })
    }

    fn meta(&self, k: &str) -> Result<Option<String>, RecordsError> {
        self.pg
            .query_opt("SELECT v FROM archive_meta WHERE k=$1", &[&k])?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
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
        self.pg.execute(
            "INSERT INTO archive_meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&k, &v],
        )?;
        Ok(())
    }

    fn append_leaf(&mut self, leaf: &Leaf) -> Result<u64, RecordsError> {
        self.write(|pg| append(pg, leaf, None))
    }

    fn append_decision(&mut self, id: u64, leaf: &Leaf) -> Result<bool, RecordsError> {
        self.write(|pg| {
            let done: u64 = pg
                .query_opt(
                    "SELECT v FROM archive_meta WHERE k=$1",
                    &[&DECISIONS_LOGGED],
                )?
                .map(|r| r.try_get::<_, String>(0))
                .transpose()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if id <= done {
                return Ok(false);
            }
            append(pg, leaf, None)?;
            pg.execute(
                "INSERT INTO archive_meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                &[&DECISIONS_LOGGED, &id.to_string()],
            )?;
            Ok(true)
        })
    }

    fn log_size(&self) -> Result<u64, RecordsError> {
        size(&self.pg)
    }

    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        Stored(&self.pg).read_hashes(indexes)
    }

    fn leaf(&self, n: u64) -> Result<Option<StoredLeaf>, RecordsError> {
        self.pg
            .query_opt(
                "SELECT kind, record_id, data FROM tlog_leaves WHERE n=$1",
                &[&(n as i64)],
            )?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    fn for_each_leaf(
        &self,
        below: u64,
        f: &mut dyn FnMut(RawLeaf<'_>) -> Result<bool, RecordsError>,
    ) -> Result<(), RecordsError> {
        let mut from = 0i64;
        loop {
            // A page at a time: the log may hold a billion leaves.
            let page = self.pg.query(
                "SELECT n, kind, record_id, data FROM tlog_leaves WHERE n >= $1 AND n < $2
                 ORDER BY n LIMIT 4096",
                &[&from, &(below as i64)],
            )?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            from = last.try_get::<_, i64>(0)? + 1;
            for r in &page {
                let leaf = RawLeaf {
                    n: u64_at(r, 0)?,
                    kind: r.try_get(1).ok(),
                    record_id: r.try_get::<_, Option<i64>>(2).ok().flatten(),
                    data: r.try_get(3).unwrap_or_default(),
                };
                if !f(leaf)? {
                    return Ok(());
                }
            }
        }
    }

    fn hashes(
        &self,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Option<Hash>)>, RecordsError> {
        self.pg
            .query(
                "SELECT idx, hash FROM tlog_hashes WHERE idx >= $1 AND idx < $2 ORDER BY idx LIMIT $3",
                &[&(from as i64), &(below as i64), &(limit as i64)],
            )?
            .iter()
            .map(|r| {
                let h = r
                    .try_get::<_, &[u8]>(1)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .map(Hash);
                Ok((u64_at(r, 0)?, h))
            })
            .collect()
    }

    fn checkpoint(
        &self,
        sign: &mut dyn FnMut(u64, Hash) -> Result<String, RecordsError>,
        now_ms: u64,
    ) -> Result<(u64, String), RecordsError> {
        self.write(|pg| {
            let size = size(pg)?;
            let latest = pg.query_opt(
                "SELECT size, note FROM checkpoints ORDER BY id DESC LIMIT 1",
                &[],
            )?;
            if let Some(r) = latest {
                if u64_at(&r, 0)? == size {
                    return Ok((size, r.try_get(1)?));
                }
            }
            let root = tlog::tree_hash(size, &Stored(pg)).map_err(crate::tlog::tlog_err)?;
            let note = sign(size, root)?;
            pg.execute(
                "INSERT INTO checkpoints (size, note, issued_ms) VALUES ($1, $2, $3)",
                &[&(size as i64), &note, &(now_ms as i64)],
            )?;
            Ok((size, note))
        })
    }

    fn checkpoints(&self) -> Result<Vec<(i64, u64, String)>, RecordsError> {
        self.pg
            .query("SELECT id, size, note FROM checkpoints ORDER BY id", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, u64_at(r, 1)?, r.try_get(2)?)))
            .collect()
    }

    fn cosign_checkpoint(
        &self,
        size: u64,
        merge: &mut dyn FnMut(&str) -> Result<String, RecordsError>,
    ) -> Result<Option<String>, RecordsError> {
        self.write(|pg| {
            let Some(r) = pg.query_opt(
                "SELECT id, note FROM checkpoints WHERE size = $1 ORDER BY id DESC LIMIT 1",
                &[&(size as i64)],
            )?
            else {
                return Ok(None);
            };
            let id: i64 = r.try_get(0)?;
            let note = merge(&r.try_get::<_, String>(1)?)?;
            pg.execute(
                "UPDATE checkpoints SET note = $1 WHERE id = $2",
                &[&note, &id],
            )?;
            Ok(Some(note))
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, RecordsError> {
        self.pg
            .query_opt(
                "SELECT size, note FROM checkpoints ORDER BY id DESC LIMIT 1",
                &[],
            )?
            .map(|r| Ok((u64_at(&r, 0)?, r.try_get(1)?)))
            .transpose()
    }

    fn read_snapshot(&self) -> Result<Box<dyn Snapshot + '_>, RecordsError> {
        self.pg
            .batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        Ok(Box::new(ReadSnapshot(&self.pg)))
    }
}
