//! Restores: every order that lost messages silently before. A store put
//! back on its own from an older copy — the server's behind the archive,
//! or the archive behind the server — is refused at start with the
//! conversations and numbers that disagree; a cold copy of the whole
//! deployment starts and carries on without reusing a sequence number.

mod common;

use std::path::Path;

use common::{free_port, keepwire, stderr, Agency};

/// The files of the SQLite database `db` (with its WAL, if any).
fn db_files(db: &Path) -> Vec<std::path::PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| db.with_file_name(format!("{}{s}", db.file_name().unwrap().to_str().unwrap())))
        .filter(|p| p.exists())
        .collect()
}

/// Copy the database `db` to `to` (a directory).
fn save(db: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in db_files(db) {
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// Put back the copy of `db` saved in `from`, as an operator restoring
/// that one file would.
fn put_back(db: &Path, from: &Path) {
    for f in db_files(db) {
        std::fs::remove_file(f).unwrap();
    }
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, db.with_file_name(f.file_name().unwrap())).unwrap();
    }
}

/// `keepwire serve` on the agency's data, expected to refuse: its stderr.
fn refused_start(agency: &Agency) -> String {
    let listen = format!("127.0.0.1:{}", free_port());
    let out = keepwire(
        &[
            "serve",
            "--data-dir",
            agency.data_dir(),
            "--listen",
            &listen,
        ],
        &[],
    );
    assert!(!out.status.success(), "it started");
    assert!(std::net::TcpStream::connect(&listen).is_err());
    stderr(&out)
}

/// Before: a server put back from an older copy receipted new messages at
/// sequence numbers the archive already held, and they reached no one.
#[test]
fn a_server_store_older_than_the_archive_is_refused_naming_the_conversation() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "one");
    agency.wait_captured(1);
    agency.stop();
    let saved = agency.tmp.path().join("server-copy");
    let server_db = agency.data.join("server.db");
    save(&server_db, &saved);

    agency.restart(&[]);
    alice.send(&conv, "two");
    alice.send(&conv, "three");
    agency.wait_captured(3);
    agency.stop();
    put_back(&server_db, &saved);

    let err = refused_start(&agency);
    assert!(
        err.contains("the server's store and the archive disagree"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the archive holds {conv} up to #"))
            && err.contains("the server's store is older"),
        "{err}"
    );
}

/// Before: an archive put back from an older copy sat behind the server's
/// records counter, and what the server had counted as archived was gone.
#[test]
fn an_archive_older_than_the_server_is_refused_naming_the_conversation() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "one");
    agency.wait_captured(1);
    agency.stop();
    let saved = agency.tmp.path().join("archive-copy");
    let archive_db = agency.data.join("records/archive.db");
    save(&archive_db, &saved);

    agency.restart(&[]);
    alice.send(&conv, "two");
    agency.wait_captured(2);
    agency.stop();
    put_back(&archive_db, &saved);

    let err = refused_start(&agency);
    assert!(
        err.contains("the server's store and the archive disagree"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the server counts {conv} archived up to #"))
            && err.contains("the archive is older"),
        "{err}"
    );
}

