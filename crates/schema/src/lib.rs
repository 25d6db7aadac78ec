//! Versioned schemas: every keepwire database says what it is and which
//! version of its schema it holds, and is brought up to date, one
//! migration at a time, when it is opened.
//!
//! A [`Schema`] is a list of migrations. Migration *n* (counting from 1)
//! takes a database from version *n − 1* to *n*; a new column, table or
//! index is a new migration appended to the list, never an edit of an
//! old one, since deployed databases have already run it. In SQLite the
//! version is the header's `user_version` and the kind of database its
//! `application_id` (so `file` and `sqlite3` can tell a keepwire archive
//! from a device store), both set in the same transaction as the
//! migration that reaches them: a crash mid-upgrade leaves the database at
//! the last version it fully reached.
//!
//! Opening refuses, before touching anything, a database of another kind
//! and one newer than the binary (it would otherwise be read with a
//! schema it does not have, or worse, written). Databases written before
//! schemas were versioned (keepwire 0.1) have `application_id` 0 and
//! `user_version` 0; they are recognised by a table only that kind of
//! database has, and take every migration: the first one is written to be
//! idempotent over every unversioned layout that shipped
//! (`CREATE … IF NOT EXISTS`, columns added only where missing).

use rusqlite::{Connection, OptionalExtension};

#[cfg(feature = "postgres")]
pub mod pg;

/// The one rustls crypto provider all of keepwire's TLS uses (to the
/// server, the witnesses, PostgreSQL, and served): AWS-LC — in a `fips`
/// build its FIPS 140-3 module, with only the algorithms it approves.
#[cfg(feature = "postgres")]
pub fn tls_provider() -> rustls::crypto::CryptoProvider {
    #[cfg(feature = "fips")]
    return rustls::crypto::default_fips_provider();
    #[cfg(not(feature = "fips"))]
    rustls::crypto::aws_lc_rs::default_provider()
}

/// One kind of database and its migrations.
pub struct Schema {
    /// What the database is, for messages ("server store", "archive").
    pub name: &'static str,
    /// SQLite `application_id`: which kind of keepwire database this is.
    pub application_id: i32,
    /// A table every database of this kind has had since keepwire 0.1:
    /// how an unversioned one is recognised.
    pub marker_table: &'static str,
    /// Migration *n* takes the schema from version *n − 1* to *n*.
    pub migrations: &'static [Migration],
}

/// One step of a schema.
pub enum Migration {
    /// Statements run as one batch.
    Sql(&'static str),
    /// Code, for what SQL alone cannot say (a column added only if it is
    /// missing, data rewritten).
    Code(fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>),
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path} is not a keepwire {expected} (its application id is {found:#x})")]
    OtherKind {
        path: String,
        expected: &'static str,
        found: i32,
    },
    #[error("{path} holds data but is not a keepwire {expected} (no `{marker}` table)")]
    NotKeepwire {
        path: String,
        expected: &'static str,
        marker: &'static str,
    },
    #[error(
        "{path} is a keepwire {what} of schema version {found}, newer than this binary knows \
         (up to {supported}); run the keepwire release that wrote it, or a newer one"
    )]
    Newer {
        path: String,
        what: &'static str,
        found: i64,
        supported: i64,
    },
    #[error("migrating {what} {path} to schema version {version}: {source}")]
    Migration {
        path: String,
        what: &'static str,
        version: i64,
        source: rusqlite::Error,
    },
    #[error("migrating {what} at {path} to schema version {version}: {message}")]
    Pg {
        path: String,
        what: &'static str,
        version: i64,
        message: String,
    },
    #[error("the PostgreSQL database at {path} holds a keepwire {found}, not its {expected}: give each its own database")]
    OtherKindPg {
        path: String,
        expected: &'static str,
        found: String,
    },
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    PgConnection(#[from] pg::PgError),
    #[error("reading the schema version of {path}: {source}")]
    Read {
        path: String,
        source: rusqlite::Error,
    },
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i64,
    pub to: i64,
}

impl Schema {
    pub fn latest(&self) -> i64 {
        self.migrations.len() as i64
    }
}

/// "SQLite PATH" (or `:memory:`): which store a connection is, for
/// `admin status` and logs.
pub fn describe(conn: &Connection) -> String {
    format!("SQLite {}", path_of(conn))
}

fn path_of(conn: &Connection) -> String {
    match conn.path() {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => ":memory:".to_string(),
    }
}

/// The schema version of an open database and whether it is of this kind,
/// without changing it.
pub fn version(conn: &Connection, schema: &Schema) -> Result<i64, SchemaError> {
    let path = path_of(conn);
    let read = |source| SchemaError::Read {
        path: path.clone(),
        source,
    };
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(read)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(read)?;
    if app == 0 {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )
            .map_err(read)?;
        if tables > 0 {
            let marker: Option<String> = conn
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [schema.marker_table],
                    |r| r.get(0),
                )
                .optional()
                .map_err(read)?;
            if marker.is_none() {
                return Err(SchemaError::NotKeepwire {
                    path,
                    expected: schema.name,
                    marker: schema.marker_table,
                });
            }
        }
        // Empty, or written before schemas were versioned.
        return Ok(0);
    }
    if app != schema.application_id {
        return Err(SchemaError::OtherKind {
            path,
            expected: schema.name,
            found: app,
        });
    }
    Ok(version)
}

