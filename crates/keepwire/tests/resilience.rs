//! End-to-end resilience: the server killed with SIGKILL mid-traffic, the
//! records service killed the same way mid-capture, and the records
//! service stopped under load (fail closed, then recovery).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_for, Agency, Device};

/// Every text in the archive, with how many times it appears.
fn archive_texts(agency: &Agency) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in agency.records(false) {
        *out.entry(agency.record_text(&r["id"])).or_insert(0) += 1;
    }
    out
}

fn wait_backlog_zero(agency: &Agency) {
    wait_for("the records service to catch up", 120, || {
        (agency.status()["capture_backlog"] == 0).then_some(())
    });
}

/// Alice, Bob and Carol, notice accepted, in one conversation.
fn three_in_a_conversation(agency: &Agency) -> ([&'static str; 3], Vec<Arc<Device>>, String) {
    let names = ["alice", "bob", "carol"];
    let devices: Vec<Arc<Device>> = names
        .iter()
        .map(|n| Arc::new(agency.user(n, "staff")))
        .collect();
    for d in &devices {
        d.accept_notice();
    }
    let conv = devices[0].create(&["bob", "carol"]);
    (names, devices, conv)
}

#[test]
fn killing_the_server_mid_traffic_loses_and_duplicates_nothing() {
    let mut agency = Agency::start();
    let (names, devices, conv) = three_in_a_conversation(&agency);

    // Each device sends its own numbered messages; a send that fails (the
    // server is down, or died before answering) is not retried: the next
    // one gets a new text, so every text is sent at most once.
    const PER_DEVICE: usize = 14;
    let receipted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let senders: Vec<_> = devices
        .iter()
        .zip(names)
        .map(|(d, name)| {
            let d = Arc::clone(d);
            let conv = conv.clone();
            let receipted = Arc::clone(&receipted);
            std::thread::spawn(move || {
                for i in 0..PER_DEVICE {
                    let text = format!("{name}-{i}");
                    let out = d.run(&["chat", "send", &conv, &text, "--json"]);
                    if out.status.success() {
                        receipted.lock().unwrap().insert(text);
                    } else {
                        std::thread::sleep(Duration::from_millis(150));
                    }
                }
            })
        })
        .collect();

    // Kill -9 at different moments while they send, restarting each time.
    let pauses = [250u64, 700, 400, 900, 150, 600];
    for p in pauses {
        std::thread::sleep(Duration::from_millis(p));
        agency.stop(); // SIGKILL: no shutdown path runs
        std::thread::sleep(Duration::from_millis(100));
        agency.restart(&[]);
    }
    for s in senders {
        s.join().unwrap();
    }
    wait_backlog_zero(&agency);

    let receipted = receipted.lock().unwrap().clone();
    assert!(
        receipted.len() >= PER_DEVICE,
        "enough traffic got through to mean something: {}",
        receipted.len()
    );
    let archived = archive_texts(&agency);
    eprintln!(
        "{} sends receipted, {} archived (the rest failed while the server was down)",
        receipted.len(),
        archived.len()
    );
    for (text, n) in &archived {
        assert_eq!(*n, 1, "{text} archived {n} times");
    }
    for t in &receipted {
        assert!(
            archived.contains_key(t),
            "receipted {t} is not in the archive"
        );
    }
    for (d, name) in devices.iter().zip(names) {
        let got = d.texts(&conv);
        let set: BTreeSet<&String> = got.iter().collect();
        assert_eq!(
            set.len(),
            got.len(),
            "{name} holds a message twice: {got:?}"
        );
        for t in &got {
            assert!(
                archived.contains_key(t),
                "{name} holds {t}, which the archive does not"
            );
        }
        for t in receipted.iter().filter(|t| !t.starts_with(name)) {
            assert!(got.contains(t), "{name} never got receipted {t}");
        }
    }
}

#[test]
fn a_records_outage_fails_closed_past_the_backlog_and_recovers_by_itself() {
    let mut agency = Agency::start_split(&["--max-capture-backlog", "5"]);
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    bob.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "before the outage");
    wait_backlog_zero(&agency);

    // Frozen mid-whatever (SIGSTOP): messages are receipted, but nobody
    // receives one the archive does not hold yet.
    agency.pause_records(true);
    let paused = "while capture is frozen".to_string();
    alice.ok(&["chat", "send", &conv, &paused]);
    assert_eq!(
        bob.texts(&conv),
        ["before the outage"],
        "nothing uncaptured"
    );
    let own = alice.read(&conv);
    assert_eq!(own.last().unwrap()["text"], paused.as_str());
    assert_eq!(own.last().unwrap()["captured"], false, "shown as awaiting");
    agency.pause_records(false);
    wait_backlog_zero(&agency);

    agency.stop_records();
    // Both keep sending; exactly the backlog limit is accepted, then every
    // send is refused with a clear reason, and nothing is lost — nor
    // delivered before the records service is back.
    let mut accepted = Vec::new();
    let mut refusals = Vec::new();
    for i in 0..10 {
        let (d, name) = if i % 2 == 0 {
            (&alice, "alice")
        } else {
            (&bob, "bob")
        };
        let text = format!("{name} during outage {i}");
        let out = d.run(&["chat", "send", &conv, &text]);
        if out.status.success() {
            accepted.push(text);
        } else {
            refusals.push(common::stderr(&out));
        }
    }
    assert_eq!(accepted.len(), 5, "refused: {refusals:?}");
    for r in &refusals {
        assert!(r.contains("records capture unavailable"), "{r}");
    }
    assert_eq!(agency.status()["capture_backlog"], 5);
    let mut before = vec!["before the outage".to_string(), paused];
    // Each holds only what it sent itself: nothing crossed over.
    for (d, name) in [(&alice, "alice"), (&bob, "bob")] {
        let mut own = before.clone();
        own.extend(accepted.iter().filter(|t| t.starts_with(name)).cloned());
        assert_eq!(
            d.texts(&conv),
            own,
            "{name} receives nothing during the outage"
        );
    }

    agency.start_records(None);
    wait_backlog_zero(&agency);
    alice.send(&conv, "after the outage");

    before.extend(accepted.iter().cloned());
    before.push("after the outage".to_string());
    let expected = before;
    let archived = agency.wait_captured(expected.len());
    assert_eq!(
        archived, expected,
        "everything accepted is archived, in order"
    );
    let at_bob = bob.texts(&conv);
    assert_eq!(at_bob, expected, "and delivered, in order, once each");
    let at_alice = alice.read(&conv);
    assert!(
        at_alice.iter().all(|m| m["captured"] == true),
        "every message shown as captured: {at_alice:?}"
    );
}

