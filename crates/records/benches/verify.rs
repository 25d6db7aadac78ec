//! Archive verification at scale: builds an archive of N records (default
//! 1,000,000; `KEEPWIRE_BENCH_RECORDS` to change) and prints
//! - the tree part of `verify` (recomputing every stored hash from the
//!   leaves) in leaves per second,
//! - the whole of `verify` (records against leaves, sequences, receipts,
//!   checkpoints; content commitments included),
//! - inclusion and consistency proof generation latency.
//!
//! `cargo bench -p keepwire-records --bench verify` (`KEEPWIRE_BENCH_DIR`
//! keeps the archive to reuse, `KEEPWIRE_BENCH_TREE_ONLY` stops after the
//! tree part). Figures are printed,
//! never asserted.

use std::time::Instant;

use ed25519_dalek::Signer;
use keepwire_protocol::{receipt_signed_bytes, Receipt};
use keepwire_records::archive::NewRecord;
use keepwire_records::{checkpoint, verify, Archive};
use keepwire_records::{RecordKind, RecordMeta};
use rand::Rng;

fn main() {
    let n: u64 = std::env::var("KEEPWIRE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // KEEPWIRE_BENCH_DIR keeps the archive (and reuses one already built).
    let tmp = tempfile::tempdir().expect("temporary directory");
    let path = std::env::var("KEEPWIRE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let keys = keepwire_records::keys::FileKeys::open(&path.join("keys")).expect("key directory");
    let mut archive = Archive::open(&path, Some(&keys)).expect("archive");
    let existing = archive.log_size().expect("size");
    let server = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let participants: Vec<String> = (0..4).map(|i| format!("user{i}/device{i}")).collect();
    let text = br#"{"format":1,"text":"a message of a typical length for a field team, about this long.","sent_at_ms":1}"#;

    let start = Instant::now();
    let batch = 10_000u64;
    let mut seq = if existing >= n { n } else { 0 };
    while seq < n {
        let receipts: Vec<(String, u64, Receipt)> = (seq..(seq + batch).min(n))
            .map(|s| {
                let conv = format!("{:064x}", s % 1000);
                let seq_in_conv = s / 1000 + 1;
                let sha = vec![(s % 251) as u8; 32];
                let t = 1_800_000_000_000 + s;
                let sig = server.sign(&receipt_signed_bytes(&conv, seq_in_conv, &sha, t));
                let receipt = Receipt {
                    conv: conv.clone(),
                    seq: seq_in_conv,
                    message_sha256: sha,
                    server_time_ms: t,
                    signature: sig.to_bytes().to_vec(),
                    server_key: server.verifying_key().to_bytes().to_vec(),
                };
                (conv, seq_in_conv, receipt)
            })
            .collect();
        let metas: Vec<RecordMeta> = receipts
            .iter()
            .map(|(conv, s, receipt)| RecordMeta {
                conv: conv.clone(),
                seq: *s,
                kind: RecordKind::Application,
                epoch: 1,
                sender: participants[0].clone(),
                participants: participants.clone(),
                server_time_ms: receipt.server_time_ms,
                captured_at_ms: receipt.server_time_ms + 3,
                expire_after_secs: Some(3600),
                burn_on_read: false,
                note: None,
                attachments: Vec::new(),
            })
            .collect();
        let records: Vec<NewRecord<'_>> = receipts
            .iter()
            .zip(&metas)
            .map(|((_, _, receipt), meta)| NewRecord {
                meta,
                receipt,
                plaintext: Some(text),
            })
            .collect();
        archive.insert_many(&records).expect("insert");
        seq += batch;
    }
    let built = start.elapsed();
    if existing >= n {
        println!(
            "reusing the archive of {existing} records in {}",
            path.display()
        );
    } else {
        println!(
            "built an archive of {n} records in {:.1} s ({:.0} records/s, batches of {batch})",
            built.as_secs_f64(),
            n as f64 / built.as_secs_f64()
        );
    }
    let notary = checkpoint::Notary::new(&keys, &path).expect("checkpoint key");
    archive.issue_checkpoint(&notary, 0).expect("checkpoint");

    let start = Instant::now();
    let tree = archive.recompute_log(|_| {}).expect("recompute");
    let t = start.elapsed();
    assert!(tree.problem.is_none(), "{tree:?}");
    println!(
        "verify, tree part: {} leaves in {:.2} s = {:.0} leaves/s (target >= 1,000,000)",
        tree.size,
        t.as_secs_f64(),
        tree.size as f64 / t.as_secs_f64()
    );
    // KEEPWIRE_BENCH_TREE_ONLY: the tree part alone (for comparing runs
    // of it quickly over one archive kept with KEEPWIRE_BENCH_DIR).
    if std::env::var_os("KEEPWIRE_BENCH_TREE_ONLY").is_some() {
        return;
    }

    let start = Instant::now();
    let options = verify::Options {
        verifier_key: Some(notary.verifier_key.clone()),
        ..verify::Options::default()
    };
    let report = verify::verify(&archive, &options, |_, _| {}).expect("verify");
    let t = start.elapsed();
    println!(
        "verify, everything: {} records in {:.2} s = {:.0} records/s ({} problems)",
        report.records,
        t.as_secs_f64(),
        report.records as f64 / t.as_secs_f64(),
        report.problems.len()
    );

    let size = archive.log_size().expect("size");
    let mut rng = rand::thread_rng();
    for (what, f) in [("inclusion proof", 0u8), ("consistency proof", 1u8)] {
        let mut lat: Vec<f64> = (0..2000)
            .map(|_| {
                let i = rng.gen_range(0..size);
                let start = Instant::now();
                match f {
                    0 => drop(archive.prove_inclusion(size, i).expect("proof")),
                    _ => drop(archive.prove_consistency(i.max(1), size).expect("proof")),
                }
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{what} in a tree of {size}: p50 {:.0} µs, p99 {:.0} µs",
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );
    }
}
