//! Crash ordering of capture, driven directly: batches staged, written
//! in part, and the member reopened from disk as after a SIGKILL.

use std::path::Path;

use keepwire_client::PendingDevice;
use keepwire_protocol::clock::Clock;

use super::*;
use crate::capture_limit::{delivery, key_package};

const PASS: &str = "test passphrase";

/// Alice and the records member in one conversation; `deliveries`
/// holds the log from seq 1 (the commit that added the member): 30
/// messages, an empty commit (a new epoch) at seq 17, and 10 more.
fn conversation(dir: &Path) -> (Device, Capture, Vec<Delivery>) {
    let mut alice = PendingDevice::in_memory()
        .unwrap()
        .complete("alice", "a1")
        .unwrap();
    let records = PendingDevice::create(&dir.join("records"), PASS)
        .unwrap()
        .complete("records", "r1")
        .unwrap();
    let kps = vec![key_package(&records).unwrap()];
    let (conv, welcome) = match alice.create_conversation(&kps).unwrap() {
        (conv, Request::CreateConversation { welcome, .. }) => (conv, welcome),
        (_, other) => panic!("unexpected {other:?}"),
    };
    alice.commit_accepted(&conv, 1).unwrap();
    let mut capture = Capture::new(
        records,
        Archive::open(&dir.join("archive"), Some(&keys(dir))).unwrap(),
        Clock::from_env(),
    );
    capture.join(&conv, 1, &welcome).unwrap();
    let mut log = vec![delivery(&conv, 1, &alice, Vec::new())];
    for seq in 2..=41 {
        let message = if seq == 17 {
            let Request::Submit { message, .. } = alice.commit_proposals(&conv).unwrap() else {
                panic!("a commit is a submit")
            };
            alice.commit_accepted(&conv, seq).unwrap();
            message
        } else {
            let c = Content::text(&format!("message {seq}"), None, false, seq);
            let Request::Submit { message, .. } = alice.encrypt(&conv, &c).unwrap() else {
                panic!("a message is a submit")
            };
            message
        };
        log.push(delivery(&conv, seq, &alice, message));
    }
    (alice, capture, log)
}

/// The member as a restarted service finds it on disk.
fn reopen(dir: &Path) -> Capture {
    Capture::new(
        Device::open(&dir.join("records"), PASS).unwrap(),
        Archive::open(&dir.join("archive"), Some(&keys(dir))).unwrap(),
        Clock::from_env(),
    )
}

fn archived_seqs(archive: &Archive) -> Vec<u64> {
    archive
        .list(true, false)
        .unwrap()
        .iter()
        .map(|r| r.meta.seq)
        .collect()
}

#[test]
fn a_batch_is_reported_as_one_range_per_run_naming_what_it_withheld() {
    let c = |v: &[(&str, u64)]| v.iter().map(|(c, s)| (c.to_string(), *s)).collect();
    let captured = Captured {
        acks: c(&[("a", 3), ("b", 7), ("a", 4), ("a", 5), ("b", 8), ("a", 9)]),
        failures: vec![("a".into(), 4, "garbage".into())],
    };
    let w = |seq| WithheldReport {
        seq,
        reason: "garbage".into(),
    };
    let archived = |conv: &str, from, to, withheld| Request::Archived {
        conv: conv.into(),
        from,
        to,
        withheld,
    };
    assert_eq!(
        captured.reports(),
        vec![
            archived("a", 3, 5, vec![w(4)]),
            archived("b", 7, 8, vec![]),
            archived("a", 9, 9, vec![]),
        ]
    );
    assert!(Captured::default().reports().is_empty());
}

