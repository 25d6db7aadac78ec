//! What an operator's tools ask of a running server: `/healthz` (is the
//! process able to work at all), `/readyz` (should traffic come here: the
//! log writer is well, the records service is connected, capture is open,
//! the server is not stopping) and `/metrics` (Prometheus text format
//! 0.0.4).
//!
//! These are served on a listener of their own, never on the public one
//! (`keepwire serve --admin-listen`, loopback by default); off loopback a
//! bearer token is required. The figures are the core's
//! ([`crate::service::Stats`]), read under its lock at each scrape, plus
//! what only the shell knows: open connections and the log writer's
//! group-commit times. A dozen values in a fixed text format need no
//! client library.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::ws::{AppState, Phase};

/// Group-commit durations, in fixed buckets (seconds): the fsync is most
/// of each, so the buckets span a fast NVMe flush to a stalled disk.
pub struct CommitTimes {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

const BOUNDS: [f64; 10] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

impl Default for CommitTimes {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl CommitTimes {
    /// One group commit took `d`.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(BOUNDS) {
            if secs <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(BOUNDS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Serve the admin routes on `listener` (until the task is dropped).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    token: Option<String>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, token)).await
}

/// The admin listener's routes; `token`, when given, must come as
/// `Authorization: Bearer TOKEN` on every request.
pub fn router(state: AppState, token: Option<String>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/hold", axum::routing::post(hold).delete(release))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .with_state(state)
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(want) = token.as_deref() {
        let got = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared in constant time: a token guessed a byte at a time by
        // timing is a token given away.
        use subtle::ConstantTimeEq;
        if !bool::from(got.as_bytes().ct_eq(want.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required (the admin token file's contents)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// `POST /v1/hold?secs=N`: hold the log writer still for at most N
/// seconds (a consistent backup, [`crate::hold`]); 200 once it is still.
async fn hold(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(secs) = q.get("secs").and_then(|s| s.parse::<u64>().ok()) else {
        return (StatusCode::BAD_REQUEST, "give the hold's length: ?secs=N\n").into_response();
    };
    let hold = Arc::clone(&state.hold);
    let held = tokio::task::spawn_blocking(move || {
        hold.hold(
            std::time::Duration::from_secs(secs),
            std::time::Duration::from_secs(30),
        )
    })
    .await;
    match held {
        Ok(Ok(())) => (StatusCode::OK, "held\n").into_response(),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response(),
    }
}

/// `DELETE /v1/hold`: the writer goes on.
async fn release(State(state): State<AppState>) -> Response {
    state.hold.release();
    (StatusCode::OK, "released\n").into_response()
}

/// 200 while the server can work at all; 503 once its log could not be
/// written (it is then stopping).
async fn healthz(State(state): State<AppState>) -> Response {
    match state.failure() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the log could not be written: {why}\n"),
        )
            .into_response(),
    }
}

/// 200 when traffic should come here; otherwise 503, with every reason
/// why not, one per line.
async fn readyz(State(state): State<AppState>) -> Response {
    let stats = tokio::task::block_in_place(|| state.core().stats());
    let mut why = Vec::new();
    if let Some(f) = state.failure() {
        why.push(format!("the log could not be written: {f}"));
    }
    if state.phase() != Phase::Serving {
        why.push("the server is stopping".to_string());
    }
    if stats.records_connected == 0 {
        why.push("the records service is not connected: nothing is delivered".to_string());
    }
    if stats.storage_full {
        why.push(format!(
            "storage full: {} MiB free; new messages are refused",
            stats.free_space.unwrap_or(0) >> 20
        ));
    }
    if stats.fail_closed {
        why.push(format!(
            "fail closed: {} messages wait for capture; new ones are refused",
            stats.backlog
        ));
    }
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let now = state.now_ms();
    let stats = tokio::task::block_in_place(|| state.core().stats());
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    one(
        "keepwire_connections",
        "gauge",
        "Open WebSocket connections.",
        state.open_connections().to_string(),
    );
    one(
        "keepwire_messages_accepted_total",
        "counter",
        "Log entries appended (durable, receipted) since the server started.",
        stats.accepted.to_string(),
    );
    one(
        "keepwire_messages_captured_total",
        "counter",
        "Log entries the records service reported archived since the server started.",
        stats.captured.to_string(),
    );
    one(
        "keepwire_capture_backlog",
        "gauge",
        "Log entries durable and not yet archived.",
        stats.backlog.to_string(),
    );
    one(
        "keepwire_capture_lag_seconds",
        "gauge",
        "Age of the oldest entry waiting for capture (0 when none waits).",
        format!(
            "{}",
            stats
                .waiting_since_ms
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0)
        ),
    );
    one(
        "keepwire_fail_closed",
        "gauge",
        "1 while new messages are refused because capture is too far behind.",
        u8::from(stats.fail_closed).to_string(),
    );
    one(
        "keepwire_storage_full",
        "gauge",
        "1 while new messages are refused because the store's disk is nearly full.",
        u8::from(stats.storage_full).to_string(),
    );
    if let Some(free) = stats.free_space {
        one(
            "keepwire_storage_free_bytes",
            "gauge",
            "Bytes free on the disk of the server's store.",
            free.to_string(),
        );
    }
    one(
        "keepwire_conversations",
        "gauge",
        "Conversations the server follows.",
        stats.conversations.to_string(),
    );
    one(
        "keepwire_suspended_conversations",
        "gauge",
        "Conversations suspended after a capture failure.",
        stats.suspended.to_string(),
    );
    one(
        "keepwire_records_service_connections",
        "gauge",
        "Authenticated connections of the records service (0: nothing is delivered).",
        stats.records_connected.to_string(),
    );
    one(
        "keepwire_checkpoint_size",
        "gauge",
        "Leaves covered by the latest checkpoint the records service published (0: none yet).",
        stats.checkpoint_size.unwrap_or(0).to_string(),
    );
    one(
        "keepwire_checkpoint_cosignatures",
        "gauge",
        "Witness cosignatures on the latest published checkpoint (below the witnesses configured: one lags).",
        stats.checkpoint_cosignatures.to_string(),
    );
    state.commit_times().write(
        &mut out,
        "keepwire_group_commit_seconds",
        "Time of each group commit of the log (one transaction, one flush).",
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_commit_times_fall_in_cumulative_buckets() {
        let t = CommitTimes::default();
        t.observe(std::time::Duration::from_micros(300));
        t.observe(std::time::Duration::from_millis(3));
        t.observe(std::time::Duration::from_secs(2));
        let mut out = String::new();
        t.write(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0002\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
        assert!(out.contains("x_sum 2.0033\n"), "{out}");
    }
}
