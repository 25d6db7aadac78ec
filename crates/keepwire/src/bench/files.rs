//! The files scenario: what moving a file costs, step by step, through
//! the real server and records service — sealed and uploaded by one
//! device, captured (fetched, opened, checked and archived) by the
//! records service, taken in (downloaded, opened, stored) by the other —
//! and what it does to everyone else: memory while a large file moves,
//! and the latency of text traffic beside it.
//!
//! The two devices are the CLI's own (`session::Online`, on disk), so the
//! figures are what `keepwire chat send --file` and `chat read` do.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use keepwire_protocol::content::Content;
use serde_json::json;

use super::server::{provision, ServerProc};
use super::traffic::{self, Phase};
use super::Out;
use crate::session::{self, Online};

const MIB: u64 = 1 << 20;

/// How long one step of one file may take before the run gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// One file moved: seconds for each step.
#[derive(Debug, Clone, Copy)]
struct Moved {
    /// Sealing and uploading (the sender, until the server holds it all).
    upload_s: f64,
    /// From the message's receipt until the records service archived it.
    capture_s: f64,
    /// The recipient taking it in (download, open, encrypted store).
    download_s: f64,
}

/// Peak resident memory growth of the server and of this process (the
/// two devices) while something ran, in bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Growth {
    server: u64,
    devices: u64,
}

/// Samples the resident memory of the server and of this process every
/// 10 ms on a thread of its own until stopped.
struct MemoryWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Growth>,
}

