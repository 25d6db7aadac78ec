//! `keepwire witness` over HTTP (C2SP tlog-witness `add-checkpoint`),
//! driven with checkpoints and consistency proofs from a real archive:
//! cosigned from first contact, growth cosigned with a proof, a stale
//! request answered with the witness's size as `text/x.tlog.size`, an
//! oversized body refused, and its state kept across a restart. Then the
//! whole loop: a records service gathering cosignatures, `records verify`
//! requiring them, and an archive forged with the stolen checkpoint key
//! caught because no witness cosigns it.

mod common;

use std::io::{Read, Write};

use common::{free_port, keepwire, ok, spawn_logged, wait_for, Agency};
use keepwire_records::witness::CosignatureVerifier;
use serde_json::Value;

/// POST `body` to `path`: status, headers (lower-cased), body.
fn post(addr: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

/// GET `path`: the body of a 200.
fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    if head.starts_with("HTTP/1.1 200") {
        body.to_string()
    } else {
        String::new()
    }
}

/// A witness made in `dir` and serving for the log `log_key`: the child,
/// its verifier key, its address.
fn witness(tmp: &std::path::Path, log_key: &str) -> (std::process::Child, String, String) {
    let dir = tmp.join("witness");
    let wkey = ok(keepwire(
        &[
            "witness",
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--name",
            "witness.oig.example/1",
        ],
        &[],
    ))
    .trim()
    .to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = spawn_logged(
        &[
            "witness",
            "serve",
            "--dir",
            dir.to_str().unwrap(),
            "--log",
            log_key,
            "--listen",
            &addr,
        ],
        &tmp.join("witness.log"),
        "keepwire witness",
    );
    (child, wkey, addr)
}