#[test]
fn pipelined_batches_are_archived_once_in_order_and_the_state_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, capture, log) = conversation(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    let mut capture = capture
        .with_writer(
            Archive::open(&dir.path().join("archive"), Some(&keys(dir.path()))).unwrap(),
            move |r| tx.send(r.unwrap()).unwrap(),
        )
        .unwrap();
    for batch in log.chunks(6) {
        capture.submit_batch(batch).unwrap();
    }
    capture.settle().unwrap();
    let acked: Vec<u64> = rx.try_iter().flat_map(|c| c.acks).map(|a| a.1).collect();
    assert_eq!(acked, (1..=41).collect::<Vec<_>>(), "acknowledged in order");
    assert_eq!(archived_seqs(&capture.archive), acked, "archived once each");
    drop(capture);

    // On disk, the state is where the archive is, and it still works:
    // the texts decrypt after the epoch change.
    let capture = reopen(dir.path());
    let conv = &log[0].conv;
    assert_eq!(capture.device.cursor(conv).unwrap(), 41);
    let texts: Vec<String> = capture
        .archive
        .list(false, true)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.text)
        .collect();
    assert_eq!(texts.len(), 39);
    assert_eq!(texts[38], "message 41");
}

#[test]
fn deferred_writes_wait_for_their_turn_unless_written_straight_through() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, mut capture, log) = conversation(dir.path());
    let conv = log[0].conv.clone();
    let on_disk = |dir: &Path| {
        Device::open(&dir.join("records"), PASS)
            .unwrap()
            .cursor(&conv)
            .unwrap()
    };
    // Joining wrote straight through: durable on return.
    assert_eq!(on_disk(dir.path()), 1);
    capture.device.skip(&conv, 7).unwrap();
    assert_eq!(
        capture.device.cursor(&conv).unwrap(),
        7,
        "read back at once"
    );
    assert_eq!(on_disk(dir.path()), 1, "not on disk before it is applied");
    let device = &mut capture.device;
    capture
        .writes
        .immediately(|| device.skip(&conv, 9))
        .unwrap()
        .unwrap();
    assert_eq!(on_disk(dir.path()), 9, "queued writes first, then this one");
    capture.device.skip(&conv, 11).unwrap();
    assert_eq!(on_disk(dir.path()), 9, "deferred again afterwards");
}

/// A server restored from an older copy receipts new messages at
/// sequence numbers it had used. The same entry redelivered is archived
/// once; another one at an archived number stops capture (the records
/// service stops: a fatal divergence), and the archived one stays.
#[test]
fn a_reused_sequence_number_stops_capture_instead_of_being_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, mut capture, log) = conversation(dir.path());
    for d in &log[..10] {
        capture.capture(d).unwrap();
    }
    let again = capture.capture(&log[4]).unwrap();
    assert_eq!(
        again.acks,
        [(log[4].conv.clone(), 5)],
        "the same entry: acknowledged"
    );
    assert_eq!(
        archived_seqs(&capture.archive),
        (1..=10).collect::<Vec<_>>()
    );
    // Another message, receipted at #10 again, later.
    let mut reused = log[10].clone();
    reused.seq = 10;
    reused.receipt.seq = 10;
    reused.receipt.server_time_ms = 99_999;
    let e = capture.capture(&reused).unwrap_err();
    assert!(matches!(e, RecordsError::Diverged(_)), "{e}");
    assert!(e.to_string().contains("reused a sequence number"), "{e}");
    let kept = capture
        .archive
        .archived_as(&log[9].conv, 10)
        .unwrap()
        .unwrap();
    assert_eq!(kept.2, log[9].receipt, "the archived record is untouched");
}

