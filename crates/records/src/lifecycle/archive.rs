//! The lifecycle on the archive: events read, checked and appended with
//! their leaves; eligibility over the stored records; a disposition
//! batch proposed, approved and executed in one transaction.

use sha2::Digest;

use super::{Event, Lifecycle};
use crate::archive::store::StoredEvent;
use crate::RecordsError;

impl crate::Archive {
    /// Every lifecycle event, in order.
    pub fn lifecycle_events(&self) -> Result<Vec<StoredEvent>, RecordsError> {
        self.store().events(0)
    }

    /// The lifecycle as its events leave it.
    pub fn lifecycle(&self) -> Result<Lifecycle, RecordsError> {
        Lifecycle::fold(&self.lifecycle_events()?)
    }

    /// Take `event`, by `actor`: checked against the lifecycle as it
    /// stands (refused, writing nothing, if it contradicts it), then
    /// appended with the leaf that commits to it, in one transaction.
    /// Returns the event's number and the state it leaves.
    pub fn record_event(
        &mut self,
        actor: &str,
        event: &Event,
        at_ms: u64,
    ) -> Result<(u64, Lifecycle), RecordsError> {
        // Another writer may append between the read and the write (a
        // second office on PostgreSQL): the store takes the event only
        // as the next number, so a stale check is taken again.
        for _ in 0..8 {
            let mut state = self.lifecycle()?;
            let n = state.last_event + 1;
            state.apply_as(n, actor, at_ms, event)?;
            let body = event.to_json();
            let stored = StoredEvent {
                n,
                kind: event.kind().to_string(),
                actor: actor.to_string(),
                at_ms,
                body,
                leaf: None,
            };
            let leaf = event_leaf(&stored);
            if self.store_mut().append_event(&stored, &leaf)? {
                return Ok((n, state));
            }
        }
        Err(RecordsError::Archive(
            "the lifecycle kept changing while this event was checked: try again".into(),
        ))
    }
}

/// The leaf that commits to a lifecycle event.
pub fn event_leaf(e: &StoredEvent) -> crate::tlog::Leaf {
    crate::tlog::Leaf::Lifecycle {
        event: e.n,
        kind: e.kind.clone(),
        actor: e.actor.clone(),
        at_ms: e.at_ms,
        body_sha256: hex::encode(sha2::Sha256::digest(e.body.as_bytes())),
    }
}

/// A record with its schedule and its standing on a day.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Standing {
    pub id: i64,
    pub conv: String,
    pub seq: u64,
    pub kind: crate::RecordKind,
    pub sent_ms: u64,
    pub schedule: super::Assignment,
    #[serde(flatten)]
    pub standing: super::disposition::Standing,
}

/// How many records a batch may name. A batch runs in one transaction,
/// holding the archive's write lock while it does — capture waits behind
/// it, up to the stores' 5-second lock timeout — and measured at about
/// 12,000 records a second on the bench host, 20,000 keep it well under.
/// A proposal of every eligible record takes the first this many.
pub const MAX_BATCH: usize = 20_000;

impl crate::Archive {
    /// Why record `id`'s row is not what its leaf commits to, if it is
    /// not: its metadata (sender, participants, times, kind) read back
    /// from the leaf and compared.
    fn row_differs_from_leaf(&self, id: i64) -> Result<Option<String>, RecordsError> {
        let Some(record) = self.get(id, false)? else {
            return Ok(Some("no such record".into()));
        };
        let Some(n) = record.leaf else {
            return Ok(Some("it has no leaf in the log: run records verify".into()));
        };
        let leaf = self
            .log_leaf(n)?
            .and_then(|(_, _, data)| serde_json::from_slice::<crate::tlog::Leaf>(&data).ok());
        Ok(match leaf {
            Some(crate::tlog::Leaf::Record { meta, .. }) if meta == record.meta => None,
            _ => Some(format!(
                "its row does not match its leaf {n}: run records verify (an incident, not a disposition)"
            )),
        })
    }

    /// Every record's schedule and standing on `today`, in capture order,
    /// with the lifecycle they were computed from.
    pub fn standings(
        &self,
        today: super::dates::Day,
    ) -> Result<(Lifecycle, Vec<Standing>), RecordsError> {
        let state = self.lifecycle()?;
        let rows = self
            .list(true, false)?
            .into_iter()
            .map(|r| Standing {
                id: r.id,
                conv: r.meta.conv.clone(),
                seq: r.meta.seq,
                kind: r.meta.kind,
                sent_ms: r.meta.server_time_ms,
                schedule: state.assign(&r.meta),
                standing: state.standing(&r.meta, r.has_content, today),
            })
            .collect();
        Ok((state, rows))
    }

