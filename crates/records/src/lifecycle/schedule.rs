//! Records schedules: the items a record can be kept under, how long each
//! keeps it, and from when that time runs (its cutoff).
//!
//! Four items are built in, the ones DESIGN.md §5 applies to electronic
//! messages: GRS 6.1 items 010 (Capstone officials, permanent), 011 (other
//! officials and employees, 7 years after cutoff) and 012 (support and
//! administrative positions, 3 years), and GRS 5.2 item 010 (transitory
//! records, kept for the agency's business rule, 180 days by default).
//! An agency adds its own items, by disposition authority number, from a
//! schedule file it edits ([`AgencyItems::parse`]).
//!
//! Retention is counted from a cutoff, as NARA's schedules say: "destroy
//! 7 years after cutoff" with a calendar-year cutoff makes a message sent
//! on 2026-05-04 eligible on 2034-01-01. Transitory records have no
//! cutoff: their days run from the day the message was sent.

use serde::{Deserialize, Serialize};

use super::dates::Day;
use crate::RecordsError;

/// Who a person is to the schedule on a given day (from the role
/// directory, [`super::directory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// A Capstone official, in one of GRS 6.1 item 010's ten categories.
    Capstone(u8),
    /// Any other official or employee (GRS 6.1 item 011).
    Staff,
    /// A routine administrative or support position (GRS 6.1 item 012).
    Support,
    /// Someone from outside the agency: their messages take the agency
    /// participants' item.
    Guest,
}

impl Category {
    /// The GRS 6.1 item for this category (none for a guest).
    pub fn grs_item(self) -> Option<&'static str> {
        match self {
            Category::Capstone(_) => Some(GRS_6_1_010),
            Category::Staff => Some(GRS_6_1_011),
            Category::Support => Some(GRS_6_1_012),
            Category::Guest => None,
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Category::Capstone(n) => write!(f, "capstone:{n}"),
            Category::Staff => f.write_str("staff"),
            Category::Support => f.write_str("support"),
            Category::Guest => f.write_str("guest"),
        }
    }
}

impl std::str::FromStr for Category {
    type Err = RecordsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            RecordsError::Archive(format!(
                "`{s}` is no category: capstone:N (N the GRS 6.1 item 010 category, 1 to 10), staff, support or guest"
            ))
        };
        Ok(match s {
            "staff" => Category::Staff,
            "support" => Category::Support,
            "guest" => Category::Guest,
            other => {
                let n: u8 = other
                    .strip_prefix("capstone:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if !(1..=10).contains(&n) {
                    return Err(bad());
                }
                Category::Capstone(n)
            }
        })
    }
}

impl Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// From when an item's retention runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Cutoff {
    /// The end of the calendar year the message was sent in.
    #[default]
    CalendarYear,
    /// The end of the federal fiscal year (30 September).
    FiscalYear,
    /// The end of the person's tenure in the position that set the item;
    /// dates are pending while they hold it.
    EndOfTenure,
    /// The end of the administration the message was sent in (the
    /// agency lists the days administrations end); pending while none
    /// listed is ahead.
    EndOfAdministration,
    /// No cutoff: the retention runs from the day the message was sent.
    None,
}

impl Cutoff {
    pub fn as_str(self) -> &'static str {
        match self {
            Cutoff::CalendarYear => "calendar-year",
            Cutoff::FiscalYear => "fiscal-year",
            Cutoff::EndOfTenure => "end-of-tenure",
            Cutoff::EndOfAdministration => "end-of-administration",
            Cutoff::None => "none",
        }
    }
}

impl std::str::FromStr for Cutoff {
    type Err = RecordsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Cutoff::CalendarYear,
            Cutoff::FiscalYear,
            Cutoff::EndOfTenure,
            Cutoff::EndOfAdministration,
            Cutoff::None,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            RecordsError::Archive(format!(
                "`{s}` is no cutoff: calendar-year, fiscal-year, end-of-tenure, end-of-administration or none"
            ))
        })
    }
}

impl std::fmt::Display for Cutoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long an item keeps a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Kept for good; transferred to NARA the agency's number of years
    /// (15 to 30) after cutoff.
    Permanent,
    /// Destroyed no sooner than this many years after cutoff.
    Years(u32),
    /// Destroyed no sooner than this many days after cutoff.
    Days(u32),
    /// GRS 5.2 item 010: the agency's business rule
    /// ([`Settings::transitory_days`]).
    Transitory,
}

impl Retention {
    /// Days kept, for choosing the longest-retained item (a year counts
    /// 366 days so that N years always outranks N × 365 days).
    fn rank(self, settings: &Settings) -> u64 {
        match self {
            Retention::Permanent => u64::MAX,
            Retention::Years(y) => y as u64 * 366,
            Retention::Days(d) => d as u64,
            Retention::Transitory => settings.transitory_days as u64,
        }
    }

