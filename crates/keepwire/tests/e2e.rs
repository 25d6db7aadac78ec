//! End-to-end tests: the real `keepwire` binary, real sockets, real stores.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, keepwire, ok, start_serve};
use serde_json::Value;

fn serve(data: &std::path::Path) -> common::Server {
    start_serve(data, &format!("127.0.0.1:{}", free_port()), &[])
}

#[test]
fn demo_sends_disappears_and_captures_everything() {
    check_demo(&[]);
}

#[test]
fn demo_on_postgres_sends_disappears_and_captures_everything() {
    let db = keepwire_schema::pg::scratch::Scratch::new().unwrap();
    let archive = keepwire_schema::pg::scratch::Scratch::new().unwrap();
    check_demo(&["--database", &db.url, "--records-database", &archive.url]);
    // The server's store and the archive were PostgreSQL's: the
    // conversations and the records are there.
    let count = |url: &str, sql: &'static str| -> i64 {
        keepwire_schema::pg::Pg::connect(url)
            .unwrap()
            .query_one(sql, &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(
        count(&db.url, "SELECT COUNT(*) FROM conversations"),
        2,
        "the demo's group and direct conversations"
    );
    assert!(
        count(
            &archive.url,
            "SELECT COUNT(*) FROM records WHERE kind = 'application'"
        ) >= 5
    );
}

fn check_demo(extra: &[&str]) {
    let mut args = vec!["demo", "--json", "--timer", "1"];
    args.extend_from_slice(extra);
    let out = ok(keepwire(&args, &[]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sent"], 5);
    assert_eq!(
        v["delivered"], 8,
        "3 group messages to 2 recipients and 2 direct messages to 1"
    );
    assert_eq!(v["captured"], 5);
    assert_eq!(v["captured_verified"], 5);
    assert_eq!(v["remaining_on_devices"], 0);
    assert_eq!(v["remaining_on_relay"], 0);
    assert_eq!(
        v["archive_problems"], 0,
        "the archive verifies against its log"
    );
    assert!(v["log_leaves"].as_u64().unwrap() >= 5);
    assert_eq!(
        v["scheduled_permanent"], 5,
        "bob, a Capstone official in the directory, took part in every message"
    );
}

#[test]
fn cli_flow_notice_send_read_and_capture() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = serve(&data);
    let d = data.to_str().unwrap();
    let code_a = ok(keepwire(
        &[
            "admin",
            "--data-dir",
            d,
            "user",
            "add",
            "alice",
            "--display",
            "Alice",
            "--category",
            "staff",
        ],
        &[],
    ));
    let code_b = ok(keepwire(
        &[
            "admin",
            "--data-dir",
            d,
            "user",
            "add",
            "bob",
            "--display",
            "Bob",
            "--category",
            "capstone",
        ],
        &[],
    ));
    let dev_a = tmp.path().join("alice");
    let dev_b = tmp.path().join("bob");
    let env_a = [
        ("KEEPWIRE_PASSPHRASE", "pa"),
        ("KEEPWIRE_SERVER", server.url.as_str()),
        ("KEEPWIRE_DEVICE_DIR", dev_a.to_str().unwrap()),
    ];
    let env_b = [
        ("KEEPWIRE_PASSPHRASE", "pb"),
        ("KEEPWIRE_SERVER", server.url.as_str()),
        ("KEEPWIRE_DEVICE_DIR", dev_b.to_str().unwrap()),
    ];
    ok(keepwire(
        &["chat", "enroll", "--code", code_a.trim()],
        &env_a,
    ));
    ok(keepwire(
        &["chat", "enroll", "--code", code_b.trim()],
        &env_b,
    ));

    // A used code cannot enrol another device.
    let again = keepwire(
        &[
            "chat",
            "enroll",
            "--code",
            code_a.trim(),
            "--device-dir",
            tmp.path().join("x").to_str().unwrap(),
        ],
        &env_a,
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The refused attempt left nothing behind: the same directory enrols
    // with a good code.
    let fresh = ok(keepwire(
        &["admin", "--data-dir", d, "user", "code", "alice"],
        &[],
    ));
    ok(keepwire(
        &[
            "chat",
            "enroll",
            "--code",
            fresh.trim(),
            "--device-dir",
            tmp.path().join("x").to_str().unwrap(),
        ],
        &env_a,
    ));

    // A wrong passphrase does not open the device store.
    let wrong = keepwire(
        &["chat", "conversations"],
        &[("KEEPWIRE_PASSPHRASE", "nope"), env_a[1], env_a[2]],
    );
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));

    // No acknowledgement of the records notice, nothing sent: the server refuses.
    let refused = keepwire(&["chat", "create", "bob"], &env_a);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("notice_not_acknowledged"));

    ok(keepwire(&["chat", "notice", "--accept"], &env_a));
    let created = ok(keepwire(&["chat", "create", "bob", "--json"], &env_a));
    let conv = serde_json::from_str::<Value>(&created).unwrap()["conv"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = ok(keepwire(
        &[
            "chat",
            "send",
            &conv,
            "meet at the north gate",
            "--timer",
            "3600",
            "--json",
        ],
        &env_a,
    ));
    assert_eq!(serde_json::from_str::<Value>(&sent).unwrap()["seq"], 2);

    let read = ok(keepwire(&["chat", "read", &conv, "--json"], &env_b));
    let msgs: Value = serde_json::from_str(&read).unwrap();
    assert_eq!(msgs.as_array().unwrap().len(), 1);
    assert_eq!(msgs[0]["text"], "meet at the north gate");
    assert!(msgs[0]["sender"].as_str().unwrap().starts_with("alice/"));
    assert!(msgs[0]["expire_at_ms"].as_u64().is_some());

    // The archive holds it, decrypted, attributed to alice's device.
    let start = Instant::now();
    let records = loop {
        let list: Value = serde_json::from_str(&ok(keepwire(
            &["records", "list", "--data-dir", d, "--json"],
            &[],
        )))
        .unwrap();
        if !list.as_array().unwrap().is_empty() || start.elapsed() > Duration::from_secs(20) {
            break list;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records.as_array().unwrap().len(), 1);
    assert!(records[0]["sender"].as_str().unwrap().starts_with("alice/"));
    let participants = records[0]["participants"].as_array().unwrap();
    assert_eq!(
        participants.len(),
        3,
        "alice, bob and the records member: {participants:?}"
    );
    let id = records[0]["id"].as_i64().unwrap().to_string();
    // Reading it takes a records officer's account, on the running
    // service's records office.
    common::make_accounts(&["--data-dir", d]);
    let shown: Value = serde_json::from_str(&ok(keepwire(
        &["records", "show", &id, "--data-dir", d, "--json"],
        &common::signed_in(common::OFFICER),
    )))
    .unwrap();
    assert_eq!(shown["text"], "meet at the north gate");
    assert_eq!(shown["receipt"]["seq"], 2);

    // The device store on disk does not contain the plaintext.
    let raw = std::fs::read(dev_b.join("device.db")).unwrap();
    let needle = b"north gate";
    assert!(!raw.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn bad_frames_get_precise_errors_and_the_server_keeps_serving() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(&tmp.path().join("data"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("{}/v1/ws", server.url.replace("http", "ws"));
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let challenge = loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                break serde_json::from_str::<Value>(&t).unwrap();
            }
        };
        assert_eq!(challenge["type"], "challenge");
        let cases = [
            ("{not json", "bad_frame"),
            (r#"{"v":99,"id":1,"type":"sync"}"#, "unsupported_version"),
            (r#"{"v":1,"id":2,"type":"teleport"}"#, "bad_frame"),
            (r#"{"v":1,"id":3,"type":"sync"}"#, "unauthorized"),
            (r#"{"v":1,"id":4,"type":"auth","device_id":"nobody","signature":"AAAA"}"#, "unauthorized"),
            (r#"{"v":1,"id":5,"type":"enroll","code":"NOPE","signature_key":"AAAA","signature":"AAAA"}"#, "unauthorized"),
        ];
        for (frame, code) in cases {
            ws.send(Message::Text(frame.to_string().into())).await.unwrap();
            let reply = loop {
                if let Some(Ok(Message::Text(t))) = ws.next().await {
                    break serde_json::from_str::<Value>(&t).unwrap();
                }
            };
            assert_eq!(reply["type"], "error", "{frame}");
            assert_eq!(reply["code"], code, "{frame}: {reply}");
            assert!(!reply["message"].as_str().unwrap().is_empty());
        }
        // An oversize frame is refused by the transport without taking the server down.
        let big = "x".repeat(keepwire_protocol_limit() + 1);
        let _ = ws.send(Message::Text(big.into())).await;
        let (mut ws2, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let first = loop {
            if let Some(Ok(Message::Text(t))) = ws2.next().await {
                break serde_json::from_str::<Value>(&t).unwrap();
            }
        };
        assert_eq!(first["type"], "challenge", "server still serves new connections");
    });
}

fn keepwire_protocol_limit() -> usize {
    8 * 1024 * 1024
}

#[test]
fn a_mistyped_data_directory_is_an_error_naming_it_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let nope = tmp.path().join("nope");
    let nope_str = nope.to_str().unwrap();
    for args in [
        vec!["admin", "--data-dir", nope_str, "status"],
        vec![
            "admin",
            "--data-dir",
            nope_str,
            "user",
            "add",
            "x",
            "--display",
            "X",
            "--category",
            "staff",
        ],
        vec!["records", "list", "--data-dir", nope_str],
        vec!["records", "verify", "--data-dir", nope_str],
    ] {
        let out = keepwire(&args, &[]);
        assert!(
            !out.status.success(),
            "{args:?} succeeded on a directory that does not exist"
        );
        let err = common::stderr(&out);
        assert!(
            err.contains(nope_str) && err.contains("holds no keepwire"),
            "{args:?}: {err}"
        );
    }
    // With --json the failure is JSON on stdout, as the answer would be.
    let out = keepwire(&["admin", "--data-dir", nope_str, "status", "--json"], &[]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert!(
        v["error"].as_str().unwrap().contains("holds no keepwire"),
        "{v}"
    );
    assert!(!nope.exists(), "nothing was created at the mistyped path");

    // The same for a PostgreSQL database that holds no server store: an
    // error naming it (without its password), and no tables made there.
    let db = keepwire_schema::pg::scratch::Scratch::new().unwrap();
    let url = db.url.replace("postgres@", "postgres:hunter2@");
    let out = keepwire(&["admin", "--database", &url, "user", "list"], &[]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("holds no keepwire server store") && err.contains("postgres:***@"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let pg = keepwire_schema::pg::Pg::connect(&db.url).unwrap();
    let tables: i64 = pg
        .query_one(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing was created in the database");
    // And for the archive's database.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("records")).unwrap();
    let out = keepwire(
        &[
            "records",
            "list",
            "--data-dir",
            data.to_str().unwrap(),
            "--database",
            &url,
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains("holds no keepwire archive"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn flags_go_before_or_after_the_subcommand() {
    let agency = common::Agency::start();
    let alice = agency.user("alice", "staff");
    alice.accept_notice();
    let bob = agency.user("bob", "staff");
    let conv = alice.create(&["bob"]);
    let dir = alice.dir.to_str().unwrap();
    let url = agency.url();
    let env = [("KEEPWIRE_PASSPHRASE", alice.passphrase.as_str())];
    // The device's flags, before and after `conversations`: the same
    // device either way (before, they used to be ignored silently).
    let before = ok(keepwire(
        &[
            "chat",
            "--device-dir",
            dir,
            "--server",
            &url,
            "--json",
            "conversations",
        ],
        &env,
    ));
    let after = ok(keepwire(
        &[
            "chat",
            "conversations",
            "--device-dir",
            dir,
            "--server",
            &url,
            "--json",
        ],
        &env,
    ));
    let before: Value = serde_json::from_str(&before).unwrap();
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(before, after);
    assert_eq!(before[0]["conv"], conv.as_str());
    // The data directory, before and after, for `records` and `admin`.
    let data = agency.data_dir();
    alice.send(&conv, "hello");
    assert_eq!(bob.texts(&conv), ["hello"]);
    for args in [
        vec!["records", "--data-dir", data, "list", "--json"],
        vec!["records", "list", "--data-dir", data, "--json"],
    ] {
        let v: Value = serde_json::from_str(&ok(keepwire(&args, &[]))).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{args:?}");
    }
    for args in [
        vec!["admin", "--data-dir", data, "status", "--json"],
        vec!["admin", "status", "--data-dir", data, "--json"],
    ] {
        let v: Value = serde_json::from_str(&ok(keepwire(&args, &[]))).unwrap();
        assert_eq!(v["users"], 3, "{args:?}: alice, bob and the records member");
    }
    // Enrolment codes as JSON, for provisioning scripts.
    let v: Value = serde_json::from_str(&agency.admin(&[
        "user",
        "add",
        "dan",
        "--display",
        "Dan",
        "--category",
        "staff",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        (v["user"].as_str(), v["valid_for_secs"].as_u64()),
        (Some("dan"), Some(86_400))
    );
    let code = v["code"].as_str().unwrap();
    assert!(code.len() >= 8, "{v}");
}

#[test]
fn a_conversation_is_named_by_a_unique_prefix_of_its_id() {
    let agency = common::Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    let short = &conv[..8];
    let out = alice.json(&["chat", "send", short, "by prefix", "--wait-captured", "60"]);
    assert_eq!(
        out["conv"],
        conv.as_str(),
        "the whole id is resolved and reported"
    );
    assert_eq!(bob.texts(&conv), ["by prefix"]);
    let read: Value = bob.json(&["chat", "read", &conv[..6]]);
    assert_eq!(read[0]["text"], "by prefix");
    // A prefix of no conversation is an error naming it.
    let out = alice.run(&["chat", "send", "zzzz", "lost"]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("unknown conversation zzzz"));
}

#[test]
fn people_are_shown_by_name_with_times_and_records_readably() {
    let agency = common::Agency::start();
    agency.admin(&[
        "user",
        "add",
        "carol",
        "--display",
        "Carol Diaz",
        "--category",
        "staff",
    ]);
    let carol = agency.second_device("carol", "carol");
    let bob = agency.user("bob", "staff");
    carol.accept_notice();
    let conv = carol.create(&["bob"]);
    carol.ok(&[
        "chat",
        "send",
        &conv,
        "hi",
        "--timer",
        "3600",
        "--wait-captured",
        "60",
    ]);
    let out = bob.ok(&["chat", "read", &conv]);
    assert!(out.contains("Carol Diaz: hi"), "{out}");
    assert!(out.contains(" UTC]"), "{out}");
    let records = agency.records(false);
    let id = records[0]["id"].to_string();
    let shown = ok(agency.records_output(&["show", &id]));
    assert!(
        shown.contains("disappears 3600 s after sending (the record stays)"),
        "{shown}"
    );
    assert!(shown.contains("text:         hi"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("  sent:") && l.ends_with(" UTC")),
        "{shown}"
    );
}

#[test]
fn administrators_changes_answer_in_json_for_scripts() {
    let agency = common::Agency::start();
    let json = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&agency.admin(&all)).unwrap()
    };
    assert_eq!(
        json(&["policy", "--max-timer-secs", "3600"]),
        serde_json::json!({
            "max_timer_secs": 3600,
            "guests_allowed": true,
            "max_attachment_bytes": 100u64 << 20,
            "attachment_quota_bytes": 10u64 << 30,
            "unsent_attachment_ttl_ms": 24 * 3600 * 1000,
            "keep_photo_location": false,
        })
    );
    // Without settings, the policy as it is.
    assert_eq!(json(&["policy"])["max_timer_secs"], 3600);
    let alice = agency.user("alice", "staff");
    assert_eq!(
        json(&["device", "revoke", &alice.id]),
        serde_json::json!({"revoked": alice.id})
    );
    // Where the store is, for the administrator (no password).
    let status = json(&["status"]);
    let store = status["store"].as_str().unwrap();
    assert!(
        store.starts_with("SQLite ") && store.ends_with("server.db"),
        "{status}"
    );
    let key = json(&["rotate-receipt-key"]);
    assert_eq!(key["receipt_key"].as_str().unwrap().len(), 44, "{key}");
    // A refusal is JSON too, on stdout.
    let out = agency.admin_output(&["device", "revoke", &alice.id, "--json"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("no active device"),
        "{v}"
    );
}
