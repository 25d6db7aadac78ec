//! Who acts on the archive (issue 12): once an archive has accounts, every
//! privileged command signs in as one, its role decides what it may do,
//! and the log names the account — not whatever `$USER` or `--actor`
//! says. Through the real binary, on either backend.

mod common;

use common::{ok, on_postgres, stderr, Agency};
use serde_json::Value;

const ADA: &str = "ada's long passphrase";
const OLU: &str = "olu's long passphrase";

#[test]
fn once_there_are_accounts_the_actor_is_signed_in_and_its_role_decides() {
    accounts_decide(Agency::start());
}

#[test]
fn on_postgres_once_there_are_accounts_the_actor_is_signed_in_and_its_role_decides() {
    on_postgres(|| accounts_decide(Agency::start()));
}

fn accounts_decide(mut agency: Agency) {
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "for the records officer");
    agency.wait_captured(1);
    agency.stop();
    let id = agency.records(false)[0]["id"].as_i64().unwrap().to_string();
    let records = |args: &[&str], env: &[(&str, &str)]| agency.records_output_env(args, env);

    // No accounts yet: the old way, said to be unauthenticated.
    let out = records(&["show", &id], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unauthenticated"), "{}", stderr(&out));

    // The first admin, then an officer made by the admin.
    ok(records(
        &["account", "add", "ada", "--role", "admin"],
        &[("KEEPWIRE_RECORDS_NEW_PASSWORD", ADA)],
    ));
    let out = records(
        &["account", "add", "eve", "--role", "admin"],
        &[("KEEPWIRE_RECORDS_NEW_PASSWORD", ADA)],
    );
    assert!(!out.status.success(), "a second first admin");
    ok(records(
        &[
            "account",
            "add",
            "olu",
            "--role",
            "records-officer",
            "--as",
            "ada",
        ],
        &[
            ("KEEPWIRE_RECORDS_PASSWORD", ADA),
            ("KEEPWIRE_RECORDS_NEW_PASSWORD", OLU),
        ],
    ));

    // Now nobody acts without signing in, and --actor names no one.
    let out = records(&["show", &id], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sign in with --as"),
        "{}",
        stderr(&out)
    );
    let out = records(&["show", &id, "--actor", "mallory"], &[]);
    assert!(!out.status.success(), "--actor accepted: {}", stderr(&out));
    let out = records(
        &["show", &id, "--as", "olu"],
        &[("KEEPWIRE_RECORDS_PASSWORD", "guessed password")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong account name or password"),
        "{}",
        stderr(&out)
    );
    // The admin holds the keys but reads no record.
    let out = records(
        &["show", &id, "--as", "ada"],
        &[("KEEPWIRE_RECORDS_PASSWORD", ADA)],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may not view records"),
        "{}",
        stderr(&out)
    );

    // The officer reads, and the log says it was the officer.
    let shown: Value = serde_json::from_str(&ok(records(
        &["show", &id, "--json", "--as", "olu"],
        &[("KEEPWIRE_RECORDS_PASSWORD", OLU)],
    )))
    .unwrap();
    assert_eq!(shown["text"], "for the records officer");
    let last: Value = serde_json::from_str(agency.leaves("action").last().unwrap()).unwrap();
    assert_eq!(
        (last["actor"].as_str(), last["action"].as_str()),
        (Some("olu"), Some("view"))
    );

    // Disabled, the officer signs in no more; the admin sees it.
    ok(records(
        &["account", "disable", "olu", "--as", "ada"],
        &[("KEEPWIRE_RECORDS_PASSWORD", ADA)],
    ));
    let out = records(
        &["show", &id, "--as", "olu"],
        &[("KEEPWIRE_RECORDS_PASSWORD", OLU)],
    );
    assert!(!out.status.success());
    let listed: Value = serde_json::from_str(&ok(records(
        &["account", "list", "--json", "--as", "ada"],
        &[("KEEPWIRE_RECORDS_PASSWORD", ADA)],
    )))
    .unwrap();
    let olu = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "olu")
        .unwrap();
    assert_eq!(
        (olu["role"].as_str(), olu["disabled"].as_bool()),
        (Some("records-officer"), Some(true))
    );
    assert!(
        !listed.to_string().contains("argon2"),
        "no password hash is printed"
    );
    // Every account change is in the log, by the admin, and the archive
    // verifies.
    let actions = agency.leaves("action").join("\n");
    for a in ["add-account", "disable-account"] {
        assert!(actions.contains(a), "{a}: {actions}");
    }
    let out = records(&["verify"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