    fn describe(self, settings: &Settings) -> String {
        match self {
            Retention::Permanent => format!(
                "permanent: transfer to NARA {} years after cutoff",
                settings.transfer_years
            ),
            Retention::Years(y) => format!("temporary: destroy {y} years after cutoff"),
            Retention::Days(d) => format!("temporary: destroy {d} days after cutoff"),
            Retention::Transitory => format!(
                "temporary: destroy when no longer needed (the agency's rule: {} days)",
                settings.transitory_days
            ),
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = RecordsError;
    /// `permanent`, `N years` or `N days`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            RecordsError::Archive(format!(
                "`{s}` is no retention: permanent, N years or N days"
            ))
        };
        let s = s.trim();
        if s == "permanent" {
            return Ok(Retention::Permanent);
        }
        let (n, unit) = s.split_once(' ').ok_or_else(bad)?;
        let n: u32 = n.parse().map_err(|_| bad())?;
        match unit.trim() {
            "year" | "years" if (1..=100).contains(&n) => Ok(Retention::Years(n)),
            "day" | "days" if (1..=36_500).contains(&n) => Ok(Retention::Days(n)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::Permanent => f.write_str("permanent"),
            Retention::Years(y) => write!(f, "{y} years"),
            Retention::Days(d) => write!(f, "{d} days"),
            Retention::Transitory => f.write_str("transitory"),
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "transitory" {
            return Ok(Retention::Transitory);
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub const GRS_6_1_010: &str = "GRS 6.1 item 010";
pub const GRS_6_1_011: &str = "GRS 6.1 item 011";
pub const GRS_6_1_012: &str = "GRS 6.1 item 012";
pub const GRS_5_2_010: &str = "GRS 5.2 item 010";

/// A schedule item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// How people name it: `GRS 6.1 item 011`, or the agency's
    /// disposition authority number with its item (`N1-563-08-4 item 2`).
    pub code: String,
    /// The disposition authority number NARA approved it under.
    pub authority: String,
    pub title: String,
    pub retention: Retention,
    /// Its own cutoff; the agency's ([`Settings::cutoff`]) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<Cutoff>,
}

impl Item {
    pub fn permanent(&self) -> bool {
        self.retention == Retention::Permanent
    }

    pub fn describe(&self, settings: &Settings) -> String {
        self.retention.describe(settings)
    }

    pub(crate) fn rank(&self, settings: &Settings) -> u64 {
        self.retention.rank(settings)
    }
}

/// The General Records Schedule items keepwire applies to messages. The
/// disposition authority numbers are those the GRS lists for these items
/// (check them against the GRS in force when the agency's NA-1005 is
/// approved). Made once: a record's schedule looks items up several
/// times (measured: building them anew on each lookup was most of the
/// time to schedule a million records).
pub fn grs_items() -> &'static [Item] {
    static ITEMS: std::sync::OnceLock<Vec<Item>> = std::sync::OnceLock::new();
    ITEMS.get_or_init(make_grs_items)
}

fn make_grs_items() -> Vec<Item> {
    let item = |code: &str, authority: &str, title: &str, retention, cutoff| Item {
        code: code.into(),
        authority: authority.into(),
        title: title.into(),
        retention,
        cutoff,
    };
    vec![
        item(
            GRS_6_1_010,
            "DAA-GRS-2014-0001-0001",
            "Email and other electronic messages of Capstone officials",
            Retention::Permanent,
            None,
        ),
        item(
            GRS_6_1_011,
            "DAA-GRS-2014-0001-0002",
            "Email and other electronic messages of non-Capstone officials and employees",
            Retention::Years(7),
            None,
        ),
        item(
            GRS_6_1_012,
            "DAA-GRS-2014-0001-0003",
            "Email and other electronic messages of support and administrative positions",
            Retention::Years(3),
            None,
        ),
        item(
            GRS_5_2_010,
            "DAA-GRS-2017-0003-0001",
            "Transitory records",
            Retention::Transitory,
            Some(Cutoff::None),
        ),
    ]
}

/// The agency's settings for its schedules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The cutoff of every item that names none.
    pub cutoff: Cutoff,
    /// Years after cutoff permanent records go to NARA: 15 to 30, in
    /// steps of 5, as the agency's NA-1005 says.
    pub transfer_years: u32,
    /// GRS 5.2 item 010's business rule: days a transitory record is kept.
    pub transitory_days: u32,
    /// The days administrations end (for the end-of-administration cutoff).
    pub administration_ends: Vec<Day>,
    /// The category of a person the role directory does not list on a
    /// message's day.
    pub unlisted: Category,
    /// A disposition batch needs a second account's approval before it
    /// runs (a forced one always does).
    pub second_approver: bool,
    /// Days from an incident's opening to its report to NARA.
    pub incident_report_days: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cutoff: Cutoff::CalendarYear,
            transfer_years: 15,
            transitory_days: 180,
            administration_ends: Vec::new(),
            unlisted: Category::Staff,
            second_approver: true,
            incident_report_days: 30,
        }
    }
}

