//! Upgrades: a deployment written by an earlier keepwire — its server
//! store, archive, records device and members' devices — opens with this
//! one, migrated in place, keeping every record, conversation and message;
//! the conversation goes on; and a database newer than the binary is
//! refused, untouched. The fixtures are real deployments made by those
//! releases' binaries (`tests/fixtures/make-upgrade-fixture.sh`).

mod common;

use std::path::{Path, PathBuf};

use common::{free_port, keepwire, ok, start_serve, stderr, Device};
use serde_json::Value;

/// Unpack fixture `name` into a temporary directory: its root and manifest.
fn unpack(name: &str) -> (tempfile::TempDir, PathBuf, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.tar.gz"));
    let out = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(tmp.path())
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = tmp.path().join(name);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("manifest.json")).unwrap())
            .unwrap();
    (tmp, root, manifest)
}

fn header(db: &Path) -> (i32, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let app: i32 = c
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    let version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    (app, version)
}

fn upgrade(name: &str) {
    let (_tmp, root, m) = unpack(name);
    let data = root.join("data");
    let data_dir = data.to_str().unwrap();
    let conv = m["conv"].as_str().unwrap();
    let mut texts: Vec<String> = m["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    // An enrolment code issued before the upgrade, kept in plain text as
    // those releases did.
    let pending = "ABCD-EFGH-JKLM-NPQ2";
    rusqlite::Connection::open(data.join("server.db"))
        .unwrap()
        .execute(
            "INSERT INTO enrolment_codes (code, user, expires_ms) VALUES (?1, 'alice', ?2)",
            rusqlite::params![pending, i64::MAX],
        )
        .unwrap();
    let server = start_serve(&data, &format!("127.0.0.1:{}", free_port()), &[]);
    // The upgrade keeps codes as their hashes only: what the database
    // holds no longer enrols anyone, and the code itself still does.
    let stored: Vec<String> = rusqlite::Connection::open(data.join("server.db"))
        .unwrap()
        .prepare("SELECT code FROM enrolment_codes")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !stored.iter().any(|c| c.contains('-')),
        "{name}: {stored:?}"
    );
    let phone = Device {
        dir: root.join("devices").join("alice-phone"),
        url: server.url.clone(),
        passphrase: "pass-phone".into(),
        clock_file: None,
        id: String::new(),
    };
    phone.ok(&["chat", "enroll", "--code", &pending.to_lowercase()]);
    let device = |who: &str| Device {
        dir: root.join("devices").join(who),
        url: server.url.clone(),
        passphrase: format!("pass-{who}"),
        clock_file: None,
        id: String::new(),
    };
    let (alice, bob) = (device("alice"), device("bob"));
    // What the members' devices held, they still hold.
    assert_eq!(alice.texts(conv), texts, "{name}: alice's messages");
    assert_eq!(bob.texts(conv), texts, "{name}: bob's messages");
    // Every record is still in the archive, and the archive still proves
    // itself against its transparency log.
    let all: Value = serde_json::from_str(&ok(keepwire(
        &["records", "list", "--data-dir", data_dir, "--all", "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(
        all.as_array().unwrap().len() as u64,
        m["records_all"],
        "{name}"
    );
    ok(keepwire(
        &["records", "verify", "--data-dir", data_dir],
        &[],
    ));
    // The conversation goes on, through the upgraded server and archive.
    alice.send(conv, "after the upgrade");
    texts.push("after the upgrade".into());
    assert_eq!(bob.texts(conv), texts, "{name}: bob reads on");
    let messages: Value = serde_json::from_str(&ok(keepwire(
        &["records", "list", "--data-dir", data_dir, "--json"],
        &[],
    )))
    .unwrap();
    assert_eq!(messages.as_array().unwrap().len(), texts.len(), "{name}");
    // And new conversations start (tables this release added are in use:
    // handed-out key packages, capture-failure marks).
    let fresh = alice.create(&["bob"]);
    alice.send(&fresh, "a new conversation");
    assert_eq!(bob.texts(&fresh), ["a new conversation"]);
    assert_eq!(
        serde_json::from_str::<Value>(&ok(keepwire(
            &["admin", "--data-dir", data_dir, "status", "--json"],
            &[]
        )))
        .unwrap()["withheld_entries"],
        0
    );
    // Each database now says what it is and which schema it holds.
    for (db, kind) in [
        (data.join("server.db"), 0x4b57_5356),
        (data.join("records/archive.db"), 0x4b57_4152),
        (root.join("devices/alice/device.db"), 0x4b57_4456),
    ] {
        let (app, version) = header(&db);
        assert_eq!(app, kind, "{}", db.display());
        assert!(version >= 1, "{}: schema version {version}", db.display());
    }
}

#[test]
fn a_keepwire_0_1_deployment_upgrades_keeping_everything() {
    upgrade("v0.1");
}

#[test]
fn the_deployment_of_issue_10_upgrades_keeping_everything() {
    upgrade("issue-10");
}

#[test]
fn a_database_newer_than_the_binary_is_refused_untouched() {
    let (_tmp, root, _) = unpack("issue-10");
    let data = root.join("data");
    let db = data.join("server.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "application_id", 0x4b57_5356)
            .unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
    }
    let out = keepwire(
        &["admin", "--data-dir", data.to_str().unwrap(), "status"],
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("newer than this binary"), "{err}");
    assert!(err.contains("999"), "{err}");
    assert_eq!(header(&db), (0x4b57_5356, 999), "left as it was");
}
