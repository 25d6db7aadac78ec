//! The lifecycle at the records office: decisions taken as events (each
//! checked against the lifecycle as it stands, logged, and covered by a
//! checkpoint before the answer), and the schedules read back. The rules
//! are the records crate's ([`keepwire_records::lifecycle`]); this only
//! carries requests to them.

use keepwire_records::accounts::Action;
use keepwire_records::lifecycle::dates::Day;
use keepwire_records::lifecycle::disposition::Standing;
use keepwire_records::lifecycle::{Event, Lifecycle};
use serde_json::{json, Value};

use super::{Answer, Office, Refusal};

fn to_value(v: impl serde::Serialize) -> Result<Value, Refusal> {
    serde_json::to_value(v).map_err(|e| Refusal::Failed(e.to_string()))
}

impl Office {
    pub(super) fn lifecycle_event(
        &mut self,
        actor: &str,
        event: Event,
        now: u64,
    ) -> Result<Answer, Refusal> {
        let (n, _) = self.archive.record_event(actor, &event, now)?;
        tracing::info!(
            actor,
            event = n,
            kind = event.kind(),
            "lifecycle event logged"
        );
        Ok(Answer::Covered(json!({
            "event": n,
            "kind": event.kind(),
            "actor": actor,
            "detail": event,
        })))
    }

    pub(super) fn lifecycle_state(&self, on: Option<Day>, now: u64) -> Result<Answer, Refusal> {
        let state = self.archive.lifecycle()?;
        let on = on.unwrap_or(Day::of_ms(now));
        let items: Vec<Value> = state
            .items()
            .map(|i| {
                let mut v = to_value(i)?;
                v["disposition"] = i.describe(&state.settings).into();
                Ok(v)
            })
            .collect::<Result<_, Refusal>>()?;
        Ok(Answer::Now(json!({
            "on": on,
            "items": items,
            "settings": to_value(&state.settings)?,
            "directory": to_value(&state.directory.roles)?,
            "conversations": to_value(&state.conversations)?,
            "na1005": to_value(state.na1005_on(on))?,
            "na1005_declared": to_value(&state.na1005)?,
            "holds": to_value(state.holds.values().collect::<Vec<_>>())?,
            "batches": to_value(state.batches.values().map(|b| {
                let mut v = serde_json::to_value(b).unwrap_or_default();
                v["records"] = b.records.len().into();
                v["ready"] = state.may_execute(b).into();
                v
            }).collect::<Vec<_>>())?,
            "incidents": to_value(state.incidents.values().collect::<Vec<_>>())?,
            "last_event": state.last_event,
        })))
    }

    pub(super) fn schedule(&self, id: Option<i64>) -> Result<Answer, Refusal> {
        match id {
            Some(id) => {
                let record = self
                    .archive
                    .get(id, false)?
                    .ok_or_else(|| Refusal::NotFound(format!("no record {id}")))?;
                let events = self.archive.lifecycle_events()?;
                let state = Lifecycle::fold(&events)?;
                Ok(Answer::Now(json!({
                    "id": id,
                    "conv": record.meta.conv,
                    "seq": record.meta.seq,
                    "kind": record.meta.kind,
                    "sent_ms": record.meta.server_time_ms,
                    "schedule": to_value(state.assign(&record.meta))?,
                    "history": to_value(Lifecycle::history(&record.meta, &events)?)?,
                })))
            }
            None => {
                let state = self.archive.lifecycle()?;
                let rows: Vec<Value> = self
                    .archive
                    .list(false, false)?
                    .iter()
                    .map(|r| {
                        Ok(json!({
                            "id": r.id,
                            "conv": r.meta.conv,
                            "seq": r.meta.seq,
                            "kind": r.meta.kind,
                            "sent_ms": r.meta.server_time_ms,
                            "schedule": to_value(state.assign(&r.meta))?,
                        }))
                    })
                    .collect::<Result<_, Refusal>>()?;
                Ok(Answer::Now(Value::Array(rows)))
            }
        }
    }
}

/// What a lifecycle event sent as it is asks of its actor's role.
/// Proposing and executing a batch, opening an incident and an integrity
/// report are never taken as plain events ([`direct`] refuses them before
/// anyone signs in): they have requests of their own that check the
/// records first.
pub(super) fn action(event: &Event) -> Action {
    match event {
        Event::HoldPlace { .. } | Event::HoldRelease { .. } => Action::Hold,
        Event::BatchApprove { .. } => Action::ApproveDisposition,
        Event::BatchCancel { .. } => Action::Destroy,
        Event::IncidentUpdate { .. } => Action::ManageIncidents,
        Event::Settings { .. }
        | Event::AgencyItems { .. }
        | Event::RoleStart { .. }
        | Event::RoleEnd { .. }
        | Event::ConversationItem { .. }
        | Event::Na1005 { .. }
        // Refused by `direct` first; named for completeness.
        | Event::BatchPropose { .. }
        | Event::BatchExecute { .. }
        | Event::IncidentOpen { .. }
        | Event::IntegrityReport { .. } => Action::ManageSchedules,
    }
}

