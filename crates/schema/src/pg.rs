//! PostgreSQL, the scale-out store: a blocking connection for keepwire's
//! synchronous storage traits, and versioned migrations.
//!
//! keepwire's stores are called synchronously (the server's core calls
//! its store under its lock, as SQLite wants). The PostgreSQL client is
//! asynchronous, and the `postgres` crate's blocking wrapper panics when
//! called from inside a tokio runtime — which is where the server's
//! handlers run. So a [`Pg`] connection is split in two: the socket is
//! driven by a thread of its own (a one-thread tokio runtime that does
//! nothing else), and the caller waits for each answer on a plain
//! executor (`futures_executor::block_on`), which needs no runtime. The
//! caller's thread blocks for a round trip, as it blocks for SQLite's
//! fsync; no runtime is entered twice.
//!
//! Statements are prepared once per connection ([`Pg::query`] keeps
//! them by their text, as rusqlite's `prepare_cached` does): a parse per
//! call would double the round trips.
//!
//! Migrations: the same idea as the SQLite side (see the crate docs), with
//! the version in a table, `keepwire_schema (kind, version)`, since
//! PostgreSQL has no header to put it in. Each migration runs in one
//! transaction (PostgreSQL's DDL is transactional) under an advisory
//! lock, so two nodes starting at once never run one twice. A database
//! that already holds another kind of keepwire store is refused: the
//! server store and the archive each want a database of their own (the
//! records service is a separate custody).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

pub use tokio_postgres;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Socket, Statement};

/// Why a PostgreSQL store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the PostgreSQL address is not valid: {0}")]
    Address(String),
    #[error("cannot connect to PostgreSQL at {at}: {message}")]
    Connect { at: String, message: String },
    #[error("PostgreSQL: {0}")]
    Query(String),
    #[error("starting the PostgreSQL connection's thread: {0}")]
    Thread(#[from] std::io::Error),
    /// Another process holds the database ([`Owner::claim`]).
    #[error("{0}")]
    InUse(String),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Query(describe(&e))
    }
}

/// What went wrong, with the server's own message where there is one
/// (`tokio_postgres::Error`'s display is only "db error" then).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => {
            // "error connecting to server" alone does not say why: add the
            // causes ("Connection refused", "password authentication
            // failed").
            let mut out = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                out.push_str(": ");
                out.push_str(&cause.to_string());
                source = cause.source();
            }
            out
        }
    }
}

/// One connection to PostgreSQL, used synchronously.
///
/// TLS: with `sslmode=require` the connection is TLS (rustls) and the
/// server's certificate is verified against the system's CAs
/// (`SSL_CERT_FILE` / `SSL_CERT_DIR` point at an agency's own) and its
/// name; a certificate that does not verify is an error, never a
/// fallback. Without it (`prefer`, the default, or `disable`) the
/// connection is plain: meant for a Unix socket or loopback.
pub struct Pg {
    client: Client,
    url: String,
    /// CA certificates trusted beyond the system's (DER).
    extra_roots: Vec<Vec<u8>>,
    statements: RefCell<HashMap<&'static str, Statement>>,
}

/// Connect with `tls` and drive the connection until the client goes.
async fn drive<T>(
    config: tokio_postgres::Config,
    tls: T,
    ready: std::sync::mpsc::Sender<Result<Client, String>>,
) where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    match config.connect(tls).await {
        Ok((client, connection)) => {
            let _ = ready.send(Ok(client));
            // Runs until the client is dropped (or the server goes away:
            // the client's calls fail).
            let _ = connection.await;
        }
        Err(e) => {
            let _ = ready.send(Err(describe(&e)));
        }
    }
}

