//! The tamper-evident archive, end to end: proofs checked by a verifier
//! written here from RFC 9162 and the C2SP signed-note format (not the
//! production code path), and `records verify` run against a real archive
//! altered on disk in every way an insider might try.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use common::{keepwire, ok, signed_in, KEEPER, OFFICER};
use serde_json::Value;
use sha2::{Digest, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One demo archive, made once; each test works on its own copy. It has
/// the test accounts ([`KEEPER`], [`OFFICER`]), and a checkpoint of the
/// whole log, as the running service would sign.
fn demo_archive() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("demo");
        let d = dir.to_str().unwrap();
        ok(keepwire(
            &["demo", "--json", "--timer", "1", "--data-dir", d],
            &[],
        ));
        let office = common::start_office(d);
        common::make_accounts(&["--data-dir", d]);
        ok(keepwire(
            &["records", "checkpoint", "--data-dir", d],
            &signed_in(OFFICER),
        ));
        drop(office);
        let _ = std::fs::remove_file(dir.join("records").join("office.url"));
        dir
    })
}

/// A copy of the demo's archive, with its keys (the key directory beside
/// the data directory).
fn copy_archive() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        let mode = std::fs::metadata(from).unwrap().permissions();
        std::fs::set_permissions(to, mode).unwrap();
        for f in std::fs::read_dir(from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    };
    copy(&demo_archive().join("records"), &data.join("records"));
    copy(
        &demo_archive().with_file_name("demo.keys"),
        &tmp.path().join("data.keys"),
    );
    (tmp, data.to_str().unwrap().to_string())
}

fn db(data_dir: &str) -> rusqlite::Connection {
    rusqlite::Connection::open(Path::new(data_dir).join("records").join("archive.db")).unwrap()
}

