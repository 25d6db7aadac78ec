//! The records lifecycle at scale: builds an archive of N records
//! (default 1,000,000; `KEEPWIRE_BENCH_RECORDS` to change) sent over 2026
//! in 1,000 conversations of four people, one of whom holds a Capstone
//! position for the first hundred conversations (their records are
//! permanent), and prints
//! - the time to compute every record's schedule and standing (what
//!   `records disposition eligible` and `propose` do),
//! - the time to propose, and to execute, a disposition batch of the most
//!   records one may name (20,000; `KEEPWIRE_BENCH_BATCH` for fewer),
//!   each re-checked against its leaf, crypto-shredded and tombstoned in
//!   one transaction with its certificate.
//!
//! `cargo bench -p keepwire-records --bench lifecycle`. Figures are
//! printed, never asserted.

use std::time::Instant;

use ed25519_dalek::Signer;
use keepwire_protocol::{receipt_signed_bytes, Receipt};
use keepwire_records::archive::NewRecord;
use keepwire_records::lifecycle::dates::Day;
use keepwire_records::lifecycle::disposition::Standing;
use keepwire_records::lifecycle::Event;
use keepwire_records::{Archive, RecordKind, RecordMeta};

fn main() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = var("KEEPWIRE_BENCH_RECORDS", 1_000_000);
    let batch_size = var(
        "KEEPWIRE_BENCH_BATCH",
        keepwire_records::lifecycle::archive::MAX_BATCH as u64,
    ) as usize;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let keys = keepwire_records::keys::FileKeys::open(&tmp.path().join("keys")).expect("keys");
    let mut archive = Archive::open(tmp.path(), Some(&keys)).expect("archive");
    let server = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let text = br#"{"format":1,"text":"a message of a typical length for a field team, about this long.","sent_at_ms":1}"#;
    let year_start = "2026-01-01".parse::<Day>().expect("day").start_ms();
    let year_ms = 365 * 86_400_000u64;

    let start = Instant::now();
    let step = 10_000u64;
    let mut s = 0;
    while s < n {
        let rows: Vec<(RecordMeta, Receipt)> = (s..(s + step).min(n))
            .map(|i| {
                let c = i % 1000;
                let conv = format!("{c:064x}");
                let seq = i / 1000 + 1;
                let sha = vec![(i % 251) as u8; 32];
                let t = year_start + i * year_ms / n;
                let sig = server.sign(&receipt_signed_bytes(&conv, seq, &sha, t));
                let participants: Vec<String> = (0..4)
                    .map(|u| format!("u{}/d", (c * 4 + u) % 4000))
                    .collect();
                let meta = RecordMeta {
                    conv: conv.clone(),
                    seq,
                    kind: RecordKind::Application,
                    epoch: 1,
                    sender: participants[0].clone(),
                    participants,
                    server_time_ms: t,
                    captured_at_ms: t + 3,
                    expire_after_secs: Some(3600),
                    burn_on_read: false,
                    note: None,
                    attachments: Vec::new(),
                };
                let receipt = Receipt {
                    conv,
                    seq,
                    message_sha256: sha,
                    server_time_ms: t,
                    signature: sig.to_bytes().to_vec(),
                    server_key: server.verifying_key().to_bytes().to_vec(),
                };
                (meta, receipt)
            })
            .collect();
        let records: Vec<NewRecord<'_>> = rows
            .iter()
            .map(|(meta, receipt)| NewRecord {
                meta,
                receipt,
                plaintext: Some(text),
            })
            .collect();
        archive.insert_many(&records).expect("insert");
        s += step;
    }
    println!(
        "built an archive of {n} records in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // The first participant of conversations 0..99 is a Capstone official.
    for c in 0..100u64 {
        let role = serde_json::from_value(serde_json::json!({
            "user": format!("u{}", c * 4), "position": format!("P{c}"), "title": "Official",
            "office": "HQ", "category": "capstone:2", "from": "2025-01-01"
        }))
        .expect("role");
        archive
            .record_event("olu", &Event::RoleStart { role }, year_start)
            .expect("role");
    }

    let today = "2034-06-01".parse::<Day>().expect("day");
    let start = Instant::now();
    let listed = archive.list(true, false).expect("list").len();
    println!(
        "reading {listed} records' metadata (what standings start with): {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let (_, rows) = archive.standings(today).expect("standings");
    let t = start.elapsed().as_secs_f64();
    let eligible: Vec<i64> = rows
        .iter()
        .filter(|r| r.standing == Standing::Eligible)
        .map(|r| r.id)
        .collect();
    let permanent = rows
        .iter()
        .filter(|r| matches!(r.standing, Standing::Permanent { .. }))
        .count();
    println!(
        "schedules and standings of {} records on {today}: {t:.2} s ({:.0} records/s); {} eligible, {permanent} permanent",
        rows.len(),
        rows.len() as f64 / t,
        eligible.len()
    );

    let chosen: Vec<i64> = eligible.into_iter().take(batch_size).collect();
    let now = today.start_ms() + 12 * 3_600_000;
    let start = Instant::now();
    let (batch, ids) = archive
        .propose_batch("olu", Some(chosen), None, "bench", now)
        .expect("propose");
    println!(
        "propose a batch of {}: {:.2} s (each record's standing checked)",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    archive
        .record_event("lee", &Event::BatchApprove { batch }, now)
        .expect("approve");
    let start = Instant::now();
    let (cert, _, _) = archive.execute_batch("olu", batch, now).expect("execute");
    let t = start.elapsed().as_secs_f64();
    println!(
        "execute it: {} records destroyed in {t:.2} s ({:.0} records/s: re-checked, crypto-shredded, tombstoned, the certificate logged, one transaction)",
        cert.destroyed.len(),
        cert.destroyed.len() as f64 / t
    );
}
