//! The incident register: every actual or threatened loss of records —
//! an unauthorized disposition, damage `verify` found, a conversation
//! the records member could not capture — with what 44 U.S.C. 3106 and
//! 36 CFR 1230.14 ask of the agency: report to NARA by a deadline
//! (configurable, 30 days by default), then update until it is closed.

use serde::{Deserialize, Serialize};

use super::dates::Day;
use crate::RecordsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentKind {
    /// Records destroyed that were unexpired, held or permanent.
    UnauthorizedDisposition,
    /// `verify` found records missing or altered.
    ArchiveDamage,
    /// The records member could not capture a conversation (suspended).
    CaptureFailure,
    /// Evidence that a client tried to bypass capture.
    CaptureBypass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentStatus {
    Open,
    ReportedToNara,
    Closed,
}

impl std::str::FromStr for IncidentStatus {
    type Err = RecordsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(IncidentStatus::Open),
            "reported-to-nara" => Ok(IncidentStatus::ReportedToNara),
            "closed" => Ok(IncidentStatus::Closed),
            _ => Err(RecordsError::Archive(format!(
                "`{s}` is no incident status: open, reported-to-nara or closed"
            ))),
        }
    }
}

/// An update to an incident, as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    pub event: u64,
    pub by: String,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<IncidentStatus>,
    pub note: String,
}

/// An incident as the events left it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// The number of the event that opened it.
    pub id: u64,
    pub kind: IncidentKind,
    pub description: String,
    /// The records concerned.
    pub records: Vec<i64>,
    /// The disposition batch that caused it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    pub opened_by: String,
    pub opened_at_ms: u64,
    /// The day the report to NARA is due.
    pub report_due: Day,
    pub status: IncidentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nara_case: Option<String>,
    /// The officer's account of the circumstances, the safeguards put in
    /// place and what was done to salvage the records (the report's
    /// elements 3 to 5, beside what the archive fills in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circumstances: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safeguards: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salvage: Option<String>,
    pub updates: Vec<Update>,
}
