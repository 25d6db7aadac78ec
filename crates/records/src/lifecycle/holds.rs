//! Holds: legal, FOIA and audit holds that freeze disposition.
//!
//! A hold covers the records its scope names — by custodian (a
//! participant), conversation, and a range of days sent, all that are
//! given having to match — or, said explicitly, every record. It is
//! placed with a name, a matter and an authority, by an account, and
//! released with a reason; both are lifecycle events in the log. Holds
//! are evaluated when eligibility is computed and again inside the
//! disposition transaction ([`super::disposition`]), never on the
//! capture path. Devices keep disappearing as before: a hold keeps the
//! archive's copy, which is the record.

use serde::{Deserialize, Serialize};

use super::dates::Day;
use super::participant_users;
use crate::{RecordMeta, RecordsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldKind {
    Legal,
    Foia,
    Audit,
}

impl std::str::FromStr for HoldKind {
    type Err = RecordsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "legal" => Ok(HoldKind::Legal),
            "foia" => Ok(HoldKind::Foia),
            "audit" => Ok(HoldKind::Audit),
            _ => Err(RecordsError::Archive(format!(
                "`{s}` is no kind of hold: legal, foia or audit"
            ))),
        }
    }
}

/// Which records a hold covers: every criterion given must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Scope {
    /// Records with any of these users among their participants.
    pub custodians: Vec<String>,
    /// Records of any of these conversations.
    pub conversations: Vec<String>,
    /// Records sent on or after this day.
    pub from: Option<Day>,
    /// Records sent on or before this day.
    pub until: Option<Day>,
    /// Every record (nothing else may be given).
    pub everything: bool,
}

impl Scope {
    pub fn check(&self) -> Result<(), RecordsError> {
        let narrowed = !self.custodians.is_empty()
            || !self.conversations.is_empty()
            || self.from.is_some()
            || self.until.is_some();
        match (narrowed, self.everything) {
            (false, false) => Err(RecordsError::Archive(
                "a hold names what it covers: custodians, conversations, a range of days, or everything".into(),
            )),
            (true, true) => Err(RecordsError::Archive(
                "a hold on everything names nothing else".into(),
            )),
            _ => match (self.from, self.until) {
                (Some(f), Some(u)) if u < f => Err(RecordsError::Archive(format!(
                    "the hold's range ends ({u}) before it starts ({f})"
                ))),
                _ => Ok(()),
            },
        }
    }

    pub fn covers(&self, meta: &RecordMeta) -> bool {
        if self.everything {
            return true;
        }
        let day = Day::of_ms(meta.server_time_ms);
        let custodian = self.custodians.is_empty() || {
            let users = participant_users(meta);
            self.custodians.iter().any(|c| users.contains(c))
        };
        custodian
            && (self.conversations.is_empty() || self.conversations.contains(&meta.conv))
            && self.from.is_none_or(|f| f <= day)
            && self.until.is_none_or(|u| day <= u)
    }
}

/// A hold as the events left it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hold {
    /// The number of the event that placed it.
    pub id: u64,
    pub kind: HoldKind,
    pub name: String,
    pub matter: String,
    pub authority: String,
    pub scope: Scope,
    pub placed_by: String,
    pub placed_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<Release>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    pub by: String,
    pub at_ms: u64,
    pub reason: String,
}

impl Hold {
    pub fn active(&self) -> bool {
        self.released.is_none()
    }
}

pub(super) fn check_text(what: &str, s: &str) -> Result<(), RecordsError> {
    if s.trim().is_empty() || s.len() > 2000 {
        return Err(RecordsError::Archive(format!(
            "the {what} must be 1 to 2,000 characters"
        )));
    }
    Ok(())
}