fn rss_of(status_path: &str) -> u64 {
    std::fs::read_to_string(status_path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

impl MemoryWatch {
    fn start(server_pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let server_path = format!("/proc/{server_pid}/status");
            let (server0, self0) = (rss_of(&server_path), rss_of("/proc/self/status"));
            let mut g = Growth::default();
            while !stop2.load(Ordering::Acquire) {
                g.server = g.server.max(rss_of(&server_path).saturating_sub(server0));
                g.devices = g
                    .devices
                    .max(rss_of("/proc/self/status").saturating_sub(self0));
                std::thread::sleep(Duration::from_millis(10));
            }
            g
        });
        Self { stop, handle }
    }

    fn finish(self) -> Growth {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

/// A file of `size` bytes of noise (nothing on the path compresses, but
/// a file of one repeated byte would still be a poor stand-in).
fn random_file(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block = vec![0u8; MIB as usize];
    let mut left = size;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        for b in block[..n].iter_mut() {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8;
        }
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// The sender and the recipient of the files, and their conversation.
struct Pair {
    a: Online,
    b: Online,
    conv: String,
    dir: PathBuf,
}

impl Pair {
    /// Enrol a sender (`codes.0`) and a recipient (`codes.1`, user
    /// `recipient`) with devices on disk under `dir`, and make their
    /// conversation.
    async fn enroll(url: &str, codes: (&str, &str), recipient: &str, dir: &Path) -> Result<Self> {
        let devices = dir.join(format!("devices-{recipient}"));
        let mut a = session::enroll(url, codes.0, &devices.join("a"), "bench").await?;
        let mut b = session::enroll(url, codes.1, &devices.join("b"), "bench").await?;
        a.acknowledge_notice().await?;
        b.acknowledge_notice().await?;
        let conv = a.create(&[recipient.to_string()]).await?;
        b.sync().await?;
        Ok(Pair {
            a,
            b,
            conv,
            dir: dir.to_path_buf(),
        })
    }

    /// Send `path` from a to b and time each step; the recipient must
    /// end up holding the file.
    async fn move_file(&mut self, path: &Path) -> Result<Moved> {
        let size = std::fs::metadata(path)?.len();
        let t0 = Instant::now();
        let mut file = crate::session::files::Outgoing::open(path)?;
        let reference = self.a.upload(&self.conv, &mut file).await?;
        let t1 = Instant::now();
        let mut content = Content::text("", None, false, self.a.clock.now_ms());
        content.attachments.push(reference);
        let seq = self.a.send_content(&self.conv, content).await?;
        let t2 = Instant::now();
        self.a.wait_captured(&self.conv, seq, STEP_TIMEOUT).await?;
        let t3 = Instant::now();
        // Released to members as the sender hears it was captured: the
        // recipient syncs, then takes what is pushed until it has it.
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let mut got = self.b.sync().await?;
        let m = loop {
            if let Some(m) = got
                .into_iter()
                .find(|m| m.conv == self.conv && m.seq == seq)
            {
                break m;
            }
            let push = tokio::time::timeout_at(deadline, self.b.conn.next_push())
                .await
                .context("the recipient did not take the file in within 10 minutes")??;
            got = self.b.handle_push(push).await?.into_iter().collect();
        };
        let t4 = Instant::now();
        match m.files.first() {
            Some(f) if f.missing.is_none() && f.size == size => {}
            Some(f) => bail!("the recipient's copy is not whole: {:?}", f.missing),
            None => bail!("#{seq} reached the recipient without its file"),
        }
        Ok(Moved {
            upload_s: (t1 - t0).as_secs_f64(),
            capture_s: (t3 - t2).as_secs_f64(),
            download_s: (t4 - t3).as_secs_f64(),
        })
    }

    /// Move `rounds` files of `size` bytes, one after another.
    async fn rounds(&mut self, size: u64, rounds: usize) -> Result<Vec<Moved>> {
        let path = self.dir.join(format!("file-{size}"));
        let mut out = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            random_file(&path, size)?;
            out.push(self.move_file(&path).await?);
        }
        std::fs::remove_file(&path)?;
        Ok(out)
    }
}

/// Megabytes (10^6 bytes, as throughput is usually quoted) a second.
fn mb_per_s(size: u64, secs: f64) -> f64 {
    size as f64 / 1e6 / secs
}

fn median_of(moved: &[Moved], step: fn(&Moved) -> f64) -> f64 {
    super::stats::median(moved.iter().map(step).collect())
}

fn label(size: u64) -> String {
    if size >= 1 << 30 {
        format!("{} GiB", size >> 30)
    } else {
        format!("{} MiB", size >> 20)
    }
}

fn report(size: u64, moved: &[Moved], out: &mut Out) -> Result<()> {
    let (up, cap, down) = (
        mb_per_s(size, median_of(moved, |m| m.upload_s)),
        mb_per_s(size, median_of(moved, |m| m.capture_s)),
        mb_per_s(size, median_of(moved, |m| m.download_s)),
    );
    println!(
        "  {:>7} × {:<3} seal+upload {:>6.0} MB/s | capture (receipt → archived) {:>6.0} MB/s | take in (download, open, store) {:>6.0} MB/s  (medians)",
        label(size),
        moved.len(),
        up,
        cap,
        down
    );
    out.record(json!({
        "scenario": "files",
        "mode": label(size),
        "bytes": size,
        "rounds": moved.len(),
        "upload_mb_s": up,
        "capture_mb_s": cap,
        "download_mb_s": down,
    }))
}

pub(super) async fn run(dir: &Path, quick: bool, out: &mut Out) -> Result<()> {
    // Quick: the same steps at sizes a debug build gets through in
    // seconds (the smoke test runs every scenario that way).
    let large = if quick { 16 * MIB } else { 1 << 30 };
    let sizes: [(u64, usize); 2] = if quick {
        [(MIB, 2), (8 * MIB, 1)]
    } else {
        [(MIB, 10), (100 * MIB, 3)]
    };
    println!(
        "files: sealed, uploaded, captured and taken in by the CLI's own devices (on disk); then {} alone (memory), then text traffic with and without {} moving",
        label(large),
        label(large)
    );
    // Two pairs of file devices, and 4 conversations of 2 for the text
    // traffic.
    let (conversations, members) = (4, 2);
    let mut names: Vec<String> = ["files-a", "files-b", "files-c", "files-d"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    names.extend((0..conversations * members).map(|i| format!("u{i}")));
    let codes = provision(dir, &names)?;
    {
        let database = super::server::databases(dir)?.map(|d| d.0);
        let store = crate::serve::open_server_store(dir, database.as_deref())?;
        store.set_attachment_policy(keepwire_server::store::api::AttachmentPolicyChange {
            max_file_bytes: Some(large + 64 * MIB),
            quota_bytes: Some(64 << 30),
            unsent_ttl_ms: None,
        })?;
    }
    let server = ServerProc::start(dir, &[])?;
    let mut pair = Pair::enroll(&server.url, (&codes[0], &codes[1]), &names[1], dir).await?;
    for (size, rounds) in sizes {
        let moved = pair.rounds(size, rounds).await?;
        report(size, &moved, out)?;
    }

    // The large file alone: throughput and memory.
    let watch = MemoryWatch::start(server.pid());
    let started = Instant::now();
    let moved = pair.rounds(large, 1).await?;
    let alone_s = started.elapsed().as_secs_f64();
    let growth = watch.finish();
    report(large, &moved, out)?;
    println!(
        "  while {} moved ({alone_s:.1} s): server RSS grew by at most {:.1} MiB, the two devices (this process) by {:.1} MiB",
        label(large),
        growth.server as f64 / MIB as f64,
        growth.devices as f64 / MIB as f64
    );
    out.record(json!({
        "scenario": "files-memory",
        "bytes": large,
        "seconds": alone_s,
        "server_rss_growth_mib": growth.server as f64 / MIB as f64,
        "devices_rss_growth_mib": growth.devices as f64 / MIB as f64,
    }))?;

    // Text beside it: one message in flight (the setting of the latency
    // targets: e2e p50 ≤ 5 ms, p99 ≤ 20 ms), first alone, then while the
    // large file moves. The phase is sized to last about as long as the
    // file took alone (about 1,000 messages a second at 1 in flight).
    let groups = traffic::setup(
        &server.url,
        &names[4..],
        &codes[4..],
        conversations,
        members,
    )
    .await?;
    let phase = Phase {
        messages: if quick {
            500
        } else {
            ((alone_s * 1000.0) as usize).max(1000)
        },
        window: 1,
        preencrypted: true,
        rate: None,
    };
    let (groups, quiet) = traffic::run_phase(&server, groups, phase).await?;
    // Beside the file, twice: its two devices in this process at the
    // priority of everything else (on 2 cores, their sealing and opening
    // take CPU from the server, the records service and the text
    // generator alike), then at the lowest priority, standing in for
    // devices on hardware of their own.
    let path = pair.dir.join("file-beside");
    random_file(&path, large)?;
    let mover = tokio::spawn(async move {
        let t = Instant::now();
        let r = pair.move_file(&path).await;
        let _ = std::fs::remove_file(&path);
        r.map(|_| t.elapsed().as_secs_f64())
    });
    let phase_started = Instant::now();
    let (groups, busy) = traffic::run_phase(&server, groups, phase).await?;
    let phase_s = phase_started.elapsed().as_secs_f64();
    let moved_s = mover.await??;

    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let apart = move_apart(
        server.url.clone(),
        (codes[2].clone(), codes[3].clone()),
        names[3].clone(),
        dir.to_path_buf(),
        large,
        ready_tx,
    );
    ready
        .await
        .context("the low-priority devices did not get ready")?;
    let (_, niced) = traffic::run_phase(&server, groups, phase).await?;
    let niced_s = tokio::task::spawn_blocking(move || apart.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the low-priority devices' thread panicked"))??;

    for (what, f) in [
        ("text alone", &quiet),
        ("text while the file moves", &busy),
        ("… its devices niced", &niced),
    ] {
        println!(
            "  {what:<26} {:>6.0} msgs/s (1 in flight) | ack p50 {:.2} p99 {:.2} ms | e2e p50 {:.2} p99 {:.2} ms",
            f.accepted_per_s, f.ack_p50_ms, f.ack_p99_ms, f.e2e_p50_ms, f.e2e_p99_ms
        );
    }
    println!(
        "  (each text phase about {phase_s:.1} s; the file took {moved_s:.1} s beside it, {niced_s:.1} s niced, {alone_s:.1} s alone)"
    );
    for (mode, f, secs) in [
        ("alone", &quiet, alone_s),
        ("beside-file", &busy, moved_s),
        ("beside-file-niced", &niced, niced_s),
    ] {
        let mut v = serde_json::to_value(f)?;
        v["scenario"] = json!("files-text");
        v["mode"] = json!(mode);
        v["file_bytes"] = json!(large);
        v["file_seconds"] = json!(secs);
        out.record(v)?;
    }
    Ok(())
}

/// Move a file of `size` bytes between two new devices (`codes`, the
/// recipient user `recipient`) from a thread of its own at the lowest
/// CPU priority (nice 19; on Linux a thread's niceness is its own, and
/// the runtime's threads started from it inherit it), with a runtime of
/// its own. Says `ready` once the devices are enrolled and the file made,
/// just before it starts: how long it took.
fn move_apart(
    url: String,
    codes: (String, String),
    recipient: String,
    dir: std::path::PathBuf,
    size: u64,
    ready: tokio::sync::oneshot::Sender<()>,
) -> std::thread::JoinHandle<Result<f64>> {
    std::thread::spawn(move || {
        // SAFETY: setpriority only reads its arguments; who = 0 is this
        // thread. A refusal leaves the priority as it was (reported).
        let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0;
        if !niced {
            eprintln!("  (the low-priority devices could not lower their priority)");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut pair = Pair::enroll(&url, (&codes.0, &codes.1), &recipient, &dir).await?;
            let path = dir.join("file-niced");
            random_file(&path, size)?;
            let _ = ready.send(());
            let t = Instant::now();
            let r = pair.move_file(&path).await;
            let _ = std::fs::remove_file(&path);
            r.map(|_| t.elapsed().as_secs_f64())
        })
    })
}
