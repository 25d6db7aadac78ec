//! Days, as records schedules count them: a calendar date in UTC, with
//! the two steps retention takes (whole years after a cutoff, or a number
//! of days). A message's day is the day the server logged it.

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime};

use crate::RecordsError;

/// A calendar day (UTC), written `YYYY-MM-DD` everywhere people and JSON
/// see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(Date);

impl Day {
    /// The last day there is (an open end).
    pub const MAX: Day = Day(Date::MAX);

    /// The UTC day of a time in milliseconds since 1970.
    pub fn of_ms(ms: u64) -> Day {
        let secs = (ms / 1000) as i64;
        // Invariant: every u64 of milliseconds up to year 9999 converts;
        // later times (none occur) clamp to the last representable day.
        Day(OffsetDateTime::from_unix_timestamp(secs)
            .map(|t| t.date())
            .unwrap_or(Date::MAX))
    }

    pub fn ymd(year: i32, month: u8, day: u8) -> Result<Day, RecordsError> {
        let month = Month::try_from(month)
            .map_err(|_| RecordsError::Archive(format!("no month {month}")))?;
        Date::from_calendar_date(year, month, day)
            .map(Day)
            .map_err(|e| RecordsError::Archive(format!("no such day {year}-{month}-{day}: {e}")))
    }

    /// The first millisecond of the day.
    pub fn start_ms(self) -> u64 {
        let t = self.0.midnight().assume_utc().unix_timestamp();
        (t.max(0) as u64) * 1000
    }

    pub fn year(self) -> i32 {
        self.0.year()
    }

    pub fn month(self) -> u8 {
        self.0.month() as u8
    }

    /// The same day `years` later; 29 February becomes 28 February in a
    /// year without it (a retention never ends early).
    pub fn plus_years(self, years: u32) -> Day {
        let year = self.0.year() + years as i32;
        let (m, d) = (self.0.month(), self.0.day());
        Day(Date::from_calendar_date(year, m, d)
            .or_else(|_| Date::from_calendar_date(year, m, d - 1))
            .unwrap_or(Date::MAX))
    }

    pub fn plus_days(self, days: u32) -> Day {
        Day(self
            .0
            .checked_add(Duration::days(days as i64))
            .unwrap_or(Date::MAX))
    }

    /// The day after.
    pub fn next(self) -> Day {
        self.plus_days(1)
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.0.year(),
            self.0.month() as u8,
            self.0.day()
        )
    }
}

impl std::str::FromStr for Day {
    type Err = RecordsError;

    /// `YYYY-MM-DD`, nothing else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RecordsError::Archive(format!("`{s}` is not a date: write YYYY-MM-DD"));
        let mut parts = s.trim().splitn(3, '-');
        let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let num = |p: &str| p.parse::<u16>().map_err(|_| bad());
        Day::ymd(num(y)? as i32, num(m)? as u8, num(d)? as u8)
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_read_write_and_step() {
        let d: Day = "2024-02-29".parse().unwrap();
        assert_eq!(d.to_string(), "2024-02-29");
        assert_eq!(d.plus_years(1).to_string(), "2025-02-28");
        assert_eq!(d.plus_years(4).to_string(), "2028-02-29");
        assert_eq!(d.plus_days(1).to_string(), "2024-03-01");
        assert_eq!(Day::of_ms(d.start_ms()), d);
        assert_eq!(Day::of_ms(d.start_ms() + 86_399_999), d);
        for bad in [
            "2024-2-29",
            "2023-02-29",
            "24-02-01",
            "2024-13-01",
            "yesterday",
            "",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad} parsed");
        }
    }
}
