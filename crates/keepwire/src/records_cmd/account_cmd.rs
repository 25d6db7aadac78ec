//! `keepwire records account`, and who is acting in every privileged
//! command: an account of the archive signed in with its password
//! ([`keepwire_records::accounts`]) — or, on an archive that has no
//! accounts yet, the operating-system user, said to be unauthenticated.

use std::path::Path;

use anyhow::{bail, Context, Result};
use keepwire_records::accounts::{Account, Action, Role};
use keepwire_records::Archive;

use crate::serve::ArchiveAt;
use crate::{AccountCommand, SignIn};

/// A password from the file given with `--{flag}`, or else from `var`.
fn read_secret(file: Option<&Path>, flag: &str, var: &str, what: &str) -> Result<String> {
    match (file, std::env::var(var)) {
        (Some(f), _) => Ok(std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string()),
        (None, Ok(p)) => Ok(p),
        (None, Err(_)) => bail!("{what}: give a file (--{flag}) or set {var}"),
    }
}

/// The signed-in account, allowed `action`.
fn signed_in(archive: &Archive, signin: &SignIn, action: Action) -> Result<Account> {
    let name = signin.as_user.as_deref().context(
        "this archive has accounts: sign in with --as NAME (KEEPWIRE_RECORDS_USER) and the \
         password (KEEPWIRE_RECORDS_PASSWORD or --password-file)",
    )?;
    let password = read_secret(
        signin.password_file.as_deref(),
        "password-file",
        "KEEPWIRE_RECORDS_PASSWORD",
        "the password",
    )?;
    Ok(archive.authenticate(name, &password, action)?)
}

/// Who takes a privileged `action`: the signed-in account once the
/// archive has accounts (refused unless its role allows the action);
/// before the first account, `--actor` or `$USER`, with a warning that it
/// is not authenticated.
pub fn acting(
    archive: &Archive,
    signin: &SignIn,
    actor: Option<String>,
    action: Action,
) -> Result<String> {
    if archive.accounts()?.is_empty() {
        if signin.as_user.is_some() {
            bail!(
                "this archive has no accounts yet: create the first admin with \
                 `keepwire records account add NAME --role admin`"
            );
        }
        let actor = crate::actor(actor);
        eprintln!(
            "warning: acting as `{actor}`, unauthenticated: this archive has no accounts yet \
             (create the first admin: keepwire records account add NAME --role admin)"
        );
        return Ok(actor);
    }
    if actor.is_some() {
        bail!("--actor is for archives without accounts: this one signs in (--as)");
    }
    Ok(signed_in(archive, signin, action)?.name)
}

pub fn account(command: AccountCommand, at: &ArchiveAt, signin: &SignIn) -> Result<()> {
    let now = keepwire_protocol::clock::Clock::from_env().now_ms();
    let notary = at.notary()?;
    let mut archive = at.open(false)?;
    match command {
        AccountCommand::Add {
            name,
            role,
            new_password_file,
            json,
        } => {
            let role: Role = role.parse()?;
            let password = read_secret(
                new_password_file.as_deref(),
                "new-password-file",
                "KEEPWIRE_RECORDS_NEW_PASSWORD",
                "the new account's password",
            )?;
            let by = if archive.accounts()?.is_empty() {
                None
            } else {
                Some(signed_in(&archive, signin, Action::ManageAccounts)?)
            };
            let made = archive.add_account(by.as_ref(), &name, role, &password, now)?;
            super::covered(&notary, &archive)?;
            crate::report(
                json,
                serde_json::to_value(&made)?,
                format!("account {} ({}) created", made.name, made.role),
            )
        }
        AccountCommand::List { json } => {
            if !archive.accounts()?.is_empty() {
                signed_in(&archive, signin, Action::ManageAccounts)?;
            }
            let accounts = archive.accounts()?;
            if json {
                return crate::print_json(&accounts);
            }
            for a in accounts {
                println!(
                    "{:<24} {:<16} since {}{}",
                    a.name,
                    a.role.as_str(),
                    crate::when(a.created_ms),
                    if a.disabled { "  (disabled)" } else { "" }
                );
            }
            Ok(())
        }
        AccountCommand::Disable { name, json } => {
            switch(&mut archive, &notary, signin, &name, true, json, now)
        }
        AccountCommand::Enable { name, json } => {
            switch(&mut archive, &notary, signin, &name, false, json, now)
        }
    }
}

/// Disable or enable `name`, by a signed-in admin, covered by a checkpoint.
fn switch(
    archive: &mut Archive,
    notary: &keepwire_records::checkpoint::Notary,
    signin: &SignIn,
    name: &str,
    disabled: bool,
    json: bool,
    now: u64,
) -> Result<()> {
    let by = signed_in(archive, signin, Action::ManageAccounts)?;
    archive.set_account_disabled(&by, name, disabled, now)?;
    super::covered(notary, archive)?;
    let state = if disabled { "disabled" } else { "enabled" };
    crate::report(
        json,
        serde_json::json!({"account": name, "state": state}),
        format!("account {name} {state}"),
    )
}