impl Settings {
    pub fn check(&self) -> Result<(), RecordsError> {
        if !(15..=30).contains(&self.transfer_years) || !self.transfer_years.is_multiple_of(5) {
            return Err(RecordsError::Archive(format!(
                "transfer after {} years: GRS 6.1 item 010 allows 15, 20, 25 or 30",
                self.transfer_years
            )));
        }
        if !(1..=3650).contains(&self.transitory_days) {
            return Err(RecordsError::Archive(format!(
                "{} days for transitory records: 1 to 3,650",
                self.transitory_days
            )));
        }
        if !(1..=365).contains(&self.incident_report_days) {
            return Err(RecordsError::Archive(format!(
                "{} days to report an incident: 1 to 365",
                self.incident_report_days
            )));
        }
        if self.unlisted == Category::Guest {
            return Err(RecordsError::Archive(
                "people the directory does not list are agency staff of some category, not guests"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The agency's own items, as its schedule file lists them:
///
/// ```toml
/// [[item]]
/// code = "N1-563-08-4 item 2"
/// authority = "N1-563-08-4"
/// title = "Case coordination messages"
/// retention = "10 years"          # or "permanent", or "90 days"
/// cutoff = "fiscal-year"          # optional: the agency's cutoff otherwise
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgencyItems {
    #[serde(default, rename = "item")]
    pub items: Vec<Item>,
}

impl AgencyItems {
    /// The schedule file's text, checked: every item named once, none
    /// named like a GRS item, none transitory (that is GRS 5.2's).
    pub fn parse(text: &str) -> Result<Self, RecordsError> {
        let file: AgencyItems = toml::from_str(text)
            .map_err(|e| RecordsError::Archive(format!("the schedule file: {e}")))?;
        file.check()?;
        Ok(file)
    }

    pub fn check(&self) -> Result<(), RecordsError> {
        let grs = grs_items();
        let mut seen = std::collections::BTreeSet::new();
        for item in &self.items {
            let code = item.code.trim();
            if code.is_empty() || item.authority.trim().is_empty() || item.title.trim().is_empty() {
                return Err(RecordsError::Archive(
                    "the schedule file: every item needs a code, an authority and a title".into(),
                ));
            }
            if grs.iter().any(|g| g.code == code) {
                return Err(RecordsError::Archive(format!(
                    "the schedule file: `{code}` is a GRS item, built in"
                )));
            }
            if item.retention == Retention::Transitory {
                return Err(RecordsError::Archive(format!(
                    "the schedule file: `{code}`: transitory records are GRS 5.2 item 010's; give a number of days"
                )));
            }
            if !seen.insert(code.to_string()) {
                return Err(RecordsError::Archive(format!(
                    "the schedule file names `{code}` twice"
                )));
            }
        }
        Ok(())
    }
}

/// The day a record's retention counts from (its cutoff's last day), if
/// known yet. `tenure_end` is the last day of the position that set the
/// item, if it ended.
pub fn cutoff_day(
    cutoff: Cutoff,
    sent: Day,
    tenure_end: Option<Day>,
    settings: &Settings,
) -> Option<Day> {
    match cutoff {
        Cutoff::CalendarYear => Day::ymd(sent.year(), 12, 31).ok(),
        Cutoff::FiscalYear => {
            // The federal fiscal year ends on 30 September.
            let year = if sent.month() >= 10 {
                sent.year() + 1
            } else {
                sent.year()
            };
            Day::ymd(year, 9, 30).ok()
        }
        Cutoff::EndOfTenure => tenure_end,
        Cutoff::EndOfAdministration => settings
            .administration_ends
            .iter()
            .copied()
            .filter(|end| *end >= sent)
            .min(),
        // Counted from the day sent: the retention's days run from the
        // day after, as they do after any cutoff.
        Cutoff::None => Some(sent),
    }
}

/// The first day a record cut off on `cutoff` may be destroyed (temporary)
/// or is due for transfer (permanent).
pub fn due_day(item: &Item, cutoff: Day, settings: &Settings) -> Day {
    // The retention runs to the cutoff's anniversary; the record is due
    // the day after (adding years to the day after the cutoff instead
    // would move a 29 February back to the 28th, a day early).
    match item.retention {
        Retention::Permanent => cutoff.plus_years(settings.transfer_years).next(),
        Retention::Years(y) => cutoff.plus_years(y).next(),
        Retention::Days(d) => cutoff.plus_days(d).next(),
        Retention::Transitory => cutoff.plus_days(settings.transitory_days).next(),
    }
}