/// A TLS client that trusts the system's CAs and `extra_roots`.
fn tls(extra_roots: &[Vec<u8>]) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as webpki does.
        let _ = roots.add(cert);
    }
    for der in extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| format!("a CA certificate given is not usable: {e}"))?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(crate::tls_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A statement's parameters.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Pg {
    /// Connect to `url` (`postgres://user@host/db` or the key=value form).
    /// Without a `connect_timeout` in it, gives up after 10 seconds. The
    /// connection gives up on a lock after 5 seconds (`lock_timeout`), as
    /// SQLite's `busy_timeout` does: a write that cannot be made fails —
    /// and the log writer stops the server — rather than hang with it.
    pub fn connect(url: &str) -> Result<Self, PgError> {
        Self::connect_trusting(url, Vec::new())
    }

    /// As [`Pg::connect`], trusting `extra_roots` (DER CA certificates)
    /// beyond the system's for `sslmode=require`.
    pub fn connect_trusting(url: &str, extra_roots: Vec<Vec<u8>>) -> Result<Self, PgError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Address(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let at = redact(url);
        let (tx, rx) = std::sync::mpsc::channel();
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(tls(&extra_roots).map_err(|message| PgError::Connect {
                at: at.clone(),
                message,
            })?),
            _ => None,
        };
        std::thread::Builder::new()
            .name("keepwire-pg".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                match tls {
                    Some(tls) => rt.block_on(drive(config, tls, tx)),
                    None => rt.block_on(drive(config, NoTls, tx)),
                }
            })?;
        let client = rx
            .recv()
            .map_err(|_| PgError::Connect {
                at: at.clone(),
                message: "the connection's thread ended".into(),
            })?
            .map_err(|message| PgError::Connect {
                at: at.clone(),
                message,
            })?;
        let pg = Self {
            client,
            url: url.to_string(),
            extra_roots,
            statements: RefCell::default(),
        };
        pg.batch("SET lock_timeout = '5s'")?;
        Ok(pg)
    }

    /// Another connection to the same database.
    pub fn reconnect(&self) -> Result<Self, PgError> {
        Self::connect_trusting(&self.url, self.extra_roots.clone())
    }

    /// The address, without a password.
    pub fn address(&self) -> String {
        redact(&self.url)
    }

    fn wait<T>(&self, f: impl Future<Output = T>) -> T {
        futures_executor::block_on(f)
    }

    fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.wait(self.client.prepare(sql))?;
        self.statements.borrow_mut().insert(sql, s.clone());
        Ok(s)
    }

    /// Every row `sql` returns.
    pub fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, PgError> {
        let s = self.statement(sql)?;
        Ok(self.wait(self.client.query(&s, params))?)
    }

    /// The one row `sql` returns, if any (more than one is an error).
    pub fn query_opt(&self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>, PgError> {
        let s = self.statement(sql)?;
        Ok(self.wait(self.client.query_opt(&s, params))?)
    }

    /// The one row `sql` returns (none is an error).
    pub fn query_one(&self, sql: &'static str, params: Params<'_>) -> Result<Row, PgError> {
        let s = self.statement(sql)?;
        Ok(self.wait(self.client.query_one(&s, params))?)
    }

    /// How many rows `sql` changed.
    pub fn execute(&self, sql: &'static str, params: Params<'_>) -> Result<u64, PgError> {
        let s = self.statement(sql)?;
        Ok(self.wait(self.client.execute(&s, params))?)
    }

    /// Statements without parameters, as one batch (schema changes).
    pub fn batch(&self, sql: &str) -> Result<(), PgError> {
        Ok(self.wait(self.client.batch_execute(sql))?)
    }

    /// Run `f` in one transaction, committed durably (the commit returns
    /// once its WAL record is flushed: PostgreSQL's default
    /// `synchronous_commit = on`) if `f` succeeds, rolled back if not.
    pub fn transaction<T, E: From<PgError>>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_in("BEGIN", f)
    }

    /// As [`Pg::transaction`], but the commit does not wait for the WAL
    /// flush (`synchronous_commit = off` for this transaction only: still
    /// atomic and ordered, and the next durable commit carries it to disk),
    /// for writes whose loss after a crash is harmless.
    pub fn transaction_unflushed<T, E: From<PgError>>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run_in("BEGIN; SET LOCAL synchronous_commit TO OFF", f)
    }

    fn run_in<T, E: From<PgError>>(
        &self,
        begin: &str,
        f: impl FnOnce(&Self) -> Result<T, E>,
    ) -> Result<T, E> {
        self.batch(begin)?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                // The error that matters is `e`; a failed rollback leaves
                // the connection unusable, which its next call reports.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// `url` with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_string();
    }
    // key=value form: drop password=…
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One kind of keepwire database in PostgreSQL and its migrations.
pub struct PgSchema {
    /// What the database is ("server store", "archive"): also its row in
    /// the `keepwire_schema` table.
    pub name: &'static str,
    /// The other kinds that may share its database (the archive and the
    /// records device it belongs with); any other is refused.
    pub companions: &'static [&'static str],
    /// Migration *n* takes the schema from version *n − 1* to *n*.
    pub migrations: &'static [&'static str],
}

