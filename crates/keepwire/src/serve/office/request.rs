//! What the `records` commands ask of the records office, and which
//! action each asks of the account's role.

use keepwire_records::accounts::Action;
use serde::{Deserialize, Serialize};

use super::lifecycle;

/// A privileged request, as the `records` commands send it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// A record, decrypted.
    Show {
        id: i64,
    },
    /// A record's file: its reference (the key to open it), released
    /// as a logged, covered view.
    FileKey {
        id: i64,
        n: u32,
    },
    /// Stored bytes of a record's file (ciphertext), from `offset`: at
    /// most [`FILE_PART`](super::FILE_PART).
    FileBytes {
        id: i64,
        n: u32,
        offset: u64,
    },
    /// The latest checkpoint, signed now if the log grew.
    Checkpoint,
    /// Every account.
    Accounts,
    AddAccount {
        name: String,
        role: String,
        password: String,
    },
    SetDisabled {
        name: String,
        disabled: bool,
    },
    /// Split the archive key into escrow shares.
    Escrow {
        threshold: u8,
        shares: u8,
    },
    /// A lifecycle decision: a role, an item, a setting, the NA-1005
    /// ([`keepwire_records::lifecycle::Event`]).
    Lifecycle {
        event: keepwire_records::lifecycle::Event,
    },
    /// The lifecycle as it stands: items, settings, the directory, the
    /// NA-1005 as of `on` (today when absent).
    LifecycleState {
        on: Option<keepwire_records::lifecycle::dates::Day>,
    },
    /// One record's schedule and its history, or (no id) every
    /// message's schedule.
    Schedule {
        id: Option<i64>,
    },
    /// Every record's standing today (only the eligible ones with
    /// `eligible`).
    Standings {
        eligible: bool,
    },
    /// Propose a disposition batch: these records (every eligible one
    /// when none), or forced with a reason.
    Propose {
        records: Option<Vec<i64>>,
        forced: Option<String>,
        note: String,
    },
    /// Run an approved batch.
    Execute {
        batch: u64,
    },
    /// A batch's certificate with the proof that the log holds it.
    Certificate {
        batch: u64,
    },
    /// The 36 CFR 1230.14 report of an incident.
    IncidentReport {
        id: u64,
    },
    /// Verify the archive, open the incidents it calls for, and log the
    /// integrity report.
    Integrity,
    /// A lifecycle event with its leaf, the leaf's inclusion proof and
    /// the signed checkpoint that covers it.
    EventProof {
        event: u64,
    },
}

impl Request {
    pub(super) fn action(&self) -> Action {
        match self {
            Request::Show { .. } | Request::FileKey { .. } | Request::FileBytes { .. } => {
                Action::View
            }
            Request::Checkpoint => Action::Checkpoint,
            Request::Accounts | Request::AddAccount { .. } | Request::SetDisabled { .. } => {
                Action::ManageAccounts
            }
            Request::Escrow { .. } => Action::ManageKeys,
            Request::Lifecycle { event } => lifecycle::action(event),
            Request::LifecycleState { .. }
            | Request::Schedule { .. }
            | Request::Standings { .. }
            | Request::Certificate { .. }
            | Request::IncidentReport { .. }
            | Request::EventProof { .. } => Action::ReadLifecycle,
            Request::Integrity => Action::Verify,
            Request::Propose { .. } | Request::Execute { .. } => Action::Destroy,
        }
    }
}