/// A cold copy of the whole deployment (data and key directories, taken
/// while stopped) starts elsewhere with everything, and new messages take
/// new sequence numbers.
#[test]
fn a_cold_copy_of_the_whole_deployment_carries_on() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    let first = alice.send(&conv, "before the copy");
    agency.wait_captured(1);
    agency.stop();
    let copy = tempfile::tempdir().unwrap();
    for dir in ["data", "data.keys"] {
        let ok = std::process::Command::new("cp")
            .args([
                "-a",
                agency.tmp.path().join(dir).to_str().unwrap(),
                copy.path().join(dir).to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    // The original is gone; the copy is served at the same address.
    std::fs::remove_dir_all(&agency.data).unwrap();
    std::fs::remove_dir_all(agency.key_dir()).unwrap();
    std::fs::rename(copy.path().join("data"), &agency.data).unwrap();
    std::fs::rename(copy.path().join("data.keys"), agency.key_dir()).unwrap();
    agency.restart(&[]);
    let next = alice.send(&conv, "after the restore");
    assert!(
        next > first,
        "sequence numbers go on: #{next} after #{first}"
    );
    assert_eq!(
        agency.wait_captured(2),
        ["before the copy", "after the restore"]
    );
    let out = agency.records_output(&["verify", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `keepwire admin ARGS` on the agency's data directory.
fn admin(agency: &Agency, args: &[&str]) -> std::process::Output {
    let mut all = vec!["admin", "--data-dir", agency.data_dir()];
    all.extend_from_slice(args);
    keepwire(&all, &[])
}

/// An online backup taken while a member keeps sending: the server's log
/// is held while the three stores are copied, so the copy is one
/// consistent deployment — it starts (the stores agree), verifies, and
/// holds every message up to the cut. Messages sent during the hold wait
/// for their receipts and are not refused.
#[test]
fn an_online_backup_under_traffic_restores_to_a_consistent_deployment() {
    let admin_port = free_port();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    let mut agency = Agency::start_with(&["--admin-listen", &admin_listen]);
    let (alice, conv) = agency.alice_and_bob();
    for i in 0..3 {
        alice.send(&conv, &format!("before {i}"));
    }
    agency.wait_captured(3);

    let sender = {
        let alice = alice.clone();
        let conv = conv.clone();
        std::thread::spawn(move || {
            for i in 0..8 {
                alice.send(&conv, &format!("during {i}"));
            }
        })
    };
    let to = agency.tmp.path().join("backup");
    let out = admin(
        &agency,
        &[
            "backup",
            "--to",
            to.to_str().unwrap(),
            "--admin-url",
            &format!("http://{admin_listen}"),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["online"], true);
    let head = manifest["log_heads"][&conv].as_u64().unwrap();
    sender
        .join()
        .expect("every send during the backup was receipted");
    agency.wait_captured(11);
    // No key in the backup.
    for f in manifest["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        assert!(!path.contains("key"), "{path}");
    }
    agency.stop();

    // Restored elsewhere, with the key directory (the key provider's).
    let restored = agency.tmp.path().join("restored");
    let out = keepwire(
        &[
            "admin",
            "restore",
            "--from",
            to.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let copied = std::process::Command::new("cp")
        .args([
            "-a",
            agency.key_dir().to_str().unwrap(),
            restored.with_file_name("restored.keys").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copied.success());
    let listen = format!("127.0.0.1:{}", free_port());
    let _server = common::start_serve(&restored, &listen, &[]);
    // Everything up to the cut is archived once it is captured.
    let records = || {
        let out = keepwire(
            &[
                "records",
                "list",
                "--json",
                "--data-dir",
                restored.to_str().unwrap(),
            ],
            &[],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array().cloned().unwrap_or_default()
    };
    let archived = common::wait_for("the restored archive to catch up with its log", 60, || {
        let r = records();
        r.iter()
            .any(|r| r["conv"] == conv.as_str() && r["seq"].as_u64() == Some(head))
            .then_some(r)
    });
    assert!(archived.len() >= 3, "{archived:?}");
    let out = keepwire(
        &[
            "records",
            "verify",
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A restore never writes over a deployment, and never restores a file
/// that is not the one backed up.
#[test]
fn a_restore_refuses_live_data_and_a_damaged_backup() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "kept");
    agency.wait_captured(1);
    agency.stop();
    let to = agency.tmp.path().join("backup");
    let out = admin(&agency, &["backup", "--to", to.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["online"], false, "taken while stopped");

    let out = admin(&agency, &["restore", "--from", to.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds a deployment"),
        "{}",
        stderr(&out)
    );

    let archive = to.join("records/archive.db");
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&archive, bytes).unwrap();
    let elsewhere = agency.tmp.path().join("elsewhere");
    let out = keepwire(
        &[
            "admin",
            "restore",
            "--from",
            to.to_str().unwrap(),
            "--data-dir",
            elsewhere.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("archive.db does not match the backup's manifest"),
        "{}",
        stderr(&out)
    );
    assert!(!elsewhere.join("server.db").exists(), "nothing restored");

    // A deployment whose archive is not beside its server (in PostgreSQL,
    // or on another machine) cannot be cut here: refused, named.
    let server_only = agency.tmp.path().join("server-only");
    std::fs::create_dir_all(&server_only).unwrap();
    std::fs::copy(agency.data.join("server.db"), server_only.join("server.db")).unwrap();
    let out = keepwire(
        &[
            "admin",
            "backup",
            "--data-dir",
            server_only.to_str().unwrap(),
            "--to",
            agency.tmp.path().join("backup2").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("records/device.db is not here"),
        "{}",
        stderr(&out)
    );
}

/// A whole deployment restored from an older backup is consistent in
/// itself, but devices saw more: one that pinned a later checkpoint of the
/// archive refuses the server instead of carrying on with it.
#[test]
fn a_device_that_saw_more_than_a_restored_server_refuses_it() {
    let mut agency = Agency::start_with(&["--checkpoint-secs", "1"]);
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "one");
    agency.wait_captured(1);
    agency.stop();
    let to = agency.tmp.path().join("backup");
    let out = admin(&agency, &["backup", "--to", to.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backed_up = manifest["archive_leaves"].as_u64().unwrap();

    agency.restart(&["--checkpoint-secs", "1"]);
    alice.send(&conv, "two");
    agency.wait_captured(2);
    common::wait_for("alice to pin a checkpoint past the backup", 60, || {
        let pinned = alice.json(&["chat", "checkpoint"]);
        (pinned["size"].as_u64()? > backed_up).then_some(())
    });
    agency.stop();

    std::fs::rename(&agency.data, agency.tmp.path().join("data.before")).unwrap();
    let out = admin(&agency, &["restore", "--from", to.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    agency.restart(&["--checkpoint-secs", "1"]);
    let out = alice.run(&["chat", "checkpoint"]);
    assert!(
        !out.status.success(),
        "alice carried on with a server behind her"
    );
    assert!(
        stderr(&out).contains("put back to an older copy"),
        "{}",
        stderr(&out)
    );
}
