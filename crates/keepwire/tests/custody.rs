//! Custody: what an insider or an operator could do to a deployment
//! without meaning to — or meaning to — and what keepwire does about it.
//! Each test is a finding of the audit in issue 12, tried the way it was
//! found, through the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{free_port, keepwire, on_postgres, stderr, Agency};

#[test]
fn a_second_server_on_the_same_data_directory_refuses_naming_the_first() {
    second_server_refused(false);
}

#[test]
fn on_postgres_a_second_server_on_the_same_database_refuses_naming_the_first() {
    on_postgres(|| second_server_refused(true));
}

/// Two servers on one data directory both ran, and a message receipted
/// through the second reached no device and no archive. Now the second
/// refuses to start and says who holds it; the first goes on serving. On
/// PostgreSQL the second has a data directory of its own and still
/// refuses: the database is the first one's.
fn second_server_refused(own_directory: bool) {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    bob.accept_notice();
    let conv = alice.create(&["bob"]);
    let pid = agency.server.as_ref().unwrap().child.id();
    let other = agency.tmp.path().join("other");
    let dir = if own_directory {
        other.to_str().unwrap()
    } else {
        agency.data_dir()
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let out = keepwire(
        &agency.with_database(&["serve", "--data-dir", dir, "--listen", &listen]),
        &[],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "a second server started: {err}");
    assert!(err.contains("in use by another keepwire process"), "{err}");
    assert!(
        err.contains(&format!("pid {pid}")),
        "names the holder: {err}"
    );
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "the second server is not listening"
    );
    // The first serves on, and everything still reaches everyone.
    alice.send(&conv, "still here");
    assert_eq!(bob.texts(&conv), ["still here"]);
}

