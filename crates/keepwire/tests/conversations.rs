//! End-to-end: several devices per user, revocation, offline catch-up and
//! disappearing timers, through the real binary over real sockets.

mod common;

use common::{wait_for, Agency};

#[test]
fn a_second_device_joins_existing_conversations_and_sees_new_messages() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "capstone");
    alice.accept_notice();
    bob.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "before the new phone");

    let phone = agency.second_device("alice", "alice-phone");
    assert_ne!(phone.id, alice.id);
    // Its first sync joins alice's conversation by external commit.
    let members = phone.members(&conv);
    assert!(
        members.contains(&format!("alice/{}", phone.id)),
        "new device is a member: {members:?}"
    );
    assert!(members.contains(&format!("alice/{}", alice.id)));
    assert!(members.iter().any(|m| m.starts_with("records/")));

    bob.send(&conv, "hello both of you");
    phone.send(&conv, "typed on the phone");

    // MLS gives a new device no history; everything after its join arrives.
    assert_eq!(
        phone.texts(&conv),
        ["hello both of you", "typed on the phone"]
    );
    let on_laptop = alice.texts(&conv);
    assert_eq!(
        on_laptop,
        [
            "before the new phone",
            "hello both of you",
            "typed on the phone"
        ],
        "the first device sees its user's other device's message"
    );
    let at_bob = bob.read(&conv);
    let from_phone = at_bob
        .iter()
        .find(|m| m["text"] == "typed on the phone")
        .expect("bob got the phone's message");
    assert_eq!(from_phone["sender"], format!("alice/{}", phone.id));

    let texts = agency.wait_captured(3);
    assert_eq!(
        texts,
        [
            "before the new phone",
            "hello both of you",
            "typed on the phone"
        ]
    );
    let records = agency.records(false);
    assert_eq!(records[2]["sender"], format!("alice/{}", phone.id));
}

#[test]
fn a_revoked_device_is_removed_from_every_conversation_and_refused() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    let carol = agency.user("carol", "support");
    for d in [&alice, &bob, &carol] {
        d.accept_notice();
    }
    let group = alice.create(&["bob", "carol"]);
    let direct = carol.create(&["alice"]);
    alice.send(&group, "before revocation");
    assert_eq!(carol.texts(&group), ["before revocation"]);

    agency.admin(&["device", "revoke", &carol.id]);

    // The records service commits the removal in both conversations.
    let carol_id = format!("carol/{}", carol.id);
    for conv in [&group, &direct] {
        wait_for("carol's device to be removed", 30, || {
            (!alice.members(conv).contains(&carol_id)).then_some(())
        });
    }
    let refused = carol.run(&["chat", "read", &group]);
    assert!(!refused.status.success());
    assert!(
        common::stderr(&refused).contains("device_revoked"),
        "{}",
        common::stderr(&refused)
    );

    alice.send(&group, "after revocation");
    assert_eq!(bob.texts(&group), ["before revocation", "after revocation"]);
    agency.wait_captured(2);
    let last = agency.records(false)[1].clone();
    assert_eq!(last["conv"], group.as_str());
    let participants: Vec<String> = last["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(
        !participants.contains(&carol_id),
        "the record of a message after revocation shows carol gone: {participants:?}"
    );
    // The removal commits are themselves records, made by the records member.
    let commits: Vec<_> = agency
        .records(true)
        .into_iter()
        .filter(|r| r["kind"] == "commit" && r["sender"].as_str().unwrap().starts_with("records/"))
        .collect();
    assert_eq!(commits.len(), 2, "one removal commit per conversation");
}

#[test]
fn an_offline_device_catches_up_in_order_and_the_relay_empties() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    let sent: Vec<String> = (1..=6).map(|i| format!("update {i}")).collect();
    for t in &sent {
        alice.send(&conv, t);
    }
    agency.wait_captured(6);
    // Bob has not connected since enrolling: the relay still holds what he
    // needs, although the records service has everything.
    let status = agency.status();
    assert_eq!(status["capture_backlog"], 0);
    assert!(status["relay_entries"].as_u64().unwrap() >= 6);

    let got = bob.read(&conv);
    let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, sent, "every message, once, in the server's order");
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Reading again fetches nothing twice.
    assert_eq!(bob.read(&conv).len(), 6);
    wait_for("the relay to delete what everyone has", 30, || {
        (agency.status()["relay_entries"] == 0).then_some(())
    });
}