    /// Propose a disposition batch, by `actor`: `records` (every eligible
    /// record when none are named). Unforced, each must be eligible on
    /// the day; forced (with its reason), each must still hold content.
    pub fn propose_batch(
        &mut self,
        actor: &str,
        records: Option<Vec<i64>>,
        forced: Option<String>,
        note: &str,
        now_ms: u64,
    ) -> Result<(u64, Vec<i64>), RecordsError> {
        let today = super::dates::Day::of_ms(now_ms);
        let (_, all) = self.standings(today)?;
        let by_id: std::collections::BTreeMap<i64, &Standing> =
            all.iter().map(|s| (s.id, s)).collect();
        let ids: Vec<i64> = match (records, &forced) {
            (None, None) => all
                .iter()
                .filter(|s| s.standing == super::disposition::Standing::Eligible)
                .map(|s| s.id)
                .take(MAX_BATCH)
                .collect(),
            (None, Some(_)) => {
                return Err(RecordsError::Archive(
                    "a forced disposition names its records one by one".into(),
                ))
            }
            (Some(ids), _) => {
                let mut ids = ids;
                ids.sort_unstable();
                ids.dedup();
                ids
            }
        };
        if ids.is_empty() {
            return Err(RecordsError::Archive(format!(
                "no record is eligible for disposition on {today}"
            )));
        }
        if ids.len() > MAX_BATCH {
            return Err(RecordsError::Archive(format!(
                "{} records: a batch names at most {MAX_BATCH} (it runs in one transaction, which capture waits behind)",
                ids.len()
            )));
        }
        let mut refused = Vec::new();
        for id in &ids {
            match by_id.get(id).map(|s| &s.standing) {
                None => refused.push(format!("no record {id}")),
                Some(super::disposition::Standing::Eligible) => {}
                Some(super::disposition::Standing::Destroyed) => {
                    refused.push(format!("record {id}: {}", super::disposition::Standing::Destroyed.describe()))
                }
                Some(other) if forced.is_none() => refused.push(format!(
                    "record {id}: {} — destroying it would be unlawful (36 CFR 1230.3); only a forced disposition (--force with a reason, and a second approver) does it, and opens an incident",
                    other.describe()
                )),
                Some(_) => {}
            }
        }
        if !refused.is_empty() {
            let more = refused.len().saturating_sub(10);
            let mut text = refused.into_iter().take(10).collect::<Vec<_>>().join("; ");
            if more > 0 {
                text.push_str(&format!("; and {more} more"));
            }
            return Err(RecordsError::Archive(text));
        }
        let event = Event::BatchPropose {
            records: ids.clone(),
            forced,
            note: note.to_string(),
        };
        let (n, _) = self.record_event(actor, &event, now_ms)?;
        Ok((n, ids))
    }

