//! The records lifecycle: what happens to a record after capture — the
//! schedule item it is kept under, and when it may be destroyed or must
//! go to the National Archives.
//!
//! Everything the records officer decides is an [`Event`] — a role in
//! the directory starting or ending, a conversation given an item, the
//! agency's settings or schedule file, its NA-1005 — appended to the
//! archive's lifecycle log in the same transaction as a transparency-log
//! leaf that commits to it ([`crate::tlog::Leaf::Lifecycle`]). The
//! lifecycle's state ([`Lifecycle`]) is a fold over those events, and a
//! record's schedule ([`Lifecycle::assign`]) is a function of that state,
//! the record's metadata and its day — plain data in, plain data out,
//! tested without a clock or a database.
//!
//! Why a record's item is computed rather than stored on its row: the
//! rules say a person's move into or out of a Capstone position
//! re-schedules their records from that date. Computed from the
//! directory as of each message's day, a move entered today re-schedules
//! every record since its date at once, with no row rewritten — at a
//! billion records, the difference between an event and a migration —
//! and the history of a record's item is the history of the events that
//! changed it ([`Lifecycle::history`]), each with its actor and leaf.
//! Capture is untouched: a record has an item the moment it exists,
//! because the rules that give it one exist before it does.

use std::collections::BTreeMap;

use serde::Serialize;

pub mod archive;
pub mod dates;
pub mod directory;
pub mod disposition;
pub mod holds;
pub mod incidents;
pub mod integrity;
pub mod na1005;
pub mod report;
pub mod schedule;

mod event;

pub use archive::event_leaf;
pub use event::Event;

use dates::Day;
use directory::{Directory, Role};
use disposition::Batch;
use holds::Hold;
use incidents::Incident;
use schedule::{AgencyItems, Category, Cutoff, Item, Settings};

use crate::archive::store::StoredEvent;
use crate::{RecordMeta, RecordsError};

/// A conversation's item from a day on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationItem {
    pub item: Option<String>,
    pub from: Day,
    pub reason: String,
    /// The event that set it.
    pub event: u64,
}

/// The lifecycle as its events left it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lifecycle {
    pub settings: Settings,
    pub agency: AgencyItems,
    pub directory: Directory,
    /// Per conversation, its item changes in the order made.
    pub conversations: BTreeMap<String, Vec<ConversationItem>>,
    pub na1005: na1005::Na1005,
    pub holds: BTreeMap<u64, Hold>,
    pub batches: BTreeMap<u64, Batch>,
    pub incidents: BTreeMap<u64, Incident>,
    /// The last integrity report: its event, and whether it was clean.
    pub last_integrity: Option<(u64, bool)>,
    /// The number of the last event applied (0: none).
    pub last_event: u64,
}

/// Which item a record is kept under, why, and its dates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assignment {
    pub item: String,
    pub authority: String,
    pub title: String,
    pub permanent: bool,
    /// What the item keeps it for, in words.
    pub disposition: String,
    /// Why this item: the participants' categories on the day, or the
    /// conversation's item.
    pub why: String,
    pub cutoff: Cutoff,
    /// The last day of the cutoff period, once known.
    pub cutoff_day: Option<Day>,
    /// Temporary: the first day it may be destroyed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition_day: Option<Day>,
    /// Permanent: the day it is due for transfer to NARA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_day: Option<Day>,
    /// Why the dates are not known yet (a tenure not ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// The offices of the agency participants on the day.
    pub offices: Vec<String>,
}

/// A change of a record's item or dates, and the event that made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The event (0: the schedule as it stood before any event).
    pub event: u64,
    pub kind: String,
    pub actor: String,
    pub at_ms: u64,
    pub assignment: Assignment,
}

impl Lifecycle {
    /// The state the `events` (in order) leave.
    pub fn fold(events: &[StoredEvent]) -> Result<Self, RecordsError> {
        let mut state = Lifecycle::default();
        for e in events {
            state.apply_as(e.n, &e.actor, e.at_ms, &e.event()?)?;
        }
        Ok(state)
    }

