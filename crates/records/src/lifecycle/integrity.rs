//! The integrity report: `verify` run by the records service with the
//! archive key and the checkpoint key's public half, its result logged
//! as a lifecycle event — so the report is signed by the checkpoint that
//! covers its leaf — and what it found put in the incident register:
//! records missing or altered (an `archive-damage` incident), and
//! entries the records member could not capture (withheld, delivered to
//! no one: a `capture-failure` incident per conversation), each opened
//! once.

use serde::{Deserialize, Serialize};

use super::incidents::IncidentKind;
use super::Event;
use crate::verify::{self, Problem};
use crate::{Archive, RecordKind, RecordsError};

/// What the integrity report says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integrity {
    pub ok: bool,
    pub tree_size: u64,
    pub records: u64,
    pub conversations: u64,
    pub checkpoints: u64,
    pub content_checked: bool,
    pub signatures_checked: bool,
    pub problems: Vec<Problem>,
    /// The latest checkpoint when the check ran (its signed note).
    pub latest_checkpoint: Option<String>,
    /// The incidents this check opened.
    pub incidents_opened: Vec<u64>,
}

/// Problems listed in an incident's description at most (all are in the
/// report).
const DESCRIBED: usize = 5;

impl Archive {
    /// Verify the archive (checkpoint signatures against `verifier_key`),
    /// open the incidents what it found calls for, and log the report, by
    /// `actor`. Returns the report's event number and the report.
    pub fn integrity_check(
        &mut self,
        actor: &str,
        verifier_key: &str,
        now_ms: u64,
    ) -> Result<(u64, Integrity), RecordsError> {
        let options = verify::Options {
            verifier_key: Some(verifier_key.to_string()),
            ..Default::default()
        };
        let report = verify::verify(self, &options, |_, _| {})?;
        let state = self.lifecycle()?;
        let mut opened = Vec::new();

        // Withheld entries no capture-failure incident names yet, per
        // conversation.
        let covered: std::collections::BTreeSet<i64> = state
            .incidents
            .values()
            .filter(|i| i.kind == IncidentKind::CaptureFailure)
            .flat_map(|i| i.records.iter().copied())
            .collect();
        let mut withheld: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for r in self.list(false, false)? {
            if r.meta.kind == RecordKind::Withheld && !covered.contains(&r.id) {
                withheld.entry(r.meta.conv.clone()).or_default().push(r.id);
            }
        }
        for (conv, records) in withheld {
            let event = Event::IncidentOpen {
                kind: IncidentKind::CaptureFailure,
                description: format!(
                    "conversation {conv}: {} entr{} the records member could not capture (archived as withheld, delivered to no one; the sending device was blocked and the conversation suspended)",
                    records.len(),
                    if records.len() == 1 { "y" } else { "ies" }
                ),
                records,
                batch: None,
            };
            opened.push(self.record_event(actor, &event, now_ms)?.0);
        }

        // Damage, unless the open incident already says the same.
        if !report.problems.is_empty() {
            let mut description = format!(
                "records verify found {} problem(s): {}",
                report.problems.len(),
                report
                    .problems
                    .iter()
                    .take(DESCRIBED)
                    .map(|p| p.detail.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if report.problems.len() > DESCRIBED {
                description.push_str("; …");
            }
            let known = state.incidents.values().any(|i| {
                i.kind == IncidentKind::ArchiveDamage
                    && i.status != super::incidents::IncidentStatus::Closed
                    && i.description == description
            });
            if !known {
                let mut records: Vec<i64> =
                    report.problems.iter().filter_map(|p| p.record_id).collect();
                records.sort_unstable();
                records.dedup();
                let event = Event::IncidentOpen {
                    kind: IncidentKind::ArchiveDamage,
                    description,
                    records,
                    batch: None,
                };
                opened.push(self.record_event(actor, &event, now_ms)?.0);
            }
        }

        let integrity = Integrity {
            ok: report.ok(),
            tree_size: report.tree_size,
            records: report.records,
            conversations: report.conversations,
            checkpoints: report.checkpoints,
            content_checked: report.content_checked,
            signatures_checked: report.signatures_checked,
            problems: report.problems,
            latest_checkpoint: self.latest_checkpoint()?.map(|(_, note)| note),
            incidents_opened: opened,
        };
        let (n, _) = self.record_event(
            actor,
            &Event::IntegrityReport {
                report: integrity.clone(),
            },
            now_ms,
        )?;
        Ok((n, integrity))
    }
}
