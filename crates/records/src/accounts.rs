//! Who may act on the archive: accounts of the people who keep, search,
//! hold, export and destroy records, each with one role.
//!
//! A privileged action's actor is an authenticated account, not whatever
//! `$USER` says: an account is created by an admin (the first one when the
//! archive has none), its password kept as an Argon2id hash, and every
//! action is checked against what its role may do before it is taken.
//! Creating, disabling and re-enabling an account are themselves
//! privileged actions, logged in the transparency log. The accounts live
//! in the archive — the records service's custody — and are the one
//! account model the records console will sign in with.
//!
//! The roles follow who the records side serves (DESIGN.md): the **admin**
//! manages accounts and keys; the **records officer** keeps, views and
//! disposes of records, keeps the schedules, the role directory and the
//! incident register; **legal** views them, places and releases holds,
//! and approves dispositions (as a second records officer may); the
//! **auditor** verifies and reads the log, and views
//! nothing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;

use crate::archive::Archive;
use crate::tlog::Leaf;
use crate::RecordsError;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    RecordsOfficer,
    Legal,
    Auditor,
}

/// A privileged action, checked against the actor's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read a record's content.
    View,
    /// Propose, execute or cancel disposition batches.
    Destroy,
    /// Approve a disposition batch another account proposed: records
    /// officers and legal.
    ApproveDisposition,
    /// Place and release legal, FOIA and audit holds: records officers
    /// and legal.
    Hold,
    /// Update the incident register (status, NARA case, notes).
    ManageIncidents,
    /// Rotate, escrow or restore the archive key.
    ManageKeys,
    /// Create, disable or enable accounts.
    ManageAccounts,
    /// Have the log's state signed now (`records checkpoint`): every role,
    /// auditors first of all.
    Checkpoint,
    /// Change the lifecycle: the role directory, schedule items and
    /// settings, the NA-1005 (`crate::lifecycle`).
    ManageSchedules,
    /// Read the lifecycle and each record's schedule (metadata, no
    /// content): every role.
    ReadLifecycle,
    /// Have the records service verify the archive and log the integrity
    /// report (opening the incidents it calls for): every role.
    Verify,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::RecordsOfficer => "records-officer",
            Role::Legal => "legal",
            Role::Auditor => "auditor",
        }
    }

    /// Whether this role may take `action`. Admins manage accounts and
    /// keys but read no record: reading is the records officer's and the
    /// lawyers' business, so that the one who holds the keys is not also
    /// the one who reads.
    pub fn may(self, action: Action) -> bool {
        matches!(
            (self, action),
            (
                _,
                Action::Checkpoint | Action::ReadLifecycle | Action::Verify
            ) | (Role::Admin, Action::ManageAccounts | Action::ManageKeys)
                | (
                    Role::RecordsOfficer,
                    Action::View
                        | Action::Destroy
                        | Action::ManageSchedules
                        | Action::ApproveDisposition
                        | Action::Hold
                        | Action::ManageIncidents
                )
                | (
                    Role::Legal,
                    Action::View | Action::ApproveDisposition | Action::Hold
                )
        )
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = RecordsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "admin" => Role::Admin,
            "records-officer" => Role::RecordsOfficer,
            "legal" => Role::Legal,
            "auditor" => Role::Auditor,
            other => {
                return Err(RecordsError::Access(format!(
                    "no role `{other}`: admin, records-officer, legal or auditor"
                )))
            }
        })
    }
}

/// An account, as stored (the password only as its Argon2id hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub created_ms: u64,
    pub disabled: bool,
    #[serde(skip)]
    pub password_hash: String,
}

/// The shortest password accepted. NIST SP 800-63B asks for at least 8
/// characters; these accounts reach every record, so more.
pub const MIN_PASSWORD: usize = 12;

fn check_name(name: &str) -> Result<(), RecordsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(RecordsError::Access(format!(
            "`{name}` is not an account name: 1 to 64 letters, digits, `.`, `-`, `_` or `@`"
        )))
    }
}

/// The Argon2id hash of `password` (PHC string, fresh salt).
fn hash(password: &str) -> Result<String, RecordsError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(RecordsError::Access(format!(
            "a password needs at least {MIN_PASSWORD} characters"
        )));
    }
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| RecordsError::Access(format!("cannot hash the password: {e}")))
}

