//! The report 36 CFR 1230.14 asks for when records were removed, altered
//! or destroyed without authority, filled from the archive: its five
//! elements, in the regulation's order, with what only a person can say
//! (the officer's account, kept as incident updates) beside what the
//! archive knows — the records' volume, days, schedule items,
//! conversations and sequence numbers, the office, and the batch and
//! approvals that destroyed them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::dates::Day;
use super::incidents::{Incident, IncidentKind};
use super::Event;
use crate::{Archive, RecordsError};

/// Said where an element needs the officer's account and has none yet.
pub const TO_COMPLETE: &str = "[to be completed by the records officer: `keepwire records incident update ID --circumstances|--safeguards|--salvage TEXT`]";

/// Element 1: a complete description of the records, with volume and
/// dates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Description {
    pub records: usize,
    pub first_sent: Option<Day>,
    pub last_sent: Option<Day>,
    /// Per conversation, the sequence numbers concerned, as ranges.
    pub conversations: BTreeMap<String, Vec<(u64, u64)>>,
    /// Records per schedule item (with its authority).
    pub items: BTreeMap<String, u64>,
    /// Records per kind (messages, commits).
    pub kinds: BTreeMap<String, u64>,
    /// Files the messages carried.
    pub files: u64,
}

/// The report, element by element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentReport {
    pub incident: Incident,
    pub prepared_on: Day,
    /// Element 1, the records' description.
    pub description: Description,
    /// Element 2, the office maintaining the records.
    pub offices: Vec<String>,
    /// Element 3, the exact circumstances: what the archive recorded,
    /// then the officer's account.
    pub circumstances: Vec<String>,
    /// Element 4, the safeguards established to prevent further loss.
    pub safeguards: Vec<String>,
    /// Element 5, the actions taken to salvage, retrieve or reconstruct
    /// them.
    pub salvage: Vec<String>,
    /// The elements still waiting for the officer's account.
    pub incomplete: Vec<&'static str>,
}

fn ranges(mut seqs: Vec<u64>) -> Vec<(u64, u64)> {
    seqs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => out.push((s, s)),
        }
    }
    out
}

impl Archive {
    /// The 36 CFR 1230.14 report of incident `id`, as of `now_ms`.
    pub fn incident_report(&self, id: u64, now_ms: u64) -> Result<IncidentReport, RecordsError> {
        let events = self.lifecycle_events()?;
        let state = super::Lifecycle::fold(&events)?;
        let incident = state
            .incidents
            .get(&id)
            .cloned()
            .ok_or_else(|| RecordsError::Archive(format!("no incident {id}")))?;
        let wanted: std::collections::BTreeSet<i64> = incident.records.iter().copied().collect();
        let records: Vec<_> = self
            .list(true, false)?
            .into_iter()
            .filter(|r| wanted.contains(&r.id))
            .collect();
        let mut by_conv: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut items: BTreeMap<String, u64> = BTreeMap::new();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        let mut offices = std::collections::BTreeSet::new();
        let mut files = 0;
        for r in &records {
            by_conv
                .entry(r.meta.conv.clone())
                .or_default()
                .push(r.meta.seq);
            let a = state.assign(&r.meta);
            *items
                .entry(format!("{} ({})", a.item, a.authority))
                .or_default() += 1;
            *kinds.entry(r.meta.kind.to_string()).or_default() += 1;
            offices.extend(a.offices);
            files += r.meta.attachments.len() as u64;
        }
        let days: Vec<Day> = records
            .iter()
            .map(|r| Day::of_ms(r.meta.server_time_ms))
            .collect();
        let description = Description {
            records: records.len(),
            first_sent: days.iter().min().copied(),
            last_sent: days.iter().max().copied(),
            conversations: by_conv.into_iter().map(|(c, s)| (c, ranges(s))).collect(),
            items,
            kinds,
            files,
        };
        let offices = if offices.is_empty() {
            vec![
                "no participant's office is in the role directory: the agency's records office"
                    .into(),
            ]
        } else {
            offices.into_iter().collect()
        };

        let mut circumstances = vec![format!(
            "Incident {id} ({}) was opened on {} by {}: {}",
            match incident.kind {
                IncidentKind::UnauthorizedDisposition => "unauthorized disposition",
                IncidentKind::ArchiveDamage => "records missing or altered",
                IncidentKind::CaptureFailure => "a conversation that could not be captured",
                IncidentKind::CaptureBypass => "an attempt to bypass capture",
            },
            Day::of_ms(incident.opened_at_ms),
            incident.opened_by,
            incident.description
        )];
        let mut salvage = Vec::new();
        if let Some(b) = incident.batch.and_then(|b| state.batches.get(&b)) {
            let approvers: Vec<&str> = b.approvals.iter().map(|a| a.by.as_str()).collect();
            circumstances.push(format!(
                "Disposition batch {} was proposed by {} on {}{}, approved by {}.",
                b.id,
                b.proposed_by,
                Day::of_ms(b.proposed_at_ms),
                b.forced
                    .as_ref()
                    .map(|r| format!(" as a forced disposition, giving the reason \"{r}\""))
                    .unwrap_or_default(),
                if approvers.is_empty() {
                    "nobody".to_string()
                } else {
                    approvers.join(", ")
                }
            ));
            let certificate = b.executed.and_then(|n| {
                events
                    .iter()
                    .find(|e| e.n == n)
                    .and_then(|e| match e.event() {
                        Ok(Event::BatchExecute { certificate }) => Some((e.clone(), certificate)),
                        _ => None,
                    })
            });
            if let Some((e, c)) = certificate {
                circumstances.push(format!(
                    "It was executed by {} on {} (lifecycle event {}, transparency-log leaf {}): {} record(s) destroyed.",
                    c.executed_by,
                    Day::of_ms(e.at_ms),
                    e.n,
                    e.leaf.map(|l| l.to_string()).unwrap_or_else(|| "missing".into()),
                    c.destroyed.len()
                ));
                for d in c.destroyed.iter().filter(|d| wanted.contains(&d.id)) {
                    if let Some(why) = &d.unlawful {
                        circumstances.push(format!(
                            "Record {} ({}#{}, sent {}, {}) was not eligible: {why}.",
                            d.id, d.conv, d.seq, d.sent, d.item
                        ));
                    }
                }
                salvage.push(
                    "The records' content was crypto-shredded: each record's data key was deleted, \
                     with its ciphertext and its files' bytes, and cannot be recovered from the archive. \
                     What remains of each record is its metadata (sender, participants, times, schedule item), \
                     its transparency-log leaf and a tombstone naming the batch and its approvals."
                        .to_string(),
                );
            }
        }
        let person = |text: &Option<String>| match text {
            Some(t) => vec![t.clone()],
            None => Vec::new(),
        };
        circumstances.extend(person(&incident.circumstances));
        let safeguards = person(&incident.safeguards);
        salvage.extend(person(&incident.salvage));
        let mut incomplete = Vec::new();
        for (element, given) in [
            ("3. circumstances", incident.circumstances.is_some()),
            ("4. safeguards", incident.safeguards.is_some()),
            (
                "5. salvage, retrieval or reconstruction",
                incident.salvage.is_some(),
            ),
        ] {
            if !given {
                incomplete.push(element);
            }
        }
        Ok(IncidentReport {
            incident,
            prepared_on: Day::of_ms(now_ms),
            description,
            offices,
            circumstances,
            safeguards,
            salvage,
            incomplete,
        })
    }
}

