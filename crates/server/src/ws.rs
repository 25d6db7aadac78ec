//! The network shell: axum routes, one WebSocket per device. Each frame is
//! decoded and handed to the [`Core`] under its lock; the answer and the
//! pushes it causes leave as the core's effects ([`crate::shell`]),
//! through each session's queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use keepwire_protocol::{
    decode_client_frame, ErrorCode, ProtocolError, Request, ServerBody, ServerFrame,
    MAX_FRAME_BYTES,
};
use rand::RngCore;
use tokio::net::TcpListener;

use crate::deadline::{ConnWatch, Watch, WatchedListener};
use crate::roster;
use crate::service::{Session, StoreRegistry};
use crate::shell::{CoreGuard, Shell};
use crate::store::ServerStore;
use crate::Core;

#[derive(Clone)]
pub struct AppState {
    core: Arc<Mutex<Shell>>,
    next_session: Arc<AtomicU64>,
    limits: crate::Limits,
    /// One permit per open WebSocket (`Limits::max_connections`).
    connections: Arc<tokio::sync::Semaphore>,
    /// A connection of its own to the server's store, for the checks of
    /// handshakes done without the core's lock (`service::check`); none
    /// for an in-memory store, whose handshakes are checked under it.
    checker: Option<Arc<Mutex<Box<dyn ServerStore>>>>,
    /// Where the server is in its life ([`Phase`]); every connection
    /// watches it.
    phase: Arc<tokio::sync::watch::Sender<Phase>>,
    /// Set when the log writer failed: the server must stop.
    fatal: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// The time each request is stamped with (the core reads no clock).
    clock: keepwire_protocol::clock::Clock,
}

/// A server's life, in order. Stopping is two steps so that nothing
/// receipted is left uncaptured: devices go first (each connection stops
/// reading, sends the answers still owed — receipts wait for the group
/// commit in flight — and closes with a close frame), then, once the
/// records service has archived everything durable, the records service's
/// connection closes too ([`serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Devices' connections close; the records service's stays.
    Draining,
    /// Every connection closes.
    Closing,
}

impl AppState {
    /// Wrap the core; `log_store`, a second connection to the server's
    /// database, becomes the log writer that batches appends into group
    /// commits ([`crate::log_writer`]).
    pub fn new(
        core: Core,
        log_store: Box<dyn ServerStore>,
        clock: keepwire_protocol::clock::Clock,
    ) -> Self {
        let limits = core.limits().clone();
        let checker = match core.store().reopen() {
            Some(Ok(store)) => Some(Arc::new(Mutex::new(store))),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no second store connection: handshakes are checked under the core's lock");
                None
            }
            None => None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let garbage = crate::log_writer::Garbage::default();
        let core = Arc::new(Mutex::new(Shell::new(core, tx, garbage.clone())));
        let fatal = Arc::new(tokio::sync::watch::channel(None).0);
        {
            let core = Arc::clone(&core);
            let fatal = Arc::clone(&fatal);
            std::thread::Builder::new()
                .name("keepwire-log-writer".into())
                .spawn(move || {
                    raise_priority();
                    let _ = crate::log_writer::run_log_writer(log_store, rx, core, garbage, |e| {
                        tracing::error!(error = %e, "the log could not be written; stopping the server");
                        fatal.send_replace(Some(e.to_string()));
                    });
                })
                // Invariant: spawning a thread fails only when the OS is out
                // of resources at startup, where stopping is right.
                .expect("cannot start the log writer thread");
        }
        Self {
            core,
            next_session: Arc::new(AtomicU64::new(1)),
            connections: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            limits,
            checker,
            phase: Arc::new(tokio::sync::watch::channel(Phase::Serving).0),
            fatal,
            clock,
        }
    }

    /// Move the server's life on ([`Phase`]); never back.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }

    /// The core, locked; the effects of what is done with it are carried
    /// out when the guard drops.
    pub fn core(&self) -> CoreGuard<'_> {
        // A panic while holding the lock would be a bug; the core's durable
        // state is in the store's transactions, so continuing is safe.
        CoreGuard(self.core.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Run the calling thread ahead of ordinary ones (nice -10), if the
/// process may (root, or CAP_SYS_NICE). The log writer is on every
/// receipt's path and uses a tenth of a core; when the machine is busy,
/// each time it waits for a CPU, every message in flight waits with it
/// (measured at 5,000 msgs/s on 2 busy cores: group commits p50 0.7 ->
/// 0.4 ms, p99 9.6 -> 5.8 ms). Without the privilege it runs as is.
#[cfg(target_os = "linux")]
fn raise_priority() {
    // SAFETY: gettid and setpriority only read and change this thread's
    // own scheduling priority; no memory is involved.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) };
    if r != 0 {
        tracing::info!(
            error = %std::io::Error::last_os_error(),
            "the log writer runs at normal priority (raising it needs CAP_SYS_NICE); receipts may wait longer when the CPUs are busy"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_priority() {}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/ws", get(ws_handler))
        .route("/v1/receipt-key", get(receipt_key))
        .route("/v1/receipt-keys", get(receipt_keys))
        .route("/checkpoint", get(checkpoint))
        .with_state(state)
}

async fn receipt_key(State(state): State<AppState>) -> impl IntoResponse {
    keepwire_protocol::b64::encode(&state.core().public_key())
}

/// Every key that has signed receipts, so old receipts stay verifiable
/// after a rotation.
async fn receipt_keys(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(state.core().receipt_keys())
}

/// The archive's latest signed checkpoint, for anyone (C2SP
/// tlog-checkpoint text).
async fn checkpoint(State(state): State<AppState>) -> axum::response::Response {
    match state.core().checkpoint() {
        Some(note) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            note,
        )
            .into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            "no checkpoint published yet\n",
        )
            .into_response(),
    }
}

async fn ws_handler(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(ConnWatch(watch)): ConnectInfo<ConnWatch>,
) -> axum::response::Response {
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        tracing::warn!(
            limit = state.limits.max_connections,
            "connection refused: the server holds its maximum of connections"
        );
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many connections; try again shortly\n",
        )
            .into_response();
    };
    // Small starting buffers (they grow for large frames): most devices sit
    // idle, and tungstenite's 128 KiB defaults would cost each connection
    // far more memory than its state does.
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| async move {
            connection(socket, state, watch).await;
            drop(permit);
        })
}