#[test]
fn everything_a_deployment_writes_is_readable_by_its_owner_only() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    alice.accept_notice();
    let bob = agency.user("bob", "staff");
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "private");
    assert_eq!(bob.texts(&conv), ["private"]);
    let mut seen = 0;
    for root in [agency.data.as_path(), alice.dir.as_path()] {
        seen += assert_private(root);
    }
    assert!(seen > 8, "looked at {seen} paths");
    // The test made the data directory 0755; the server took group and
    // world access away at start and said so — in plain text, since its
    // log is a file, not a terminal.
    let log = common::log_after(&agency.data.with_file_name("serve.log"), 0);
    assert!(log.contains("made readable by their owner only"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log file: {log}");
    // Enrolment codes are in the server's database as hashes only: a copy
    // of it (a backup, an unprivileged reader) enrols nobody.
    let code = agency.admin(&["user", "code", "alice"]);
    let db = std::fs::read(agency.data.join("server.db")).unwrap();
    let wal = std::fs::read(agency.data.join("server.db-wal")).unwrap_or_default();
    let code = code.trim().as_bytes();
    assert!(
        ![db, wal]
            .iter()
            .any(|b| b.windows(code.len()).any(|w| w == code)),
        "the enrolment code is in server.db"
    );
}

/// Every directory under `root` is 0700 and every file 0600 or tighter;
/// how many paths were checked.
fn assert_private(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        n += 1;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    n
}

/// An agency whose server has published a checkpoint of at least `n`
/// leaves (the members' devices have seen it), then stopped as by a crash.
fn stopped_after_checkpoint() -> (Agency, u64) {
    let mut agency = Agency::start_with(&["--checkpoint-secs", "1"]);
    let alice = agency.user("alice", "staff");
    agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    for text in ["one", "two", "three"] {
        alice.send(&conv, text);
    }
    let size = common::wait_for("a published checkpoint", 30, || {
        let v = alice.json(&["chat", "checkpoint"]);
        let size = v["size"].as_u64().unwrap_or(0);
        (size >= 4).then_some(size)
    });
    agency.stop();
    (agency, size)
}

/// `keepwire serve` on the agency's data directory, which must end by
/// itself (within a minute; killed and failed otherwise).
fn serve_once(agency: &Agency) -> std::process::Output {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = common::command()
        .args([
            "serve",
            "--data-dir",
            agency.data_dir(),
            "--listen",
            &listen,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for("keepwire serve to stop by itself", 60, || {
        child.try_wait().unwrap()
    });
    child.wait_with_output().unwrap()
}

/// A 0-byte `server.db` started an empty server, a 0-byte `archive.db` a
/// new archive at leaf 0. Where the data directory shows they existed,
/// each is now refused, naming the file and the evidence; put back, the
/// deployment runs on.
#[test]
fn an_emptied_or_missing_database_is_refused_naming_the_file_and_the_evidence() {
    let (mut agency, _) = stopped_after_checkpoint();
    for (db, evidence) in [
        ("server.db", "receipt.key shows a server ran"),
        (
            "records/archive.db",
            "checkpoint.pub shows an archive was kept",
        ),
    ] {
        let path = agency.data.join(db);
        let kept = std::fs::read(&path).unwrap();
        let wal = path.with_extension("db-wal");
        let kept_wal = std::fs::read(&wal).ok();
        for (how, damage) in [
            (
                "empty",
                (|p: &Path| std::fs::write(p, b"").unwrap()) as fn(&Path),
            ),
            ("missing", |p: &Path| std::fs::remove_file(p).unwrap()),
        ] {
            damage(&path);
            let _ = std::fs::remove_file(&wal);
            let _ = std::fs::remove_file(path.with_extension("db-shm"));
            let out = serve_once(&agency);
            let err = stderr(&out);
            assert!(!out.status.success(), "{db} {how}: started anyway\n{err}");
            assert!(err.contains(&format!("{db} is {how}")), "{err}");
            assert!(err.contains(evidence), "{err}");
            std::fs::write(&path, &kept).unwrap();
            if let Some(w) = &kept_wal {
                std::fs::write(&wal, w).unwrap();
            }
        }
    }
    agency.restart(&[]);
    assert_eq!(agency.wait_captured(3), ["one", "two", "three"]);
}

/// The log was cut back from 208 to 203 leaves and the service went on:
/// signing size 203, logging an error every tick, receipting messages. An
/// archive that no longer holds what the server's published chain says
/// it signed now stops the records service — and, embedded, the server
/// with it — saying what happened.
#[test]
fn an_archive_cut_back_behind_its_published_checkpoint_stops_everything() {
    let (agency, size) = stopped_after_checkpoint();
    let archive = rusqlite::Connection::open(agency.data.join("records/archive.db")).unwrap();
    archive
        .execute("DELETE FROM tlog_leaves WHERE n >= ?1", [size as i64 - 2])
        .unwrap();
    drop(archive);
    let out = serve_once(&agency);
    let err = stderr(&out);
    assert!(!out.status.success(), "served on a cut archive\n{err}");
    assert!(err.contains("cut back"), "{err}");
    assert!(
        err.contains(&format!("a checkpoint of {size} leaves")),
        "{err}"
    );
    // Nor does a records office open on it to sign the shorter tree
    // when asked (C2SP: a log never signs a checkpoint inconsistent with
    // one it signed).
    let out = agency.office_refused(&[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "signed a fork: {err}");
    assert!(err.contains("cut back"), "{err}");
}

/// GET `path` from `addr`, with a bearer token if given: the status line
/// and body.
fn http_get(addr: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of metric `name` in a /metrics answer.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// An operator's view: health, readiness and Prometheus metrics on a
/// listener of their own (token-protected here), never on the public one;
/// readiness says what is wrong; every state change is logged once, as
/// JSON when asked, never with terminal colour codes in a file.
#[test]
fn health_readiness_and_metrics_are_served_apart_and_say_what_is_wrong() {
    let admin = format!("127.0.0.1:{}", free_port());
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("admin.token");
    let token = "0123456789abcdef-admin";
    std::fs::write(&token_file, token).unwrap();
    let mut agency = Agency::start_split_with(
        &[
            "--admin-listen",
            &admin,
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[],
    );
    let get = |path: &str| http_get(&admin, path, Some(token));
    assert!(
        http_get(&admin, "/metrics", None).starts_with("HTTP/1.1 401"),
        "no token, no metrics"
    );
    assert!(http_get(&admin, "/healthz", Some("wrong-token-wrong")).starts_with("HTTP/1.1 401"));
    common::wait_for("the server to be ready", 30, || {
        get("/readyz").starts_with("HTTP/1.1 200").then_some(())
    });
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "one");
    alice.send(&conv, "two");
    assert_eq!(bob.texts(&conv), ["one", "two"]);
    let m = get("/metrics");
    assert!(m.contains("text/plain; version=0.0.4"), "{m}");
    let accepted = metric(&m, "keepwire_messages_accepted_total");
    assert!(accepted >= 3.0, "the creation and two messages: {accepted}");
    assert_eq!(metric(&m, "keepwire_messages_captured_total"), accepted);
    assert_eq!(metric(&m, "keepwire_capture_backlog"), 0.0);
    assert_eq!(metric(&m, "keepwire_capture_lag_seconds"), 0.0);
    assert_eq!(metric(&m, "keepwire_fail_closed"), 0.0);
    assert_eq!(metric(&m, "keepwire_records_service_connections"), 1.0);
    assert_eq!(metric(&m, "keepwire_conversations"), 1.0);
    assert!(metric(&m, "keepwire_group_commit_seconds_count") >= accepted.min(1.0));
    assert!(metric(&m, "keepwire_connections") >= 1.0);
    // Never on the public address.
    assert!(http_get(&agency.listen, "/metrics", Some(token)).starts_with("HTTP/1.1 404"));

    // The records service goes: the server is alive but not ready, and
    // says why; what is sent waits, and the lag shows it.
    let server_log = agency.tmp.path().join("server.log");
    let before = std::fs::metadata(&server_log).unwrap().len() as usize;
    agency.stop_records();
    common::wait_for("readiness to drop", 30, || {
        let r = get("/readyz");
        (r.starts_with("HTTP/1.1 503") && r.contains("records service is not connected"))
            .then_some(())
    });
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    alice.ok(&["chat", "send", &conv, "waits for capture"]);
    let m = get("/metrics");
    assert_eq!(metric(&m, "keepwire_capture_backlog"), 1.0);
    assert_eq!(metric(&m, "keepwire_records_service_connections"), 0.0);
    agency.start_records(None);
    let texts = common::wait_for("bob to get what waited", 30, || {
        let t = bob.texts(&conv);
        (t.len() == 3).then_some(t)
    });
    assert_eq!(texts, ["one", "two", "waits for capture"]);

    // The log: one JSON object per line (or the lines the binary prints
    // for people), the disconnection logged once, no colour codes.
    let log = common::log_after(&server_log, before);
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let disconnected = events
        .iter()
        .filter(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("records service disconnected"))
        })
        .count();
    assert_eq!(disconnected, 1, "{log}");
}

#[test]
fn metrics_off_loopback_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = keepwire(
        &[
            "server",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--admin-listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--admin-token-file"), "{err}");
}

/// Bytes available on the file system holding `dir` (`df`).
fn available(dir: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// A full disk stopped the server (exit 1), which did not come back by
/// itself. Now, on a small tmpfs: the server stays up, refuses new
/// messages with `storage_full` while the disk is nearly full, accepts
/// them again by itself once space returns, and what was written before
/// is whole (delivered, archived, verified).
#[test]
fn a_full_disk_refuses_new_messages_keeps_everything_and_resumes_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&small)
        .output();
    match mount {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); run the tests as root to check a full disk",
                stderr(&o).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: no mount command ({e}); run the tests as root to check a full disk"
            );
            return;
        }
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(small.clone());
    let data = small.join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = common::start_serve(&data, &listen, &["--min-free-mb", "16"]);
    assert!(server.child.try_wait().unwrap().is_none());
    let d = data.to_str().unwrap();
    let device = |name: &str| {
        let code = common::ok(keepwire(
            &[
                "admin",
                "--data-dir",
                d,
                "user",
                "add",
                name,
                "--display",
                name,
                "--category",
                "staff",
            ],
            &[],
        ));
        let dev = common::Device {
            dir: tmp.path().join("devices").join(name),
            url: format!("http://{listen}"),
            passphrase: format!("pass-{name}"),
            clock_file: None,
            id: String::new(),
        };
        dev.ok(&["chat", "enroll", "--code", code.trim()]);
        dev
    };
    let (alice, bob) = (device("alice"), device("bob"));
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "before");

    // Fill the disk to 8 MiB short of full.
    let filler = small.join("filler");
    let size = available(&small).saturating_sub(8 << 20);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 1 << 20];
        for _ in 0..size >> 20 {
            f.write_all(&block).unwrap();
        }
        f.sync_all().unwrap();
    }
    // The server looks at the disk twice a second: a send in between is
    // still accepted, and then must be delivered like any other.
    let mut sent = vec!["before".to_string()];
    let refusal = common::wait_for("new messages to be refused", 30, || {
        let out = alice.run(&["chat", "send", &conv, "while full"]);
        if out.status.success() {
            sent.push("while full".into());
            return None;
        }
        Some(stderr(&out))
    });
    assert!(refusal.contains("disk is nearly full"), "{refusal}");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server stays up"
    );
    let texts = common::wait_for("bob to get what was accepted", 30, || {
        let t = bob.texts(&conv);
        (t.len() >= sent.len()).then_some(t)
    });
    assert_eq!(
        texts, sent,
        "what was accepted before is delivered, and nothing refused"
    );

    // Space returns: sending resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    common::wait_for("sending to resume", 30, || {
        let out = alice.run(&["chat", "send", &conv, "after", "--wait-captured", "30"]);
        out.status.success().then_some(())
    });
    sent.push("after".into());
    let texts = common::wait_for("bob to get it", 30, || {
        let t = bob.texts(&conv);
        (t.len() == sent.len()).then_some(t)
    });
    assert_eq!(texts, sent);
    common::ok(keepwire(&["records", "verify", "--data-dir", d], &[]));
}

