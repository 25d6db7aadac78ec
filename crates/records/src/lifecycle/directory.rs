//! The role directory: who held which position when, and the position's
//! category under GRS 6.1 — what makes a person's messages Capstone
//! (permanent) or not on a given day.
//!
//! A role is a person in a position from a first day to a last (open
//! while they hold it). Nothing is overwritten: ending a role gives it
//! its last day, and a person's move is the end of one role and the
//! start of another, each a logged event — so the directory as it stood
//! on any day, and every change since, can be read back. Because a
//! record's item is computed from the directory as of the message's day,
//! a move entered late (backdated) re-schedules exactly the records sent
//! since it took effect.

use serde::{Deserialize, Serialize};

use super::dates::Day;
use super::schedule::Category;
use crate::RecordsError;

/// A person in a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// The keepwire user name.
    pub user: String,
    /// The position's identifier (the agency's, e.g. `DEP-SEC`).
    pub position: String,
    /// The position's title ("Deputy Secretary").
    pub title: String,
    /// The office the position belongs to (reports are per office).
    pub office: String,
    pub category: Category,
    /// The first day in the position.
    pub from: Day,
    /// The last day in the position; none while it is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Day>,
}

impl Role {
    /// Whether the role was held on `day`.
    pub fn on(&self, day: Day) -> bool {
        self.from <= day && self.until.is_none_or(|u| day <= u)
    }
}

/// Every role, as the events made them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Directory {
    pub roles: Vec<Role>,
    /// Each user's roles (indexes into `roles`): a record's schedule
    /// looks up its few participants, not every role of the agency
    /// (measured: the schedules of 200,000 records, 1.8 s with a scan of
    /// 100 roles per participant).
    #[serde(skip)]
    by_user: std::collections::BTreeMap<String, Vec<usize>>,
}

fn check_text(what: &str, s: &str) -> Result<(), RecordsError> {
    if s.trim().is_empty() || s.len() > 200 || s.chars().any(char::is_control) {
        return Err(RecordsError::Archive(format!(
            "the {what} must be 1 to 200 printable characters"
        )));
    }
    Ok(())
}

impl Directory {
    /// A person starts in a position: refused if they already held it
    /// on any day of the new role.
    pub fn start(&mut self, role: Role) -> Result<(), RecordsError> {
        check_text("user", &role.user)?;
        check_text("position", &role.position)?;
        check_text("title", &role.title)?;
        check_text("office", &role.office)?;
        if let Some(until) = role.until {
            if until < role.from {
                return Err(RecordsError::Archive(format!(
                    "a role cannot end ({until}) before it starts ({})",
                    role.from
                )));
            }
        }
        let overlaps = self.of(&role.user).any(|r| {
            r.position == role.position
                && r.from <= role.until.unwrap_or(Day::MAX)
                && role.from <= r.until.unwrap_or(Day::MAX)
        });
        if overlaps {
            return Err(RecordsError::Archive(format!(
                "{} already holds {} on some of those days: end that role first",
                role.user, role.position
            )));
        }
        self.by_user
            .entry(role.user.clone())
            .or_default()
            .push(self.roles.len());
        self.roles.push(role);
        Ok(())
    }

    /// A person's open role in `position` ends: `on` is their last day.
    pub fn end(&mut self, user: &str, position: &str, on: Day) -> Result<(), RecordsError> {
        let i = self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .copied()
            .find(|&i| self.roles[i].position == position && self.roles[i].until.is_none())
            .ok_or_else(|| {
                RecordsError::Archive(format!("{user} holds no open role in {position}"))
            })?;
        let role = &mut self.roles[i];
        if on < role.from {
            return Err(RecordsError::Archive(format!(
                "{user} started in {position} on {}: the role cannot end before ({on})",
                role.from
            )));
        }
        role.until = Some(on);
        Ok(())
    }

    /// The roles `user` held on `day`.
    pub fn roles_on<'a, 'b>(
        &'a self,
        user: &'b str,
        day: Day,
    ) -> impl Iterator<Item = &'a Role> + 'b
    where
        'a: 'b,
    {
        self.of(user).filter(move |r| r.on(day))
    }

    /// Every role `user` held or holds.
    fn of<'a, 'b>(&'a self, user: &'b str) -> impl Iterator<Item = &'a Role> + 'b
    where
        'a: 'b,
    {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .map(move |&i| &self.roles[i])
    }

    /// The office `user` belonged to on `day` (their first role's), if any.
    pub fn office_on(&self, user: &str, day: Day) -> Option<&str> {
        self.roles_on(user, day).next().map(|r| r.office.as_str())
    }

    /// The roles held on `day`, for the NA-1005's positions and counts.
    pub fn held_on(&self, day: Day) -> impl Iterator<Item = &Role> {
        self.roles.iter().filter(move |r| r.on(day))
    }
}
