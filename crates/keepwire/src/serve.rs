//! Running the server and the records service, together or apart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keepwire_protocol::clock::Clock;
use keepwire_records::archive::PgArchive;
use keepwire_records::Archive;
use keepwire_server::store::{PgStore, ServerStore, SqliteStore};
use keepwire_server::ws::{AppState, Endpoint};
use keepwire_server::{Core, Limits};

pub use crate::cli::KeySource;
use tokio::net::TcpListener;

mod evidence;
pub mod office;
pub mod owner;
mod records;
pub mod witnessing;
pub use records::{enroll_records, lock_records_dir, records_code, run_records};

pub fn records_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("records")
}

/// The server's store: in PostgreSQL at `database` if given, otherwise
/// SQLite in `data_dir` (created if need be, as the data directory is:
/// it holds the server's keys either way).
pub fn open_server_store(data_dir: &Path, database: Option<&str>) -> Result<Box<dyn ServerStore>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    Ok(match database {
        Some(url) => Box::new(PgStore::open(url)?),
        None => Box::new(SqliteStore::open(
            &data_dir.join(keepwire_server::SERVER_DB),
        )?),
    })
}

/// The server store of a deployment that exists: for the commands that
/// read or change one (`admin`), which must not quietly create an empty
/// one where a path or address was mistyped.
pub fn open_existing_server_store(
    data_dir: &Path,
    database: Option<&str>,
) -> Result<Box<dyn ServerStore>> {
    if let Some(url) = database {
        return Ok(Box::new(PgStore::open_existing(url)?));
    }
    let db = data_dir.join(keepwire_server::SERVER_DB);
    if !db.is_file() {
        bail!(
            "{} holds no keepwire server data (no {}): check --data-dir (KEEPWIRE_DATA_DIR); \
             `keepwire serve` or `keepwire server` creates it on first start",
            data_dir.display(),
            keepwire_server::SERVER_DB
        );
    }
    Ok(Box::new(SqliteStore::open(&db)?))
}

/// The records directory of a deployment whose archive exists: for the
/// `records` commands that read or change it.
pub fn existing_records_dir(data_dir: &Path) -> Result<PathBuf> {
    let dir = records_dir(data_dir);
    if !dir.join(keepwire_records::archive::ARCHIVE_DB).is_file() {
        bail!(
            "{} holds no keepwire archive (no records/{}): check --data-dir (KEEPWIRE_DATA_DIR)",
            data_dir.display(),
            keepwire_records::archive::ARCHIVE_DB
        );
    }
    Ok(dir)
}

/// Where a deployment keeps everything: its data directory (keys, the
/// records device, and by default both databases) and the PostgreSQL
/// databases that hold the server's store and the archive instead, when
/// given.
#[derive(Clone, Debug)]
pub struct Storage<'a> {
    pub data_dir: &'a Path,
    pub database: Option<&'a str>,
    pub records_database: Option<&'a str>,
    /// Where the records service's keys are.
    pub keys: KeySource,
}

/// Where an archive is: its directory — the records device, the public
/// half of the checkpoint key, and by default the archive itself
/// (`archive.db`) — and, when given, the PostgreSQL database that holds
/// the archive instead (a database of its own, apart from the server's);
/// and where its keys are ([`KeySource`]), never in that directory.
#[derive(Clone, Debug)]
pub struct ArchiveAt {
    pub dir: PathBuf,
    pub database: Option<String>,
    pub keys: KeySource,
    /// Opening must not create an archive (the `records` commands).
    existing: bool,
}

impl ArchiveAt {
    /// The archive the records service keeps (made on first start).
    pub fn new(dir: PathBuf, database: Option<String>, keys: KeySource) -> Self {
        Self {
            dir,
            database,
            keys,
            existing: false,
        }
    }

    /// The archive of a deployment whose archive exists: for the `records`
    /// commands, which must not create one where a path or an address was
    /// mistyped (checked again, for PostgreSQL, when it is opened).
    pub fn existing(data_dir: &Path, database: Option<&str>, keys: KeySource) -> Result<Self> {
        let dir = match database {
            None => existing_records_dir(data_dir)?,
            Some(_) => {
                let dir = records_dir(data_dir);
                if !dir.is_dir() {
                    bail!(
                        "{} holds no keepwire records directory (the records device and the archive's keys): \
                         check --data-dir (KEEPWIRE_DATA_DIR)",
                        data_dir.display()
                    );
                }
                dir
            }
        };
        Ok(Self {
            dir,
            database: database.map(String::from),
            keys,
            existing: true,
        })
    }

    /// Open it (with the archive key, to read and write content).
    pub fn open(&self, with_key: bool) -> Result<Archive> {
        let provider = with_key.then(|| self.provider()).transpose()?;
        Ok(Archive::with_store(
            self.store()?,
            &self.dir,
            provider.as_deref(),
        )?)
    }