#[test]
fn timers_delete_messages_from_devices_on_time_but_not_from_the_archive() {
    let agency = Agency::start();
    agency.admin(&["policy", "--max-timer-secs", "3600"]);
    let mut alice = agency.user("alice", "staff");
    let mut bob = agency.user("bob", "staff");
    alice.accept_notice();
    // Each device runs on a clock the test moves, so nothing sleeps.
    let clock = agency.tmp.path().join("clock");
    std::fs::write(&clock, "0").unwrap();
    alice.clock_file = Some(clock.clone());
    bob.clock_file = Some(clock.clone());
    let conv = alice.create(&["bob"]);

    // The admin's cap: a longer timer is refused before anything is sent.
    let over = alice.run(&["chat", "send", &conv, "too long", "--timer", "7200"]);
    assert!(!over.status.success());
    assert!(common::stderr(&over).contains("exceeds the agency's maximum of 3600 s"));

    // A conversation timer applies to every later message, for every member.
    let set = alice.json(&["chat", "timer", &conv, "60"]);
    assert_eq!(set["timer_secs"], 60);
    alice.send(&conv, "gone in a minute");
    alice.ok(&[
        "chat",
        "send",
        &conv,
        "gone after reading",
        "--burn-on-read",
    ]);
    let kept_timer = bob.json(&["chat", "timer", &conv]);
    assert_eq!(
        kept_timer["timer_secs"], 60,
        "bob's device learnt the timer"
    );

    let first = bob.read(&conv);
    let texts: Vec<&str> = first.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "(set the disappearing timer to 1 min)",
            "gone in a minute",
            "gone after reading"
        ]
    );
    assert!(first[1]["expire_at_ms"].as_u64().is_some());
    // Read once: the burn-on-read message is gone on the next look.
    let second = bob.texts(&conv);
    assert!(
        !second.contains(&"gone after reading".to_string()),
        "{second:?}"
    );
    assert!(second.contains(&"gone in a minute".to_string()));

    // 61 seconds later, on both devices, the timed message is gone.
    std::fs::write(&clock, "61000").unwrap();
    assert!(!bob.texts(&conv).contains(&"gone in a minute".to_string()));
    assert!(!alice.texts(&conv).contains(&"gone in a minute".to_string()));

    // The archive keeps all of them, with the timer as metadata.
    let texts = agency.wait_captured(3);
    assert_eq!(
        texts,
        ["", "gone in a minute", "gone after reading"],
        "the timer change is a record too"
    );
    let records = agency.records(false);
    assert_eq!(records[1]["expire_after_secs"], 60);
    assert_eq!(records[2]["burn_on_read"], true);
}

/// The interactive client in a real pseudo-terminal (util-linux `script`):
/// it shows the records notice first, then the conversation with its
/// remaining time, and sends what is typed.
#[test]
fn the_terminal_client_acknowledges_the_notice_and_sends() {
    use std::io::Write;
    use std::sync::Arc;

    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    bob.accept_notice();
    let conv = bob.create(&["alice"]);
    bob.ok(&["chat", "send", &conv, "are you there", "--timer", "600"]);

    let (mut child, screen, mut keys) = terminal_client(&alice, &alice.url);
    let shown = |s: &str| {
        let s = s.to_string();
        let screen = Arc::clone(&screen);
        move || screen.lock().unwrap().contains(&s).then_some(())
    };
    wait_for("the records notice", 60, shown("Records notice"));
    keys.write_all(b"a").unwrap();
    keys.flush().unwrap();
    // (What the screen shows afterwards is checked cell by cell in the
    // client's own tests; a terminal stream only carries the changes.)
    let acknowledged = || {
        let users: serde_json::Value =
            serde_json::from_str(&agency.admin(&["user", "list", "--json"])).unwrap();
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "alice")
            .and_then(|u| u["notice_acknowledged_at_ms"].as_u64())
    };
    wait_for(
        "the server to record alice's acknowledgement",
        60,
        acknowledged,
    );
    keys.write_all(b"on my way\r").unwrap();
    keys.flush().unwrap();
    wait_for("the message to reach bob", 60, || {
        bob.texts(&conv)
            .contains(&"on my way".to_string())
            .then_some(())
    });
    keys.write_all(b"\x1b").unwrap();
    keys.flush().unwrap();
    let status = wait_for("the client to quit on Esc", 30, || {
        child.0.try_wait().unwrap()
    });
    assert!(status.success());
}