#[test]
fn killing_the_records_service_mid_capture_loses_and_duplicates_nothing() {
    let mut agency = Agency::start_split(&[]);
    let (names, devices, conv) = three_in_a_conversation(&agency);

    // The server stays up, so every send is receipted; the records service
    // dies (SIGKILL) at different moments of its capture pipeline: while
    // decrypting, while its writer thread archives, between the archive
    // write and the member's state write, before acknowledging.
    const PER_DEVICE: usize = 12;
    let senders: Vec<_> = devices
        .iter()
        .zip(names)
        .map(|(d, name)| {
            let d = Arc::clone(d);
            let conv = conv.clone();
            std::thread::spawn(move || {
                (0..PER_DEVICE)
                    .map(|i| {
                        let text = format!("{name}-{i}");
                        d.send(&conv, &text);
                        text
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for p in [200u64, 550, 300, 800, 120] {
        std::thread::sleep(Duration::from_millis(p));
        agency.stop_records();
        agency.start_records(None);
    }
    let sent: BTreeSet<String> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    wait_backlog_zero(&agency);

    let archived = archive_texts(&agency);
    for (text, n) in &archived {
        assert_eq!(*n, 1, "{text} archived {n} times");
    }
    let archived: BTreeSet<String> = archived.into_keys().collect();
    assert_eq!(
        archived, sent,
        "every receipted message archived, nothing else"
    );
    // Each conversation's entries are archived in log order, without gaps.
    let seqs: Vec<u64> = agency
        .records(true)
        .iter()
        .filter(|r| r["conv"] == conv.as_str())
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "archived in order, each entry once"
    );
    let out = agency.records_output(&["verify"]);
    assert!(
        out.status.success(),
        "the archive verifies against its transparency log: {}",
        common::stderr(&out)
    );
    // Capture kept working after the last restart.
    devices[0].send(&conv, "after the kills");
    let texts = agency.wait_captured(sent.len() + 1);
    assert_eq!(texts.last().map(String::as_str), Some("after the kills"));
}

/// A member who commits (adds someone) while a message before the commit
/// still waits for the records service must not skip it: the server
/// refuses the commit (`capture_pending`), the client waits until it has
/// that message, and commits again.
#[test]
fn a_commit_waits_for_what_is_still_being_captured_and_loses_nothing() {
    let agency = Agency::start_split(&[]);
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    let carol = agency.user("carol", "staff");
    alice.accept_notice();
    bob.accept_notice();
    let conv = alice.create(&["bob"]);
    agency.pause_records(true);
    bob.ok(&["chat", "send", &conv, "sent before carol was added"]);
    std::thread::scope(|s| {
        let adding = s.spawn(|| alice.ok(&["chat", "add", &conv, "carol"]));
        // Not waiting for a condition: giving alice's add the time to reach
        // the server while capture is frozen (it takes well under a second).
        // Were it later, the test would still pass, proving less.
        std::thread::sleep(Duration::from_secs(1));
        agency.pause_records(false);
        adding.join().unwrap();
    });
    assert_eq!(
        alice.texts(&conv),
        ["sent before carol was added"],
        "alice processed bob's message before her commit"
    );
    assert!(alice.members(&conv).iter().any(|m| m.starts_with("carol/")));
    bob.send(&conv, "after");
    assert_eq!(carol.texts(&conv), ["after"]);
    assert_eq!(alice.texts(&conv), ["sent before carol was added", "after"]);
}

#[test]
fn sigterm_under_load_answers_what_it_read_and_archives_every_receipt() {
    use common::rogue::{text, Rogue};
    use futures_util::{SinkExt, StreamExt};
    use keepwire_protocol::{ClientFrame, Request, ServerBody, ServerFrame};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;

    let mut agency = Agency::start();
    let bob = agency.user("bob", "staff");
    bob.accept_notice();
    let code = agency.admin(&[
        "user",
        "add",
        "mallory",
        "--display",
        "M",
        "--category",
        "staff",
    ]);
    let url = agency.url();
    let pid = agency.server.as_ref().unwrap().child.id();
    const N: usize = 3000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (conv, receipts, errors, close) = rt.block_on(async {
        // A device that pipelines its messages (encrypted beforehand), as
        // a busy server sees them.
        let mut a = Rogue::enroll(&url, "mallory", code.trim()).await;
        a.wire.call(Request::AcknowledgeNotice).await.unwrap();
        let client = a.client(Default::default());
        let (conv, mut g) = a.create(&client, &["bob"]).await;
        let frames: Vec<String> = (0..N)
            .map(|i| {
                let m = g
                    .encrypt_application_message(&text(&format!("m{i}")), vec![])
                    .unwrap();
                ClientFrame::new(
                    1000 + i as u64,
                    Request::Submit {
                        conv: conv.clone(),
                        message: m.to_bytes().unwrap(),
                        welcome: None,
                        next_group_info: None,
                    },
                )
                .to_json()
            })
            .collect();
        let (mut sink, mut stream) = a.wire.ws.split();
        tokio::spawn(async move {
            for f in frames {
                if sink.send(Message::Text(f.into())).await.is_err() {
                    break;
                }
            }
            sink
        });
        let (mut receipts, mut errors, mut close) = (Vec::new(), Vec::new(), None);
        let mut signalled = false;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("the server answers or closes within 60 s");
            match next {
                Some(Ok(Message::Text(t))) => {
                    match ServerFrame::from_json(&t).unwrap().body {
                        ServerBody::Receipt(r) => receipts.push(r.seq),
                        ServerBody::Error { code, message } => errors.push((code, message)),
                        _ => {}
                    }
                    if !signalled && receipts.len() >= 300 {
                        let killed = std::process::Command::new("kill")
                            .args(["-TERM", &pid.to_string()])
                            .status()
                            .unwrap();
                        assert!(killed.success());
                        signalled = true;
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    close = c;
                    break;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            }
        }
        assert!(signalled, "the stream was still going when SIGTERM came");
        (conv, receipts, errors, close)
    });
    // The connection was closed with a close frame saying why, after every
    // answer the server owed: no refusal, every receipt in order.
    let close = close.expect("the server closes with a close frame, not a reset");
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert!(errors.is_empty(), "{errors:?}");
    let expected: Vec<u64> = (2..2 + receipts.len() as u64).collect();
    assert_eq!(receipts, expected, "receipts for a prefix of what was sent");
    // The process stopped by itself, successfully.
    let status = wait_for("the server to exit", 60, || {
        agency.server.as_mut().unwrap().child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    // Every receipted message is archived — without restarting anything:
    // the server waited for the records service to capture it.
    let archived: BTreeSet<u64> = agency
        .records(false)
        .iter()
        .filter(|r| r["conv"] == conv.as_str())
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let missing: Vec<&u64> = receipts.iter().filter(|s| !archived.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "receipted but not archived: {missing:?}"
    );
    eprintln!(
        "{} of {N} receipted before the stop, all archived",
        receipts.len()
    );
}

#[test]
fn apart_each_half_stops_in_order_on_sigterm() {
    let mut agency = Agency::start_split(&[]);
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "before the records service stops");
    // The records service, asked to stop, finishes and reports what it
    // has and exits successfully.
    let mut records = agency.records.take().unwrap();
    // SAFETY: sends a signal to our own child process; no memory involved.
    assert_eq!(
        unsafe { libc::kill(records.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = wait_for("the records service to exit", 30, || {
        records.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(agency.tmp.path().join("records.log")).unwrap();
    assert!(log.contains("records service stopped"), "{log}");
    // Restarted, it carries on; then the server, asked to stop, exits
    // successfully too, everything sent archived.
    agency.start_records(None);
    alice.send(&conv, "after it restarted");
    assert_eq!(
        bob.texts(&conv),
        ["before the records service stops", "after it restarted"]
    );
    let server = agency.server.as_mut().unwrap();
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = wait_for("the server to exit", 30, || {
        server.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    assert_eq!(archive_texts(&agency).len(), 2);
}

// The crash tests again with the server's store in PostgreSQL.

#[test]
fn on_postgres_killing_the_server_mid_traffic_loses_and_duplicates_nothing() {
    common::on_postgres(killing_the_server_mid_traffic_loses_and_duplicates_nothing);
}

#[test]
fn on_postgres_killing_the_records_service_mid_capture_loses_and_duplicates_nothing() {
    common::on_postgres(killing_the_records_service_mid_capture_loses_and_duplicates_nothing);
}

#[test]
fn on_postgres_sigterm_under_load_answers_what_it_read_and_archives_every_receipt() {
    common::on_postgres(sigterm_under_load_answers_what_it_read_and_archives_every_receipt);
}

#[test]
fn on_postgres_a_log_that_cannot_be_written_stops_the_server_and_accepts_nothing() {
    common::on_postgres(a_log_that_cannot_be_written_stops_the_server_and_accepts_nothing);
}

/// Keep the server's log from being written, as another process holding
/// its database locked would, until the returned guard is dropped.
fn lock_the_log(agency: &Agency) -> Box<dyn FnOnce()> {
    match &agency.database {
        None => {
            let db = rusqlite::Connection::open(agency.data.join("server.db")).unwrap();
            db.execute_batch("BEGIN EXCLUSIVE").unwrap();
            Box::new(move || db.execute_batch("ROLLBACK").unwrap())
        }
        Some(scratch) => {
            let pg = keepwire_schema::pg::Pg::connect(&scratch.url).unwrap();
            pg.batch("BEGIN; LOCK TABLE log IN ACCESS EXCLUSIVE MODE")
                .unwrap();
            Box::new(move || pg.batch("ROLLBACK").unwrap())
        }
    }
}

#[test]
fn a_log_that_cannot_be_written_stops_the_server_and_accepts_nothing() {
    let mut agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "before the disk trouble");
    // Another process holds the server's database locked for longer than
    // the server waits for it (5 s): the log writer's commit fails.
    let unlock = lock_the_log(&agency);
    let out = alice.run(&["chat", "send", &conv, "during the disk trouble"]);
    assert!(
        !out.status.success(),
        "a message that was not stored is not accepted"
    );
    let err = common::stderr(&out);
    assert!(err.contains("could not be stored"), "{err}");
    // The server stops by itself, with an error, rather than serve on with
    // its state ahead of its disk.
    let status = wait_for("the server to stop", 30, || {
        agency.server.as_mut().unwrap().child.try_wait().unwrap()
    });
    assert!(!status.success(), "{status:?}");
    unlock();
    // Restarted, it resumes from its durable log: nothing lost, nothing
    // half-accepted.
    agency.restart(&[]);
    alice.send(&conv, "after the restart");
    assert_eq!(
        bob.texts(&conv),
        ["before the disk trouble", "after the restart"]
    );
}
