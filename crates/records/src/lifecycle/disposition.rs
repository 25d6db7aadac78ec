//! Disposition: destroying records only by the book (promise 7).
//!
//! A record is **eligible** when its item is temporary, its disposition
//! day has come, no active hold covers it, and it still holds content
//! ([`super::Lifecycle::standing`]). A records officer proposes a batch
//! of eligible records; a second approver (another account; the agency
//! may turn the second approval off, never for a forced batch) approves
//! it; only then is it executed, in one transaction that re-checks every
//! record's standing against the lifecycle as of that moment — the store
//! takes the execution only if no event (a new hold) came in between —
//! crypto-shreds each record with a tombstone naming its item, the batch
//! and the approvals, and keeps the batch's **certificate** (the records,
//! conversations and sequence ranges, days, counts per item, approvals)
//! as the execution event, which its leaf commits to and a checkpoint
//! covers before it is shown.
//!
//! Destroying what is not eligible — unexpired, held, permanent — is
//! unlawful (36 CFR 1230.3): it is refused, and only a **forced** batch
//! (an explicit flag, a reason, a second approver) does it, opening an
//! incident that names what was destroyed and why.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dates::Day;
use super::Lifecycle;
use crate::RecordMeta;

/// Why a record may or may not be destroyed today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "standing", rename_all = "kebab-case")]
pub enum Standing {
    Eligible,
    /// Permanent: transferred to NARA, never destroyed here.
    Permanent {
        transfer_day: Option<Day>,
    },
    /// Its retention runs until the day before this.
    NotDue {
        disposition_day: Day,
    },
    /// Its dates are not known yet.
    Pending {
        why: String,
    },
    /// Holds cover it.
    Held {
        holds: Vec<u64>,
    },
    /// It holds no content: destroyed already, or none was captured (a
    /// commit's record keeps its metadata only).
    Destroyed,
}

impl Standing {
    pub fn describe(&self) -> String {
        match self {
            Standing::Eligible => "eligible for disposition".into(),
            Standing::Permanent {
                transfer_day: Some(d),
            } => format!("permanent: due for transfer to NARA on {d}, never destroyed here"),
            Standing::Permanent { transfer_day: None } => {
                "permanent: transferred to NARA, never destroyed here".into()
            }
            Standing::NotDue { disposition_day } => {
                format!("its retention runs until {disposition_day}")
            }
            Standing::Pending { why } => format!("its dates are pending ({why})"),
            Standing::Held { holds } => format!(
                "under hold {}",
                holds
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Standing::Destroyed => {
                "it holds no content to destroy (none was captured, or it was destroyed)".into()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchState {
    Proposed,
    Approved,
    Executed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub by: String,
    pub at_ms: u64,
}

/// A disposition batch as the events left it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batch {
    /// The number of the event that proposed it.
    pub id: u64,
    pub records: Vec<i64>,
    /// A forced batch's reason: records not eligible are destroyed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forced: Option<String>,
    pub note: String,
    pub proposed_by: String,
    pub proposed_at_ms: u64,
    /// Whether it needs another account's approval: the agency's setting
    /// when it was proposed (turning the setting off later does not
    /// spare it), always for a forced batch.
    pub needs_approval: bool,
    pub approvals: Vec<Approval>,
    pub state: BatchState,
    /// The execution event (the certificate), once executed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executed: Option<u64>,
}

/// One destroyed record, as its certificate lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destroyed {
    pub id: i64,
    pub conv: String,
    pub seq: u64,
    pub sent: Day,
    pub item: String,
    /// For a forced batch: why it was not eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlawful: Option<String>,
}

/// A record a batch named but the execution kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kept {
    pub id: i64,
    pub why: String,
}

/// What a batch's execution did: the disposition certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub batch: u64,
    pub destroyed: Vec<Destroyed>,
    /// Per conversation, the sequence numbers destroyed, as ranges.
    pub conversations: BTreeMap<String, Vec<(u64, u64)>>,
    pub first_sent: Option<Day>,
    pub last_sent: Option<Day>,
    /// Records destroyed per schedule item.
    pub counts: BTreeMap<String, u64>,
    pub proposed_by: String,
    pub approved_by: Vec<String>,
    pub executed_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<String>,
    /// Records the batch named and the execution did not destroy.
    pub kept: Vec<Kept>,
}

impl Certificate {
    /// The summary parts, from the destroyed list.
    pub fn summarize(&mut self) {
        let mut by_conv: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        self.counts.clear();
        for d in &self.destroyed {
            by_conv.entry(d.conv.clone()).or_default().push(d.seq);
            *self.counts.entry(d.item.clone()).or_default() += 1;
        }
        self.conversations = by_conv
            .into_iter()
            .map(|(conv, mut seqs)| {
                seqs.sort_unstable();
                let mut ranges: Vec<(u64, u64)> = Vec::new();
                for s in seqs {
                    match ranges.last_mut() {
                        Some((_, end)) if *end + 1 == s => *end = s,
                        _ => ranges.push((s, s)),
                    }
                }
                (conv, ranges)
            })
            .collect();
        self.first_sent = self.destroyed.iter().map(|d| d.sent).min();
        self.last_sent = self.destroyed.iter().map(|d| d.sent).max();
    }
}

impl Lifecycle {
    /// The active holds that cover `meta`.
    pub fn holds_on(&self, meta: &RecordMeta) -> Vec<u64> {
        self.holds
            .values()
            .filter(|h| h.active() && h.scope.covers(meta))
            .map(|h| h.id)
            .collect()
    }

    /// Whether the record `meta` (holding content or not) may be
    /// destroyed on `today`, and if not, why.
    pub fn standing(&self, meta: &RecordMeta, has_content: bool, today: Day) -> Standing {
        if !has_content {
            return Standing::Destroyed;
        }
        let held = self.holds_on(meta);
        if !held.is_empty() {
            return Standing::Held { holds: held };
        }
        let a = self.assign(meta);
        if a.permanent {
            return Standing::Permanent {
                transfer_day: a.transfer_day,
            };
        }
        match a.disposition_day {
            None => Standing::Pending {
                why: a.pending.unwrap_or_default(),
            },
            Some(d) if d > today => Standing::NotDue { disposition_day: d },
            Some(_) => Standing::Eligible,
        }
    }
}