async fn connection(socket: WebSocket, state: AppState, watch: Arc<Watch>) {
    // The HTTP request is complete; from here on each frame is.
    watch.complete();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = crate::outbox::Outbox::new(state.limits.max_outbox_bytes);
    let mut nonce = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut session = Session {
        id: state.next_session.fetch_add(1, Ordering::Relaxed),
        nonce: nonce.clone(),
        device: None,
    };
    state.core().open(session.id, tx.clone());
    let hello = ServerFrame::push(ServerBody::Challenge {
        nonce,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
    });
    tx.send(hello.to_json());
    let mut writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            // A peer that takes this long to take one frame has stopped
            // reading: the connection closes rather than hold its frames.
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Text(text.into()))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
        // Every sender is gone (the server is stopping and everything
        // owed was sent): say goodbye rather than drop the socket.
        let bye = Message::Close(Some(axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::AWAY,
            reason: "server shutting down; reconnect shortly".into(),
        }));
        let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(bye)).await;
    });
    // A connection that has not authenticated by then is closed: an
    // unauthenticated peer may hold a connection only this long.
    let auth_deadline =
        tokio::time::Instant::now() + Duration::from_millis(state.limits.auth_timeout_ms);
    let mut phase = state.phase.subscribe();
    let mut stopping = false;
    loop {
        let records = session
            .device
            .as_ref()
            .is_some_and(|d| d.user == keepwire_protocol::RECORDS_USER);
        let msg = tokio::select! {
            // The writer ends when the peer stopped reading (its queue
            // overflowed) or the socket failed: close the connection.
            _ = &mut writer => break,
            // The server is stopping: read no more requests.
            _ = phase.wait_for(|p| *p == Phase::Closing || (*p == Phase::Draining && !records)) => {
                stopping = true;
                break;
            }
            _ = tokio::time::sleep_until(auth_deadline), if session.device.is_none() => {
                tracing::debug!("connection closed: it did not authenticate in time");
                break;
            }
            msg = stream.next() => match msg {
                Some(m) => {
                    watch.complete();
                    m
                }
                None => break,
            },
        };
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                let err = ProtocolError::new(
                    ErrorCode::BadFrame,
                    "binary frames are not used; send JSON text frames",
                );
                if !tx.send(ServerFrame::error(None, &err).to_json()) {
                    break;
                }
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        match decode_client_frame(&text) {
            Err((id, err)) => {
                if !tx.send(ServerFrame::error(id, &err).to_json()) {
                    break;
                }
            }
            Ok(frame) => {
                let id = frame.id;
                // Requests that may take long (a backlog to replay, a
                // thousand key packages to check, a roster to follow, a
                // checkpoint proof) move aside; see below.
                let handshake = match &frame.request {
                    Request::Submit { message, .. } => roster::is_handshake(message),
                    Request::CreateConversation { .. } => true,
                    _ => false,
                };
                let long = handshake
                    || matches!(
                        frame.request,
                        Request::Sync
                            | Request::UploadKeyPackages { .. }
                            | Request::PublishCheckpoint { .. }
                    );
                // A commit's MLS checks grow with the group: they run
                // between two turns of the lock, on a copy of the group
                // (`service::check`).
                let check = match &state.checker {
                    Some(_) if handshake => state.core().prepare_check(&session, &frame.request),
                    _ => None,
                };
                let handle = || {
                    let checked = match (check, &state.checker) {
                        (Some(check), Some(store)) => {
                            let store = store.lock().unwrap_or_else(|p| p.into_inner());
                            Some(check.run(&StoreRegistry(&**store)))
                        }
                        _ => None,
                    };
                    let mut core = state.core();
                    let result = match checked {
                        Some(checked) => core.handle_checked(
                            &mut session,
                            frame.request,
                            checked,
                            state.clock.now_ms(),
                        ),
                        None => core.handle(&mut session, frame.request, state.clock.now_ms()),
                    };
                    let reply = match result {
                        Ok(body) => ServerFrame::response(id, body),
                        Err(err) => {
                            tracing::debug!(code = %err.code, message = %err.message, "request refused");
                            ServerFrame::error(Some(id), &err)
                        }
                    };
                    // An answer to an append (a receipt) leaves only once
                    // the entry is durable: the log writer sends it, right
                    // after its group commit. Meanwhile this connection
                    // keeps reading, so a device may have many messages in
                    // flight.
                    core.answer(session.id, reply.to_json(), || {
                        ServerFrame::error(
                            Some(id),
                            &ProtocolError::new(
                                ErrorCode::Internal,
                                "the message could not be stored; it was not accepted",
                            ),
                        )
                        .to_json()
                    })
                };
                // Requests take tens of microseconds under the core's lock
                // (the fsync is the log writer's, off this thread): run
                // them in place. Handing the worker over to another thread
                // for each (`block_in_place`) cost more than the request,
                // in thread switches and latency. The long ones move aside.
                if long {
                    tokio::task::block_in_place(handle)
                } else {
                    handle()
                }
            }
        }
    }
    state.core().close(&session);
    if stopping {
        // The writer sends what is still owed — receipts of appends in the
        // group commit in flight arrive through the log writer, which holds
        // the last senders — then the close frame, and ends.
        drop(session);
        drop(tx);
        if tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        // The peer may still be sending, not having read our close yet.
        // Read (and drop) until it closes too: a socket torn down with
        // unread bytes is reset, and the reset can discard, on the peer's
        // side, the answers and close frame it has not read yet (seen: a
        // pipelining client lost its close frame one run in three).
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    } else {
        drop(tx);
        writer.abort();
    }
}

