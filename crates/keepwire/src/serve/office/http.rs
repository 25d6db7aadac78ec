//! The records office over HTTP, its I/O shell: [`start`] opens the
//! office, gives it a thread of its own and listens (TCP on loopback, TLS
//! anywhere else, [`Listen`]); [`serve`] takes `POST /v1/office`, a JSON
//! [`Request`] in, a JSON answer out, signed in on every request with
//! `Authorization: Basic` (an account and its password) or
//! `Authorization: Setup TOKEN` (the first admin only).
//!
//! What a peer can hold here is bounded: a request body of at most
//! [`MAX_BODY`], at most [`QUEUE`] requests waiting for the office's
//! thread (more are told to come back, 503), and passwords cross the
//! network only inside TLS (a listener off loopback must have it).

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{run, Credential, Job, Office, Refusal, Request, URL_FILE};
use crate::serve::{ArchiveAt, TlsFiles};

/// The largest request taken (an account's name and password, an
/// authority: a few hundred bytes).
pub const MAX_BODY: usize = 16 * 1024;
/// Requests waiting for the office at most.
pub const QUEUE: usize = 32;

type Jobs = std::sync::mpsc::SyncSender<Job>;

/// Serve the office on `listener` (TCP, or TLS streams whose handshake
/// is done) until the task is aborted.
pub async fn serve<L>(listener: L, jobs: Jobs)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let app = Router::new()
        .route("/v1/office", post(office))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(jobs);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the records office stopped listening");
    }
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

/// The credential in `Authorization`, or why there is none.
fn credential(headers: &HeaderMap) -> Result<Credential, String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("sign in: an account (--as NAME) and its password")?;
    if let Some(token) = value.strip_prefix("Setup ") {
        return Ok(Credential::Setup(token.trim().to_string()));
    }
    let basic = value
        .strip_prefix("Basic ")
        .ok_or("Authorization must be Basic (an account and its password) or Setup")?;
    let decoded = keepwire_protocol::b64::decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("the Basic credential is not base64 of UTF-8")?;
    let (name, password) = decoded
        .split_once(':')
        .ok_or("the Basic credential has no `:` between name and password")?;
    Ok(Credential::Password {
        name: name.to_string(),
        password: password.to_string(),
    })
}

async fn office(State(jobs): State<Jobs>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let credential = match credential(&headers) {
        Ok(c) => c,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
    };
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("not a records office request: {e}"),
            )
        }
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job = Job {
        credential,
        request,
        answer,
    };
    if let Err(e) = jobs.try_send(job) {
        return match e {
            std::sync::mpsc::TrySendError::Full(_) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the records office is busy: try again in a moment",
            ),
            std::sync::mpsc::TrySendError::Disconnected(_) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the records office has stopped",
            ),
        };
    }
    match answered.await {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(refusal)) => {
            let status = match &refusal {
                Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
                Refusal::NotFound(_) => StatusCode::NOT_FOUND,
                Refusal::Invalid(_) => StatusCode::CONFLICT,
                Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                Refusal::Slowed(_) => StatusCode::TOO_MANY_REQUESTS,
                Refusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, &refusal.to_string())
        }
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the records office stopped before answering",
        ),
    }
}

/// The running office: the signal of each checkpoint it signed. Dropped,
/// it stops listening and forgets its URL file.
pub struct Running {
    pub signed: tokio::sync::watch::Receiver<()>,
    url_file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.url_file);
    }
}

/// Where the office listens: loopback, or any address with TLS.
#[derive(Debug, Clone)]
pub struct Listen {
    addr: std::net::SocketAddr,
    tls: Option<TlsFiles>,
}

impl Listen {
    /// Passwords cross this listener: off loopback, only inside TLS.
    pub fn new(addr: std::net::SocketAddr, tls: Option<TlsFiles>) -> Result<Self> {
        if !addr.ip().is_loopback() && tls.is_none() {
            anyhow::bail!(
                "refusing to run the records office on {addr} without TLS: a non-loopback \
                 address requires --records-tls-cert and --records-tls-key (or listen on \
                 127.0.0.1)"
            );
        }
        Ok(Listen { addr, tls })
    }
}

/// TLS handshakes the office runs at once (officers, not the public).
const MAX_HANDSHAKES: usize = 16;

/// Start the office of the archive `at` on `listen`.
pub async fn start(at: &ArchiveAt, listen: &Listen) -> Result<Running> {
    let Listen { addr, tls } = listen;
    let tls = tls
        .as_ref()
        .map(|t| keepwire_server::tls::load_config(&t.cert, &t.key))
        .transpose()?;
    let office = Office::open(at)?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for the records office (--records-listen; `off` for nowhere)"
        )
    })?;
    let bound = listener.local_addr()?;
    let (jobs_tx, jobs) = std::sync::mpsc::sync_channel(QUEUE);
    let (signed_tx, signed) = tokio::sync::watch::channel(());
    std::thread::Builder::new()
        .name("records-office".into())
        .spawn(move || run(office, jobs, signed_tx))
        .context("starting the records office's thread")?;
    let (task, scheme) = match tls {
        Some(config) => {
            let listener =
                keepwire_server::tls::TlsListener::new(listener, config, MAX_HANDSHAKES)?;
            (tokio::spawn(serve(listener, jobs_tx)), "https")
        }
        None => (tokio::spawn(serve(listener, jobs_tx)), "http"),
    };
    // The URL the commands on this machine use: an address listening on
    // every interface is reached here through loopback.
    let host = match bound.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let url = format!(
        "{scheme}://{}",
        std::net::SocketAddr::new(host, bound.port())
    );
    let url_file = at.dir.join(URL_FILE);
    keepwire_protocol::files::replace_private(&url_file, url.as_bytes())
        .with_context(|| format!("cannot write {}", url_file.display()))?;
    tracing::info!(%url, "records office listening: privileged records commands come here");
    Ok(Running {
        signed,
        url_file,
        task,
    })
}