/// Bring `conn` to the latest version of `schema`, each migration in a
/// transaction of its own that also records the version it reached.
/// Refuses a database of another kind or a newer schema. Safe beside other
/// connections opening the same file: each step takes the write lock
/// first (IMMEDIATE) and re-reads the version under it, so two processes
/// starting at once never run a migration twice.
pub fn migrate(conn: &mut Connection, schema: &Schema) -> Result<Migrated, SchemaError> {
    let latest = schema.latest();
    let path = path_of(conn);
    let newer = |found| SchemaError::Newer {
        path: path.clone(),
        what: schema.name,
        found,
        supported: latest,
    };
    let from = version(conn, schema)?;
    if from > latest {
        return Err(newer(from));
    }
    let mut at = from;
    while at < latest {
        let to = at + 1;
        let fail = |source| SchemaError::Migration {
            path: path.clone(),
            what: schema.name,
            version: to,
            source,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        let now = version(&tx, schema)?;
        if now > latest {
            return Err(newer(now));
        }
        if now != at {
            // Another connection moved it on meanwhile.
            at = now;
            continue;
        }
        match &schema.migrations[at as usize] {
            Migration::Sql(sql) => tx.execute_batch(sql),
            Migration::Code(f) => f(&tx),
        }
        .map_err(fail)?;
        tx.pragma_update(None, "application_id", schema.application_id)
            .map_err(fail)?;
        tx.pragma_update(None, "user_version", to).map_err(fail)?;
        tx.commit().map_err(fail)?;
        at = to;
    }
    Ok(Migrated { from, to: latest })
}

/// Add `column` (with its SQL definition) to `table` unless it is there:
/// for the first migration of a schema whose unversioned layouts differed.
pub fn add_column_if_missing(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    column: &str,
    definition: &str,
) -> rusqlite::Result<()> {
    let present: bool = tx
        .prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?
        .exists([column])?;
    if !present {
        tx.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {definition}"
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static V1: &[Migration] = &[Migration::Sql(
        "CREATE TABLE IF NOT EXISTS things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    )];
    static V2: &[Migration] = &[
        Migration::Sql(
            "CREATE TABLE IF NOT EXISTS things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
        ),
        Migration::Code(|tx| add_column_if_missing(tx, "things", "colour", "TEXT")),
    ];

    fn schema(migrations: &'static [Migration]) -> Schema {
        Schema {
            name: "test store",
            application_id: 0x4b57_5445,
            marker_table: "things",
            migrations,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Connection {
        Connection::open(dir.path().join("t.db")).unwrap()
    }

    #[test]
    fn a_new_database_gets_every_migration_and_says_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir);
        assert_eq!(
            migrate(&mut c, &schema(V2)).unwrap(),
            Migrated { from: 0, to: 2 }
        );
        let app: i32 = c
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(app, 0x4b57_5445);
        c.execute("INSERT INTO things (name, colour) VALUES ('a', 'red')", [])
            .unwrap();
        // Opening again applies nothing.
        assert_eq!(
            migrate(&mut c, &schema(V2)).unwrap(),
            Migrated { from: 2, to: 2 }
        );
    }

    #[test]
    fn an_older_database_is_upgraded_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir);
        migrate(&mut c, &schema(V1)).unwrap();
        c.execute("INSERT INTO things (name) VALUES ('kept')", [])
            .unwrap();
        drop(c);
        let mut c = open(&dir);
        assert_eq!(
            migrate(&mut c, &schema(V2)).unwrap(),
            Migrated { from: 1, to: 2 }
        );
        let (name, colour): (String, Option<String>) = c
            .query_row("SELECT name, colour FROM things", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((name.as_str(), colour), ("kept", None));
    }

    #[test]
    fn an_unversioned_database_of_this_kind_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir);
        c.execute_batch("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL); INSERT INTO things (name) VALUES ('old');")
            .unwrap();
        assert_eq!(
            migrate(&mut c, &schema(V2)).unwrap(),
            Migrated { from: 0, to: 2 }
        );
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM things WHERE colour IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_newer_database_or_another_kind_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir);
        migrate(&mut c, &schema(V2)).unwrap();
        let err = migrate(&mut c, &schema(V1)).unwrap_err();
        assert!(
            matches!(
                err,
                SchemaError::Newer {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("newer than this binary"), "{err}");
        let other = Schema {
            application_id: 0x4b57_4f54,
            ..schema(V2)
        };
        assert!(matches!(
            migrate(&mut c, &other).unwrap_err(),
            SchemaError::OtherKind { .. }
        ));
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2, "left as it was");

        let dir = tempfile::tempdir().unwrap();
        let mut c = open(&dir);
        c.execute_batch("CREATE TABLE unrelated (x);").unwrap();
        assert!(matches!(
            migrate(&mut c, &schema(V2)).unwrap_err(),
            SchemaError::NotKeepwire { .. }
        ));
    }
}