/// How long a stopping connection may take to send what it owes.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long a stopping connection waits for the peer's own close.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How long writing one frame to a peer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server listens: plain (loopback only; the caller checks) or TLS.
pub struct Endpoint {
    pub listener: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serve on every endpoint until one fails. Collects relay garbage and asks
/// for evictions every `gc_every`.
/// Serve until `shutdown` completes, then stop in order ([`stop`]) and
/// return; or until a listener fails.
pub async fn serve(
    endpoints: Vec<Endpoint>,
    state: AppState,
    gc_every: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gc_state = state.clone();
    let gc = tokio::spawn(async move {
        let mut tick = tokio::time::interval(gc_every);
        loop {
            tick.tick().await;
            let (gc, evict, decisions) = tokio::task::block_in_place(|| {
                let mut core = gc_state.core();
                (
                    core.collect_garbage(gc_state.clock.now_ms()),
                    core.request_evictions(),
                    core.relay_decisions(),
                )
            });
            if let Err(e) = decisions {
                tracing::warn!(error = %e, "relaying administrators' decisions failed");
            }
            match gc {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "relay garbage collection failed"),
            }
            match evict {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(conversations = n, "asked records to evict revoked devices")
                }
                Err(e) => tracing::warn!(error = %e, "eviction check failed"),
            }
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    let frame_timeout = Duration::from_millis(state.limits.frame_timeout_ms);
    for e in endpoints {
        let app = router(state.clone()).into_make_service_with_connect_info::<ConnWatch>();
        match e.tls {
            // No Nagle delay: a receipt or a push is one small frame that
            // must leave at once, not wait for the peer's delayed ACK.
            None => {
                let stopping = draining(state.phase.subscribe());
                tasks.spawn(async move {
                    use axum::serve::ListenerExt;
                    let listener = e.listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    axum::serve(WatchedListener::new(listener, frame_timeout), app)
                        .with_graceful_shutdown(stopping)
                        .await
                })
            }
            Some(config) => {
                let listener = crate::tls::TlsListener::new(
                    e.listener,
                    config,
                    state.limits.max_tls_handshakes,
                )?;
                let stopping = draining(state.phase.subscribe());
                tasks.spawn(async move {
                    axum::serve(WatchedListener::new(listener, frame_timeout), app)
                        .with_graceful_shutdown(stopping)
                        .await
                })
            }
        };
    }
    let r = tokio::select! {
        r = tasks.join_next() => match r {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(std::io::Error::other(e)),
            None => Ok(()),
        },
        () = shutdown => {
            stop(&state, &mut tasks).await;
            Ok(())
        }
        why = failed(state.fatal.subscribe()) => {
            // Every connection is sent what it is owed (the refusals of the
            // batch that failed) and a close frame before the error ends
            // the process.
            state.set_phase(Phase::Closing);
            let open = || state.limits.max_connections - state.connections.available_permits();
            wait_until("every connection to close", || open() == 0).await;
            Err(std::io::Error::other(format!(
                "the log could not be written ({why}); stopped: restart the server, which resumes from its durable log"
            )))
        }
    };
    gc.abort();
    r
}

/// Completes, with why, if the log writer fails.
async fn failed(mut fatal: tokio::sync::watch::Receiver<Option<String>>) -> String {
    let why = match fatal.wait_for(|f| f.is_some()).await {
        Ok(why) => why.clone(),
        Err(_) => None,
    };
    match why {
        Some(why) => why,
        None => std::future::pending().await,
    }
}

/// Completes once the server starts stopping: the listeners' cue to stop
/// accepting.
async fn draining(mut phase: tokio::sync::watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p >= Phase::Draining).await;
}

/// Stop in order, each step bounded by [`STOP_GRACE`]: no new connections;
/// devices' connections send what they owe (receipts of the group commit
/// in flight included) and close; the records service archives what is
/// durable and not yet captured (its connection stays until then, so
/// nothing receipted is left uncaptured when the process exits); then its
/// connection closes too.
async fn stop(state: &AppState, listeners: &mut tokio::task::JoinSet<std::io::Result<()>>) {
    tracing::info!(
        "stopping: no new connections; devices get what they are owed, then a close frame"
    );
    state.set_phase(Phase::Draining);
    while listeners.join_next().await.is_some() {}
    let open = || state.limits.max_connections - state.connections.available_permits();
    wait_until("devices' connections to close", || {
        open() <= state.core().records_sessions()
    })
    .await;
    wait_until("the records service to capture what is durable", || {
        let core = state.core();
        core.backlog() == 0 || core.records_sessions() == 0
    })
    .await;
    tracing::info!(
        backlog = state.core().backlog(),
        "stopping: closing the records service's connection"
    );
    state.set_phase(Phase::Closing);
    wait_until("every connection to close", || open() == 0).await;
}

/// Wait (at most [`STOP_GRACE`]) until `done`.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("stopping: gave up waiting for {what}");
            return;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// How long each step of stopping may take.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often stopping looks again (only while stopping).
const STOP_POLL: Duration = Duration::from_millis(10);
