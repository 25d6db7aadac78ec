//! A server's life: serving on every endpoint, the periodic work
//! (relay garbage, evictions, administrators' decisions relayed), and
//! stopping in order — devices first, each sent what it is owed and a close
//! frame, then the records service once it has captured everything
//! durable — or stopping because the log could not be written.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::deadline::{ConnWatch, WatchedListener};
use crate::ws::{router, AppState, Phase};

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
                // The disk is watched here, twice a second: new messages
                // stop before a write can fail half way.
                let free = core.store().free_space();
                core.set_free_space(free);
                (
                    core.collect_garbage(gc_state.clock.now_ms()),
                    core.request_evictions(),
                    core.relay_decisions(),
                )
            });
            if let Err(e) = decisions {
                tracing::warn!(error = %e, "relaying administrators' decisions failed");
            }
            // Attachments go with their messages, off the core's lock.
            match tokio::task::block_in_place(|| {
                crate::ws::collect_blobs(&gc_state, gc_state.clock.now_ms())
            }) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(blobs = n, "attachment blobs collected"),
                Err(e) => tracing::warn!(error = %e, "attachment blob collection failed"),
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
