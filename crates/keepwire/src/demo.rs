//! `keepwire demo`: the whole first path in one command, with every claim
//! checked rather than narrated.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use keepwire_protocol::clock::Clock;
use keepwire_server::Limits;
use serde::Serialize;

use crate::serve;
use crate::session::{self, Online};

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub sent: u64,
    pub delivered: u64,
    pub captured: u64,
    pub captured_verified: u64,
    pub remaining_on_devices: u64,
    pub remaining_on_relay: u64,
    /// Leaves in the archive's transparency log, under a fresh signed checkpoint.
    pub log_leaves: u64,
    /// What `keepwire records verify` finds wrong with the archive (none).
    pub archive_problems: u64,
    /// Messages kept permanently (GRS 6.1 item 010): every one bob, a
    /// Capstone official in the role directory, took part in.
    pub scheduled_permanent: u64,
    pub data_dir: String,
}

const PASS: &str = "demo-passphrase";

pub async fn run(
    data_dir: &Path,
    database: Option<&str>,
    records_database: Option<&str>,
    timer_secs: u64,
) -> Result<DemoReport> {
    let clock = Clock::from_env();
    // Returns once the records member is enrolled with its key packages.
    let started = serve::serve_embedded(
        serve::Storage {
            data_dir,
            database,
            records_database,
            keys: crate::cli::KeySource::default_for(data_dir)?,
        },
        "127.0.0.1:0".parse()?,
        None,
        None,
        Limits::default(),
        serve::witnessing::Publishing {
            every: Duration::from_secs(60),
            witnesses: Vec::new(),
            office: None,
            scan: None,
        },
        std::future::pending(),
    )
    .await?;
    let (url, state) = (started.url.clone(), started.state.clone());
    let store = serve::open_server_store(data_dir, database)?;
    let mut devices: Vec<Online> = Vec::new();
    for (name, display, category) in [
        ("alice", "Alice Ng (field agent)", "staff"),
        ("bob", "Bob Ortiz (deputy director)", "capstone"),
        ("guest", "Gabriela Ruiz (partner agency)", "guest"),
    ] {
        store.add_user(name, display, category, clock.now_ms())?;
        let code = store.new_enrolment_code(name, clock.now_ms())?;
        let mut online =
            session::enroll(&url, &code, &data_dir.join("devices").join(name), PASS).await?;
        online.acknowledge_notice().await?;
        devices.push(online);
    }
    let users = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut sent = 0u64;
    // A group conversation with the guest, and a 1:1.
    let group = devices[0].create(&users(&["bob", "guest"])).await?;
    for (i, text) in [
        "Convoy leaves at 0600.",
        "Checkpoint Bravo is clear.",
        "Copy, meeting our counterparts at the crossing.",
    ]
    .iter()
    .enumerate()
    {
        let from = i % 3;
        let seq = devices[from]
            .send(&group, text, Some(timer_secs), false)
            .await?;
        // Delivered only once captured: the sender hears when it is.
        devices[from]
            .wait_captured(&group, seq, Duration::from_secs(30))
            .await?;
        sent += 1;
    }
    let direct = devices[1].create(&users(&["alice"])).await?;
    let seq = devices[1]
        .send(
            &direct,
            "Call me after the briefing.",
            Some(timer_secs),
            false,
        )
        .await?;
    devices[1]
        .wait_captured(&direct, seq, Duration::from_secs(30))
        .await?;
    let seq = devices[0]
        .send(&direct, "Will do.", Some(timer_secs), true)
        .await?;
    devices[0]
        .wait_captured(&direct, seq, Duration::from_secs(30))
        .await?;
    sent += 2;

    let mut delivered = 0u64;
    for d in devices.iter_mut() {
        d.sync().await?;
        delivered += d.received;
    }
    // Everything is captured before anything may leave the relay.
    let at = serve::ArchiveAt::new(
        serve::records_dir(data_dir),
        records_database.map(String::from),
        crate::cli::KeySource::default_for(data_dir)?,
    );
    let mut archive = at.open(true)?;
    // The records officer's role directory: bob holds a Capstone
    // position, so every record he takes part in is permanent.
    let today = keepwire_records::lifecycle::dates::Day::of_ms(clock.now_ms());
    for (user, position, title, category) in [
        ("bob", "DEP-DIR", "Deputy director", "capstone:3"),
        ("alice", "AGENT-14", "Field agent", "staff"),
        ("guest", "LIAISON", "Partner agency liaison", "guest"),
    ] {
        let role = keepwire_records::lifecycle::directory::Role {
            user: user.into(),
            position: position.into(),
            title: title.into(),
            office: "Field Office".into(),
            category: category.parse()?,
            from: today,
            until: None,
        };
        archive.record_event(
            "demo",
            &keepwire_records::lifecycle::Event::RoleStart { role },
            clock.now_ms(),
        )?;
    }
    let start = Instant::now();
    while archive.count(Some(keepwire_records::RecordKind::Application))? < sent {
        if start.elapsed() > Duration::from_secs(30) {
            bail!(
                "records service captured {} of {sent} messages within 30 s",
                archive.count(Some(keepwire_records::RecordKind::Application))?
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the timers fire, then every device purges.
    tokio::time::sleep(Duration::from_millis(timer_secs * 1000 + 200)).await;
    let mut remaining_on_devices = 0;
    for d in devices.iter_mut() {
        d.sync().await?;
        d.device.store().mark_read(None)?;
        remaining_on_devices += d.device.store().message_count()?;
    }
    let start = Instant::now();
    let remaining_on_relay = loop {
        let n = tokio::task::block_in_place(|| -> Result<u64> {
            let mut core = state.core();
            core.collect_garbage(clock.now_ms())?;
            Ok(core.store().log_len()?)
        })?;
        if n == 0 || start.elapsed() > Duration::from_secs(10) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let records = archive.list(false, true)?;
    let captured = records.len() as u64;
    let device_ids: Vec<String> = devices.iter().map(|d| d.device.identity()).collect();
    let captured_verified = records
        .iter()
        .filter(|r| r.text.is_some() && device_ids.contains(&r.meta.sender))
        .count() as u64;
    let lifecycle = archive.lifecycle()?;
    let scheduled_permanent = records
        .iter()
        .filter(|r| lifecycle.assign(&r.meta).permanent)
        .count() as u64;
    // The archive against its own transparency log, under a checkpoint
    // signed now: what an auditor would run.
    let notary = at.notary()?;
    let (log_leaves, checkpoint) = archive.issue_checkpoint(&notary, clock.now_ms())?;
    let options = keepwire_records::verify::Options {
        verifier_key: Some(notary.verifier_key.clone()),
        external_checkpoints: vec![keepwire_records::verify::Outside {
            from: "the checkpoint signed at the end of the demo".into(),
            note: checkpoint,
            kept_by_archive: false,
        }],
        server_keys: None,
        witnesses: None,
        witness_answers: Vec::new(),
    };
    let verified = keepwire_records::verify::verify(&archive, &options, |_, _| {})?;
    Ok(DemoReport {
        sent,
        delivered,
        captured,
        captured_verified,
        remaining_on_devices,
        remaining_on_relay,
        log_leaves,
        archive_problems: verified.problems.len() as u64,
        scheduled_permanent,
        data_dir: data_dir.display().to_string(),
    })
}

pub fn print(r: &DemoReport) {
    let check = |ok: bool| if ok { "ok " } else { "FAIL" };
    println!(
        "keepwire demo — alice (staff), bob (Capstone official) and a guest from a partner agency"
    );
    println!("  data directory: {}", r.data_dir);
    println!("  [{}] {} messages sent end-to-end encrypted (MLS, P256_AES128), {} delivered to recipients", check(r.delivered > 0), r.sent, r.delivered);
    println!(
        "  [{}] {} remain on devices after their disappearing timers fired",
        check(r.remaining_on_devices == 0),
        r.remaining_on_devices
    );
    println!(
        "  [{}] {} remain on the relay after every device and the records service acknowledged",
        check(r.remaining_on_relay == 0),
        r.remaining_on_relay
    );
    println!("  [{}] {} of {} captured in the archive, {} decrypted with the sender's signature verified", check(r.captured == r.sent && r.captured_verified == r.sent), r.captured, r.sent, r.captured_verified);
    println!(
        "  [{}] {} of {} records kept permanently under GRS 6.1 item 010 (bob, a Capstone official, took part in each)",
        check(r.scheduled_permanent == r.sent),
        r.scheduled_permanent,
        r.sent
    );
    println!(
        "  [{}] the archive verifies against its signed transparency log ({} leaves, {} problems)",
        check(r.archive_problems == 0 && r.log_leaves > 0),
        r.log_leaves,
        r.archive_problems
    );
}

impl DemoReport {
    pub fn ok(&self) -> bool {
        self.captured == self.sent
            && self.captured_verified == self.sent
            && self.remaining_on_devices == 0
            && self.remaining_on_relay == 0
            && self.archive_problems == 0
            && self.log_leaves > 0
            && self.scheduled_permanent == self.sent
    }
}
