//! Who acts on the archive (issue 12): every privileged command goes to
//! the running records service's office, signed in as an account of the
//! archive; its role decides what it may do, the log names the account,
//! and a checkpoint covers the action before its result is shown. There
//! is no unauthenticated way in: the first admin is made with the setup
//! token the office writes into the records directory. Through the real
//! binary, on either backend.

mod common;

use common::{ok, on_postgres, stderr, Agency};
use serde_json::Value;

const ADA: &str = "ada's long passphrase";
const OLU: &str = "olu's long passphrase";
const AUD: &str = "aud's long passphrase";

#[test]
fn privileged_commands_are_signed_in_at_the_records_office_and_the_role_decides() {
    accounts_decide(Agency::start());
}

#[test]
fn on_postgres_privileged_commands_are_signed_in_at_the_records_office_and_the_role_decides() {
    on_postgres(|| accounts_decide(Agency::start()));
}

fn accounts_decide(agency: Agency) {
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "for the records officer");
    // Listed (metadata, read from the archive), not shown: nobody has
    // signed in yet.
    let listed = common::wait_for("the message captured", 60, || {
        let r = agency.records(false);
        (!r.is_empty()).then_some(r)
    });
    let id = listed[0]["id"].as_i64().unwrap().to_string();
    // Every call here says who signs in (or, empty, that nobody does).
    let records = |args: &[&str], env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "KEEPWIRE_RECORDS_USER") {
            env.push(("KEEPWIRE_RECORDS_USER", ""));
        }
        agency.records_output_env(args, &env)
    };
    let refused = |args: &[&str], env: &[(&str, &str)], why: &str| {
        let out = records(args, env);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    };
    let setup = agency.data.join("records").join("setup.token");

    // Nobody acts unauthenticated: no sign-in, no --actor, and no
    // password sign-in before the first account.
    refused(&["show", &id], &[], "sign in with --as");
    refused(&["show", &id, "--actor", "mallory"], &[], "--actor");
    refused(
        &["show", &id, "--as", "mallory"],
        &[("KEEPWIRE_RECORDS_PASSWORD", "anything at all")],
        "no accounts yet",
    );

    // The first admin, with the setup token; the token is gone after.
    assert!(setup.exists(), "the office wrote a setup token");
    ok(records(
        &["account", "add", "ada", "--role", "admin"],
        &[("KEEPWIRE_RECORDS_NEW_PASSWORD", ADA)],
    ));
    assert!(!setup.exists(), "the setup token is spent");
    refused(
        &["account", "add", "eve", "--role", "admin"],
        &[("KEEPWIRE_RECORDS_NEW_PASSWORD", ADA)],
        "sign in with --as",
    );
    // A token written there now opens nothing.
    std::fs::write(&setup, "forged").unwrap();
    refused(
        &["account", "add", "eve", "--role", "admin"],
        &[("KEEPWIRE_RECORDS_NEW_PASSWORD", ADA)],
        "not (or no longer) valid",
    );
    std::fs::remove_file(&setup).unwrap();
    let as_ada = [("KEEPWIRE_RECORDS_PASSWORD", ADA)];
    for (name, role, password) in [("olu", "records-officer", OLU), ("aud", "auditor", AUD)] {
        ok(records(
            &["account", "add", name, "--role", role, "--as", "ada"],
            &[as_ada[0], ("KEEPWIRE_RECORDS_NEW_PASSWORD", password)],
        ));
    }

    refused(
        &["show", &id, "--as", "olu"],
        &[("KEEPWIRE_RECORDS_PASSWORD", "guessed password")],
        "wrong account name or password",
    );
    // The admin holds the keys but reads no record; the auditor neither,
    // and has checkpoints signed.
    refused(
        &["show", &id, "--as", "ada"],
        &as_ada,
        "may not view records",
    );
    refused(
        &["show", &id, "--as", "aud"],
        &[("KEEPWIRE_RECORDS_PASSWORD", AUD)],
        "may not view records",
    );
    refused(
        &["destroy", &id, "--as", "aud"],
        &[("KEEPWIRE_RECORDS_PASSWORD", AUD)],
        "may not destroy records",
    );
    let cp: Value = serde_json::from_str(&ok(records(
        &["checkpoint", "--json", "--as", "aud"],
        &[("KEEPWIRE_RECORDS_PASSWORD", AUD)],
    )))
    .unwrap();
    assert!(cp["checkpoint"].as_str().unwrap().contains("\n\n— "));

    // The officer reads; the log says it was the officer, and a checkpoint
    // the log signed covered the view before it was shown.
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
    let (leaves, covered) = agency.log_and_checkpoint_sizes();
    assert_eq!(covered, leaves, "a signed checkpoint covers the view");

    // Disabled, the officer signs in no more; the admin sees it.
    ok(records(
        &["account", "disable", "olu", "--as", "ada"],
        &as_ada,
    ));
    refused(
        &["show", &id, "--as", "olu"],
        &[("KEEPWIRE_RECORDS_PASSWORD", OLU)],
        "wrong account name or password",
    );
    let listed: Value = serde_json::from_str(&ok(records(
        &["account", "list", "--json", "--as", "ada"],
        &as_ada,
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

    // Guessing is slowed: ten wrong passwords in a row cost nothing more,
    // then a try on that name is turned away, its password unchecked,
    // until a wait that doubles with every further failure has passed —
    // so a burst of quick guesses meets it within a few tries.
    let guess = [("KEEPWIRE_RECORDS_PASSWORD", "a guessed password")];
    for _ in 0..10 {
        refused(
            &["checkpoint", "--as", "aud"],
            &guess,
            "wrong account name or password",
        );
    }
    let slowed = (0..20).find_map(|_| {
        let out = records(&["checkpoint", "--as", "aud"], &guess);
        assert!(!out.status.success(), "a guess was accepted");
        let e = stderr(&out);
        if e.contains("too many wrong passwords for aud") {
            return Some(e);
        }
        assert!(e.contains("wrong account name or password"), "{e}");
        None
    });
    assert!(slowed.is_some(), "twenty more guesses were all checked");
    // Another account is not slowed by it.
    ok(records(&["account", "list", "--as", "ada"], &as_ada));
}
