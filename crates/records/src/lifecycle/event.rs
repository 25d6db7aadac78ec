//! The lifecycle's events: each decision as it is logged ([`Event`]), and
//! how it changes the state ([`Lifecycle::apply_as`]) — or is refused,
//! changing nothing, when it contradicts it.

use serde::{Deserialize, Serialize};

use super::dates::Day;
use super::directory::Role;
use super::disposition::{Approval, Batch, BatchState, Certificate};
use super::holds::{self, Hold, HoldKind, Release, Scope};
use super::incidents::{Incident, IncidentKind, IncidentStatus, Update};
use super::schedule::{self, AgencyItems, Settings};
use super::{na1005, ConversationItem, Lifecycle};
use crate::RecordsError;

/// A decision about the lifecycle, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// The agency's settings, replacing the previous ones.
    Settings {
        settings: Settings,
    },
    /// The agency's own items (its schedule file), replacing the previous.
    AgencyItems {
        items: AgencyItems,
    },
    /// A person starts in a position.
    RoleStart {
        role: Role,
    },
    /// A person's role ends; `on` is their last day in it.
    RoleEnd {
        user: String,
        position: String,
        on: Day,
    },
    /// A conversation's records from `from` on are kept under `item`
    /// (GRS 5.2 item 010 for a transitory conversation, or an agency
    /// item); none: under their participants' item again.
    ConversationItem {
        conv: String,
        item: Option<String>,
        from: Day,
        reason: String,
    },
    /// The agency's NA-1005 data, replacing the previous.
    Na1005 {
        form: na1005::Na1005,
    },
    /// A hold placed.
    HoldPlace {
        kind: HoldKind,
        name: String,
        matter: String,
        authority: String,
        scope: Scope,
    },
    /// A hold (by the number of the event that placed it) released.
    HoldRelease {
        hold: u64,
        reason: String,
    },
    /// A disposition batch proposed: these records, or — forced, with
    /// its reason — records that are not eligible.
    BatchPropose {
        records: Vec<i64>,
        forced: Option<String>,
        note: String,
    },
    BatchApprove {
        batch: u64,
    },
    BatchCancel {
        batch: u64,
        reason: String,
    },
    /// A batch executed: its certificate.
    BatchExecute {
        certificate: Certificate,
    },
    IncidentOpen {
        kind: IncidentKind,
        description: String,
        records: Vec<i64>,
        batch: Option<u64>,
    },
    /// What happened since, and the officer's account of what only a
    /// person can say for the 36 CFR 1230.14 report (each replaces the
    /// one given before).
    IncidentUpdate {
        incident: u64,
        status: Option<IncidentStatus>,
        nara_case: Option<String>,
        note: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        circumstances: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        safeguards: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        salvage: Option<String>,
    },
    /// The integrity report: what `verify` found, run by the records
    /// service ([`super::integrity`]).
    IntegrityReport {
        report: super::integrity::Integrity,
    },
}

impl Event {
    /// The kind stored beside it and named in its leaf.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Settings { .. } => "settings",
            Event::AgencyItems { .. } => "agency-items",
            Event::RoleStart { .. } => "role-start",
            Event::RoleEnd { .. } => "role-end",
            Event::ConversationItem { .. } => "conversation-item",
            Event::Na1005 { .. } => "na1005",
            Event::HoldPlace { .. } => "hold-place",
            Event::HoldRelease { .. } => "hold-release",
            Event::BatchPropose { .. } => "batch-propose",
            Event::BatchApprove { .. } => "batch-approve",
            Event::BatchCancel { .. } => "batch-cancel",
            Event::BatchExecute { .. } => "batch-execute",
            Event::IncidentOpen { .. } => "incident-open",
            Event::IncidentUpdate { .. } => "incident-update",
            Event::IntegrityReport { .. } => "integrity-report",
        }
    }

    /// Its canonical text (what is stored, and hashed into its leaf).
    pub fn to_json(&self) -> String {
        // Invariant: events hold strings, numbers and lists of them.
        serde_json::to_string(self).expect("an event serialises")
    }
}

impl Lifecycle {
    /// Apply event `n` with no actor (tests of the rules alone).
    pub fn apply(&mut self, n: u64, event: &Event) -> Result<(), RecordsError> {
        self.apply_as(n, "", 0, event)
    }

