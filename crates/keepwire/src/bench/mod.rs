//! `keepwire bench`: the load generator. It starts the real server
//! (`keepwire serve`, durable, records service included) as a child
//! process on a fresh data directory per scenario, drives it with real MLS
//! devices over real WebSockets, and prints what it measured; `--json`
//! appends the same figures as JSON lines, which `keepwire bench report`
//! turns (with the peers' lines from `bench/peers/`) into the table and
//! plot of docs/benchmarks.md.
//!
//! Figures are printed, never asserted: how fast is for people to judge.

mod files;
pub mod idle;
pub mod report;
pub mod server;
pub mod stats;
pub mod traffic;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use self::server::{provision, ServerProc};
use self::traffic::Phase;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// N conversations, 1 KiB messages, 1/16/64/256 in flight, devices
    /// encrypting beforehand and live.
    Throughput,
    /// Clients encrypting live at a fixed 5,000 msgs/s: latency under load.
    Latency,
    /// One conversation of many devices: latency to the last one.
    Fanout,
    /// Many idle connected devices: memory per connection.
    Connections,
    /// Records capture next to the bare MLS decrypt-and-verify rate.
    Capture,
    /// Files of 1 MiB, 100 MiB and 1 GiB: upload, capture and download
    /// rates, memory while the largest moves, text latency beside it.
    Files,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A smoke run (under a minute): small counts, same code paths.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,latency,fanout,connections,capture,files"
    )]
    pub scenarios: Vec<Scenario>,
    /// Append every figure as a JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Idle devices for the connections scenario (default 50,000; 2,000 quick).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Devices in the fan-out conversation (default 1,000; 100 quick).
    #[arg(long)]
    pub fanout: Option<usize>,
    /// Label stored with every JSON line (e.g. the round of a series).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Where the servers' data directories go (default: a temporary one,
    /// removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run every server under test with its store and archive in
    /// PostgreSQL on this server (`postgres://user@host/db`): two fresh
    /// schemas per server, dropped afterwards. Default: SQLite.
    #[arg(long, env = "KEEPWIRE_BENCH_DATABASE")]
    pub database: Option<String>,
}

struct Out {
    json: Option<std::fs::File>,
    label: String,
}

