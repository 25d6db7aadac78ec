//! Capture against its physical limit: the records service's
//! decrypt-verify-store rate (real devices, a real archive, fsync per
//! record as in production) next to the bare decrypt-and-verify rate of the
//! same messages by an MLS member that stores nothing, in the same run.
//!
//! `cargo bench -p keepwire-records --bench capture`
//! (`KEEPWIRE_BENCH_MESSAGES`, default 5,000). Figures are printed, never
//! asserted; the target is capture ≥ 80 % of the bare rate.

use std::time::Instant;

use keepwire_client::{Device, Incoming, PendingDevice};
use keepwire_protocol::clock::Clock;
use keepwire_protocol::content::Content;
use keepwire_protocol::{ClaimedKeyPackage, Delivery, Receipt, Request};
use keepwire_records::{Archive, Capture};

fn device(dir: &std::path::Path, user: &str, id: &str) -> Device {
    PendingDevice::create(dir, "bench")
        .expect("device store")
        .complete(user, id)
        .expect("device")
}

fn key_package(d: &Device) -> ClaimedKeyPackage {
    match d.key_packages_request(1, false).expect("key package") {
        Request::UploadKeyPackages { key_packages, .. } => ClaimedKeyPackage {
            user: d.user.clone(),
            device_id: d.device_id.clone(),
            key_package: key_packages[0].clone(),
        },
        _ => unreachable!("key_packages_request makes an upload"),
    }
}

fn delivery(conv: &str, seq: u64, sender: &Device, message: Vec<u8>) -> Delivery {
    let receipt = Receipt {
        conv: conv.to_string(),
        seq,
        message_sha256: vec![0; 32],
        server_time_ms: seq,
        signature: vec![0; 64],
        server_key: vec![0; 32],
    };
    Delivery {
        conv: conv.to_string(),
        seq,
        sender_user: sender.user.clone(),
        sender_device: sender.device_id.clone(),
        server_time_ms: seq,
        message,
        receipt,
    }
}

fn main() {
    let n: u64 = std::env::var("KEEPWIRE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut alice = device(&tmp.path().join("alice"), "alice", "a1");
    let records = device(&tmp.path().join("records"), "records", "r1");
    let bare = device(&tmp.path().join("bare"), "bob", "b1");
    let kps = vec![key_package(&records), key_package(&bare)];
    let (conv, welcome) = match alice.create_conversation(&kps).expect("create") {
        (conv, Request::CreateConversation { welcome, .. }) => (conv, welcome),
        _ => unreachable!("create_conversation makes a create request"),
    };
    alice.commit_accepted(&conv, 1).expect("commit");
    let archive = Archive::open(&tmp.path().join("archive"), true).expect("archive");
    let mut capture = Capture::new(records, archive, Clock::from_env());
    capture.join(&conv, 1, &welcome).expect("records joins");
    let mut bare = bare;
    bare.join(&conv, 1, &welcome).expect("member joins");

    let text = "x".repeat(1024);
    let messages: Vec<Delivery> = (0..n)
        .map(|i| {
            let content = Content::text(&text, Some(3600), false, i);
            match alice.encrypt(&conv, &content).expect("encrypt") {
                Request::Submit { message, .. } => delivery(&conv, i + 2, &alice, message),
                _ => unreachable!("encrypt makes a submit"),
            }
        })
        .collect();
    // The commit that added the records member, as the server would send it.
    let commit = delivery(&conv, 1, &alice, Vec::new());
    let _ = capture.capture(&commit);

    let start = Instant::now();
    for d in &messages {
        match bare.process(d).expect("decrypt") {
            Incoming::Application { .. } => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
    let bare_rate = n as f64 / start.elapsed().as_secs_f64();

    // The first half one durable write per record, the second in batches
    // as the records service takes them (everything already received).
    let half = (n / 2) as usize;
    let start = Instant::now();
    for d in &messages[..half] {
        capture.capture(d).expect("capture");
    }
    let single_rate = half as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for batch in messages[half..].chunks(256) {
        capture.capture_batch(batch).expect("capture");
    }
    let batch_rate = (n as usize - half) as f64 / start.elapsed().as_secs_f64();
    let archived = capture.archive.count(Some("application")).expect("count");
    println!("{n} messages of 1 KiB, P256_AES128, one core");
    println!("bare MLS decrypt + verify (member storing nothing): {bare_rate:.0} msgs/s");
    println!(
        "records capture, one durable write per record: {single_rate:.0} msgs/s = {:.0} % of bare",
        100.0 * single_rate / bare_rate
    );
    println!(
        "records capture, batches of 256 (as the service takes them under load): {batch_rate:.0} msgs/s = {:.0} % of bare (target >= 80 %)",
        100.0 * batch_rate / bare_rate
    );
    assert_eq!(archived, n, "every message archived");
}