    /// Apply event `n`, taken by `actor` at `at_ms`: refused, changing
    /// nothing, if it contradicts the state (a role that overlaps, an
    /// unknown item, a bad setting, an approval by the proposer). Every
    /// branch checks everything before it changes anything.
    pub fn apply_as(
        &mut self,
        n: u64,
        actor: &str,
        at_ms: u64,
        event: &Event,
    ) -> Result<(), RecordsError> {
        match event {
            Event::Settings { settings } => {
                settings.check()?;
                self.settings = settings.clone();
            }
            Event::AgencyItems { items } => {
                items.check()?;
                // An item a conversation's records were ever kept under
                // can be neither withdrawn nor given a shorter life under
                // the same code: records already captured under it would
                // fall due early, with nobody approving it.
                for (conv, changes) in &self.conversations {
                    for code in changes.iter().filter_map(|c| c.item.as_ref()) {
                        if schedule::grs_items().iter().any(|i| &i.code == code) {
                            continue;
                        }
                        let before = self.agency.items.iter().find(|i| &i.code == code);
                        let after = items.items.iter().find(|i| &i.code == code);
                        match (before, after) {
                            (_, None) => {
                                return Err(RecordsError::Archive(format!(
                                    "conversation {conv}'s records are kept under `{code}`, which the new schedule file lacks: keep it (a new code for a new rule)"
                                )))
                            }
                            (Some(b), Some(a)) if (b.retention, b.cutoff) != (a.retention, a.cutoff) => {
                                return Err(RecordsError::Archive(format!(
                                    "`{code}` keeps conversation {conv}'s records: its retention and cutoff cannot change under the same code (give the new rule a new code)"
                                )))
                            }
                            _ => {}
                        }
                    }
                }
                self.agency = items.clone();
            }
            Event::RoleStart { role } => self.directory.start(role.clone())?,
            Event::RoleEnd { user, position, on } => self.directory.end(user, position, *on)?,
            Event::ConversationItem {
                conv,
                item,
                from,
                reason,
            } => {
                if let Some(code) = item {
                    let item = self.item(code).ok_or_else(|| {
                        RecordsError::Archive(format!(
                            "no item `{code}`: a GRS item or one of the agency's schedule file"
                        ))
                    })?;
                    if item.permanent() {
                        return Err(RecordsError::Archive(format!(
                            "`{code}` is permanent: conversations are given permanent retention by their participants' roles, not one by one"
                        )));
                    }
                }
                holds::check_text("reason (--reason)", reason)?;
                self.conversations
                    .entry(conv.clone())
                    .or_default()
                    .push(ConversationItem {
                        item: item.clone(),
                        from: *from,
                        reason: reason.clone(),
                        event: n,
                    });
            }
            Event::Na1005 { form } => {
                form.check()?;
                self.na1005 = form.clone();
            }
            Event::HoldPlace {
                kind,
                name,
                matter,
                authority,
                scope,
            } => {
                holds::check_text("hold's name", name)?;
                holds::check_text("hold's matter", matter)?;
                holds::check_text("hold's authority", authority)?;
                scope.check()?;
                self.holds.insert(
                    n,
                    Hold {
                        id: n,
                        kind: *kind,
                        name: name.clone(),
                        matter: matter.clone(),
                        authority: authority.clone(),
                        scope: scope.clone(),
                        placed_by: actor.to_string(),
                        placed_at_ms: at_ms,
                        released: None,
                    },
                );
            }
            Event::HoldRelease { hold, reason } => {
                holds::check_text("reason for the release", reason)?;
                let h = self
                    .holds
                    .get_mut(hold)
                    .filter(|h| h.active())
                    .ok_or_else(|| RecordsError::Archive(format!("no hold {hold} is in force")))?;
                h.released = Some(Release {
                    by: actor.to_string(),
                    at_ms,
                    reason: reason.clone(),
                });
            }
            Event::BatchPropose {
                records,
                forced,
                note,
            } => {
                if records.is_empty() {
                    return Err(RecordsError::Archive(
                        "a disposition batch names at least one record".into(),
                    ));
                }
                if let Some(reason) = forced {
                    holds::check_text("reason for forcing it", reason)?;
                }
                self.batches.insert(
                    n,
                    Batch {
                        id: n,
                        records: records.clone(),
                        forced: forced.clone(),
                        note: note.clone(),
                        proposed_by: actor.to_string(),
                        proposed_at_ms: at_ms,
                        needs_approval: self.settings.second_approver || forced.is_some(),
                        approvals: Vec::new(),
                        state: BatchState::Proposed,
                        executed: None,
                    },
                );
            }
            Event::BatchApprove { batch } => {
                let b = self.open_batch(*batch)?;
                if b.proposed_by == actor {
                    return Err(RecordsError::Access(format!(
                        "{actor} proposed batch {batch}: another account approves it"
                    )));
                }
                if b.state == BatchState::Approved {
                    return Err(RecordsError::Archive(format!(
                        "batch {batch} is approved already"
                    )));
                }
                let b = self.batches.get_mut(batch).expect("checked above");
                b.approvals.push(Approval {
                    by: actor.to_string(),
                    at_ms,
                });
                b.state = BatchState::Approved;
            }
            Event::BatchCancel { batch, reason } => {
                holds::check_text("reason for cancelling", reason)?;
                self.open_batch(*batch)?;
                self.batches.get_mut(batch).expect("checked above").state = BatchState::Cancelled;
            }
            Event::BatchExecute { certificate } => {
                let batch = certificate.batch;
                let b = self.open_batch(batch)?;
                if !self.may_execute(b) {
                    return Err(RecordsError::Access(format!(
                        "batch {batch} is not approved: another account approves it first"
                    )));
                }
                let b = self.batches.get_mut(&batch).expect("checked above");
                b.state = BatchState::Executed;
                b.executed = Some(n);
            }
            Event::IncidentOpen {
                kind,
                description,
                records,
                batch,
            } => {
                holds::check_text("incident's description", description)?;
                let opened = Day::of_ms(at_ms);
                self.incidents.insert(
                    n,
                    Incident {
                        id: n,
                        kind: *kind,
                        description: description.clone(),
                        records: records.clone(),
                        batch: *batch,
                        opened_by: actor.to_string(),
                        opened_at_ms: at_ms,
                        report_due: opened.plus_days(self.settings.incident_report_days),
                        status: IncidentStatus::Open,
                        nara_case: None,
                        circumstances: None,
                        safeguards: None,
                        salvage: None,
                        updates: Vec::new(),
                    },
                );
            }
            Event::IncidentUpdate {
                incident,
                status,
                nara_case,
                note,
                circumstances,
                safeguards,
                salvage,
            } => {
                holds::check_text("update's note", note)?;
                for (what, text) in [
                    ("account of the circumstances", circumstances),
                    ("safeguards", safeguards),
                    ("salvage account", salvage),
                ] {
                    if let Some(t) = text {
                        holds::check_text(what, t)?;
                    }
                }
                let i = self
                    .incidents
                    .get_mut(incident)
                    .ok_or_else(|| RecordsError::Archive(format!("no incident {incident}")))?;
                if i.status == IncidentStatus::Closed {
                    return Err(RecordsError::Archive(format!(
                        "incident {incident} is closed"
                    )));
                }
                if let Some(s) = status {
                    i.status = *s;
                }
                if let Some(case) = nara_case {
                    i.nara_case = Some(case.clone());
                }
                for (field, text) in [
                    (&mut i.circumstances, circumstances),
                    (&mut i.safeguards, safeguards),
                    (&mut i.salvage, salvage),
                ] {
                    if let Some(t) = text {
                        *field = Some(t.clone());
                    }
                }
                i.updates.push(Update {
                    event: n,
                    by: actor.to_string(),
                    at_ms,
                    status: *status,
                    note: note.clone(),
                });
            }
            Event::IntegrityReport { report } => {
                self.last_integrity = Some((n, report.ok));
            }
        }
        self.last_event = n;
        Ok(())
    }

    /// Batch `id`, while it may still be approved, cancelled or run.
    fn open_batch(&self, id: u64) -> Result<&Batch, RecordsError> {
        match self.batches.get(&id) {
            None => Err(RecordsError::Archive(format!("no disposition batch {id}"))),
            Some(b) if matches!(b.state, BatchState::Executed | BatchState::Cancelled) => {
                Err(RecordsError::Archive(
                    format!("disposition batch {id} was {:?} already", b.state).to_lowercase(),
                ))
            }
            Some(b) => Ok(b),
        }
    }

    /// Whether batch `b` has the approvals it needs to run.
    pub fn may_execute(&self, b: &Batch) -> bool {
        b.state == BatchState::Approved || (b.state == BatchState::Proposed && !b.needs_approval)
    }
}