/// Whether `event` may be sent as a plain lifecycle event: not one whose
/// content the archive makes (a certificate, an incident, a report) or
/// checks against the records (a proposal) — sent as is, it would log a
/// certificate for records nobody destroyed.
pub(super) fn direct(event: &Event) -> Result<(), Refusal> {
    match event {
        Event::BatchPropose { .. } => Err("a batch is proposed with `records disposition propose`"),
        Event::BatchExecute { .. } => Err("a batch is executed with `records disposition execute`"),
        Event::IncidentOpen { .. } => {
            Err("incidents are opened by the archive itself (a forced disposition, an integrity report)")
        }
        Event::IntegrityReport { .. } => Err("the integrity report is made with `records report integrity`"),
        _ => Ok(()),
    }
    .map_err(|why| Refusal::Invalid(why.to_string()))
}

impl Office {
    pub(super) fn standings(&self, eligible: bool, now: u64) -> Result<Answer, Refusal> {
        let (_, rows) = self.archive.standings(Day::of_ms(now))?;
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| !eligible || r.standing == Standing::Eligible)
            .collect();
        Ok(Answer::Now(to_value(rows)?))
    }

    pub(super) fn propose(
        &mut self,
        actor: &str,
        records: Option<Vec<i64>>,
        forced: Option<String>,
        note: &str,
        now: u64,
    ) -> Result<Answer, Refusal> {
        let (batch, ids) = self
            .archive
            .propose_batch(actor, records, forced.clone(), note, now)?;
        let state = self.archive.lifecycle()?;
        let ready = state
            .batches
            .get(&batch)
            .is_some_and(|b| state.may_execute(b));
        Ok(Answer::Covered(json!({
            "batch": batch,
            "records": ids.len(),
            "forced": forced,
            "proposed_by": actor,
            "needs_approval": !ready,
        })))
    }

    pub(super) fn execute(&mut self, actor: &str, batch: u64, now: u64) -> Result<Answer, Refusal> {
        let (certificate, event, incident) = self.archive.execute_batch(actor, batch, now)?;
        tracing::warn!(
            actor,
            batch,
            destroyed = certificate.destroyed.len(),
            forced = certificate.forced.is_some(),
            "disposition batch executed"
        );
        Ok(Answer::Covered(json!({
            "batch": batch,
            "event": event,
            "incident": incident,
            "certificate": to_value(&certificate)?,
        })))
    }

    pub(super) fn certificate(&self, batch: u64) -> Result<Answer, Refusal> {
        let state = self.archive.lifecycle()?;
        let event = state
            .batches
            .get(&batch)
            .and_then(|b| b.executed)
            .ok_or_else(|| Refusal::NotFound(format!("batch {batch} has not been executed")))?;
        let mut proof = self.proof_of(event)?;
        proof["certificate"] = proof["detail"]["certificate"].take();
        Ok(Answer::Now(proof))
    }

    pub(super) fn event_proof(&self, event: u64) -> Result<Answer, Refusal> {
        self.proof_of(event).map(Answer::Now)
    }

    /// Lifecycle event `event` with its leaf, the leaf's inclusion proof
    /// and the latest signed checkpoint, which must cover it.
    fn proof_of(&self, event: u64) -> Result<Value, Refusal> {
        let row = self
            .archive
            .lifecycle_events()?
            .into_iter()
            .find(|e| e.n == event)
            .ok_or_else(|| Refusal::NotFound(format!("no lifecycle event {event}")))?;
        let leaf = row
            .leaf
            .ok_or_else(|| Refusal::Failed(format!("event {event} has no leaf")))?;
        let (size, note) = self
            .archive
            .latest_checkpoint()?
            .filter(|(size, _)| *size > leaf)
            .ok_or_else(|| {
                Refusal::Unavailable(
                    "no checkpoint covers the event yet: run `keepwire records checkpoint`".into(),
                )
            })?;
        let path = self.archive.prove_inclusion(size, leaf)?;
        let data = self
            .archive
            .log_leaf(leaf)?
            .map(|(_, _, d)| d)
            .unwrap_or_default();
        let detail: Value = serde_json::from_str(&row.body)
            .map_err(|e| Refusal::Failed(format!("event {event} does not parse: {e}")))?;
        Ok(json!({
            "event": event,
            "kind": row.kind,
            "detail": detail,
            "event_json": row.body,
            "leaf_index": leaf,
            "leaf": String::from_utf8_lossy(&data),
            "tree_size": size,
            "inclusion_path": path.iter().map(|h| keepwire_protocol::b64::encode(&h.0)).collect::<Vec<_>>(),
            "checkpoint": note,
            "verifier_key": self.notary.verifier_key,
        }))
    }
}