impl Out {
    fn record(&mut self, mut v: Value) -> Result<()> {
        if let Some(f) = self.json.as_mut() {
            v["system"] = json!("keepwire");
            v["label"] = json!(self.label);
            v["durable"] = json!(true);
            writeln!(f, "{v}")?;
        }
        Ok(())
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let base = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let json = match &args.json {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => None,
    };
    let mut out = Out {
        json,
        label: args.label.clone(),
    };
    server::use_database(args.database.clone());
    println!(
        "keepwire bench ({}) — durable mode (the production setting: every message fsynced before its receipt, and archived by the records service)",
        if args.quick { "quick smoke run" } else { "full run" }
    );
    println!(
        "machine: {} CPU(s), {}; server = `keepwire serve` child process; loopback, 1 KiB messages, cipher suite P256_AES128; stores in {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model(),
        match &args.database {
            Some(url) => format!("PostgreSQL {}", keepwire_schema::pg::redact(url)),
            None => "SQLite".to_string(),
        }
    );
    for (i, s) in args.scenarios.iter().enumerate() {
        let dir = base.join(format!("{i}-{s:?}").to_lowercase());
        std::fs::create_dir_all(&dir)?;
        match s {
            Scenario::Throughput => throughput(&dir, args.quick, &mut out).await?,
            Scenario::Latency => latency(&dir, args.quick, &mut out).await?,
            Scenario::Fanout => {
                fanout(
                    &dir,
                    args.fanout.unwrap_or(if args.quick { 100 } else { 1000 }),
                    args.quick,
                    &mut out,
                )
                .await?
            }
            Scenario::Connections => {
                let n = args
                    .connections
                    .unwrap_or(if args.quick { 2_000 } else { 50_000 });
                connections(&dir, n, &mut out).await?
            }
            Scenario::Capture => capture(&dir, args.quick, &mut out)?,
            Scenario::Files => files::run(&dir, args.quick, &mut out).await?,
        }
    }
    server::use_database(None);
    println!("bench finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A fresh server with `conversations` × `members` devices.
async fn traffic_setup(
    dir: &Path,
    conversations: usize,
    members: usize,
) -> Result<(ServerProc, Vec<traffic::Group>)> {
    let names: Vec<String> = (0..conversations * members)
        .map(|i| format!("u{i}"))
        .collect();
    let codes = provision(dir, &names)?;
    let server = ServerProc::start(dir, &[])?;
    let t = Instant::now();
    let groups = traffic::setup(&server.url, &names, &codes, conversations, members).await?;
    println!(
        "  setup: {} devices enrolled, {conversations} conversation(s) of {members} + the records member, in {:.1} s",
        names.len(),
        t.elapsed().as_secs_f64()
    );
    Ok((server, groups))
}

fn print_phase(what: &str, f: &traffic::Figures) {
    println!(
        "  {what:<34} {:>8.0} msgs/s accepted, {:>7.0} captured | ack p50 {:.2} p99 {:.2} p99.9 {:.2} ms | e2e p50 {:.2} p99 {:.2} ms | capture lag p50 {:.0} p99 {:.0} ms | server {:.3} CPU-s/1k msgs, RSS {:.0} MiB{}",
        f.accepted_per_s,
        f.captured_per_s,
        f.ack_p50_ms,
        f.ack_p99_ms,
        f.ack_p999_ms,
        f.e2e_p50_ms,
        f.e2e_p99_ms,
        f.capture_p50_ms,
        f.capture_p99_ms,
        f.server_cpu_s_per_1k,
        f.server_rss_mib,
        if f.deferred > 0 {
            format!(" | {} sends deferred at the capture backlog limit", f.deferred)
        } else {
            String::new()
        }
    );
    if f.send_lag_p99_ms > 0.0 {
        println!(
            "  {:<34} of which the generator's own lag (sent after due): p50 {:.2} p99 {:.2} ms",
            "", f.send_lag_p50_ms, f.send_lag_p99_ms
        );
    }
}

fn mode_name(preencrypted: bool) -> &'static str {
    if preencrypted {
        "pre-encrypted"
    } else {
        "live"
    }
}

/// A phase's figures as the JSON line `bench report` reads.
fn phase_record(f: &traffic::Figures, scenario: &str, mode: &str) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(f)?;
    v["scenario"] = json!(scenario);
    v["mode"] = json!(mode);
    Ok(v)
}

async fn throughput(dir: &Path, quick: bool, out: &mut Out) -> Result<()> {
    let (conversations, members) = (8, 2);
    println!(
        "throughput: {conversations} conversations × {members} devices per mode, 1 KiB messages"
    );
    // Separate conversations for the two modes: recipients in the
    // pre-encrypted phases do not decrypt, so their MLS state falls behind
    // (further than MLS lets a member skip ahead) and could not follow live.
    let (server, mut pre) = traffic_setup(dir, 2 * conversations, members).await?;
    let mut live = pre.split_off(conversations);
    for window in [1usize, 16, 64, 256] {
        let messages = match (quick, window) {
            (true, 1) => 200,
            (true, _) => 1_600,
            (false, 1) => 3_000,
            (false, 16) => 16_000,
            (false, 64) => 40_000,
            (false, _) => 60_000,
        };
        for preencrypted in [true, false] {
            let phase = Phase {
                messages,
                window,
                preencrypted,
                rate: None,
            };
            let groups = if preencrypted { &mut pre } else { &mut live };
            let (g, f) = traffic::run_phase(&server, std::mem::take(groups), phase).await?;
            *groups = g;
            let mode = mode_name(preencrypted);
            print_phase(&format!("{window:>3} in flight, {mode}"), &f);
            let mut v = phase_record(&f, "throughput", mode)?;
            v["window"] = json!(window);
            out.record(v)?;
        }
    }
    Ok(())
}

async fn latency(dir: &Path, quick: bool, out: &mut Out) -> Result<()> {
    let (conversations, members) = (8, 2);
    let rate = 5_000.0;
    let messages = if quick { 2_500 } else { 50_000 };
    println!(
        "latency: paced at {rate:.0} msgs/s over {conversations} conversations ({messages} messages): clients encrypting and decrypting live (the target), then with the clients' crypto done beforehand (the server's share)"
    );
    // Separate conversations per mode, as in `throughput`.
    let (server, mut live) = traffic_setup(dir, 2 * conversations, members).await?;
    let pre = live.split_off(conversations);
    for (groups, preencrypted) in [(live, false), (pre, true)] {
        let phase = Phase {
            messages,
            window: 1024,
            preencrypted,
            rate: Some(rate),
        };
        let (_, f) = traffic::run_phase(&server, groups, phase).await?;
        let mode = mode_name(preencrypted);
        print_phase(&format!("paced {rate:.0}/s, {mode}"), &f);
        let mut v = phase_record(&f, "latency", mode)?;
        v["rate"] = json!(rate);
        out.record(v)?;
    }
    Ok(())
}

async fn fanout(dir: &Path, devices: usize, quick: bool, out: &mut Out) -> Result<()> {
    let messages = if quick { 10 } else { 50 };
    println!("fan-out: one conversation of {devices} devices, {messages} messages one at a time");
    let (server, groups) = traffic_setup(dir, 1, devices).await?;
    let phase = Phase {
        messages,
        window: 1,
        preencrypted: true,
        rate: None,
    };
    let (_, f) = traffic::run_phase(&server, groups, phase).await?;
    println!(
        "  latency to the last of {} recipients: p50 {:.1} ms, p99 {:.1} ms (to any recipient p50 {:.1} ms); ack p50 {:.1} ms; server {:.3} CPU-s per message, RSS {:.0} MiB",
        devices - 1,
        f.last_p50_ms,
        f.last_p99_ms,
        f.e2e_p50_ms,
        f.ack_p50_ms,
        f.server_cpu_s_per_1k / 1000.0,
        f.server_rss_mib
    );
    let mut v = serde_json::to_value(&f)?;
    v["scenario"] = json!("fanout");
    v["devices"] = json!(devices);
    out.record(v)
}

async fn connections(dir: &Path, devices: usize, out: &mut Out) -> Result<()> {
    println!("connections: {devices} idle devices");
    let f = idle::run(dir, devices).await?;
    println!(
        "  {} connected and authenticated in {:.1} s ({:.0}/s, from {} source addresses; enrolment took {:.1} s); server RSS {:.0} → {:.0} MiB = {:.1} KiB per connection (at that rate {} would take {:.0} MiB)",
        f.connected,
        f.connect_s,
        f.connects_per_s,
        f.source_addresses,
        f.enrol_s,
        f.server_rss_before_mib,
        f.server_rss_after_mib,
        f.server_rss_per_connection_kib,
        f.requested,
        f.server_rss_before_mib + f.server_rss_per_connection_kib * f.requested as f64 / 1024.0
    );
    let mut v = serde_json::to_value(&f)?;
    v["scenario"] = json!("connections");
    out.record(v)
}

fn capture(dir: &Path, quick: bool, out: &mut Out) -> Result<()> {
    let n = if quick { 2_000 } else { 10_000 };
    println!("capture: {n} messages, one core");
    let keys = keepwire_records::keys::FileKeys::open(&dir.join("capture-keys"))?;
    let f = keepwire_records::capture_limit::measure(dir, n, &keys)?;
    println!(
        "  bare MLS decrypt + verify {:.0} msgs/s | records capture (batches pipelined, as the service runs) {:.0} msgs/s = {:.0} % of bare | batches on one thread {:.0} msgs/s = {:.0} % | one durable write per record {:.0} msgs/s",
        f.bare_per_s,
        f.pipelined_per_s,
        100.0 * f.pipelined_per_s / f.bare_per_s,
        f.batched_per_s,
        100.0 * f.batched_per_s / f.bare_per_s,
        f.single_per_s
    );
    let mut v = serde_json::to_value(&f)?;
    v["scenario"] = json!("capture");
    v["ratio"] = json!(f.pipelined_per_s / f.bare_per_s);
    out.record(v)
}
