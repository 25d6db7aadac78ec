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
    decode_client_frame, ClientFrame, ErrorCode, ProtocolError, Request, ServerBody, ServerFrame,
    MAX_FRAME_BYTES,
};
use rand::RngCore;

use crate::deadline::{ConnWatch, Watch};
pub use crate::lifecycle::{serve, Endpoint};
use crate::roster;
use crate::service::{Session, StoreRegistry};
use crate::shell::{CoreGuard, Shell};
use crate::store::ServerStore;
use crate::Core;

mod blobs;
pub(crate) use blobs::collect as collect_blobs;

#[derive(Clone)]
pub struct AppState {
    pub(crate) core: Arc<Mutex<Shell>>,
    next_session: Arc<AtomicU64>,
    pub(crate) limits: crate::Limits,
    /// One permit per open WebSocket (`Limits::max_connections`).
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    /// A connection of its own to the server's store, for the checks of
    /// handshakes done without the core's lock (`service::check`); none
    /// for an in-memory store, whose handshakes are checked under it.
    checker: Option<Arc<Mutex<Box<dyn ServerStore>>>>,
    /// A connection of its own for attachment blobs' bytes ([`blobs`]);
    /// none for an in-memory store, which keeps no blobs.
    blobs: Option<Arc<Mutex<Box<dyn ServerStore>>>>,
    /// Where the server is in its life ([`Phase`]); every connection
    /// watches it.
    pub(crate) phase: Arc<tokio::sync::watch::Sender<Phase>>,
    /// Set when the log writer failed: the server must stop.
    pub(crate) fatal: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// The time each request is stamped with (the core reads no clock).
    pub(crate) clock: keepwire_protocol::clock::Clock,
    /// The log writer's group-commit times ([`crate::ops`]).
    commit_times: Arc<crate::ops::CommitTimes>,
    /// Holds the log writer still while a backup is taken.
    pub(crate) hold: Arc<crate::hold::WriterHold>,
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
        let blobs = match core.store().reopen() {
            Some(Ok(store)) => Some(Arc::new(Mutex::new(store))),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no store connection for attachments: uploads are refused");
                None
            }
            None => None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let garbage = crate::log_writer::Garbage::default();
        let core = Arc::new(Mutex::new(Shell::new(core, tx, garbage.clone())));
        let fatal = Arc::new(tokio::sync::watch::channel(None).0);
        let commit_times = Arc::new(crate::ops::CommitTimes::default());
        let hold = Arc::new(crate::hold::WriterHold::default());
        {
            let core = Arc::clone(&core);
            let fatal = Arc::clone(&fatal);
            let times = Arc::clone(&commit_times);
            let hold = Arc::clone(&hold);
            std::thread::Builder::new()
                .name("keepwire-log-writer".into())
                .spawn(move || {
                    raise_priority();
                    let _ = crate::log_writer::run_log_writer(log_store, rx, core, garbage, &times, &hold, |e| {
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
            blobs,
            phase: Arc::new(tokio::sync::watch::channel(Phase::Serving).0),
            fatal,
            clock,
            commit_times,
            hold,
        }
    }

    /// The blobs' store handle, held while bytes move.
    fn blob_store(&self) -> Result<std::sync::MutexGuard<'_, Box<dyn ServerStore>>, ProtocolError> {
        let store = self.blobs.as_ref().ok_or_else(|| {
            ProtocolError::new(ErrorCode::Internal, "this server keeps no attachments")
        })?;
        Ok(store.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Why the log writer failed, if it did (the server is then stopping).
    pub fn failure(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// WebSocket connections open now.
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections - self.connections.available_permits()
    }

    /// The server's time (the clock requests are stamped with).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn commit_times(&self) -> &crate::ops::CommitTimes {
        &self.commit_times
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
        while let Some(frame) = rx.recv().await {
            let message = match frame {
                crate::outbox::Frame::Text(text) => Message::Text(text.into()),
                crate::outbox::Frame::Binary(bytes) => Message::Binary(bytes.into()),
            };
            // A peer that takes this long to take one frame has stopped
            // reading: the connection closes rather than hold its frames.
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await {
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
            // The only binary frames a device sends: its uploads' chunks.
            Ok(Message::Binary(bytes)) => {
                if !tx.send(blobs::chunk(&state, &session, &bytes)) {
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
            Ok(ClientFrame {
                id,
                request: Request::BlobFetch { blob, offset, len },
                ..
            }) => {
                let sent = match blobs::fetch(&state, &session, id, &blob, offset, len) {
                    Ok(bytes) => tx.send_binary(bytes),
                    Err(refusal) => tx.send(refusal),
                };
                if !sent {
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