#[test]
fn a_member_leaves_and_receives_nothing_after() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    let carol = agency.user("carol", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob", "carol"]);
    alice.send(&conv, "before carol left");
    carol.ok(&["chat", "leave", &conv]);
    let carol_id = format!("carol/{}", carol.id);
    wait_for("the records member to commit carol's leaving", 30, || {
        (!alice.members(&conv).contains(&carol_id)).then_some(())
    });
    alice.send(&conv, "after carol left");
    assert_eq!(bob.texts(&conv), ["before carol left", "after carol left"]);
    assert_eq!(carol.texts(&conv), ["before carol left"]);
    let kinds: Vec<String> = wait_for("the leave to be archived", 30, || {
        let all = agency.records(true);
        (all.len() >= 5).then_some(all)
    })
    .iter()
    .map(|r| r["kind"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(
        kinds,
        ["commit", "application", "proposal", "commit", "application"],
        "the request to leave and its commit are records too"
    );
}

#[test]
fn guests_join_only_while_the_policy_allows_them() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    agency.user("partner", "guest");
    agency.user("other", "guest");
    alice.accept_notice();
    let conv = alice.create(&["partner"]);
    assert!(alice
        .members(&conv)
        .iter()
        .any(|m| m.starts_with("partner/")));

    agency.admin(&["policy", "--guests-allowed", "false"]);
    let refused = alice.run(&["chat", "add", &conv, "other"]);
    assert!(!refused.status.success());
    let msg = common::stderr(&refused);
    assert!(
        msg.contains("policy does not allow guests") && msg.contains("other"),
        "{msg}"
    );
    let refused = alice.run(&["chat", "create", "other"]);
    assert!(common::stderr(&refused).contains("policy does not allow guests"));
    assert!(!alice.members(&conv).iter().any(|m| m.starts_with("other/")));
}

/// `keepwire chat` (the terminal client) for `dev` against `server`, in a
/// real pseudo-terminal (util-linux `script`): the process, everything it
/// has drawn so far, and its keyboard.
fn terminal_client(
    dev: &common::Device,
    server: &str,
) -> (
    KillOnDrop,
    std::sync::Arc<std::sync::Mutex<String>>,
    std::process::ChildStdin,
) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    let mut child = Command::new("script")
        .args(["-qfec", &format!("{} chat", common::BIN), "/dev/null"])
        .env("KEEPWIRE_PASSPHRASE", &dev.passphrase)
        .env("KEEPWIRE_SERVER", server)
        .env("KEEPWIRE_DEVICE_DIR", &dev.dir)
        .env("TERM", "xterm")
        .env("COLUMNS", "120")
        .env("LINES", "30")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("util-linux `script` runs the client in a pseudo-terminal");
    let screen = Arc::new(Mutex::new(String::new()));
    let mut out = child.stdout.take().unwrap();
    let sink = Arc::clone(&screen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let keys = child.stdin.take().unwrap();
    (KillOnDrop(child), screen, keys)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The terminal client starts without the server, shows what the device
/// holds and says it is offline, and connects by itself once the server
/// is back.
#[test]
fn the_terminal_client_works_offline_and_reconnects_by_itself() {
    use std::sync::Arc;
    let mut agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    bob.accept_notice();
    let conv = bob.create(&["alice"]);
    bob.send(&conv, "kept-on-the-device");
    assert_eq!(alice.texts(&conv), ["kept-on-the-device"]);
    agency.stop();
    let (_tui, screen, _keys) = terminal_client(&alice, &alice.url);
    let shown = |s: &str| {
        let s = s.to_string();
        let screen = Arc::clone(&screen);
        move || screen.lock().unwrap().contains(&s).then_some(())
    };
    // (A terminal stream skips blanks by moving the cursor: one word each.)
    wait_for("the offline notice", 60, shown("offline"));
    wait_for(
        "the message the device holds",
        60,
        shown("kept-on-the-device"),
    );
    agency.restart(&[]);
    wait_for("the client to reconnect by itself", 90, shown("connected"));
}