    /// Its store alone, no key opened (what `open` seals over; what an
    /// escrow restore writes the recovered key into).
    pub fn store(&self) -> Result<Box<dyn keepwire_records::archive::ArchiveStore>> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        Ok(match &self.database {
            None => Box::new(keepwire_records::archive::SqliteArchive::open(
                &self.dir.join(keepwire_records::archive::ARCHIVE_DB),
            )?),
            Some(url) if self.existing => Box::new(PgArchive::open_existing(url)?),
            Some(url) => Box::new(PgArchive::open(url)?),
        })
    }

    /// Open it for reading only (`verify`, `proof`, `consistency`):
    /// nothing created, migrated or written; with the archive key (to
    /// check content) where asked and the provider opens it.
    pub fn open_read_only(&self, with_key: bool) -> Result<Archive> {
        let store: Box<dyn keepwire_records::archive::ArchiveStore> = match &self.database {
            None => Box::new(keepwire_records::archive::SqliteArchive::open_read_only(
                &self.dir.join(keepwire_records::archive::ARCHIVE_DB),
            )?),
            Some(url) => Box::new(PgArchive::open_read_only(url)?),
        };
        let provider = with_key.then(|| self.provider()).transpose()?;
        Ok(Archive::with_store(store, &self.dir, provider.as_deref())?)
    }

    /// The key provider, once it is checked to be apart from the records
    /// directory.
    pub fn provider(&self) -> Result<std::sync::Arc<dyn keepwire_records::keys::KeyProvider>> {
        self.keys.check_apart(&self.dir, "the records directory")?;
        self.keys.provider()
    }

    /// The checkpoint key's public half, kept in the records directory.
    pub fn verifier_key(&self) -> Result<String> {
        let path = self.dir.join(keepwire_records::checkpoint::PUB_FILE);
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_string())
    }

    /// The archive's checkpoint signer, from its key provider.
    pub fn notary(&self) -> Result<keepwire_records::checkpoint::Notary> {
        Ok(keepwire_records::checkpoint::Notary::new(
            &*self.provider()?,
            &self.dir,
        )?)
    }
}

/// TLS certificate and key files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Refuse to expose the service on a network interface without TLS: the
/// traffic is end-to-end encrypted, but authentication challenges,
/// metadata and receipts still deserve a protected channel.
pub fn check_listen(addr: &SocketAddr, tls: Option<&TlsFiles>) -> Result<()> {
    if !addr.ip().is_loopback() && tls.is_none() {
        bail!(
            "refusing to listen on {addr} without TLS: a non-loopback address requires \
             --tls-cert and --tls-key (or listen on 127.0.0.1)"
        );
    }
    Ok(())
}

/// Where `/healthz`, `/readyz` and `/metrics` are served
/// ([`keepwire_server::ops`]): never the public address.
#[derive(Debug, Clone)]
pub struct AdminListen {
    pub addr: SocketAddr,
    /// Required as `Authorization: Bearer …`; needed off loopback.
    pub token: Option<String>,
}

/// A running delivery server.
pub struct Started {
    /// `https://…` with TLS, `http://…` on loopback without.
    pub url: String,
    /// A plain loopback URL for the embedded records service (with TLS,
    /// an extra listener on 127.0.0.1 so it needs no certificate check).
    pub internal_url: String,
    pub state: AppState,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Where the admin endpoints listen, if anywhere.
    pub admin_addr: Option<SocketAddr>,
}

/// Where a server keeps its store: the data directory, and the PostgreSQL
/// database if its store is there.
#[derive(Clone, Copy)]
pub struct ServerAt<'a> {
    pub data_dir: &'a Path,
    pub database: Option<&'a str>,
}

