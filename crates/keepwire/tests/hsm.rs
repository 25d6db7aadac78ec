//! The records service on an HSM (issue 12), through the real binary: a
//! SoftHSM2 token holds the checkpoint key and the root key; the archive
//! signs, captures, rotates and verifies with no key directory at all, and
//! when the token is lost a spare takes over from the escrow shares.
//!
//! One test: the token is named through the environment, which every
//! process this test starts inherits.

mod common;

use common::{ok, stderr, Agency};
use keepwire_records::keys::softhsm;
use serde_json::Value;

#[test]
fn an_hsm_holds_the_keys_and_a_spare_takes_over_from_escrow() {
    let hsm_dir = tempfile::tempdir().unwrap();
    let hsm = softhsm::Token::setup(hsm_dir.path()).expect("SoftHSM2 (apt-get install softhsm2)");
    let main = hsm.init("keepwire", "1234").unwrap();
    // SoftHSM sees the tokens that exist when it is loaded: the spare is
    // made now, used after the first is lost.
    let spare = hsm.init("spare", "5678").unwrap();
    let (var, conf) = hsm.env();
    let use_token = |c: &keepwire_records::keys::Pkcs11Config| {
        std::env::set_var(var, conf);
        std::env::set_var("KEEPWIRE_PKCS11_MODULE", &c.module);
        std::env::set_var("KEEPWIRE_PKCS11_TOKEN", &c.token);
        std::env::set_var("KEEPWIRE_PKCS11_PIN", &c.pin);
    };
    use_token(&main);

    let mut agency = Agency::start_with(&["--checkpoint-secs", "1"]);
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "signed in the token");
    alice.send(&conv, "sealed by the token");
    assert_eq!(
        agency.wait_captured(2),
        ["signed in the token", "sealed by the token"]
    );
    // Checkpoints signed in the token reach the devices, which check them
    // with the public key alone.
    common::wait_for("a checkpoint witnessed by a device", 30, || {
        let v = alice.json(&["chat", "checkpoint"]);
        (v["size"].as_u64().unwrap_or(0) >= 2).then_some(())
    });
    // The archive's admin and records officer, made while it runs.
    agency.accounts();
    agency.stop();
    assert!(!agency.key_dir().exists(), "no key directory with an HSM");
    let records = agency.data.join("records");
    for gone in ["checkpoint.key", "archive.key", "passphrase"] {
        assert!(!records.join(gone).exists(), "{gone}");
    }
    let out = agency.records_output(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let status: Value =
        serde_json::from_str(&ok(agency.records_output(&["key", "status", "--json"]))).unwrap();
    assert!(status["provider"]
        .as_str()
        .unwrap()
        .contains("PKCS#11 token `keepwire`"));

    // Rotation through the token, then the escrow of the new key.
    let rotated: Value =
        serde_json::from_str(&ok(agency.records_output(&["rotate-key", "--json"]))).unwrap();
    assert_eq!(rotated["rewrapped_data_keys"], 2);
    let escrow = agency.tmp.path().join("escrow");
    let office = agency.office();
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
    drop(office);

    // The token is lost; the spare opens nothing until the custodians come.
    use_token(&spare);
    let id = agency.records(false)[0]["id"].clone();
    let out = agency.records_output(&["key", "status", "--json"]);
    assert!(!out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["archive_key_problem"]
            .as_str()
            .unwrap()
            .contains("holds no root key"),
        "{status}"
    );
    ok(agency.records_output(&["key", "restore", &shares[0], &shares[2]]));
    // Every record opens again: verify checks each one's content against
    // its leaf, with the restored key (read-only, signing nothing).
    let out = agency.records_output(&["verify", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["content_checked"], true, "{report:#}");
    // But a view must be covered by a checkpoint before it is shown, and
    // the spare cannot sign one of this log: no records office opens on
    // it, so nothing is shown.
    let out = agency.records_output(&["office"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not hold"), "{}", stderr(&out));
    let out = agency.records_output(&["show", &id.to_string()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("records office"), "{}", stderr(&out));
    // The spare holds no checkpoint key of this log, and none is made for
    // it: status names the one key that is not available, and fails.
    let out = agency.records_output(&["key", "status", "--json"]);
    assert!(!out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["archive_key"], rotated["archive_key"]);
    assert!(status["checkpoint_key"].is_null());
    assert!(
        status["checkpoint_key_problem"]
            .as_str()
            .unwrap()
            .contains("does not hold"),
        "{status}"
    );
}
