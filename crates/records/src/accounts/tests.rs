//! Accounts over a whole archive: the first admin, sign-in, roles, and the
//! log of every change. The store side runs on both backends in
//! `archive/tests.rs`.

use super::*;

const PASSWORD: &str = "correct horse battery";

#[test]
fn roles_may_only_what_they_are_for() {
    use Action::*;
    let table = [
        (Role::Admin, [false, false, true, true]),
        (Role::RecordsOfficer, [true, true, false, false]),
        (Role::Legal, [true, false, false, false]),
        (Role::Auditor, [false, false, false, false]),
    ];
    for (role, may) in table {
        let got = [View, Destroy, ManageKeys, ManageAccounts].map(|a| role.may(a));
        assert_eq!(got, may, "{role}");
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
    }
    assert!("root".parse::<Role>().is_err());
}

#[test]
fn the_first_admin_then_accounts_made_by_admins_sign_in_and_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), None).unwrap();
    // The first account is an admin, and made once.
    let e = archive
        .add_account(None, "olu", Role::RecordsOfficer, PASSWORD, 1)
        .unwrap_err();
    assert!(e.to_string().contains("first account"), "{e}");
    let ada = archive
        .add_account(None, "ada", Role::Admin, PASSWORD, 1)
        .unwrap();
    let e = archive
        .add_account(None, "eve", Role::Admin, PASSWORD, 2)
        .unwrap_err();
    assert!(e.to_string().contains("accounts already"), "{e}");
    // Short passwords and odd names are refused.
    assert!(archive
        .add_account(Some(&ada), "olu", Role::RecordsOfficer, "short", 3)
        .is_err());
    assert!(archive
        .add_account(Some(&ada), "o lu", Role::RecordsOfficer, PASSWORD, 3)
        .is_err());
    let olu = archive
        .add_account(Some(&ada), "olu", Role::RecordsOfficer, PASSWORD, 3)
        .unwrap();
    // Only an admin makes accounts.
    let e = archive
        .add_account(Some(&olu), "mal", Role::Admin, PASSWORD, 4)
        .unwrap_err();
    assert!(e.to_string().contains("may not manage accounts"), "{e}");

    // Sign-in: the password, and the role's permission.
    let signed = archive.authenticate("olu", PASSWORD, Action::View).unwrap();
    assert_eq!(signed.name, "olu");
    let wrong = archive
        .authenticate("olu", "not the password", Action::View)
        .unwrap_err()
        .to_string();
    let unknown = archive
        .authenticate("nobody", PASSWORD, Action::View)
        .unwrap_err()
        .to_string();
    assert_eq!(
        wrong, unknown,
        "a refusal says nothing about which names exist"
    );
    let e = archive
        .authenticate("ada", PASSWORD, Action::View)
        .unwrap_err();
    assert!(e.to_string().contains("may not view records"), "{e}");
    assert!(!archive.accounts().unwrap()[0]
        .password_hash
        .contains(PASSWORD));

    // Disabled: refused like a wrong password; an admin cannot lock
    // themselves out.
    archive.set_account_disabled(&ada, "olu", true, 5).unwrap();
    assert_eq!(
        archive
            .authenticate("olu", PASSWORD, Action::View)
            .unwrap_err()
            .to_string(),
        wrong
    );
    assert!(archive.set_account_disabled(&ada, "ada", true, 6).is_err());
    archive.set_account_disabled(&ada, "olu", false, 7).unwrap();
    archive
        .authenticate("olu", PASSWORD, Action::Destroy)
        .unwrap();

    // Each change is a privileged action in the log, by whom.
    let said: Vec<(String, String)> = (0..archive.log_size().unwrap())
        .map(|n| {
            let a: serde_json::Value =
                serde_json::from_slice(&archive.log_leaf(n).unwrap().unwrap().2).unwrap();
            (
                a["actor"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("ada", "add-account"),
        ("ada", "add-account"),
        ("ada", "disable-account"),
        ("ada", "enable-account"),
    ];
    assert_eq!(said, expect.map(|(a, b)| (a.to_string(), b.to_string())));
}