#[test]
fn a_withheld_entry_stays_withheld_and_does_not_stall_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, mut capture, mut log) = conversation(dir.path());
    let conv = log[0].conv.clone();
    // seq 6: not an MLS message; archived as withheld, the state not
    // yet written, and nothing reported: a crash.
    log[5].message = b"not an MLS message".to_vec();
    let b = capture.stage_batch(&log[..6]).unwrap();
    assert_eq!(b.failures.len(), 1);
    b.write_records(&mut capture.archive).unwrap();
    drop(b);
    drop(capture);

    let mut capture = reopen(dir.path());
    let captured = capture.capture_batch(&log[..10]).unwrap();
    assert_eq!(
        captured.acks.len(),
        10,
        "redelivered and the next ones, no gap"
    );
    let withheld: Vec<u64> = captured.failures.iter().map(|f| f.1).collect();
    assert_eq!(
        withheld,
        [6],
        "reported again, so the server never releases it"
    );
    assert_eq!(capture.device.cursor(&conv).unwrap(), 10);
    let all = capture.archive.list(true, false).unwrap();
    assert_eq!(all.len(), 10, "each archived once");
    assert_eq!(all[5].meta.kind, RecordKind::Withheld);
    assert!(all[5]
        .meta
        .note
        .as_deref()
        .unwrap()
        .contains("withheld from every member"));
}

#[test]
fn what_the_records_member_cannot_read_is_withheld_not_noted() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, mut capture, mut log) = conversation(dir.path());
    // seq 3: a ciphertext broken in transit (its last byte flipped).
    let last = log[2].message.len() - 1;
    log[2].message[last] ^= 0xff;
    let captured = capture.capture_batch(&log[..5]).unwrap();
    assert_eq!(captured.acks.len(), 5);
    assert_eq!(captured.failures.len(), 1);
    assert_eq!(captured.failures[0].1, 3);
    assert!(
        captured.failures[0].2.contains("does not decrypt"),
        "{:?}",
        captured.failures
    );
    let kinds: Vec<RecordKind> = capture
        .archive
        .list(true, false)
        .unwrap()
        .into_iter()
        .map(|r| r.meta.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            RecordKind::Commit,
            RecordKind::Application,
            RecordKind::Withheld,
            RecordKind::Application,
            RecordKind::Application
        ]
    );
}

#[test]
fn a_state_snapshot_never_lands_before_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_alice, mut capture, log) = conversation(dir.path());
    let conv = log[0].conv.clone();
    // Batch 1 and batch 2 decrypted (the state in memory is past both),
    // only batch 1 made durable, then the process dies.
    let b1 = capture.stage_batch(&log[..10]).unwrap();
    let b2 = capture.stage_batch(&log[10..20]).unwrap();
    assert_eq!(
        capture.device.cursor(&conv).unwrap(),
        20,
        "reads see staged state"
    );
    b1.commit(&mut capture.archive, &capture.writes).unwrap();
    drop(b2);
    drop(capture);

    let mut capture = reopen(dir.path());
    assert_eq!(
        capture.device.cursor(&conv).unwrap(),
        10,
        "only batch 1's state is durable"
    );
    // The server redelivers from the last acknowledgement.
    let acks = capture.capture_batch(&log[10..20]).unwrap().acks;
    assert_eq!(acks.len(), 10);

    // Batch 3 (across the epoch change): records durable, the state
    // not yet, and the process dies again.
    let b3 = capture.stage_batch(&log[20..30]).unwrap();
    b3.write_records(&mut capture.archive).unwrap();
    drop(b3);
    drop(capture);

    let mut capture = reopen(dir.path());
    assert_eq!(capture.device.cursor(&conv).unwrap(), 20);
    // Redelivered: recognised as archived, the state catches up, and
    // what follows decrypts.
    let acks = capture.capture_batch(&log[20..]).unwrap().acks;
    assert_eq!(acks.len(), 21);
    assert_eq!(capture.device.cursor(&conv).unwrap(), 41);
    assert_eq!(
        archived_seqs(&capture.archive),
        (1..=41).collect::<Vec<_>>(),
        "everything archived exactly once"
    );
    let undecrypted = capture
        .archive
        .list(false, true)
        .unwrap()
        .into_iter()
        .filter(|r| r.meta.kind == RecordKind::Application && r.text.is_none())
        .count();
    assert_eq!(undecrypted, 0, "every message's content is in the archive");
}

/// The test's key provider: a key directory beside the archive.
fn keys(dir: &std::path::Path) -> crate::keys::FileKeys {
    crate::keys::FileKeys::open(&dir.join("keys")).unwrap()
}
