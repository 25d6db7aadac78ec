//! Keys apart from data (issue 12): the checkpoint key, the archive key and
//! the records device's secret live with a key provider — here the key
//! directory — and a copy of the data directory, all an insider got in the
//! audit, can neither read a record nor sign the archive's log.
//! The HSM provider's end-to-end test is `hsm.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{keepwire, ok, stderr, Agency};
use serde_json::Value;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn keys_live_apart_from_the_data_and_a_copy_of_the_data_opens_and_signs_nothing() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "the informant meets us at noon");
    assert_eq!(agency.wait_captured(1), ["the informant meets us at noon"]);
    agency.stop();

    // The key directory: beside the data, owner-only.
    let keys = agency.key_dir();
    assert_eq!(mode(&keys), 0o700);
    for f in ["checkpoint.key", "root.key"] {
        assert_eq!(mode(&keys.join(f)), 0o600, "{f}");
    }
    // Nothing secret is left in the data directory: no key file, and the
    // checkpoint key's bytes appear in no file there.
    let records = agency.data.join("records");
    for gone in [
        "checkpoint.key",
        "archive.key",
        "archive.key.next",
        "passphrase",
    ] {
        assert!(!records.join(gone).exists(), "{gone} in the data directory");
    }
    assert!(records.join("device.sealed").exists());
    let skey = std::fs::read_to_string(keys.join("checkpoint.key")).unwrap();
    let secret = skey.trim().rsplit('+').next().unwrap().to_string();
    let root = std::fs::read(keys.join("root.key")).unwrap();
    for f in files(&agency.data) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
                && !bytes.windows(root.len()).any(|w| w == root.as_slice()),
            "{} holds a key",
            f.display()
        );
    }

    // The insider has the data directory and a key directory of their own.
    let id = agency.records(false)[0]["id"].as_i64().unwrap().to_string();
    let stolen = agency.tmp.path().join("insider-keys");
    let as_insider = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--key-dir", stolen.to_str().unwrap()]);
        agency.records_output(&all)
    };
    let out = as_insider(&["key", "status", "--json"]);
    assert!(!out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["archive_key_problem"]
            .as_str()
            .unwrap()
            .contains("root.key is missing"),
        "{status}"
    );
    // Records are read and checkpoints signed by the records office
    // alone, and it does not open on the insider's keys.
    let out = agency.office_refused(&["--key-dir", stolen.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("the wrong key provider"),
        "{}",
        stderr(&out)
    );

    // The key directory opened to the group is refused, naming the fix.
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = agency.office_refused(&[]);
    assert!(stderr(&out).contains("chmod 700"), "{}", stderr(&out));
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    // So is a key directory inside the data directory.
    let inside = agency.data.join("keys");
    let out = keepwire(
        &agency.with_records_database(&[
            "records",
            "list",
            "--data-dir",
            agency.data_dir(),
            "--key-dir",
            inside.to_str().unwrap(),
        ]),
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is inside the data directory"),
        "{}",
        stderr(&out)
    );
    let _office = agency.office();
    assert_eq!(
        agency.record_text(&Value::from(id.parse::<i64>().unwrap())),
        "the informant meets us at noon"
    );
}

#[test]
fn escrowed_two_of_three_the_keys_come_back_after_the_key_directory_is_lost_and_capture_goes_on() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "keep this for thirty years");
    agency.wait_captured(1);
    agency.stop();
    // The admin splits the key the records office holds.
    let office = agency.office();
    let escrow = agency.tmp.path().join("escrow");
    let out: Value = serde_json::from_str(&ok(agency.records_output(&[
        "key",
        "escrow",
        "--threshold",
        "2",
        "--shares",
        "3",
        "--out",
        escrow.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let shares: Vec<String> = out["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(shares.len(), 3);
    for s in &shares {
        assert_eq!(mode(Path::new(s)), 0o600, "{s}");
    }

    // Only an admin may.
    let out = agency.records_output_env(
        &[
            "key",
            "escrow",
            "--threshold",
            "2",
            "--shares",
            "3",
            "--out",
            escrow.to_str().unwrap(),
        ],
        &common::signed_in(common::OFFICER),
    );
    assert!(
        stderr(&out).contains("may not manage the archive's keys"),
        "{}",
        stderr(&out)
    );
    drop(office);

    // The disk holding the key directory dies: no records office opens.
    std::fs::remove_dir_all(agency.key_dir()).unwrap();
    let id = agency.records(false)[0]["id"].clone();
    let out = agency.office_refused(&[]);
    assert!(
        stderr(&out).contains("records key restore"),
        "{}",
        stderr(&out)
    );
    // One share is not enough, and says how many are.
    let out = agency.records_output(&["key", "restore", &shares[1]]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs 2 distinct shares, 1 given"),
        "{}",
        stderr(&out)
    );
    let restored = ok(agency.records_output(&["key", "restore", &shares[2], &shares[0]]));
    assert!(
        restored.contains("the records device's secret, the checkpoint key"),
        "{restored}"
    );
    let office = agency.office();
    assert_eq!(agency.record_text(&id), "keep this for thirty years");
    drop(office);
    // Not only readable: the records service runs again on the restored
    // keys — the same device, the same log — and capture goes on.
    agency.restart(&[]);
    alice.send(&conv, "after the restore");
    assert_eq!(
        agency.wait_captured(2),
        ["keep this for thirty years", "after the restore"]
    );
    agency.stop();
    let actions = agency.leaves("action").join("\n");
    assert!(
        actions.contains("escrow-key") && actions.contains("restore-key"),
        "{actions}"
    );
    let (passed, report) = {
        let out = agency.records_output(&["verify", "--json"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(passed, "{report}");
}
