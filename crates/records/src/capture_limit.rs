//! Capture measured against its physical limit, in one run: the records
//! service's decrypt-verify-store rate (a real archive and a records member
//! with its on-disk store, durable writes as in production) next to the
//! bare decrypt-and-verify rate of the same messages by an MLS member that
//! stores nothing. No step of capture can beat the bare rate, so the ratio
//! says how much the archive itself costs.
//!
//! Used by `cargo bench -p keepwire-records --bench capture` and by
//! `keepwire bench` (scenario `capture`); figures are printed by callers,
//! never asserted.

use std::path::Path;
use std::time::Instant;

use keepwire_client::{Device, Incoming, PendingDevice};
use keepwire_protocol::clock::Clock;
use keepwire_protocol::content::Content;
use keepwire_protocol::{ClaimedKeyPackage, Delivery, Receipt, Request};

use crate::{Archive, Capture, RecordsError};

/// What one run measured (messages per second, on one core).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureFigures {
    pub messages: u64,
    /// A member decrypting and verifying, storing nothing.
    pub bare_per_s: f64,
    /// Capture with one durable archive write per record (a quiet service).
    pub single_per_s: f64,
    /// Capture in batches of [`BATCH`], as the service takes what has
    /// already arrived under load, decrypting and writing in turn on one
    /// thread.
    pub batched_per_s: f64,
    /// The same batches as the service runs them: batch n written by the
    /// archive writer thread while batch n+1 is decrypted.
    pub pipelined_per_s: f64,
}

pub use crate::capture::CAPTURE_BATCH as BATCH;

fn err(e: impl std::fmt::Display) -> RecordsError {
    RecordsError::Archive(format!("capture benchmark: {e}"))
}

pub(crate) fn key_package(d: &Device) -> Result<ClaimedKeyPackage, RecordsError> {
    match d.key_packages_request(1, false)? {
        Request::UploadKeyPackages { key_packages, .. } => Ok(ClaimedKeyPackage {
            user: d.user.clone(),
            device_id: d.device_id.clone(),
            key_package: key_packages
                .into_iter()
                .next()
                .ok_or_else(|| err("no key package made"))?,
        }),
        other => Err(err(format!("unexpected request {other:?}"))),
    }
}

/// A delivery as the server would push it; the receipt is not checked by
/// capture, so a placeholder signature stands in for the server's.
pub(crate) fn delivery(conv: &str, seq: u64, sender: &Device, message: Vec<u8>) -> Delivery {
    Delivery {
        conv: conv.to_string(),
        seq,
        sender_user: sender.user.clone(),
        sender_device: sender.device_id.clone(),
        server_time_ms: seq,
        message,
        receipt: Receipt {
            conv: conv.to_string(),
            seq,
            message_sha256: vec![0; 32],
            server_time_ms: seq,
            signature: vec![0; 64],
            server_key: vec![0; 32],
        },
    }
}

/// Encrypt `n` 1 KiB messages in one conversation, then time the bare
/// member and the records service on them. `dir` receives the archive and
/// the records member's store; `keys` opens the archive key (capture
/// itself asks the provider nothing per record: an HSM costs no rate).
pub fn measure(
    dir: &Path,
    n: u64,
    keys: &dyn crate::keys::KeyProvider,
) -> Result<CaptureFigures, RecordsError> {
    let mut alice = PendingDevice::in_memory()?.complete("alice", "a1")?;
    let records =
        PendingDevice::create(&dir.join("records"), "bench")?.complete("records", "r1")?;
    let mut bare = PendingDevice::in_memory()?.complete("bob", "b1")?;
    let kps = vec![key_package(&records)?, key_package(&bare)?];
    let (conv, welcome) = match alice.create_conversation(&kps)? {
        (conv, Request::CreateConversation { welcome, .. }) => (conv, welcome),
        (_, other) => return Err(err(format!("unexpected request {other:?}"))),
    };
    alice.commit_accepted(&conv, 1)?;
    let archive = Archive::open(&dir.join("archive"), Some(keys))?;
    let mut capture = Capture::new(records, archive, Clock::from_env());
    capture.join(&conv, 1, &welcome)?;
    bare.join(&conv, 1, &welcome)?;

    let text = "x".repeat(1024);
    let mut messages = Vec::with_capacity(n as usize);
    for i in 0..n {
        let content = Content::text(&text, Some(3600), false, i);
        match alice.encrypt(&conv, &content)? {
            Request::Submit { message, .. } => {
                messages.push(delivery(&conv, i + 2, &alice, message))
            }
            other => return Err(err(format!("unexpected request {other:?}"))),
        }
    }
    // The commit that added the members, as the server would relay it.
    let _ = capture.capture(&delivery(&conv, 1, &alice, Vec::new()));

    let start = Instant::now();
    for d in &messages {
        match bare.process(d)? {
            Incoming::Application { .. } => {}
            other => return Err(err(format!("expected a message, got {other:?}"))),
        }
    }
    let bare_per_s = n as f64 / start.elapsed().as_secs_f64();

    // A tenth one by one (the slow path of a quiet service), then the
    // rest in batches: half on one thread, half pipelined.
    let single = messages.len() / 10;
    let start = Instant::now();
    for d in &messages[..single] {
        capture.capture(d)?;
    }
    let single_per_s = single as f64 / start.elapsed().as_secs_f64();
    let half = single + (messages.len() - single) / 2;
    let start = Instant::now();
    for batch in messages[single..half].chunks(BATCH) {
        capture.capture_batch(batch)?;
    }
    let batched_per_s = (half - single) as f64 / start.elapsed().as_secs_f64();

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut capture =
        capture.with_writer(Archive::open(&dir.join("archive"), Some(keys))?, move |r| {
            let _ = done_tx.send(r.map(|c| c.acks.len()));
        })?;
    let start = Instant::now();
    for batch in messages[half..].chunks(BATCH) {
        capture.submit_batch(batch)?;
    }
    capture.settle()?;
    let pipelined_per_s = (messages.len() - half) as f64 / start.elapsed().as_secs_f64();
    let acked: usize = done_rx
        .try_iter()
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    if acked != messages.len() - half {
        return Err(err(format!(
            "{acked} of {} pipelined messages acknowledged",
            messages.len() - half
        )));
    }
    let archived = capture
        .archive
        .count(Some(crate::RecordKind::Application))?;
    if archived != n {
        return Err(err(format!("{archived} of {n} messages archived")));
    }
    Ok(CaptureFigures {
        messages: n,
        bare_per_s,
        single_per_s,
        batched_per_s,
        pipelined_per_s,
    })
}
