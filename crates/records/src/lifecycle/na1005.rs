//! The agency's form NA-1005 ("Verification for Implementing GRS 6.1"):
//! what NARA must approve before the agency applies GRS 6.1, and again
//! every four years (NARA Bulletin 2022-02).
//!
//! What the agency declares — whether messages other than email are
//! included, its cutoff and transfer instructions, and the approvals —
//! is kept as an event ([`Na1005`]). What the archive knows better than
//! a form can — the items in use, the positions in each of the ten
//! Capstone categories and their counts — is computed from the schedule
//! and the role directory on the day it is printed ([`View`]), so the
//! form never drifts from the directory it describes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dates::Day;
use super::schedule::Category;
use super::Lifecycle;
use crate::RecordsError;

/// Days before the renewal date that reports start saying it is due.
pub const RENEWAL_NOTICE_DAYS: u32 = 90;

/// An approval: who, and on which day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub name: String,
    pub on: Day,
}

/// What the agency declares on its NA-1005.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Na1005 {
    /// Electronic messages other than email (chat, text) are included:
    /// for keepwire, always what the archive holds.
    pub includes_other_messages: bool,
    pub cutoff_instructions: String,
    pub transfer_instructions: String,
    /// The agency records officer's approval.
    pub records_officer: Option<Approval>,
    /// The Senior Agency Official for Records Management's.
    pub senior_official: Option<Approval>,
    /// NARA's approval; the renewal is due four years after it.
    pub nara: Option<Approval>,
}

impl Default for Na1005 {
    fn default() -> Self {
        Na1005 {
            includes_other_messages: true,
            cutoff_instructions: String::new(),
            transfer_instructions: String::new(),
            records_officer: None,
            senior_official: None,
            nara: None,
        }
    }
}

impl Na1005 {
    pub fn check(&self) -> Result<(), RecordsError> {
        for a in [&self.records_officer, &self.senior_official, &self.nara]
            .into_iter()
            .flatten()
        {
            if a.name.trim().is_empty() {
                return Err(RecordsError::Archive(
                    "an approval names who approved it".into(),
                ));
            }
        }
        Ok(())
    }

    /// The day the form must be resubmitted: four years after NARA's
    /// approval.
    pub fn renewal(&self) -> Option<Day> {
        self.nara.as_ref().map(|a| a.on.plus_years(4))
    }
}

/// A position on the form: its title, office and how many hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    pub position: String,
    pub title: String,
    pub office: String,
    pub holders: usize,
}

/// The form as printed on a day: declared and computed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub on: Day,
    #[serde(flatten)]
    pub declared: Na1005,
    /// The GRS and agency items the archive applies.
    pub items_used: Vec<String>,
    /// Capstone category (1–10) → its positions held on the day.
    pub capstone_positions: BTreeMap<u8, Vec<Position>>,
    pub renewal_due: Option<Day>,
    /// The renewal is due within [`RENEWAL_NOTICE_DAYS`], or overdue.
    pub renewal_needed: bool,
    /// NARA has not approved the form: GRS 6.1 may not be applied yet.
    pub unapproved: bool,
}

impl Lifecycle {
    /// The NA-1005 as of `on`.
    pub fn na1005_on(&self, on: Day) -> View {
        let mut items_used: Vec<String> = vec![
            super::schedule::GRS_6_1_010.into(),
            super::schedule::GRS_6_1_011.into(),
            super::schedule::GRS_6_1_012.into(),
        ];
        if self
            .conversations
            .values()
            .flatten()
            .any(|c| c.item.as_deref() == Some(super::schedule::GRS_5_2_010))
        {
            items_used.push(super::schedule::GRS_5_2_010.into());
        }
        items_used.extend(self.agency.items.iter().map(|i| i.code.clone()));
        let mut capstone_positions: BTreeMap<u8, Vec<Position>> = BTreeMap::new();
        for r in self.directory.held_on(on) {
            if let Category::Capstone(n) = r.category {
                let list = capstone_positions.entry(n).or_default();
                match list.iter_mut().find(|p| p.position == r.position) {
                    Some(p) => p.holders += 1,
                    None => list.push(Position {
                        position: r.position.clone(),
                        title: r.title.clone(),
                        office: r.office.clone(),
                        holders: 1,
                    }),
                }
            }
        }
        let renewal_due = self.na1005.renewal();
        View {
            on,
            declared: self.na1005.clone(),
            items_used,
            capstone_positions,
            renewal_due,
            renewal_needed: renewal_due.is_some_and(|d| on.plus_days(RENEWAL_NOTICE_DAYS) >= d),
            unapproved: self.na1005.nara.is_none(),
        }
    }
}