/// `records verify --json` on the agency: whether it passed, and the
/// problems' details.
fn verify(agency: &Agency) -> (bool, serde_json::Value) {
    let out = keepwire(
        &[
            "records",
            "verify",
            "--json",
            "--data-dir",
            agency.data_dir(),
        ],
        &[],
    );
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", stderr(&out)));
    (out.status.success(), report)
}

fn details(report: &serde_json::Value) -> String {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["detail"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Deleting the archive's stored checkpoints passed `verify`, and so did a
/// consistently rewritten log (its tail cut, its own checkpoints past the
/// cut gone or re-signed with the stolen key). The server keeps the chain
/// the records service published, apart from the archive: `verify` checks
/// against it, and finds both.
#[test]
fn verify_holds_the_archive_to_the_servers_published_chain() {
    let (agency, size) = stopped_after_checkpoint();
    let (passed, report) = verify(&agency);
    assert!(passed, "{report:#}");
    assert_eq!(
        report["external_checkpoints"], 1,
        "the server's chain is read"
    );
    let archive = rusqlite::Connection::open(agency.data.join("records/archive.db")).unwrap();
    archive.execute("DELETE FROM checkpoints", []).unwrap();
    let (passed, report) = verify(&agency);
    assert!(!passed, "its checkpoint history deleted: {report:#}");
    assert!(
        details(&report).contains("no longer keeps the checkpoint it issued"),
        "{report:#}"
    );
    archive
        .execute("DELETE FROM tlog_leaves WHERE n >= ?1", [size as i64 - 2])
        .unwrap();
    let (passed, report) = verify(&agency);
    assert!(!passed, "cut back: {report:#}");
    let found = details(&report);
    assert!(
        found.contains("the server's latest published checkpoint is for")
            && found.contains("it was cut back"),
        "{report:#}"
    );
}

/// `records proof` hands an auditor nothing that does not check out: it
/// verifies its own proof against the signed checkpoint first, and a
/// damaged log is an error, not a proof that fails in someone else's hands.
#[test]
fn a_proof_is_checked_before_it_is_given() {
    let (agency, _) = stopped_after_checkpoint();
    let d = agency.data_dir();
    let archive = rusqlite::Connection::open(agency.data.join("records/archive.db")).unwrap();
    let (id, leaf): (i64, i64) = archive
        .query_row(
            "SELECT id, leaf FROM records WHERE leaf > 0 ORDER BY leaf LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Where the log keeps the hash of leaf `n` (tlog's stored-hash index,
    // level 0: n + n/2 + n/4 + …).
    let stored = |mut n: i64| {
        let mut i = 0;
        while n > 0 {
            i += n;
            n >>= 1;
        }
        i
    };
    let proof = |id: i64| keepwire(&["records", "proof", &id.to_string(), "--data-dir", d], &[]);
    assert!(proof(id).status.success(), "{}", stderr(&proof(id)));
    // The stored hash of its sibling, the first step of its path, damaged.
    archive
        .execute(
            "UPDATE tlog_hashes SET hash = zeroblob(32) WHERE idx = ?1",
            [stored(leaf ^ 1)],
        )
        .unwrap();
    let out = proof(id);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a proof that does not check out was given"
    );
    assert!(err.contains("does not check out"), "{err}");
    assert!(out.stdout.is_empty(), "nothing printed");
}

/// An auditor rebuilds a record's leaf from what `records show --json`
/// prints, following docs/verification.md ("Leaf formats") — field order,
/// hex for the receipt's bytes — and gets exactly the bytes `records proof`
/// proves are in the log.
#[test]
fn a_records_leaf_is_rebuilt_from_what_show_prints() {
    use serde_json::Value;
    let (agency, _) = stopped_after_checkpoint();
    let d = agency.data_dir();
    let id: i64 = rusqlite::Connection::open(agency.data.join("records/archive.db"))
        .unwrap()
        .query_row(
            "SELECT id FROM records WHERE kind = 'application' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let run = |args: &[&str]| -> Value {
        serde_json::from_str(&common::ok(agency.records_output(args))).unwrap()
    };
    let id = id.to_string();
    let office = common::start_office(d);
    let shown = run(&["show", &id, "--json"]);
    drop(office);
    let proof = run(&["proof", &id]);
    let hex = |b64: &Value| -> String {
        keepwire_protocol::b64::decode(b64.as_str().unwrap())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let receipt = &shown["receipt"];
    let fields: Vec<(&str, Value)> = vec![
        ("type", "record".into()),
        ("conv", shown["conv"].clone()),
        ("seq", shown["seq"].clone()),
        ("kind", shown["kind"].clone()),
        ("epoch", shown["epoch"].clone()),
        ("sender", shown["sender"].clone()),
        ("participants", shown["participants"].clone()),
        ("server_time_ms", shown["server_time_ms"].clone()),
        ("captured_at_ms", shown["captured_at_ms"].clone()),
        ("expire_after_secs", shown["expire_after_secs"].clone()),
        ("burn_on_read", shown["burn_on_read"].clone()),
        ("note", shown["note"].clone()),
        ("message_sha256", hex(&receipt["message_sha256"]).into()),
        ("receipt_signature", hex(&receipt["signature"]).into()),
        ("receipt_key", hex(&receipt["server_key"]).into()),
        ("content_commitment", shown["content_commitment"].clone()),
    ];
    let rebuilt = format!(
        "{{{}}}",
        fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(shown["content_commitment"].is_string(), "{shown:#}");
    assert_eq!(rebuilt, proof["leaf"].as_str().unwrap());
}