fn verify(data_dir: &str) -> (bool, Value) {
    let out = keepwire(
        &["records", "verify", "--json", "--data-dir", data_dir],
        &[],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// `verify` fails and names `kind` (at `record`, when given).
fn detects(data_dir: &str, kind: &str, record: Option<i64>) -> Value {
    let (passed, report) = verify(data_dir);
    assert!(!passed, "verify must fail: {report:#}");
    let problems = report["problems"].as_array().unwrap();
    let hit = problems
        .iter()
        .find(|p| p["kind"] == kind && record.is_none_or(|id| p["record_id"].as_i64() == Some(id)));
    assert!(
        hit.is_some(),
        "expected a `{kind}` problem{}: {problems:#?}",
        record
            .map(|r| format!(" at record {r}"))
            .unwrap_or_default()
    );
    hit.unwrap().clone()
}

/// An application record's id and its (conv, seq).
fn an_application(c: &rusqlite::Connection) -> (i64, String, i64) {
    c.query_row(
        "SELECT id, conv, seq FROM records WHERE kind='application' ORDER BY id LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

// ---- an RFC 9162 verifier, from the RFC's text ----

fn node(l: &[u8], r: &[u8]) -> Vec<u8> {
    Sha256::digest([&[1u8][..], l, r].concat()).to_vec()
}

/// RFC 9162 §2.1.3.2.
fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    path: &[Vec<u8>],
    root: &[u8],
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnn, mut sn) = (index, size - 1);
    let mut r = leaf_hash.to_vec();
    for p in path {
        if sn == 0 {
            return false;
        }
        if fnn & 1 == 1 || fnn == sn {
            r = node(p, &r);
            if fnn & 1 == 0 {
                while fnn & 1 == 0 && fnn != 0 {
                    fnn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == root
}

/// RFC 9162 §2.1.4.2.
fn verify_consistency(
    first: u64,
    second: u64,
    first_hash: &[u8],
    second_hash: &[u8],
    path: &[Vec<u8>],
) -> bool {
    if path.is_empty() || first == 0 || first >= second {
        return false;
    }
    let mut path = path.to_vec();
    if first.is_power_of_two() {
        path.insert(0, first_hash.to_vec());
    }
    let (mut fnn, mut sn) = (first - 1, second - 1);
    while fnn & 1 == 1 {
        fnn >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0].clone(), path[0].clone());
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fnn & 1 == 1 || fnn == sn {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if fnn & 1 == 0 {
                while fnn & 1 == 0 && fnn != 0 {
                    fnn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node(&sr, c);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    fr == first_hash && sr == second_hash && sn == 0
}

/// A C2SP checkpoint in a signed note, checked with ed25519 directly:
/// returns (origin, size, root).
fn open_checkpoint(note: &str, verifier_key: &str) -> (String, u64, Vec<u8>) {
    let (text, sigs) = note
        .split_once("\n\n")
        .expect("text, blank line, signatures");
    let text = format!("{text}\n");
    // verifier key: name+hexid+base64(0x01 || ed25519 public key)
    let mut parts = verifier_key.splitn(3, '+');
    let (name, id, key) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let key = B64.decode(key).unwrap();
    assert_eq!(key[0], 1, "Ed25519 algorithm byte");
    let pk = ed25519_dalek::VerifyingKey::from_bytes(key[1..].try_into().unwrap()).unwrap();
    let line = sigs
        .lines()
        .find(|l| l.starts_with(&format!("— {name} ")))
        .expect("a signature by the archive's key");
    let sig = B64.decode(line.rsplit(' ').next().unwrap()).unwrap();
    assert_eq!(hex4(&sig[..4]), id, "key id");
    let sig = ed25519_dalek::Signature::from_slice(&sig[4..]).unwrap();
    use ed25519_dalek::Verifier;
    pk.verify(text.as_bytes(), &sig)
        .expect("checkpoint signature");
    let mut lines = text.lines();
    let origin = lines.next().unwrap().to_string();
    let size = lines.next().unwrap().parse().unwrap();
    let root = B64.decode(lines.next().unwrap()).unwrap();
    (origin, size, root)
}

fn hex4(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64list(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn proofs_check_out_with_an_independent_rfc_9162_verifier() {
    let (_tmp, d) = copy_archive();
    let (passed, report) = verify(&d);
    assert!(passed, "a fresh archive verifies: {report:#}");
    let verifier_key =
        std::fs::read_to_string(Path::new(&d).join("records/checkpoint.pub")).unwrap();
    let verifier_key = verifier_key.trim();

    let (id, _, _) = an_application(&db(&d));
    let proof: Value = serde_json::from_str(&ok(keepwire(
        &["records", "proof", &id.to_string(), "--data-dir", &d],
        &[],
    )))
    .unwrap();
    let (_, size, root) = open_checkpoint(proof["checkpoint"].as_str().unwrap(), verifier_key);
    assert_eq!(size, proof["tree_size"].as_u64().unwrap());
    let leaf = proof["leaf"].as_str().unwrap();
    let leaf_hash = Sha256::digest([&[0u8][..], leaf.as_bytes()].concat()).to_vec();
    let path = b64list(&proof["inclusion_path"]);
    let index = proof["leaf_index"].as_u64().unwrap();
    assert!(verify_inclusion(index, size, &leaf_hash, &path, &root));
    // The leaf is this record: its receipt's hash of the MLS message.
    let leaf: Value = serde_json::from_str(leaf).unwrap();
    assert_eq!(leaf["type"], "record");
    assert!(leaf["content_commitment"].as_str().is_some());
    // A wrong leaf or a wrong position does not verify.
    let other = Sha256::digest(b"\x00something else").to_vec();
    assert!(!verify_inclusion(index, size, &other, &path, &root));
    assert!(!verify_inclusion(
        (index + 1) % size,
        size,
        &leaf_hash,
        &path,
        &root
    ));

    for (old, new) in [(1, size), (3, size), (4, size), (size - 1, size)] {
        let c: Value = serde_json::from_str(&ok(keepwire(
            &[
                "records",
                "consistency",
                &old.to_string(),
                &new.to_string(),
                "--data-dir",
                &d,
            ],
            &[],
        )))
        .unwrap();
        let old_root = B64.decode(c["old_root"].as_str().unwrap()).unwrap();
        let new_root = B64.decode(c["new_root"].as_str().unwrap()).unwrap();
        assert_eq!(new_root, root, "the newest root is the checkpoint's");
        let path = b64list(&c["consistency_path"]);
        assert!(
            verify_consistency(old, new, &old_root, &new_root, &path),
            "consistency {old} -> {new}"
        );
        assert!(!verify_consistency(old, new, &other, &new_root, &path));
    }
}

#[test]
fn destroying_content_keeps_the_record_verifiable_and_the_content_gone() {
    let (tmp, d) = copy_archive();
    // Eight years on.
    let clock = tmp.path().join("clock");
    std::fs::write(&clock, common::offset_to("2035-01-02").to_string()).unwrap();
    common::use_clock(&clock);
    let _office = common::start_office(&d);
    let (id, _, _) = an_application(&db(&d));
    let id = id.to_string();
    let records = |args: &[&str], who: [(&str, &str); 2]| -> Value {
        let mut all = vec!["records"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--json", "--data-dir", &d]);
        serde_json::from_str(&ok(keepwire(&all, &who))).unwrap()
    };
    const LEE: (&str, &str) = ("lee", "lee's long passphrase");
    let mut keeper = signed_in(common::KEEPER).to_vec();
    keeper.push(("KEEPWIRE_RECORDS_NEW_PASSWORD", LEE.1));
    ok(keepwire(
        &[
            "records",
            "account",
            "add",
            LEE.0,
            "--role",
            "legal",
            "--data-dir",
            &d,
        ],
        &keeper,
    ));
    // The demo's messages are permanent (bob, a Capstone official, took
    // part): refused, then destroyed only forced, approved, and with an
    // incident.
    let refused = keepwire(
        &["records", "destroy", &id, "--data-dir", &d],
        &signed_in(OFFICER),
    );
    assert!(
        common::stderr(&refused).contains("permanent"),
        "{}",
        common::stderr(&refused)
    );
    let proposed = records(
        &[
            "destroy",
            &id,
            "--force",
            "--reason",
            "court-ordered expungement",
        ],
        signed_in(OFFICER),
    );
    let batch = proposed["batch"].to_string();
    assert_eq!(proposed["needs_approval"], true);
    records(&["disposition", "approve", &batch], signed_in(LEE));
    let done = records(&["disposition", "execute", &batch], signed_in(OFFICER));
    assert_eq!(done["certificate"]["destroyed"][0]["id"].to_string(), id);
    assert!(done["incident"].is_u64(), "{done}");
    let (passed, report) = verify(&d);
    assert!(passed, "{report:#}");
    let shown = records(&["show", &id], signed_in(OFFICER));
    assert!(
        shown["text"].is_null(),
        "no content after destruction: {shown}"
    );
    assert_eq!(shown["has_content"], false);
    let again = keepwire(
        &["records", "destroy", &id, "--data-dir", &d],
        &signed_in(OFFICER),
    );
    assert!(!again.status.success());
    assert!(
        common::stderr(&again).contains("holds no content"),
        "{}",
        common::stderr(&again)
    );
}

#[test]
fn every_kind_of_tampering_is_detected_and_named() {
    // Each case: what to do to a fresh copy, and what verify must say.
    type Tamper = fn(&rusqlite::Connection) -> (&'static str, Option<i64>);
    let cases: Vec<(&str, Tamper)> = vec![
        ("one byte of a record's ciphertext", |c| {
            let (id, _, _) = an_application(c);
            let mut body: Vec<u8> = c
                .query_row("SELECT body FROM records WHERE id=?1", [id], |r| r.get(0))
                .unwrap();
            body[30] ^= 0xff;
            c.execute(
                "UPDATE records SET body=?1 WHERE id=?2",
                rusqlite::params![body, id],
            )
            .unwrap();
            ("altered", Some(id))
        }),
        ("the sender", |c| {
            let (id, _, _) = an_application(c);
            c.execute("UPDATE records SET sender='mallory/x' WHERE id=?1", [id])
                .unwrap();
            ("altered", Some(id))
        }),
        ("the server time", |c| {
            let (id, _, _) = an_application(c);
            c.execute(
                "UPDATE records SET server_time_ms = server_time_ms + 1 WHERE id=?1",
                [id],
            )
            .unwrap();
            ("altered", Some(id))
        }),
        ("the participants", |c| {
            let (id, _, _) = an_application(c);
            c.execute("UPDATE records SET participants='[]' WHERE id=?1", [id])
                .unwrap();
            ("altered", Some(id))
        }),
        ("a deleted record row", |c| {
            let (id, _, _) = an_application(c);
            c.execute("DELETE FROM records WHERE id=?1", [id]).unwrap();
            ("missing", Some(id))
        }),
        ("a deleted leaf", |c| {
            c.execute("DELETE FROM tlog_leaves WHERE n = 2", [])
                .unwrap();
            ("missing", None)
        }),
        ("two records swapped", |c| {
            let ids: Vec<i64> = c
                .prepare("SELECT id FROM records WHERE kind='application' ORDER BY id LIMIT 2")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            c.execute_batch(&format!(
                "UPDATE records SET leaf = -1 WHERE id={a};
                 UPDATE records SET leaf = (SELECT n FROM tlog_leaves WHERE record_id={a}) WHERE id={b};
                 UPDATE records SET leaf = (SELECT n FROM tlog_leaves WHERE record_id={b}) WHERE id={a};",
                a = ids[0],
                b = ids[1]
            ))
            .unwrap();
            ("reordered", Some(ids[0]))
        }),
        ("a truncated log", |c| {
            let n: i64 = c
                .query_row("SELECT MAX(n) FROM tlog_leaves", [], |r| r.get(0))
                .unwrap();
            c.execute("DELETE FROM tlog_leaves WHERE n >= ?1", [n - 1])
                .unwrap();
            ("forked_checkpoint", None)
        }),
        ("a forged checkpoint", |c| {
            // Claim a smaller tree: the signature no longer covers the text.
            let note: String = c
                .query_row(
                    "SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            let mut lines: Vec<String> = note.split('\n').map(String::from).collect();
            let size: u64 = lines[1].parse().unwrap();
            lines[1] = (size - 1).to_string();
            c.execute(
                "UPDATE checkpoints SET note=?1 WHERE id=(SELECT MAX(id) FROM checkpoints)",
                [lines.join("\n")],
            )
            .unwrap();
            ("bad_signature", None)
        }),
        ("a replaced server receipt", |c| {
            let (id, _, _) = an_application(c);
            let receipt: String = c
                .query_row("SELECT receipt FROM records WHERE id=?1", [id], |r| {
                    r.get(0)
                })
                .unwrap();
            let mut v: Value = serde_json::from_str(&receipt).unwrap();
            v["signature"] = Value::String(B64.encode([7u8; 64]));
            c.execute(
                "UPDATE records SET receipt=?1 WHERE id=?2",
                rusqlite::params![v.to_string(), id],
            )
            .unwrap();
            ("bad_signature", Some(id))
        }),
        ("a dropped sequence number", |c| {
            let (id, _, _) = an_application(c);
            c.execute("DELETE FROM tlog_leaves WHERE record_id=?1", [id])
                .unwrap();
            c.execute("DELETE FROM records WHERE id=?1", [id]).unwrap();
            ("gap", None)
        }),
        ("a data key destroyed without a tombstone", |c| {
            let (id, _, _) = an_application(c);
            c.execute(
                "UPDATE records SET wrapped_key=NULL, body=NULL WHERE id=?1",
                [id],
            )
            .unwrap();
            ("missing_tombstone", Some(id))
        }),
    ];
    for (what, tamper) in cases {
        let (_tmp, d) = copy_archive();
        let (kind, record) = {
            let c = db(&d);
            tamper(&c)
        };
        let problem = detects(&d, kind, record);
        assert!(
            !problem["detail"].as_str().unwrap().is_empty(),
            "{what}: the problem says what and where"
        );
        eprintln!("{what}: {kind} — {}", problem["detail"]);
    }
}

#[test]
fn viewing_a_record_is_itself_logged() {
    let (_tmp, d) = copy_archive();
    let office = common::start_office(&d);
    let before: i64 = db(&d)
        .query_row(
            "SELECT COUNT(*) FROM tlog_leaves WHERE kind='action'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (id, _, _) = an_application(&db(&d));
    ok(keepwire(
        &["records", "show", &id.to_string(), "--data-dir", &d],
        &signed_in(OFFICER),
    ));
    drop(office);
    let (n, data): (i64, Vec<u8>) = db(&d)
        .query_row(
            "SELECT COUNT(*), (SELECT data FROM tlog_leaves WHERE kind='action' ORDER BY n DESC LIMIT 1)
             FROM tlog_leaves WHERE kind='action'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(n, before + 1);
    let leaf: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(
        leaf["actor"], OFFICER.0,
        "the signed-in account, no one else"
    );
    assert_eq!(leaf["action"], "view");
    assert!(verify(&d).0);

    // The view was covered by a signed checkpoint before it was shown: an
    // insider who erases its leaf (issue 12's "erased view") contradicts it.
    let size: i64 = db(&d)
        .query_row("SELECT COUNT(*) FROM tlog_leaves", [], |r| r.get(0))
        .unwrap();
    let covered: i64 = db(&d)
        .query_row("SELECT MAX(size) FROM checkpoints", [], |r| r.get(0))
        .unwrap();
    assert_eq!(covered, size, "a checkpoint covers the view");
    db(&d)
        .execute("DELETE FROM tlog_leaves WHERE n = ?1", [size - 1])
        .unwrap();
    detects(&d, "forked_checkpoint", None);
}

/// `verify`, `proof` and `consistency` are an auditor's commands: they
/// open the archive read-only and write nothing — not even a checkpoint.
#[test]
fn verify_and_proofs_write_nothing() {
    let (_tmp, d) = copy_archive();
    let (id, _, _) = an_application(&db(&d));
    let state = |d: &str| -> (i64, i64) {
        let c = db(d);
        let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        (
            count("SELECT COUNT(*) FROM tlog_leaves"),
            count("SELECT COUNT(*) FROM checkpoints"),
        )
    };
    let before = state(&d);
    assert!(verify(&d).0);
    ok(keepwire(
        &["records", "proof", &id.to_string(), "--data-dir", &d],
        &[],
    ));
    ok(keepwire(
        &["records", "consistency", "1", "2", "--data-dir", &d],
        &[],
    ));
    assert_eq!(state(&d), before, "no leaf and no checkpoint written");
}

#[test]
fn rotating_the_archive_key_rewraps_data_keys_without_reencrypting_content() {
    let (_tmp, d) = copy_archive();
    let (id, _, _) = an_application(&db(&d));
    // Shown through a records office run for the purpose, stopped after.
    let show = |d: &str| -> Value {
        let _office = common::start_office(d);
        serde_json::from_str(&ok(keepwire(
            &[
                "records",
                "show",
                &id.to_string(),
                "--json",
                "--data-dir",
                d,
            ],
            &signed_in(OFFICER),
        )))
        .unwrap()
    };
    let before = show(&d);
    let key = |d: &str| -> (String, String) {
        let get = |k: &str| -> String {
            db(d)
                .query_row("SELECT v FROM archive_meta WHERE k=?1", [k], |r| r.get(0))
                .unwrap()
        };
        (get("key_id"), get("archive_key"))
    };
    let old_key = key(&d);
    let blobs = |d: &str| -> (Vec<u8>, Vec<u8>) {
        db(d)
            .query_row(
                "SELECT body, wrapped_key FROM records WHERE id=?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let (body_before, wrapped_before) = blobs(&d);

    let (keeper, officer) = (signed_in(KEEPER), signed_in(OFFICER));
    let rotate = |who| keepwire(&["records", "rotate-key", "--data-dir", &d], who);
    // Not while the records office holds the key it wraps with, and only
    // by an admin.
    let office = common::start_office(&d);
    let out = rotate(&keeper);
    assert!(
        !out.status.success() && common::stderr(&out).contains("records office"),
        "{}",
        common::stderr(&out)
    );
    drop(office);
    let out = rotate(&officer);
    assert!(
        common::stderr(&out).contains("may not manage the archive's keys"),
        "{}",
        common::stderr(&out)
    );
    let out = ok(rotate(&keeper));
    assert!(out.contains("re-wrapped"), "{out}");
    let new_key = key(&d);
    assert_ne!(new_key.0, old_key.0, "a new archive key");
    assert_ne!(new_key.1, old_key.1, "sealed anew by the key provider");
    let (body_after, wrapped_after) = blobs(&d);
    assert_eq!(body_after, body_before, "content is not re-encrypted");
    assert_ne!(wrapped_after, wrapped_before, "its data key is re-wrapped");
    assert_eq!(show(&d)["text"], before["text"]);
    let (passed, report) = verify(&d);
    assert!(passed, "{report:#}");
    let logged: i64 = db(&d)
        .query_row(
            "SELECT COUNT(*) FROM tlog_leaves WHERE kind='action' AND CAST(data AS TEXT) LIKE '%rotate-key%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(logged, 1, "the rotation is in the log");
}

/// Devices pin the archive's checkpoints: each newer one must extend the
/// last they saw, and a rewritten history stops them loudly. The records
/// service, a witness of the same chain, stops too (it runs apart here,
/// so the server stays up for the devices to find the fork).
#[test]
fn devices_witness_the_archive_and_report_a_fork() {
    let mut agency = common::Agency::start_split_with(&[], &["--checkpoint-secs", "1"]);
    let alice = agency.user("alice", "staff");
    agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "first");
    let pinned = |min: u64| {
        common::wait_for("a witnessed checkpoint", 30, || {
            let v = alice.json(&["chat", "checkpoint"]);
            (v["size"].as_u64().unwrap_or(0) >= min).then_some(v)
        })
    };
    let first = pinned(2);
    let first_size = first["size"].as_u64().unwrap();
    alice.send(&conv, "second");
    alice.send(&conv, "third");
    let later = pinned(first_size + 2);
    assert!(later["checkpoint"]
        .as_str()
        .unwrap()
        .starts_with("keepwire.archive/"));
    // Served to anyone, without authentication.
    let body = http_get(&agency.listen, "/checkpoint");
    assert!(body.contains("keepwire.archive/"), "{body}");

    // Someone with the archive's signing key publishes a history that does
    // not extend what alice saw.
    let size = later["size"].as_u64().unwrap();
    let skey = std::fs::read_to_string(agency.key_dir().join("checkpoint.key")).unwrap();
    let signer = signed_note::StandardSigner::new(skey.trim()).unwrap();
    let origin = later["checkpoint"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let text = tlog_tiles::checkpoint::Checkpoint::new(
        &origin,
        size + 3,
        tlog_tiles::tlog::Hash([9; 32]),
        "",
    )
    .unwrap()
    .to_bytes();
    let mut note = signed_note::Note::new(&text, &[]).unwrap();
    note.add_sigs(&[&signer]).unwrap();
    let server = rusqlite::Connection::open(agency.data.join("server.db")).unwrap();
    server
        .execute(
            "INSERT INTO checkpoints (size, note, from_size, path) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                (size + 3) as i64,
                String::from_utf8(note.to_bytes()).unwrap(),
                size as i64,
                vec![0u8; 64]
            ],
        )
        .unwrap();
    let out = alice.run(&["chat", "read", &conv]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains("ARCHIVE LOG FORK"), "{err}");
    let records = agency.records.as_mut().unwrap();
    let status = common::wait_for("the records service to stop", 30, || {
        records.try_wait().unwrap()
    });
    assert!(!status.success());
    let log = common::log_after(&agency.tmp.path().join("records.log"), 0);
    assert!(
        log.contains("the archive does not match a checkpoint it signed"),
        "{log}"
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The server's receipt key can be rotated; receipts signed by the old
/// key stay verifiable, and both keys are published.
#[test]
fn receipts_stay_verifiable_across_a_receipt_key_rotation() {
    let mut agency = common::Agency::start();
    let alice = agency.user("alice", "staff");
    agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "signed by the first key");
    agency.wait_captured(1);
    let out = agency.admin(&["rotate-receipt-key"]);
    assert!(out.contains("restart the server"), "{out}");
    agency.restart(&[]);
    alice.send(&conv, "signed by the second key");
    agency.wait_captured(2);

    let records = agency.records(false);
    assert_ne!(
        records[0]["receipt"]["server_key"], records[1]["receipt"]["server_key"],
        "the two messages were receipted by different keys"
    );
    let body = http_get(&agency.listen, "/v1/receipt-keys");
    let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
    let keys: Value = serde_json::from_str(json).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    assert!(
        keys[0]["until_ms"].as_u64().is_some(),
        "the old key is retired, not forgotten"
    );
    let (passed, report) = verify(agency.data_dir());
    assert!(passed, "{report:#}");
}

/// Attacks by someone who can write the archive's database but does not
/// hold the checkpoint key: relabelling leaves to hide deleted rows, and
/// rewriting the tail of the log together with the stored checkpoints —
/// caught against a checkpoint kept outside the archive.
#[test]
fn insider_rewrites_are_caught_by_the_hashed_leaves_and_an_outside_checkpoint() {
    // Hide a deleted record by relabelling its leaf in the index columns.
    let (_tmp, d) = copy_archive();
    {
        let c = db(&d);
        let (id, _, _) = an_application(&c);
        c.execute("DELETE FROM records WHERE id=?1", [id]).unwrap();
        c.execute(
            "UPDATE tlog_leaves SET kind='action', record_id=NULL WHERE record_id=?1",
            [id],
        )
        .unwrap();
    }
    let p = detects(&d, "missing", None);
    assert!(
        p["detail"].as_str().unwrap().contains("not in the archive"),
        "{p}"
    );

    // Cut the log back and delete every stored checkpoint: nothing inside
    // the archive disagrees any more, but an auditor's earlier checkpoint
    // does.
    let (tmp, d) = copy_archive();
    let held = tmp.path().join("held-checkpoint");
    // The auditor kept the latest checkpoint, which covers the whole log.
    let (size, note): (i64, String) = db(&d)
        .query_row(
            "SELECT size, note FROM checkpoints ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    std::fs::write(&held, note).unwrap();
    {
        let c = db(&d);
        let n: i64 = c
            .query_row("SELECT MAX(n) FROM tlog_leaves", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n + 1, size, "the held checkpoint covers the whole log");
        c.execute("DELETE FROM tlog_leaves WHERE n=?1", [n])
            .unwrap();
        c.execute("DELETE FROM checkpoints", []).unwrap();
    }
    let out = keepwire(
        &[
            "records",
            "verify",
            "--json",
            "--data-dir",
            &d,
            "--checkpoint",
            held.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["external_checkpoints"], 1);
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "forked_checkpoint"
                && p["detail"]
                    .as_str()
                    .unwrap()
                    .contains("outside the archive")),
        "{report:#}"
    );
}