/// The version of `schema` the database behind `pg` holds; None if it
/// holds none (nothing of keepwire's, or only another kind of store).
pub fn version(pg: &Pg, schema: &PgSchema) -> Result<Option<i64>, PgError> {
    let present: bool = pg
        .query_one("SELECT to_regclass('keepwire_schema') IS NOT NULL", &[])?
        .try_get(0)?;
    if !present {
        return Ok(None);
    }
    Ok(pg
        .query_opt(
            "SELECT version FROM keepwire_schema WHERE kind = $1",
            &[&schema.name],
        )?
        .map(|r| r.try_get(0))
        .transpose()?)
}

/// Bring the database behind `pg` to the latest version of `schema`.
/// Refuses a database that holds another kind of keepwire store or a
/// newer version of this one, before changing anything.
pub fn migrate(pg: &Pg, schema: &PgSchema) -> Result<crate::Migrated, crate::SchemaError> {
    let at = pg.address();
    let fail = |version: i64| {
        let at = at.clone();
        move |e: PgError| crate::SchemaError::Pg {
            path: at,
            what: schema.name,
            version,
            message: e.to_string(),
        }
    };
    let latest = schema.migrations.len() as i64;
    pg.batch(
        "CREATE TABLE IF NOT EXISTS keepwire_schema (kind TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    )
    .map_err(fail(0))?;
    let mut from = None;
    loop {
        let step = pg.transaction(|pg| -> Result<Option<i64>, crate::SchemaError> {
            // One migrator at a time, across every node and process.
            pg.execute("SELECT pg_advisory_xact_lock(7385961104)", &[])
                .map_err(fail(0))?;
            let kinds = pg
                .query("SELECT kind, version FROM keepwire_schema", &[])
                .map_err(fail(0))?;
            let mut now = 0;
            for row in &kinds {
                let kind: String = row.try_get(0).map_err(|e| fail(0)(e.into()))?;
                let version: i64 = row.try_get(1).map_err(|e| fail(0)(e.into()))?;
                if kind == schema.name {
                    now = version;
                } else if !schema.companions.contains(&kind.as_str()) {
                    return Err(crate::SchemaError::OtherKindPg {
                        path: at.clone(),
                        expected: schema.name,
                        found: kind,
                    });
                }
            }
            from.get_or_insert(now);
            if now > latest {
                return Err(crate::SchemaError::Newer {
                    path: at.clone(),
                    what: schema.name,
                    found: now,
                    supported: latest,
                });
            }
            if now == latest {
                return Ok(None);
            }
            let to = now + 1;
            pg.batch(schema.migrations[now as usize])
                .map_err(fail(to))?;
            pg.execute(
                "INSERT INTO keepwire_schema (kind, version) VALUES ($1, $2)
                 ON CONFLICT (kind) DO UPDATE SET version = excluded.version",
                &[&schema.name, &to],
            )
            .map_err(fail(to))?;
            Ok(Some(to))
        })?;
        if step.is_none() {
            break;
        }
    }
    Ok(crate::Migrated {
        from: from.unwrap_or(0),
        to: latest,
    })
}

/// A claim on a keepwire store in a PostgreSQL database, for one process
/// at a time: a session advisory lock, keyed by the schema and the kind of
/// store, held by a connection of its own for as long as this lives.
/// PostgreSQL releases it when that connection ends, however the holder
/// died, so a crash leaves no stale claim.
pub struct Owner {
    pg: Pg,
    key: i32,
}

/// The advisory-lock space keepwire's claims use ("KW").
const OWNER_CLASS: i32 = 0x4b57;

impl Owner {
    /// Claim the `kind` store (e.g. "server store") of the database at
    /// `url`, as `holder` (who asks: the next claimant is told). Refused,
    /// naming the holder, its address and since when, if another
    /// connection has it.
    pub fn claim(url: &str, kind: &str, holder: &str) -> Result<Self, PgError> {
        let pg = Pg::connect(url)?;
        // PostgreSQL keeps 63 bytes of an application name.
        let name: String = holder.chars().take(63).collect();
        pg.batch(&format!(
            "SET application_name = '{}'",
            name.replace('\'', "''")
        ))?;
        let key: i32 = pg
            .query_opt(
                "SELECT hashtext(current_schema() || '/' || $1::text)",
                &[&kind],
            )?
            .ok_or_else(|| PgError::Query("no answer to hashtext".into()))?
            .try_get(0)?;
        let got: bool = pg
            .query_opt("SELECT pg_try_advisory_lock($1, $2)", &[&OWNER_CLASS, &key])?
            .ok_or_else(|| PgError::Query("no answer to pg_try_advisory_lock".into()))?
            .try_get(0)?;
        if got {
            return Ok(Self { pg, key });
        }
        let who = pg.query_opt(
            "SELECT a.application_name, coalesce(host(a.client_addr), 'a local socket'), \
                    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC' \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
               AND l.classid = ($1::int4::int8 & 4294967295)::oid \
               AND l.objid = ($2::int4::int8 & 4294967295)::oid",
            &[&OWNER_CLASS, &key],
        )?;
        let who = match who {
            Some(r) => {
                let (name, from, since): (String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                format!("{name}; connected from {from} since {since}")
            }
            None => "a process that has just let go; try again".into(),
        };
        Err(PgError::InUse(format!(
            "the {kind} in the PostgreSQL database at {} is in use by another keepwire process \
             ({who}); stop it first",
            pg.address()
        )))
    }
}

impl Drop for Owner {
    /// Let go at once (closing the connection would too, a moment later,
    /// once the server notices).
    fn drop(&mut self) {
        let _ = self.pg.query_opt(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&OWNER_CLASS, &self.key],
        );
    }
}

/// Scratch databases on a real PostgreSQL server, for tests: each is a
/// schema of its own on the server named by `KEEPWIRE_TEST_POSTGRES`
/// (by default the local one, `postgres://postgres@127.0.0.1:5432/test`;
/// `.ci/run` starts one where none runs), dropped when the guard goes.
pub mod scratch {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{Pg, PgError};

    /// The server tests use.
    pub fn server_url() -> String {
        std::env::var("KEEPWIRE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    /// A schema of its own on the test server; its URL puts it first on
    /// the search path, so everything made through it lands in it.
    pub struct Scratch {
        pub url: String,
        base: String,
        name: String,
    }

    impl Scratch {
        /// On the test server (`KEEPWIRE_TEST_POSTGRES`).
        pub fn new() -> Result<Self, PgError> {
            Self::on(&server_url())
        }

        /// On the server at `base` (the load generator's `--database`).
        pub fn on(base: &str) -> Result<Self, PgError> {
            static N: AtomicU32 = AtomicU32::new(0);
            let base = base.to_string();
            let name = format!(
                "kwtest_{}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            );
            Pg::connect(&base)?.batch(&format!("CREATE SCHEMA {name}"))?;
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-csearch_path%3D{name}");
            Ok(Self { url, base, name })
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Ok(pg) = Pg::connect(&self.base) {
                let _ = pg.batch(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
            }
        }
    }
}

#[cfg(test)]
mod tests;