/// One answer for every way a sign-in fails, so that it says nothing about
/// which accounts exist.
fn refused() -> RecordsError {
    RecordsError::SignInRefused
}

fn leaf(actor: &str, action: &str, target: &str, at_ms: u64) -> Leaf {
    Leaf::Action {
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        at_ms,
    }
}

impl Archive {
    /// Every account, by name.
    pub fn accounts(&self) -> Result<Vec<Account>, RecordsError> {
        self.store().accounts()
    }

    /// The account `name` signs in as, if `password` is its password, it
    /// is enabled, and its role may take `action`.
    pub fn authenticate(
        &self,
        name: &str,
        password: &str,
        action: Action,
    ) -> Result<Account, RecordsError> {
        let account = self.store().account(name)?;
        let Some(account) = account else {
            // The same work as a real check, so that timing says nothing
            // about which names exist.
            let _ = hash(&"x".repeat(MIN_PASSWORD));
            return Err(refused());
        };
        let parsed = PasswordHash::new(&account.password_hash).map_err(|_| refused())?;
        if Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_err()
            || account.disabled
        {
            return Err(refused());
        }
        if !account.role.may(action) {
            return Err(RecordsError::Access(format!(
                "{} is {} and may not {}",
                account.name,
                account.role,
                match action {
                    Action::View => "view records",
                    Action::Destroy => "destroy records",
                    Action::ApproveDisposition => "approve dispositions",
                    Action::Hold => "place or release holds",
                    Action::ManageIncidents => "update incidents",
                    Action::ManageKeys => "manage the archive's keys",
                    Action::ManageAccounts => "manage accounts",
                    Action::Checkpoint => "have checkpoints signed",
                    Action::ManageSchedules => "change schedules or the role directory",
                    Action::ReadLifecycle => "read schedules",
                    Action::Verify => "verify the archive",
                }
            )));
        }
        Ok(account)
    }

    /// Create an account, by `by` (an admin), logged. The first account
    /// of an archive is made with `by = None` and must be an admin: it is
    /// refused once any account exists.
    pub fn add_account(
        &mut self,
        by: Option<&Account>,
        name: &str,
        role: Role,
        password: &str,
        at_ms: u64,
    ) -> Result<Account, RecordsError> {
        check_name(name)?;
        let actor = match by {
            Some(a) if a.role.may(Action::ManageAccounts) && !a.disabled => a.name.clone(),
            Some(a) => {
                return Err(RecordsError::Access(format!(
                    "{} may not manage accounts",
                    a.name
                )))
            }
            None if role != Role::Admin => {
                return Err(RecordsError::Access(
                    "the first account of an archive is an admin".into(),
                ))
            }
            None => name.to_string(),
        };
        let account = Account {
            name: name.to_string(),
            role,
            created_ms: at_ms,
            disabled: false,
            password_hash: hash(password)?,
        };
        let first = by.is_none();
        let added = self.store_mut().add_account(
            &account,
            first,
            &leaf(
                &actor,
                "add-account",
                &format!("{name} ({role}){}", if first { ", the first" } else { "" }),
                at_ms,
            ),
        )?;
        if !added {
            return Err(RecordsError::Access(if first {
                "this archive has accounts already: an admin adds the next (--as ADMIN)".into()
            } else {
                format!("an account `{name}` exists already")
            }));
        }
        Ok(account)
    }

    /// Disable (or enable again) an account, by an admin, logged. An
    /// account is never deleted: the log names it.
    pub fn set_account_disabled(
        &mut self,
        by: &Account,
        name: &str,
        disabled: bool,
        at_ms: u64,
    ) -> Result<(), RecordsError> {
        if !by.role.may(Action::ManageAccounts) {
            return Err(RecordsError::Access(format!(
                "{} may not manage accounts",
                by.name
            )));
        }
        if disabled && by.name == name {
            return Err(RecordsError::Access(
                "an admin cannot disable their own account (another admin can)".into(),
            ));
        }
        let action = if disabled {
            "disable-account"
        } else {
            "enable-account"
        };
        if !self.store_mut().set_account_disabled(
            name,
            disabled,
            &leaf(&by.name, action, name, at_ms),
        )? {
            return Err(RecordsError::Access(format!("no account `{name}`")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