    /// Execute batch `batch`, by `actor`: every record re-checked against
    /// the lifecycle as it stands (a record now held, or no longer
    /// eligible, is kept and listed as kept), the rest crypto-shredded
    /// with tombstones naming their item, the batch and its approvals,
    /// and the certificate logged — with, for a forced batch, an incident
    /// — all in one transaction that the store takes only if no event
    /// came meanwhile. Returns the certificate, its event and the
    /// incident's.
    pub fn execute_batch(
        &mut self,
        actor: &str,
        batch: u64,
        now_ms: u64,
    ) -> Result<(super::disposition::Certificate, u64, Option<u64>), RecordsError> {
        use super::disposition::{Certificate, Destroyed, Kept, Standing as S};
        let today = super::dates::Day::of_ms(now_ms);
        for _ in 0..8 {
            let (state, all) = self.standings(today)?;
            let b =
                state.batches.get(&batch).cloned().ok_or_else(|| {
                    RecordsError::Archive(format!("no disposition batch {batch}"))
                })?;
            let by_id: std::collections::BTreeMap<i64, &Standing> =
                all.iter().map(|s| (s.id, s)).collect();
            let mut cert = Certificate {
                batch,
                destroyed: Vec::new(),
                conversations: Default::default(),
                first_sent: None,
                last_sent: None,
                counts: Default::default(),
                proposed_by: b.proposed_by.clone(),
                approved_by: b.approvals.iter().map(|a| a.by.clone()).collect(),
                executed_by: actor.to_string(),
                forced: b.forced.clone(),
                kept: Vec::new(),
            };
            for id in &b.records {
                let Some(s) = by_id.get(id) else {
                    cert.kept.push(Kept {
                        id: *id,
                        why: "no such record".into(),
                    });
                    continue;
                };
                // What the approvers saw: a hold placed since the batch
                // was proposed keeps its records, forced or not.
                if let S::Held { holds } = &s.standing {
                    if holds.iter().any(|h| *h > b.id) {
                        cert.kept.push(Kept {
                            id: *id,
                            why: format!(
                                "{}, placed after the batch was proposed",
                                s.standing.describe()
                            ),
                        });
                        continue;
                    }
                }
                // The row it was judged by must be what its leaf says
                // (a backdated or altered row is not destroyed on its
                // word).
                if let Some(why) = self.row_differs_from_leaf(*id)? {
                    cert.kept.push(Kept { id: *id, why });
                    continue;
                }
                let unlawful = match (&s.standing, &b.forced) {
                    (S::Eligible, _) => None,
                    (S::Destroyed, _) => {
                        cert.kept.push(Kept {
                            id: *id,
                            why: S::Destroyed.describe(),
                        });
                        continue;
                    }
                    (other, Some(_)) => Some(other.describe()),
                    (other, None) => {
                        cert.kept.push(Kept {
                            id: *id,
                            why: other.describe(),
                        });
                        continue;
                    }
                };
                cert.destroyed.push(Destroyed {
                    id: *id,
                    conv: s.conv.clone(),
                    seq: s.seq,
                    sent: super::dates::Day::of_ms(s.sent_ms),
                    item: s.schedule.item.clone(),
                    unlawful,
                });
            }
            cert.summarize();
            // Checked here, taken by the store only as the next events.
            let mut probe = state.clone();
            let n = state.last_event + 1;
            let execute = Event::BatchExecute {
                certificate: cert.clone(),
            };
            probe.apply_as(n, actor, now_ms, &execute)?;
            let mut events = vec![(n, execute)];
            // An incident when something unlawful is destroyed.
            let unlawful_any = cert.destroyed.iter().any(|d| d.unlawful.is_some());
            let incident = cert.forced.as_ref().filter(|_| unlawful_any).map(|reason| {
                let unlawful: Vec<&Destroyed> =
                    cert.destroyed.iter().filter(|d| d.unlawful.is_some()).collect();
                Event::IncidentOpen {
                    kind: super::incidents::IncidentKind::UnauthorizedDisposition,
                    description: format!(
                        "forced disposition batch {batch}: {} record(s) destroyed that were not eligible ({reason})",
                        unlawful.len()
                    ),
                    records: unlawful.iter().map(|d| d.id).collect(),
                    batch: Some(batch),
                }
            });
            if let Some(i) = incident {
                probe.apply_as(n + 1, actor, now_ms, &i)?;
                events.push((n + 1, i));
            }
            let stored: Vec<(StoredEvent, crate::tlog::Leaf)> = events
                .iter()
                .map(|(n, e)| {
                    let s = StoredEvent {
                        n: *n,
                        kind: e.kind().to_string(),
                        actor: actor.to_string(),
                        at_ms: now_ms,
                        body: e.to_json(),
                        leaf: None,
                    };
                    let leaf = event_leaf(&s);
                    (s, leaf)
                })
                .collect();
            let items: std::collections::BTreeMap<i64, (String, String, bool)> = cert
                .destroyed
                .iter()
                .map(|d| {
                    let authority = by_id
                        .get(&d.id)
                        .map(|s| s.schedule.authority.clone())
                        .unwrap_or_default();
                    (d.id, (d.item.clone(), authority, d.unlawful.is_some()))
                })
                .collect();
            let approvals = if cert.approved_by.is_empty() {
                "no second approval (the agency's setting)".to_string()
            } else {
                format!("approved by {}", cert.approved_by.join(", "))
            };
            let forced_note = cert
                .forced
                .as_ref()
                .map(|r| format!("FORCED ({r}), incident {}; ", n + 1));
            let ids: Vec<i64> = cert.destroyed.iter().map(|d| d.id).collect();
            let tombstone = |id: i64, conv: &str, seq: u64, record_leaf: u64| {
                let (item, authority, unlawful) = items.get(&id).cloned().unwrap_or_default();
                crate::tlog::Leaf::Tombstone {
                    conv: conv.to_string(),
                    seq,
                    record_leaf,
                    authority: format!(
                        "{}{item} ({authority}); disposition batch {batch}, proposed by {}, {approvals}",
                        forced_note.clone().filter(|_| unlawful).unwrap_or_default(),
                        cert.proposed_by
                    ),
                    by: actor.to_string(),
                    at_ms: now_ms,
                }
            };
            if self.store_mut().dispose(&ids, &tombstone, &stored)? {
                let incident = (cert.forced.is_some() && unlawful_any).then_some(n + 1);
                return Ok((cert, n, incident));
            }
        }
        Err(RecordsError::Archive(
            "the lifecycle kept changing while the batch was checked: try again".into(),
        ))
    }
}