impl IncidentReport {
    /// The report as a document for NARA, in Markdown.
    pub fn to_markdown(&self) -> String {
        let i = &self.incident;
        let d = &self.description;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("# Report of unauthorized removal, alteration or destruction of records (36 CFR 1230.14) — incident {}", i.id));
        line(String::new());
        line(format!("- Prepared: {}", self.prepared_on));
        line(format!(
            "- Incident opened: {}; report due to NARA: {}",
            Day::of_ms(i.opened_at_ms),
            i.report_due
        ));
        line(format!(
            "- Status: {:?}{}",
            i.status,
            i.nara_case
                .as_ref()
                .map(|c| format!("; NARA case {c}"))
                .unwrap_or_default()
        ));
        line(String::new());
        line("## 1. Description of the records, with volume and dates".into());
        line(String::new());
        line(format!(
            "{} record(s) of electronic messages (chat), sent between {} and {}{}.",
            d.records,
            d.first_sent
                .map(|x| x.to_string())
                .unwrap_or_else(|| "—".into()),
            d.last_sent
                .map(|x| x.to_string())
                .unwrap_or_else(|| "—".into()),
            if d.files > 0 {
                format!(", carrying {} file(s)", d.files)
            } else {
                String::new()
            }
        ));
        line(String::new());
        for (item, n) in &d.items {
            line(format!("- Schedule item {item}: {n} record(s)"));
        }
        for (kind, n) in &d.kinds {
            line(format!("- Kind {kind}: {n}"));
        }
        for (conv, r) in &d.conversations {
            let r: Vec<String> = r
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        format!("#{a}")
                    } else {
                        format!("#{a}–#{b}")
                    }
                })
                .collect();
            line(format!(
                "- Conversation {conv}: sequence numbers {}",
                r.join(", ")
            ));
        }
        line(String::new());
        line("## 2. Office maintaining the records".into());
        line(String::new());
        for o in &self.offices {
            line(format!("- {o}"));
        }
        for (n, title, parts) in [
            (
                3,
                "Exact circumstances of the removal, alteration or destruction",
                &self.circumstances,
            ),
            (
                4,
                "Safeguards established to prevent further loss",
                &self.safeguards,
            ),
            (
                5,
                "Actions taken to salvage, retrieve or reconstruct the records",
                &self.salvage,
            ),
        ] {
            line(String::new());
            line(format!("## {n}. {title}"));
            line(String::new());
            if parts.is_empty() {
                line(TO_COMPLETE.to_string());
            }
            for p in parts {
                line(p.clone());
                line(String::new());
            }
            let own = match n {
                3 => i.circumstances.is_none(),
                4 => false, // said above when empty
                _ => i.salvage.is_none(),
            };
            if own && !parts.is_empty() {
                line(TO_COMPLETE.to_string());
            }
        }
        out
    }
}