/// Bind and start the delivery server; it stops, in order, once
/// `shutdown` completes (see `keepwire_server::ws::serve`), and `handle`
/// completes then. Embedded, `archive` is the records service's: the
/// server's store must agree with it before anything is receipted.
pub async fn start_server(
    ServerAt { data_dir, database }: ServerAt<'_>,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    admin: Option<&AdminListen>,
    limits: Limits,
    archive: Option<&ArchiveAt>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Started> {
    check_listen(&listen, tls)?;
    if let Some(a) = admin {
        if !a.addr.ip().is_loopback() && a.token.is_none() {
            bail!(
                "refusing to serve /metrics on {} without a token: off loopback the admin \
                 listener requires --admin-token-file",
                a.addr
            );
        }
    }
    // One server per data directory and per database: a second one
    // receipted messages no device or archive ever got.
    let claim = owner::claim(
        data_dir,
        "server.lock",
        database.map(|url| (url, "server store")),
        "keepwire server",
        "cannot start the server",
    )?;
    owner::tighten(data_dir)?;
    evidence::check_server(data_dir, database)?;
    let tls_config = tls
        .map(|t| keepwire_server::tls::load_config(&t.cert, &t.key))
        .transpose()?;
    let store = open_server_store(data_dir, database)?;
    tracing::info!(store = %store.describe(), "server store open");
    // Embedded, the archive is at hand: the two must agree before anything
    // is receipted.
    if let Some(at) = archive {
        evidence::check_agreement(&*store, at)?;
    }
    // The log writer's own connection to the same store.
    let log_store = store
        .reopen()
        .context("the server's store must be a file or a PostgreSQL database (the log writer opens it again)")??;
    let key = keepwire_server::load_or_create_key(data_dir)?;
    let clock = Clock::from_env();
    let core = Core::open(store, key, limits, clock.now_ms())?;
    let state = AppState::new(core, log_store, clock);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut endpoints = vec![Endpoint {
        listener,
        tls: tls_config.clone(),
    }];
    let (url, internal_url) = match &tls_config {
        None => (format!("http://{addr}"), format!("http://{addr}")),
        Some(_) => {
            let internal = TcpListener::bind("127.0.0.1:0").await?;
            let internal_addr = internal.local_addr()?;
            endpoints.push(Endpoint {
                listener: internal,
                tls: None,
            });
            (format!("https://{addr}"), format!("http://{internal_addr}"))
        }
    };
    let (admin_task, admin_addr) = match admin {
        None => (None, None),
        Some(a) => {
            let listener = TcpListener::bind(a.addr).await.with_context(|| {
                format!(
                    "cannot listen on {} for /healthz, /readyz and /metrics \
                     (--admin-listen; `off` for nowhere)",
                    a.addr
                )
            })?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "admin endpoints listening: /healthz, /readyz, /metrics");
            let serving = keepwire_server::ops::serve(listener, state.clone(), a.token.clone());
            (Some(tokio::spawn(serving)), Some(addr))
        }
    };
    let st = state.clone();
    let handle = tokio::spawn(async move {
        // Held for as long as the server runs.
        let _claim = claim;
        let r =
            keepwire_server::ws::serve(endpoints, st, Duration::from_millis(500), shutdown).await;
        if let Some(t) = admin_task {
            t.abort();
        }
        r
    });
    tracing::info!(%url, "delivery server listening");
    Ok(Started {
        url,
        internal_url,
        state,
        handle,
        admin_addr,
    })
}

/// Everything in one process: the server, and the records service
/// connected to it over loopback like any device. Returns once the records
/// member is enrolled, so conversations can be created right away.
pub async fn serve_embedded(
    storage: Storage<'_>,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    admin: Option<&AdminListen>,
    limits: Limits,
    publishing: witnessing::Publishing,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Started> {
    let Storage {
        data_dir,
        database,
        records_database,
        keys,
    } = storage;
    let dir = records_dir(data_dir);
    evidence::check_archive(&dir, records_database)?;
    let at = ArchiveAt::new(dir, records_database.map(String::from), keys);
    // The records service stops the whole process if it finds the
    // archive is not what it signed: a server that went on receipting
    // would receipt messages no archive will ever hold.
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
    let fatal = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let stop = {
        let fatal = std::sync::Arc::clone(&fatal);
        async move {
            tokio::select! {
                () = shutdown => {}
                Ok(why) = fatal_rx => {
                    *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                }
            }
        }
    };
    let mut started = start_server(
        ServerAt { data_dir, database },
        listen,
        tls,
        admin,
        limits,
        Some(&at),
        stop,
    )
    .await?;
    let server = started.handle;
    started.handle = tokio::spawn(async move {
        let r = server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(why) => Err(std::io::Error::other(format!(
                "the records service stopped, so the server did too: {why}"
            ))),
            None => r,
        }
    });
    let url = started.internal_url.clone();
    if let Some(code) = records_code(data_dir, database, &Clock::from_env())? {
        enroll_records(&url, &at, &code).await?;
    }
    // The records service decrypts and archives in long synchronous
    // stretches (a batch is ~20 ms of MLS work). On the server's runtime
    // that would hold a worker, and the connection tasks queued on it,
    // for that long: it gets a thread and a runtime of its own, as a
    // separate process would.
    std::thread::Builder::new()
        .name("records".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "records service cannot start its runtime");
                    return;
                }
            };
            rt.block_on(async move {
                // A failure to start (its database unreachable, its
                // directory held by a records service run apart) is tried
                // again, backing off; one that no retry mends stops the
                // process.
                let mut wait = Duration::from_secs(1);
                loop {
                    match run_records(url.clone(), at.clone(), None, publishing.clone(), None).await
                    {
                        Ok(()) => return,
                        Err(e) if records::is_fatal(&e) => {
                            let _ = fatal_tx.send(format!("{e:#}"));
                            return;
                        }
                        Err(e) => tracing::error!(
                            error = %format!("{e:#}"),
                            retry_in_secs = wait.as_secs(),
                            "the records service could not run; nothing is delivered until it does"
                        ),
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            });
        })
        .context("starting the records service's thread")?;
    Ok(started)
}
