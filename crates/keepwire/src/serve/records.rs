//! The records service's side of `serve`: enrolling the records device,
//! and its loop — connect, capture what the server pushes in batches
//! (decrypted here, written by the capture's writer thread), report each
//! batch once durable, sign and publish checkpoints, carry out the records
//! member's own commits — reconnecting until asked to stop.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keepwire_client::Device;
use keepwire_protocol::clock::Clock;
use keepwire_protocol::{Delivery, Request, ServerBody, RECORDS_USER};
use keepwire_records::capture::Captured;
use keepwire_records::{Archive, Capture, RecordsError};

use super::witnessing::{Publishing, Witnessing};

mod files;
use super::{open_server_store, records_dir, ArchiveAt};
use crate::net::{Conn, Refused};

/// The records device's store secret: sealed by the key provider beside
/// the device ([`keepwire_records::keys::device_secret`]), unless
/// `KEEPWIRE_RECORDS_PASSPHRASE` gives one.
fn records_passphrase(at: &ArchiveAt) -> Result<String> {
    if let Ok(p) = std::env::var("KEEPWIRE_RECORDS_PASSPHRASE") {
        return Ok(p);
    }
    Ok(keepwire_records::keys::device_secret(
        &at.dir,
        &*at.provider()?,
    )?)
}

/// Make sure the records member exists and has an enrolment code ready
/// when its device is not enrolled yet (embedded mode does this itself).
pub fn records_code(
    data_dir: &Path,
    database: Option<&str>,
    clock: &Clock,
) -> Result<Option<String>> {
    if Device::exists(&records_dir(data_dir)) {
        return Ok(None);
    }
    let store = open_server_store(data_dir, database)?;
    if store.user(RECORDS_USER)?.is_none() {
        store.add_user(
            RECORDS_USER,
            "Agency records service",
            "records",
            clock.now_ms(),
        )?;
    }
    Ok(Some(
        store.new_enrolment_code(RECORDS_USER, clock.now_ms())?,
    ))
}

/// Whether `e` is one no reconnection mends: the archive is not what it
/// signed ([`RecordsError::Diverged`]), or there is evidence it existed
/// and it is gone ([`super::evidence`]).
pub(super) fn is_fatal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Fatal>().is_some()
            || matches!(
                c.downcast_ref::<RecordsError>(),
                Some(RecordsError::Diverged(_))
            )
    })
}

/// An error no retry mends: the records service stops ([`is_fatal`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

fn fatal(e: anyhow::Error) -> anyhow::Error {
    Fatal(format!("{e:#}")).into()
}

/// Exclusive use of a records directory: held by the running records
/// service, taken by maintenance that must not run beside it (archive key
/// rotation). Released when the file is dropped (or the process dies).
pub fn lock_records_dir(dir: &Path, what: &str) -> Result<std::fs::File> {
    super::owner::claim_dir(dir, "service.lock", "keepwire records service", what)
}