    /// Every item in force: the GRS's and the agency's.
    pub fn items(&self) -> impl Iterator<Item = &Item> + '_ {
        schedule::grs_items().iter().chain(self.agency.items.iter())
    }

    pub fn item(&self, code: &str) -> Option<&Item> {
        self.items().find(|i| i.code == code)
    }

    /// The item conversation `conv` gives its records of `day`, if any
    /// (the latest change made for a day on or before it).
    fn conversation_item(&self, conv: &str, day: Day) -> Option<&ConversationItem> {
        self.conversations
            .get(conv)?
            .iter()
            .rev()
            .find(|c| c.from <= day)
            .filter(|c| c.item.is_some())
    }

    /// The category `user` had on `day`, with the role that gave it: the
    /// longest-retained of their roles, or the unlisted default.
    fn category_on(&self, user: &str, day: Day) -> (Category, Option<&Role>) {
        let mut best: Option<(Category, &Role)> = None;
        for r in self.directory.roles_on(user, day) {
            let better = match best {
                None => true,
                Some((c, _)) => self.rank_of(r.category) > self.rank_of(c),
            };
            if better {
                best = Some((r.category, r));
            }
        }
        match best {
            Some((c, r)) => (c, Some(r)),
            None => (self.settings.unlisted, None),
        }
    }

    fn rank_of(&self, c: Category) -> u64 {
        c.grs_item()
            .and_then(|code| self.item(code))
            .map_or(0, |i| i.rank(&self.settings))
    }

    /// The schedule of the record `meta`: its item (the conversation's,
    /// or the longest-retained of its agency participants' on the day it
    /// was sent; guests take the agency participants'), its cutoff and
    /// its dates.
    pub fn assign(&self, meta: &RecordMeta) -> Assignment {
        let day = Day::of_ms(meta.server_time_ms);
        let users = participant_users(meta);
        let mut offices: Vec<String> = users
            .iter()
            .filter_map(|u| self.directory.office_on(u, day).map(String::from))
            .collect();
        offices.sort();
        offices.dedup();
        if let Some(c) = self.conversation_item(&meta.conv, day) {
            let code = c.item.as_deref().unwrap_or_default();
            // Invariant: `apply` admits only items that exist, and the
            // agency cannot withdraw one in use.
            if let Some(item) = self.item(code) {
                let why = format!(
                    "the conversation is kept under {code} from {} ({}; event {})",
                    c.from, c.reason, c.event
                );
                return self.dated(item, day, None, why, offices);
            }
        }
        // The participants' categories on the day; the longest-retained
        // item wins, and the role that gave it sets a tenure cutoff.
        let mut parts = Vec::new();
        let mut best: Option<(u64, Category, Option<&Role>)> = None;
        for user in &users {
            let (category, role) = self.category_on(user, day);
            parts.push(match role {
                Some(r) => format!("{user}: {category} ({} {})", r.position, r.title),
                None => format!("{user}: {category} (not in the directory)"),
            });
            if category == Category::Guest {
                continue;
            }
            let rank = self.rank_of(category);
            // Between equal items, the one kept longest: a tenure still
            // running outlasts one that ended, a later end an earlier.
            let outlasts = |other: Option<&Role>| match (role, other) {
                (Some(r), Some(o)) => r.until.unwrap_or(Day::MAX) > o.until.unwrap_or(Day::MAX),
                (Some(_), None) => true,
                _ => false,
            };
            if best.is_none_or(|(b, _, o)| rank > b || (rank == b && outlasts(o))) {
                best = Some((rank, category, role));
            }
        }
        let (category, role) = match best {
            Some((_, c, r)) => (c, r),
            // Nobody from the agency: the unlisted default.
            None => (self.settings.unlisted, None),
        };
        let code = category.grs_item().unwrap_or(schedule::GRS_6_1_011);
        // Invariant: the GRS items are always there.
        let item = self.item(code).unwrap_or(&schedule::grs_items()[1]);
        let why = if parts.is_empty() {
            format!("no agency participant: {}", self.settings.unlisted)
        } else {
            parts.join("; ")
        };
        let tenure_end = role.map(|r| r.until);
        self.dated(item, day, tenure_end, why, offices)
    }

    fn dated(
        &self,
        item: &Item,
        sent: Day,
        tenure_end: Option<Option<Day>>,
        why: String,
        offices: Vec<String>,
    ) -> Assignment {
        let cutoff = item.cutoff.unwrap_or(self.settings.cutoff);
        let cutoff_day = schedule::cutoff_day(cutoff, sent, tenure_end.flatten(), &self.settings);
        let pending = match (cutoff_day, cutoff) {
            (Some(_), _) => None,
            (None, Cutoff::EndOfTenure) if tenure_end.is_none() => Some(
                "cut off at the end of tenure, but no position set this item: give the item a cutoff of its own"
                    .to_string(),
            ),
            (None, Cutoff::EndOfTenure) => {
                Some("cut off at the end of tenure: the position is still held".to_string())
            }
            (None, _) => Some(
                "cut off at the end of the administration: no end listed after the day it was sent"
                    .to_string(),
            ),
        };
        let due = cutoff_day.map(|c| schedule::due_day(item, c, &self.settings));
        Assignment {
            item: item.code.clone(),
            authority: item.authority.clone(),
            title: item.title.clone(),
            permanent: item.permanent(),
            disposition: item.describe(&self.settings),
            why,
            cutoff,
            cutoff_day,
            disposition_day: due.filter(|_| !item.permanent()),
            transfer_day: due.filter(|_| item.permanent()),
            pending,
            offices,
        }
    }

    /// How the schedule of `meta` changed, event by event: the first
    /// entry is what it was given when it was captured (the events up to
    /// then), each next one an event after which its item or dates
    /// differed — a backdated move names itself here.
    pub fn history(meta: &RecordMeta, events: &[StoredEvent]) -> Result<Vec<Change>, RecordsError> {
        let mut state = Lifecycle::default();
        let mut later = events.iter().peekable();
        while let Some(e) = later.next_if(|e| e.at_ms <= meta.captured_at_ms) {
            state.apply_as(e.n, &e.actor, e.at_ms, &e.event()?)?;
        }
        let mut out = vec![Change {
            event: state.last_event,
            kind: "at capture".into(),
            actor: String::new(),
            at_ms: meta.captured_at_ms,
            assignment: state.assign(meta),
        }];
        for e in later {
            state.apply_as(e.n, &e.actor, e.at_ms, &e.event()?)?;
            let now = state.assign(meta);
            let last = &out[out.len() - 1].assignment;
            if (
                &now.item,
                now.cutoff_day,
                now.disposition_day,
                now.transfer_day,
            ) != (
                &last.item,
                last.cutoff_day,
                last.disposition_day,
                last.transfer_day,
            ) {
                out.push(Change {
                    event: e.n,
                    kind: e.kind.clone(),
                    actor: e.actor.clone(),
                    at_ms: e.at_ms,
                    assignment: now,
                });
            }
        }
        Ok(out)
    }
}

/// The users among a record's participants (`user/device`), the records
/// member left out, each once.
pub fn participant_users(meta: &RecordMeta) -> Vec<String> {
    let mut users: Vec<String> = meta
        .participants
        .iter()
        .map(|p| p.split_once('/').map_or(p.as_str(), |(u, _)| u).to_string())
        .filter(|u| u != keepwire_protocol::RECORDS_USER)
        .collect();
    users.sort();
    users.dedup();
    users
}

impl StoredEvent {
    /// The event it holds (an altered row is an error naming it).
    pub fn event(&self) -> Result<Event, RecordsError> {
        let e: Event = serde_json::from_str(&self.body).map_err(|e| {
            RecordsError::Archive(format!("lifecycle event {} does not parse: {e}", self.n))
        })?;
        if e.kind() != self.kind {
            return Err(RecordsError::Archive(format!(
                "lifecycle event {} is stored as `{}` but is `{}`",
                self.n,
                self.kind,
                e.kind()
            )));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests;
