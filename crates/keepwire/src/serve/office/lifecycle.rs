//! The lifecycle at the records office: decisions taken as events (each
//! checked against the lifecycle as it stands, logged, and covered by a
//! checkpoint before the answer), and the schedules read back. The rules
//! are the records crate's ([`keepwire_records::lifecycle`]); this only
//! carries requests to them.

use keepwire_records::lifecycle::dates::Day;
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
                let mut v = to_value(&i)?;
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