/// Run the records service against `server` forever, reconnecting on
/// failure; it signs and publishes a checkpoint as `publishing` says when
/// the log grew, gathers its witnesses' cosignatures, and keeps the
/// records office open on `publishing.office` ([`super::office`]).
///
/// `stop` (when given) ends it in order: what was decrypted is made
/// durable and reported, and the reports' answers awaited, before it
/// returns. Embedded, it has none: the server closes its connection once
/// it has captured everything durable, and the process ends.
pub async fn run_records(
    server: String,
    at: ArchiveAt,
    code: Option<String>,
    publishing: Publishing,
    mut stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<()> {
    let _claim = super::owner::claim(
        &at.dir,
        "service.lock",
        at.database.as_deref().map(|url| (url, "archive")),
        "keepwire records service",
        "cannot start the records service",
    )?;
    // Holding the lock, any office URL here is a dead service's (killed):
    // gone, so that no command talks to it while this one starts.
    let _ = std::fs::remove_file(at.dir.join(super::office::URL_FILE));
    super::owner::tighten(&at.dir)?;
    super::evidence::check_archive(&at.dir, at.database.as_deref()).map_err(fatal)?;
    if let Some(code) = code {
        enroll_records(&server, &at, &code).await?;
    }
    let passphrase = records_passphrase(&at)?;
    let clock = Clock::from_env();
    // The archive (made if need be) says where it is before anything runs.
    tracing::info!(archive = %at.open(false)?.describe(), "archive open");
    // Across reconnections: a witness's state outlives a connection, and
    // officers act while the server is away.
    let mut beside = Beside {
        witnessing: super::witnessing::spawn(&at, &publishing)?,
        office: match &publishing.office {
            Some(listen) => Some(super::office::start(&at, listen).await?),
            None => None,
        },
        scan: publishing.scan.clone(),
    };
    loop {
        match records_once(
            &server,
            &at,
            &passphrase,
            &clock,
            publishing.every,
            &mut beside,
            stop.as_mut(),
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) if is_fatal(&e) => {
                tracing::error!(error = %format!("{e:#}"), "records service stopped: it will not capture into this archive");
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "records service disconnected; reconnecting")
            }
        }
        if stopped(stop.as_ref()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn stopped(stop: Option<&tokio::sync::watch::Receiver<bool>>) -> bool {
    stop.is_some_and(|s| *s.borrow())
}

/// Completes when `stop` says so; never without one.
async fn stop_requested(stop: Option<&mut tokio::sync::watch::Receiver<bool>>) {
    match stop {
        Some(s) => {
            let _ = s.wait_for(|v| *v).await;
        }
        None => std::future::pending().await,
    }
}

/// Enrol the records device (its key packages included), so that
/// conversations can be created as soon as this returns.
pub async fn enroll_records(server: &str, at: &ArchiveAt, code: &str) -> Result<()> {
    let passphrase = records_passphrase(at)?;
    let online = crate::session::enroll(server, code, &at.dir, &passphrase)
        .await
        .context("enrolling the records device")?;
    tracing::info!(device = %online.device.device_id, "records device enrolled");
    Ok(())
}

/// What runs beside capture and outlives a connection to the server: the
/// witnesses' cosigning, the records office.
struct Beside {
    witnessing: Option<Witnessing>,
    office: Option<super::office::Running>,
    /// The malware scanner each captured file goes through.
    scan: Option<String>,
}

/// One connection's worth of capture; Ok only when asked to stop.
async fn records_once(
    server: &str,
    at: &ArchiveAt,
    passphrase: &str,
    clock: &Clock,
    checkpoint_every: Duration,
    beside: &mut Beside,
    mut stop: Option<&mut tokio::sync::watch::Receiver<bool>>,
) -> Result<()> {
    let mut witnessing = beside.witnessing.as_mut();
    let mut office_signed = beside.office.as_mut().map(|o| &mut o.signed);
    let dir = &at.dir;
    let device = Device::open(dir, passphrase)?;
    let archive = at.open(true)?;
    let mut conn = Conn::connect(server).await?;
    conn.request(device.auth_request(&conn.nonce)?).await?;
    // Keep the key package pool topped up so new conversations can add us.
    conn.request(device.key_packages_request(crate::session::KEY_PACKAGE_POOL, true)?)
        .await?;
    let notary = at.notary()?;
    let intake = files::Intake::new(dir, beside.scan.clone(), clock.clone())?;
    // Files are fetched on a connection of their own, beside capture.
    let (fetched_tx, mut fetched) = tokio::sync::mpsc::unbounded_channel();
    let fetcher = files::Fetcher::start(
        server.to_string(),
        device.authenticator(),
        intake.clone(),
        at.open(true)?,
        fetched_tx,
    );
    // The server keeps the chain of checkpoints this archive published:
    // an archive that no longer holds what it signed (cut back, an old
    // copy restored, rewritten) captures nothing more — going on would
    // sign a fork, and hide what was lost.
    if let Some(note) = latest_published(&mut conn).await? {
        keepwire_records::checkpoint::check_against(&archive, &note, &notary.verifier_key)?;
    }
    // Batches are written by the capture's writer thread while the next
    // is decrypted; their outcomes come back here to be acknowledged.
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let mut capture =
        Capture::new(device, archive, clock.clone()).with_writer(at.open(true)?, move |r| {
            let _ = done_tx.send(r);
        })?;
    // A large backlog comes a page at a time: once a page is captured and
    // acknowledged, ask for the next; the server pushes live only after
    // the last.
    let mut more = conn.sync().await?;
    let mut checkpoints = tokio::time::interval(checkpoint_every);
    loop {
        if more && !conn.has_queued() {
            // The next page starts after what was acknowledged: nothing
            // may still wait for its files.
            drain(&mut capture, &mut fetched).await?;
            settle(&mut conn, &mut capture, &mut done).await?;
            more = conn.sync().await?;
            continue;
        }
        let push = tokio::select! {
            // Acknowledgements first: they free the server's backlog and
            // end capture lag; deliveries wait in the socket meanwhile. The
            // checkpoint tick comes before deliveries, or a steady stream
            // of them would hold it off for as long as it lasts.
            biased;
            () = stop_requested(stop.as_deref_mut()) => {
                settle(&mut conn, &mut capture, &mut done).await?;
                conn.flush_posted().await?;
                tracing::info!("records service stopped: everything it decrypted is archived and reported");
                return Ok(());
            }
            captured = done.recv() => {
                let captured = captured.context("the archive writer is gone")?;
                acknowledge(&mut conn, captured?).await?;
                continue;
            }
            // A waiting message's files are in (or cannot be had).
            f = fetched.recv() => {
                files_in(&mut capture, f)?;
                continue;
            }
            _ = checkpoints.tick() => {
                settle(&mut conn, &mut capture, &mut done).await?;
                publish(&mut conn, &capture.archive, &notary, clock, witnessing.as_deref()).await?;
                continue;
            }
            // The office signed a checkpoint covering officers' actions:
            // published now, so the server holds it too.
            () = signal(office_signed.as_deref_mut()) => {
                publish(&mut conn, &capture.archive, &notary, clock, witnessing.as_deref()).await?;
                continue;
            }
            // A witness's cosignature was kept: devices get it now, not at
            // the next checkpoint.
            () = cosigned(witnessing.as_deref_mut()) => {
                publish(&mut conn, &capture.archive, &notary, clock, witnessing.as_deref()).await?;
                continue;
            }
            push = conn.next_push() => push?,
        };
        match push {
            ServerBody::WelcomeMessage { conv, seq, message } => {
                // Not acknowledged: the records member acknowledges the
                // commit at `seq` once it is archived, which also clears
                // the Welcome on the server. A Welcome it cannot join from
                // makes that commit, and all that follows, withheld.
                capture.join(&conv, seq, &message)?;
            }
            ServerBody::Deliver(d) => {
                let batch = gather_batch(&mut conn, d)?;
                // A message is archived with its files or withheld; while
                // they are fetched, its conversation waits and the rest
                // goes on (keepwire_records::capture::waiting).
                let staged = capture.stage_batch(&batch)?;
                let (ready, jobs) = capture.set_aside(staged);
                for job in jobs {
                    fetcher.fetch(job)?;
                }
                capture.submit_staged(ready)?;
            }
            ServerBody::AdminDecision {
                decision: id,
                at_ms,
                actor,
                action,
                subject,
                reason,
            } => {
                // A privileged action like any other: in the transparency
                // log, attributed, before the server forgets to relay it.
                settle(&mut conn, &mut capture, &mut done).await?;
                let target = format!("{subject} (server decision #{id}: {reason})");
                if capture
                    .archive
                    .log_decision(id, &actor, &action, &target, at_ms)?
                {
                    tracing::info!(id, %actor, %action, %subject, "administrator's decision logged");
                }
                conn.request(Request::DecisionLogged { decision: id })
                    .await?;
            }
            ServerBody::Evict { conv, devices } => {
                // The records member's own commits come after everything
                // it staged, in every conversation it may touch.
                drain(&mut capture, &mut fetched).await?;
                settle(&mut conn, &mut capture, &mut done).await?;
                evict(&mut conn, &mut capture, &intake, &conv, &devices).await?;
            }
            _ => {}
        }
        if capture.has_proposals() {
            drain(&mut capture, &mut fetched).await?;
            settle(&mut conn, &mut capture, &mut done).await?;
            for (conv, req) in capture.proposal_commits() {
                match req {
                    Ok(req) => {
                        commit_as_records(&mut conn, &mut capture, &intake, &conv, req).await?
                    }
                    Err(e) => tracing::warn!(conv, error = %e, "cannot commit proposals"),
                }
            }
        }
    }
}

type Done = tokio::sync::mpsc::UnboundedReceiver<Result<Captured, RecordsError>>;

type Fetched = tokio::sync::mpsc::UnboundedReceiver<files::Fetched>;

/// Give a waiting message its files (or withhold it), and hand every
/// conversation that waits for nothing more to the writer.
fn files_in(capture: &mut Capture, f: Option<files::Fetched>) -> Result<()> {
    let f = f.context("the file fetcher is gone")?;
    capture.files_in(&f.conv, f.seq, f.outcome?);
    if let Some(batch) = capture.released() {
        capture.submit_staged(batch)?;
    }
    Ok(())
}

/// Wait until no conversation waits for files (every one of them handed
/// to the writer).
async fn drain(capture: &mut Capture, fetched: &mut Fetched) -> Result<()> {
    while capture.is_waiting() {
        files_in(capture, fetched.recv().await)?;
    }
    Ok(())
}

/// Wait until every batch handed to the archive writer is durable, and
/// acknowledge them: the server takes a conversation's acknowledgements
/// only in order, so this comes before any entry is captured another way.
async fn settle(conn: &mut Conn, capture: &mut Capture, done: &mut Done) -> Result<()> {
    capture.settle()?;
    while let Ok(captured) = done.try_recv() {
        acknowledge(conn, captured?).await?;
    }
    Ok(())
}

/// Acknowledge a durable batch, one range per conversation run, each
/// naming what it withheld: only then does the server deliver the rest.
/// The reports are posted, not awaited ([`Conn::post`]): the server takes
/// them in order, and a refusal fails a later read.
async fn acknowledge(conn: &mut Conn, captured: Captured) -> Result<()> {
    for report in captured.reports() {
        conn.post(report).await?;
    }
    Ok(())
}

/// Everything already here, up to [`CAPTURE_BATCH`] deliveries, for one
/// durable write; a pushed frame that is not a delivery ends the batch and
/// stays queued. Nothing is waited for: members receive a message only
/// once it is captured, so any wait sits on every delivery's path
/// (measured: a 3 ms linger for company, and a zero timeout that still
/// waited for the timer's next tick, were 4.5 ms of the 13 ms e2e p50 at
/// 1,200 msgs/s). Batches grow by themselves under load: what arrives
/// while one batch is decrypted, or waits for the writer, is the next.
fn gather_batch(conn: &mut Conn, first: Delivery) -> Result<Vec<Delivery>> {
    let mut batch = vec![first];
    while batch.len() < CAPTURE_BATCH {
        match conn.try_next_push()? {
            Some(ServerBody::Deliver(d)) => batch.push(d),
            Some(other) => {
                conn.requeue_front(vec![other]);
                break;
            }
            None => break,
        }
    }
    Ok(batch)
}

/// The last checkpoint the server published, if any (its signed note).
async fn latest_published(conn: &mut Conn) -> Result<Option<String>> {
    match conn.request(Request::Checkpoints { since_size: 0 }).await? {
        ServerBody::Checkpoints { chain, .. } => Ok(chain.last().map(|c| c.checkpoint.clone())),
        other => bail!("unexpected answer to checkpoints: {other:?}"),
    }
}

/// Completes when `signal` changes; never without one (or once its
/// sender is gone).
async fn signal(signal: Option<&mut tokio::sync::watch::Receiver<()>>) {
    match signal {
        Some(s) => {
            if s.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// Completes when a witness's cosignature was kept; never without
/// witnesses.
async fn cosigned(witnessing: Option<&mut Witnessing>) {
    match witnessing {
        Some(w) => {
            if w.cosigned.changed().await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

/// Bring the server's published chain up to the archive: a new checkpoint
/// when the log grew past the last one published (already checked to be a
/// prefix of this log, [`keepwire_records::checkpoint::check_against`]),
/// or the last one again once it carries more cosignatures. A newly
/// signed checkpoint goes to the witnesses, whichever way it came.
async fn publish(
    conn: &mut Conn,
    archive: &Archive,
    notary: &keepwire_records::checkpoint::Notary,
    clock: &Clock,
    witnessing: Option<&Witnessing>,
) -> Result<()> {
    let published = match latest_published(conn).await? {
        Some(note) => Some((
            keepwire_records::checkpoint::check_against(archive, &note, &notary.verifier_key)?,
            note,
        )),
        None => None,
    };
    let Some((req, signed)) = checkpoint_to_publish(archive, notary, clock, published)? else {
        return Ok(());
    };
    if signed {
        if let Some(w) = witnessing {
            let _ = w.signed.send(());
        }
    }
    match conn.request(req).await {
        Ok(_) => {}
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            tracing::error!(error = %format!("{e:#}"), "the server refused this archive's checkpoint");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The request bringing the server up to the archive, if any, and whether
/// it carries a newly signed checkpoint: one of the log as it stands if it
/// grew past the last one the server published (`published`: its size and
/// note), with the consistency proof from that one; or that one again
/// with the cosignatures gathered since.
fn checkpoint_to_publish(
    archive: &Archive,
    notary: &keepwire_records::checkpoint::Notary,
    clock: &Clock,
    published: Option<(u64, String)>,
) -> Result<Option<(Request, bool)>> {
    let local = archive.log_size()?;
    if local == 0 {
        return Ok(None);
    }
    if let Some((size, note)) = &published {
        if *size == local {
            // The server keeps the link it has for a size it holds.
            return Ok(match archive.latest_checkpoint()? {
                Some((s, kept)) if s == *size && kept != *note => Some((
                    Request::PublishCheckpoint {
                        checkpoint: kept,
                        verifier_key: notary.verifier_key.clone(),
                        link: keepwire_protocol::CheckpointProof::default(),
                    },
                    false,
                )),
                _ => None,
            });
        }
    }
    let (size, note) = archive.issue_checkpoint(notary, clock.now_ms())?;
    let link = match published {
        None => keepwire_protocol::CheckpointProof::default(),
        Some((p, _)) => keepwire_protocol::CheckpointProof {
            from_size: Some(p),
            consistency_path: archive
                .prove_consistency(p, size)?
                .into_iter()
                .map(|h| h.0.to_vec())
                .collect(),
        },
    };
    Ok(Some((
        Request::PublishCheckpoint {
            checkpoint: note,
            verifier_key: notary.verifier_key.clone(),
            link,
        },
        true,
    )))
}

use keepwire_records::capture::CAPTURE_BATCH;

/// Archive one entry, then acknowledge it.
async fn capture_and_ack(
    conn: &mut Conn,
    capture: &mut Capture,
    intake: &files::Intake,
    d: &Delivery,
) -> Result<()> {
    capture.settle()?;
    let mut staged = capture.stage_batch(std::slice::from_ref(d))?;
    files::fetch(conn, intake, &mut capture.archive, &mut staged).await?;
    let captured = capture.commit_staged(staged)?;
    acknowledge(conn, captured).await
}

/// Commit the removal of revoked devices from `conv`.
async fn evict(
    conn: &mut Conn,
    capture: &mut Capture,
    intake: &files::Intake,
    conv: &str,
    devices: &[String],
) -> Result<()> {
    match capture.evict(conv, devices)? {
        Some(req) => commit_as_records(conn, capture, intake, conv, req).await,
        None => Ok(()),
    }
}

/// Send a commit the records member made (an eviction, or carrying out a
/// member's request to leave) and archive it once accepted. A refusal
/// (another commit won the epoch) needs nothing more: the server asks for
/// evictions again, and another member's commit carried the proposals.
async fn commit_as_records(
    conn: &mut Conn,
    capture: &mut Capture,
    intake: &files::Intake,
    conv: &str,
    req: Request,
) -> Result<()> {
    let message = match &req {
        Request::Submit { message, .. } => message.clone(),
        _ => bail!("a records commit must be a submit"),
    };
    match conn.request(req).await {
        Ok(ServerBody::Receipt(r)) => {
            tracing::info!(conv, seq = r.seq, "records member committed");
            // Entries of this conversation that precede the commit and
            // arrived while it was on its way are archived first.
            for d in conn.take_deliveries_before(conv, r.seq) {
                capture_and_ack(conn, capture, intake, &d).await?;
            }
            let captured = capture.own_commit_accepted(message, r)?;
            acknowledge(conn, captured).await?;
        }
        Ok(other) => bail!("unexpected answer to a records commit: {other:?}"),
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            tracing::info!(conv, error = %format!("{e:#}"), "records commit refused");
            capture.commit_refused(conv)?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}