/// `records verify --json` with `extra`: whether it passed, its report.
fn verify(agency: &Agency, extra: &[&str]) -> (bool, Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let out = agency.records_output(&args);
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

/// The whole loop, and the attack it exists for. The records service
/// sends each checkpoint to its witness and keeps the cosignature; the
/// server publishes it to devices; `records verify --witness` requires
/// it. Then an insider with the stolen checkpoint key replaces the
/// deployment's data with a history of their own making, signed with that
/// key: plain `verify` cannot tell (the log, its checkpoints and the
/// server's chain all agree, under the right key), but no checkpoint of it
/// is cosigned, and the witness, asked, refuses it.
#[test]
fn an_archive_forged_with_the_stolen_key_is_caught_because_no_witness_cosigns_it() {
    let mut agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    let pub_file = agency.data.join("records/checkpoint.pub");
    let log_key = wait_for("the log's key", 30, || {
        std::fs::read_to_string(&pub_file).ok()
    })
    .trim()
    .to_string();
    let (mut served, wkey, addr) = witness(agency.tmp.path(), &log_key);
    let witness_at = format!("{wkey}@http://{addr}");
    agency.restart(&["--checkpoint-secs", "1", "--witness", &witness_at]);
    alice.send(&conv, "the real record");
    agency.wait_captured(1);

    // Cosigned, kept in the archive, and required by verify.
    let report = wait_for("a witnessed checkpoint of the whole log", 60, || {
        let (passed, r) = verify(&agency, &["--witness", &wkey]);
        (passed && r["witnessed_size"] == r["tree_size"]).then_some(r)
    });
    assert_eq!(
        report["witnesses"],
        "1 of the 1 witnesses (witness.oig.example/1)"
    );
    // Published with its cosignature: what devices fetch.
    let published = wait_for("the cosigned checkpoint published", 30, || {
        let note = get(&agency.listen, "/checkpoint");
        note.contains("\u{2014} witness.oig.example/1 ")
            .then_some(note)
    });
    assert!(published.starts_with(log_key.split('+').next().unwrap()));
    let size: u64 = published.lines().nth(1).unwrap().parse().unwrap();
    // A device that requires a witness that never cosigned (2 of 2) pins
    // nothing; one that requires this witness pins the cosigned checkpoint.
    let other = agency.tmp.path().join("other");
    let never_key = ok(keepwire(
        &[
            "witness",
            "init",
            "--dir",
            other.to_str().unwrap(),
            "--name",
            "w.never.example/1",
        ],
        &[],
    ))
    .trim()
    .to_string();
    let pinned = bob.json(&[
        "chat",
        "checkpoint",
        "--witness",
        &wkey,
        "--witness",
        &never_key,
    ]);
    assert!(pinned.is_null(), "pinned without the quorum: {pinned}");
    let pinned = bob.json(&["chat", "checkpoint", "--witness", &wkey]);
    assert!(pinned["size"].as_u64().unwrap() >= size, "{pinned}");
    assert_eq!(
        pinned["cosigners"],
        serde_json::json!(["witness.oig.example/1"])
    );
    // `KEY@URL`, as the records service is given it, works for verify too;
    // a quorum that cannot be met is refused.
    assert!(verify(&agency, &["--witness", &witness_at]).0);
    let out = agency.records_output(&["verify", "--witness", &wkey, "--witness-quorum", "2"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("cannot be met"),
        "{}",
        common::stderr(&out)
    );
    agency.stop();

    // The tail cut off, and with it every checkpoint kept here that the
    // witness cosigned: the archive's own history shows nothing witnessed
    // beyond the cut, but the witness, asked, remembers more.
    let archive = rusqlite::Connection::open(agency.data.join("records/archive.db")).unwrap();
    let size: i64 = archive
        .query_row("SELECT COUNT(*) FROM tlog_leaves", [], |r| r.get(0))
        .unwrap();
    archive
        .execute("DELETE FROM tlog_leaves WHERE n >= ?1", [size - 1])
        .unwrap();
    archive
        .execute("DELETE FROM checkpoints WHERE size >= ?1", [size])
        .unwrap();
    drop(archive);
    let (passed, report) = verify(&agency, &["--witness", &witness_at]);
    assert!(!passed, "{report:#}");
    assert!(
        report["problems"].as_array().unwrap().iter().any(|p| {
            p["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("cosigned a checkpoint of {size} leaves"))
        }),
        "{report:#}"
    );

    // The insider's own deployment, signing with the stolen key.
    let keys = agency.key_dir();
    let forger = Agency::start_with(&[
        "--key-dir",
        keys.to_str().unwrap(),
        "--checkpoint-secs",
        "1",
    ]);
    let (mallory, conv2) = forger.alice_and_bob();
    mallory.send(&conv2, "a forged record");
    // (Its key directory is the stolen one, not the default `records`
    // commands would read: the leaves are looked at directly.)
    wait_for("the forged message archived", 30, || {
        forger
            .leaves("record")
            .iter()
            .any(|l| l.contains("\"kind\":\"application\""))
            .then_some(())
    });
    wait_for("the whole forged log checkpointed", 30, || {
        let note = get(&forger.listen, "/checkpoint");
        let size: u64 = note.lines().nth(1)?.parse().ok()?;
        (verify(&forger, &[]).1["tree_size"] == size).then_some(())
    });
    let mut forger = forger;
    forger.stop();
    assert_eq!(
        std::fs::read_to_string(forger.data.join("records/checkpoint.pub"))
            .unwrap()
            .trim(),
        log_key,
        "the forgery is signed with the archive's own key"
    );
    // Swapped in for the real data.
    std::fs::remove_dir_all(&agency.data).unwrap();
    let copied = std::process::Command::new("cp")
        .args([
            "-a",
            forger.data.to_str().unwrap(),
            agency.data.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copied.success());

    // Plain verify is fooled: everything agrees, under the right key.
    let (passed, report) = verify(&agency, &[]);
    assert!(passed, "{report:#}");
    assert_eq!(
        report["external_checkpoints"], 1,
        "the server's chain agrees too"
    );
    // With the witness, it is not.
    let (passed, report) = verify(&agency, &["--witness", &wkey]);
    assert!(!passed, "{report:#}");
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["kind"] == "unwitnessed"),
        "{report:#}"
    );
    assert!(report["witnessed_size"].is_null());

    // Served again, the forgery goes to the witness, which refuses it,
    // and the records service says so loudly.
    let log_path = agency.data.with_file_name("serve.log");
    let skip = std::fs::metadata(&log_path).unwrap().len() as usize;
    agency.restart(&["--checkpoint-secs", "1", "--witness", &witness_at]);
    wait_for("the witness's refusal in the log", 60, || {
        common::log_after(&log_path, skip)
            .contains("WITNESS DISAGREEMENT")
            .then_some(())
    });
    // And it never cosigned it: verify still finds no witnessed checkpoint.
    let (passed, _) = verify(&agency, &["--witness", &wkey]);
    assert!(!passed);
    agency.stop();
    served.kill().unwrap();
    served.wait().unwrap();
}

fn checkpoint(agency: &Agency) -> (String, u64, String) {
    let v: Value =
        serde_json::from_str(&ok(agency.records_output(&["checkpoint", "--json"]))).unwrap();
    (
        v["checkpoint"].as_str().unwrap().to_string(),
        v["tree_size"].as_u64().unwrap(),
        v["verifier_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_witness_cosigns_the_archive_over_http_and_keeps_its_state() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "witnessed");
    agency.wait_captured(1);
    agency.stop();
    // The records office alone signs the checkpoints sent here by hand.
    let _office = agency.office();

    let dir = agency.tmp.path().join("witness");
    let wkey = ok(keepwire(
        &[
            "witness",
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--name",
            "witness.oig.example/1",
        ],
        &[],
    ))
    .trim()
    .to_string();
    let verifier = CosignatureVerifier::new(&wkey).unwrap();
    let (note, size, log_key) = checkpoint(&agency);
    let addr = format!("127.0.0.1:{}", free_port());
    let log = agency.tmp.path().join("witness.log");
    let start = || {
        spawn_logged(
            &[
                "witness",
                "serve",
                "--dir",
                dir.to_str().unwrap(),
                "--log",
                &log_key,
                "--listen",
                &addr,
            ],
            &log,
            "keepwire witness",
        )
    };
    let mut served = start();

    // First contact: old 0, no proof. The answer is a cosignature of
    // exactly the checkpoint's body, by the witness's key.
    let (status, _, body) = post(
        &addr,
        "/add-checkpoint",
        format!("old 0\n\n{note}").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let sig = signed_note::Signature::from_bytes(body.trim_end().as_bytes()).unwrap();
    assert_eq!(sig.name(), "witness.oig.example/1");
    let text = note.split_once("\n\n").unwrap().0.to_string() + "\n";
    assert!(verifier.time_of(text.as_bytes(), sig.signature()).is_some());

    // Again from 0: the witness is at `size` and says so, as the spec asks.
    let (status, head, body) = post(
        &addr,
        "/add-checkpoint",
        format!("old 0\n\n{note}").as_bytes(),
    );
    assert_eq!(status, 409);
    assert!(head.contains("content-type: text/x.tlog.size"), "{head}");
    assert_eq!(body, format!("{size}\n"));

    // The log grows (a view, covered by a checkpoint); with the proof from
    // `size` the new checkpoint is cosigned.
    let first = agency.records(false)[0]["id"].as_i64().unwrap().to_string();
    ok(agency.records_output(&["show", &first]));
    let (note2, size2, _) = checkpoint(&agency);
    assert!(size2 > size);
    let proof: Value = serde_json::from_str(&ok(agency.records_output(&[
        "consistency",
        &size.to_string(),
        &size2.to_string(),
    ])))
    .unwrap();
    let mut req = format!("old {size}\n");
    for h in proof["consistency_path"].as_array().unwrap() {
        req.push_str(h.as_str().unwrap());
        req.push('\n');
    }
    req.push('\n');
    req.push_str(&note2);
    let (status, _, body) = post(&addr, "/add-checkpoint", req.as_bytes());
    assert_eq!(status, 200, "{body}");
    // An oversized body is refused before it is read.
    let (status, _, _) = post(&addr, "/add-checkpoint", &vec![b'a'; 64 * 1024]);
    assert_eq!(status, 413);

    // Restarted, it remembers what it cosigned.
    served.kill().unwrap();
    served.wait().unwrap();
    let mut served = start();
    let (status, _, body) = post(
        &addr,
        "/add-checkpoint",
        format!("old 0\n\n{note}").as_bytes(),
    );
    assert_eq!((status, body), (409, format!("{size2}\n")));
    // A second witness process on the same directory refuses to start.
    let out = keepwire(
        &[
            "witness",
            "serve",
            "--dir",
            dir.to_str().unwrap(),
            "--log",
            &log_key,
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!out.status.success());
    served.kill().unwrap();
    served.wait().unwrap();
}
