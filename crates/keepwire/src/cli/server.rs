//! The server's flags — where it listens and keeps its data, its
//! limits, its admin endpoints — and what they make (`Limits`, TLS files,
//! the admin listener), shared by `serve` and `server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use keepwire_server::Limits;

use crate::serve;

#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// Where the server keeps its data (its store, its keys, and the records service's archive).
    #[arg(long, env = "KEEPWIRE_DATA_DIR", default_value = "keepwire-data")]
    pub(crate) data_dir: PathBuf,
    /// Keep the server's store in this PostgreSQL database
    /// (`postgres://user@host/db`) instead of SQLite in the data
    /// directory, which still holds the keys and the archive. The database
    /// is the server's alone; its tables are made on first start.
    #[arg(long, env = "KEEPWIRE_DATABASE")]
    pub(crate) database: Option<String>,
    /// Address to listen on; anything but loopback requires TLS.
    #[arg(long, env = "KEEPWIRE_LISTEN", default_value = "127.0.0.1:7878")]
    pub(crate) listen: SocketAddr,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "KEEPWIRE_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KEEPWIRE_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Unarchived messages beyond which sending is refused (fail closed).
    #[arg(long, env = "KEEPWIRE_MAX_CAPTURE_BACKLOG", default_value_t = 10_000)]
    pub(crate) max_capture_backlog: u64,
    /// Days a captured message stays on the relay for devices that have
    /// not fetched it.
    #[arg(long, env = "KEEPWIRE_RELAY_TTL_DAYS", default_value_t = 30)]
    pub(crate) relay_ttl_days: u64,
    /// Bytes of pushes a connection may have waiting before it is closed
    /// (its device catches up by sync).
    #[arg(long, env = "KEEPWIRE_MAX_OUTBOX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub(crate) max_outbox_bytes: usize,
    /// Connections held at once; more are refused until some close.
    #[arg(long, env = "KEEPWIRE_MAX_CONNECTIONS", default_value_t = 60_000)]
    pub(crate) max_connections: usize,
    /// TLS handshakes in progress at once.
    #[arg(long, env = "KEEPWIRE_MAX_TLS_HANDSHAKES", default_value_t = 1_024)]
    pub(crate) max_tls_handshakes: usize,
    /// Seconds a connection has to authenticate before it is closed.
    #[arg(long, env = "KEEPWIRE_AUTH_TIMEOUT_SECS", default_value_t = 10)]
    pub(crate) auth_timeout_secs: u64,
    /// Seconds a frame (or an HTTP request) that has started arriving has
    /// to finish before the connection is closed.
    #[arg(long, env = "KEEPWIRE_FRAME_TIMEOUT_SECS", default_value_t = 30)]
    pub(crate) frame_timeout_secs: u64,
    /// Connections one device may hold at once.
    #[arg(long, env = "KEEPWIRE_MAX_SESSIONS_PER_DEVICE", default_value_t = 8)]
    pub(crate) max_sessions_per_device: usize,
    /// MiB the store's disk keeps free: below this, new messages are
    /// refused (`storage_full`) until space is freed.
    #[arg(long, env = "KEEPWIRE_MIN_FREE_MB", default_value_t = 256)]
    pub(crate) min_free_mb: u64,
    /// Where /healthz, /readyz and /metrics are served (never on the
    /// public address), or `off`. Off loopback, --admin-token-file is
    /// required.
    #[arg(long, env = "KEEPWIRE_ADMIN_LISTEN", default_value = "127.0.0.1:7879")]
    pub(crate) admin_listen: String,
    /// A file holding the bearer token the admin endpoints require
    /// (`Authorization: Bearer TOKEN`).
    #[arg(long, env = "KEEPWIRE_ADMIN_TOKEN_FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,
}

impl ServerArgs {
    pub(crate) fn tls(&self) -> Option<serve::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(serve::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// The admin listener, unless `off`.
    pub(crate) fn admin(&self) -> anyhow::Result<Option<serve::AdminListen>> {
        use anyhow::Context;
        if self.admin_listen == "off" {
            return Ok(None);
        }
        let addr = self.admin_listen.parse().with_context(|| {
            format!(
                "--admin-listen {}: an address such as 127.0.0.1:7879, or `off`",
                self.admin_listen
            )
        })?;
        let token = match &self.admin_token_file {
            None => None,
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the admin token in {}", p.display()))?
                    .trim()
                    .to_string();
                anyhow::ensure!(
                    t.len() >= 16,
                    "the admin token in {} is shorter than 16 characters",
                    p.display()
                );
                Some(t)
            }
        };
        Ok(Some(serve::AdminListen { addr, token }))
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_capture_backlog: self.max_capture_backlog,
            relay_ttl_ms: self.relay_ttl_days * 24 * 3600 * 1000,
            max_outbox_bytes: self.max_outbox_bytes,
            max_connections: self.max_connections,
            max_tls_handshakes: self.max_tls_handshakes,
            auth_timeout_ms: self.auth_timeout_secs.saturating_mul(1000),
            frame_timeout_ms: self.frame_timeout_secs.saturating_mul(1000),
            max_sessions_per_device: self.max_sessions_per_device,
            min_free_bytes: self.min_free_mb << 20,
        }
    }
}
