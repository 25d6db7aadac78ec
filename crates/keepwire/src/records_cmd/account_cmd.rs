//! `keepwire records account`, and who is acting in every privileged
//! command: an account of the archive signed in with its password
//! ([`keepwire_records::accounts`]), checked by the running records
//! service's office ([`crate::serve::office`]) — or, for the two key
//! operations that run with the service stopped, by the archive itself.
//! There is no unauthenticated way to act: the first admin is made with
//! the setup token the office writes while the archive has no account.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keepwire_records::accounts::Action;
use keepwire_records::Archive;
use serde_json::Value;

use crate::serve::office::{self, Request};
use crate::{AccountCommand, SignIn};

/// A secret from the file given with `--{flag}`, or else from `var`, or
/// else typed at the terminal (not echoed).
pub(crate) fn read_secret(
    file: Option<&Path>,
    flag: &str,
    var: &str,
    what: &str,
) -> Result<String> {
    match (file, std::env::var(var)) {
        (Some(f), _) => Ok(std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string()),
        (None, Ok(p)) => Ok(p),
        (None, Err(_)) => prompt(what).with_context(|| {
            format!("{what}: give a file (--{flag}), set {var}, or type it at a terminal")
        }),
    }
}

/// Ask for a secret on the terminal, echo off.
fn prompt(what: &str) -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to ask at");
    }
    eprint!("{what}: ");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data, filled by tcgetattr before use; the
    // terminal's settings are put back whatever the read did.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        bail!("cannot read the terminal's settings");
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The signed-in account's password, checked by the archive itself: for
/// the key operations that run with the records service stopped. An
/// archive without accounts is refused — nobody acts unauthenticated.
pub fn acting_offline(archive: &Archive, signin: &SignIn, action: Action) -> Result<String> {
    if archive.accounts()?.is_empty() {
        bail!(
            "this archive has no accounts yet: start the records service and create the first \
             admin (keepwire records account add NAME --role admin)"
        );
    }
    let name = signed_in_as(signin).context(
        "sign in with --as NAME (KEEPWIRE_RECORDS_USER) and the password \
         (KEEPWIRE_RECORDS_PASSWORD, --password-file, or typed)",
    )?;
    let password = password(signin)?;
    Ok(archive.authenticate(name, &password, action)?.name)
}

/// The account signed in as (an empty name is none).
fn signed_in_as(signin: &SignIn) -> Option<&str> {
    signin.as_user.as_deref().filter(|n| !n.is_empty())
}

fn password(signin: &SignIn) -> Result<String> {
    read_secret(
        signin.password_file.as_deref(),
        "password-file",
        "KEEPWIRE_RECORDS_PASSWORD",
        "password",
    )
}

/// Where the running records office is: `--records-url`, or the URL the
/// records service wrote into the records directory.
fn office_url(records_dir: &Path, signin: &SignIn) -> Result<String> {
    if let Some(url) = &signin.records_url {
        return Ok(url.clone());
    }
    office::url_of(records_dir).with_context(|| {
        format!(
            "no records service is running on {} (no {}): start it (`keepwire serve` or \
             `keepwire records serve`; `keepwire records office` alone while capture is \
             stopped), or give its office with --records-url",
            records_dir.display(),
            office::URL_FILE
        )
    })
}

/// Carry out `request` at the running records office, signed in as
/// `signin` says (or with the setup token, for the first admin).
pub async fn ask(records_dir: &Path, signin: &SignIn, request: &Request) -> Result<Value> {
    let authorization = authorization(records_dir, signin, request)?;
    ask_as(records_dir, signin, &authorization, request).await
}

/// The `Authorization` header `request` goes with: the account's name and
/// password (read once, here), or the setup token for the first admin.
pub fn authorization(records_dir: &Path, signin: &SignIn, request: &Request) -> Result<String> {
    Ok(match (signed_in_as(signin), request) {
        (Some(name), _) => {
            let basic = format!("{name}:{}", password(signin)?);
            format!("Basic {}", keepwire_protocol::b64::encode(basic.as_bytes()))
        }
        (None, Request::AddAccount { .. }) => match office::setup_token(records_dir) {
            Some(token) => format!("Setup {token}"),
            None => bail!(
                "sign in with --as NAME (KEEPWIRE_RECORDS_USER): the archive has accounts \
                 (only its first admin is made without one)"
            ),
        },
        (None, _) => bail!(
            "sign in with --as NAME (KEEPWIRE_RECORDS_USER) and the password \
             (KEEPWIRE_RECORDS_PASSWORD, --password-file, or typed)"
        ),
    })
}

/// Carry out `request` at the running records office with
/// `authorization` (several requests, one password prompt).
pub async fn ask_as(
    records_dir: &Path,
    signin: &SignIn,
    authorization: &str,
    request: &Request,
) -> Result<Value> {
    crate::net::trust_ca(signin.records_ca_cert.clone());
    let url = office_url(records_dir, signin)?;
    let body = serde_json::to_vec(request)?;
    let (status, answer) = crate::net::http::request(
        "POST",
        &format!("{}/v1/office", url.trim_end_matches('/')),
        Some(authorization),
        body,
        16 * 1024 * 1024,
        Duration::from_secs(60),
    )
    .await
    .with_context(|| format!("the records office at {url}: is the records service running?"))?;
    let value: Value = serde_json::from_slice(&answer).with_context(|| {
        format!(
            "the records office at {url} answered HTTP {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        )
    })?;
    if status != 200 {
        bail!(
            "{}",
            value["error"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("HTTP {status}: {value}"))
        );
    }
    Ok(value)
}

pub async fn account(command: AccountCommand, records_dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        AccountCommand::Add {
            name,
            role,
            new_password_file,
            json,
        } => {
            let password = read_secret(
                new_password_file.as_deref(),
                "new-password-file",
                "KEEPWIRE_RECORDS_NEW_PASSWORD",
                "the new account's password",
            )?;
            let made = ask(
                records_dir,
                signin,
                &Request::AddAccount {
                    name,
                    role,
                    password,
                },
            )
            .await?;
            let text = format!(
                "account {} ({}) created",
                made["name"].as_str().unwrap_or_default(),
                made["role"].as_str().unwrap_or_default()
            );
            crate::report(json, made, text)
        }
        AccountCommand::List { json } => {
            let accounts = ask(records_dir, signin, &Request::Accounts).await?;
            if json {
                return crate::print_json(&accounts);
            }
            for a in accounts.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<16} since {}{}",
                    a["name"].as_str().unwrap_or_default(),
                    a["role"].as_str().unwrap_or_default(),
                    crate::when(a["created_ms"].as_u64().unwrap_or_default()),
                    if a["disabled"].as_bool() == Some(true) {
                        "  (disabled)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        AccountCommand::Disable { name, json } => {
            switch(records_dir, signin, name, true, json).await
        }
        AccountCommand::Enable { name, json } => {
            switch(records_dir, signin, name, false, json).await
        }
    }
}

/// Disable or enable `name`, by a signed-in admin.
async fn switch(
    records_dir: &Path,
    signin: &SignIn,
    name: String,
    disabled: bool,
    json: bool,
) -> Result<()> {
    ask(
        records_dir,
        signin,
        &Request::SetDisabled {
            name: name.clone(),
            disabled,
        },
    )
    .await?;
    let state = if disabled { "disabled" } else { "enabled" };
    crate::report(
        json,
        serde_json::json!({"account": name, "state": state}),
        format!("account {name} {state}"),
    )
}
