//! `keepwire records schedule|directory|na1005`: lifecycle decisions sent
//! to the records office as events, and the schedules read back from it.

use std::path::Path;

use anyhow::{Context, Result};
use keepwire_records::lifecycle::dates::Day;
use keepwire_records::lifecycle::directory::Role;
use keepwire_records::lifecycle::na1005::{Approval, Na1005};
use keepwire_records::lifecycle::schedule::{AgencyItems, Settings, GRS_5_2_010};
use keepwire_records::lifecycle::Event;
use serde_json::Value;

use super::account_cmd::ask;
use crate::serve::office::Request;
use crate::{print_json, DirectoryCommand, Na1005Command, ScheduleCommand, SignIn};

fn day(s: &str) -> Result<Day> {
    Ok(s.parse()?)
}

fn today() -> Day {
    Day::of_ms(super::now_ms())
}

/// `NAME@YYYY-MM-DD`.
fn approval(s: &str) -> Result<Approval> {
    let (name, on) = s
        .rsplit_once('@')
        .with_context(|| format!("`{s}`: an approval is NAME@YYYY-MM-DD"))?;
    Ok(Approval {
        name: name.trim().to_string(),
        on: day(on)?,
    })
}

async fn state(dir: &Path, signin: &SignIn, on: Option<Day>) -> Result<Value> {
    ask(dir, signin, &Request::LifecycleState { on }).await
}

/// Send `event`; print what was logged.
async fn decide(dir: &Path, signin: &SignIn, event: Event, json: bool, text: String) -> Result<()> {
    let done = ask(dir, signin, &Request::Lifecycle { event }).await?;
    let text = format!("{text} (lifecycle event {}, logged)", done["event"]);
    crate::report(json, done, text)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// An assignment's due date, in words.
fn due(a: &Value) -> String {
    match (
        a["disposition_day"].as_str(),
        a["transfer_day"].as_str(),
        a["pending"].as_str(),
    ) {
        (Some(d), _, _) => format!("may be destroyed from {d}"),
        (_, Some(d), _) => format!("due for transfer to NARA on {d}"),
        (_, _, Some(p)) => format!("dates pending: {p}"),
        _ => "no dates".into(),
    }
}

pub async fn schedule(command: ScheduleCommand, dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        ScheduleCommand::Show { id: Some(id), json } => {
            let v = ask(dir, signin, &Request::Schedule { id: Some(id) }).await?;
            if json {
                return print_json(&v);
            }
            let a = &v["schedule"];
            println!(
                "record {id} — conversation {} #{}, sent {}",
                s(&v["conv"]),
                v["seq"],
                crate::when(v["sent_ms"].as_u64().unwrap_or_default())
            );
            println!("  item:        {} ({})", s(&a["item"]), s(&a["authority"]));
            println!("               {}", s(&a["title"]));
            println!("  disposition: {}", s(&a["disposition"]));
            println!("  why:         {}", s(&a["why"]));
            println!(
                "  cutoff:      {}{}",
                s(&a["cutoff"]),
                a["cutoff_day"]
                    .as_str()
                    .map(|d| format!(", on {d}"))
                    .unwrap_or_default()
            );
            println!("  due:         {}", due(a));
            println!("  history:");
            for c in v["history"].as_array().into_iter().flatten() {
                let by = match c["event"].as_u64() {
                    Some(0) | None => "before any lifecycle event".to_string(),
                    Some(n) => format!(
                        "event {n} ({}, by {}, {})",
                        s(&c["kind"]),
                        s(&c["actor"]),
                        crate::when(c["at_ms"].as_u64().unwrap_or_default())
                    ),
                };
                let a = &c["assignment"];
                println!("    {by}: {} — {}", s(&a["item"]), due(a));
            }
            Ok(())
        }
        ScheduleCommand::Show { id: None, json } => {
            let v = state(dir, signin, None).await?;
            if json {
                return print_json(&v);
            }
            println!("items in force:");
            for i in v["items"].as_array().into_iter().flatten() {
                println!(
                    "  {:<22} {:<24} {}{}",
                    s(&i["code"]),
                    s(&i["authority"]),
                    s(&i["disposition"]),
                    i["cutoff"]
                        .as_str()
                        .map(|c| format!(" (cutoff: {c})"))
                        .unwrap_or_default()
                );
            }
            let st = &v["settings"];
            println!(
                "settings: cutoff {}, permanent records transferred {} years after cutoff, transitory kept {} days, people not in the directory are {}",
                s(&st["cutoff"]),
                st["transfer_years"],
                st["transitory_days"],
                s(&st["unlisted"])
            );
            if let Some(ends) = st["administration_ends"]
                .as_array()
                .filter(|a| !a.is_empty())
            {
                let ends: Vec<&str> = ends.iter().map(s).collect();
                println!("administrations end: {}", ends.join(", "));
            }
            for (conv, changes) in v["conversations"].as_object().into_iter().flatten() {
                for c in changes.as_array().into_iter().flatten() {
                    println!(
                        "conversation {conv}: from {} {} ({}; event {})",
                        s(&c["from"]),
                        c["item"].as_str().unwrap_or("its participants' item"),
                        s(&c["reason"]),
                        c["event"]
                    );
                }
            }
            Ok(())
        }
        ScheduleCommand::List { json } => {
            let v = ask(dir, signin, &Request::Schedule { id: None }).await?;
            if json {
                return print_json(&v);
            }
            for r in v.as_array().into_iter().flatten() {
                let a = &r["schedule"];
                let conv = s(&r["conv"]);
                println!(
                    "{:>6}  {}#{:<5} {}  {:<18} {}",
                    r["id"],
                    &conv[..8.min(conv.len())],
                    r["seq"],
                    Day::of_ms(r["sent_ms"].as_u64().unwrap_or_default()),
                    s(&a["item"]),
                    due(a)
                );
            }
            Ok(())
        }
        ScheduleCommand::Set {
            cutoff,
            transfer_years,
            transitory_days,
            unlisted,
            administration_ends,
            second_approver,
            incident_report_days,
            json,
        } => {
            let v = state(dir, signin, None).await?;
            let mut settings: Settings = serde_json::from_value(v["settings"].clone())
                .context("the records office sent settings this command cannot read")?;
            if let Some(c) = cutoff {
                settings.cutoff = c.parse()?;
            }
            if let Some(y) = transfer_years {
                settings.transfer_years = y;
            }
            if let Some(d) = transitory_days {
                settings.transitory_days = d;
            }
            if let Some(u) = unlisted {
                settings.unlisted = u.parse()?;
            }
            if let Some(b) = second_approver {
                settings.second_approver = b;
            }
            if let Some(d) = incident_report_days {
                settings.incident_report_days = d;
            }
            if !administration_ends.is_empty() {
                settings.administration_ends = administration_ends
                    .iter()
                    .map(|d| day(d))
                    .collect::<Result<_>>()?;
            }
            let text = format!(
                "settings: cutoff {}, transfer after {} years, transitory {} days, unlisted {}, {}, incidents reported within {} days",
                settings.cutoff,
                settings.transfer_years,
                settings.transitory_days,
                settings.unlisted,
                if settings.second_approver {
                    "dispositions approved by a second account"
                } else {
                    "no second approval of unforced dispositions"
                },
                settings.incident_report_days
            );
            decide(dir, signin, Event::Settings { settings }, json, text).await
        }
        ScheduleCommand::Load { file, json } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let items = AgencyItems::parse(&text)?;
            let what = format!(
                "{} agency item(s) loaded from {}",
                items.items.len(),
                file.display()
            );
            decide(dir, signin, Event::AgencyItems { items }, json, what).await
        }
        ScheduleCommand::Assign {
            conv,
            item,
            transitory,
            clear,
            from,
            reason,
            json,
        } => {
            let item = match (item, transitory, clear) {
                (Some(i), false, false) => Some(i),
                (None, true, false) => Some(GRS_5_2_010.to_string()),
                (None, false, true) => None,
                _ => anyhow::bail!("give one of --item CODE, --transitory or --clear"),
            };
            let from = from.as_deref().map(day).transpose()?.unwrap_or_else(today);
            let text = format!(
                "conversation {conv}: from {from} under {}",
                item.as_deref().unwrap_or("its participants' item")
            );
            let event = Event::ConversationItem {
                conv,
                item,
                from,
                reason,
            };
            decide(dir, signin, event, json, text).await
        }
    }
}

pub async fn directory(command: DirectoryCommand, dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        DirectoryCommand::List { on, json } => {
            let on = on.as_deref().map(day).transpose()?;
            let v = state(dir, signin, on).await?;
            let roles: Vec<Role> = serde_json::from_value(v["directory"].clone())
                .context("the records office sent a directory this command cannot read")?;
            let roles: Vec<Role> = roles
                .into_iter()
                .filter(|r| on.is_none_or(|d| r.on(d)))
                .collect();
            if json {
                return print_json(&roles);
            }
            for r in roles {
                println!(
                    "{:<16} {:<12} {:<28} {:<28} {:<12} {} – {}",
                    r.user,
                    r.position,
                    r.title,
                    r.office,
                    r.category,
                    r.from,
                    r.until.map(|u| u.to_string()).unwrap_or_default()
                );
            }
            Ok(())
        }
        DirectoryCommand::Start {
            user,
            position,
            title,
            office,
            category,
            from,
            until,
            json,
        } => {
            let role = Role {
                user,
                position,
                title,
                office,
                category: category.parse()?,
                from: day(&from)?,
                until: until.as_deref().map(day).transpose()?,
            };
            let text = format!(
                "{} holds {} ({}, {}) from {}",
                role.user, role.position, role.title, role.category, role.from
            );
            decide(dir, signin, Event::RoleStart { role }, json, text).await
        }
        DirectoryCommand::End {
            user,
            position,
            on,
            json,
        } => {
            let on = day(&on)?;
            let text = format!("{user} left {position}; last day {on}");
            let event = Event::RoleEnd { user, position, on };
            decide(dir, signin, event, json, text).await
        }
    }
}

pub async fn na1005(command: Na1005Command, dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        Na1005Command::Show { on, json } => {
            let on = on.as_deref().map(day).transpose()?;
            let v = state(dir, signin, on).await?;
            let f = &v["na1005"];
            if json {
                return print_json(f);
            }
            println!("NA-1005 (GRS 6.1 verification) as of {}", s(&f["on"]));
            println!(
                "  messages other than email included: {}",
                if f["includes_other_messages"] == true {
                    "yes"
                } else {
                    "no"
                }
            );
            let items: Vec<&str> = f["items_used"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            println!("  items used: {}", items.join(", "));
            println!("  cutoff instructions: {}", s(&f["cutoff_instructions"]));
            println!(
                "  transfer instructions: {}",
                s(&f["transfer_instructions"])
            );
            println!("  Capstone positions (GRS 6.1 item 010 categories):");
            for (cat, positions) in f["capstone_positions"].as_object().into_iter().flatten() {
                for p in positions.as_array().into_iter().flatten() {
                    println!(
                        "    category {cat}: {} {} ({}), {} holder(s)",
                        s(&p["position"]),
                        s(&p["title"]),
                        s(&p["office"]),
                        p["holders"]
                    );
                }
            }
            for (what, key) in [
                ("the records officer", "records_officer"),
                ("the senior agency official", "senior_official"),
                ("NARA", "nara"),
            ] {
                match f[key].as_object() {
                    Some(a) => println!(
                        "  approved by {what}: {} on {}",
                        a["name"].as_str().unwrap_or_default(),
                        a["on"].as_str().unwrap_or_default()
                    ),
                    None => println!("  not approved by {what}"),
                }
            }
            match f["renewal_due"].as_str() {
                Some(d) if f["renewal_needed"] == true => {
                    println!("  RENEWAL DUE: resubmit to NARA by {d}")
                }
                Some(d) => println!("  renewal due {d}"),
                None => {
                    println!("  NARA has not approved it: GRS 6.1 may not be applied until it does")
                }
            }
            Ok(())
        }
        Na1005Command::Set {
            other_messages,
            cutoff_instructions,
            transfer_instructions,
            records_officer,
            senior_official,
            nara,
            json,
        } => {
            let v = state(dir, signin, None).await?;
            let mut form: Na1005 = serde_json::from_value(v["na1005_declared"].clone())
                .context("the records office sent an NA-1005 this command cannot read")?;
            if let Some(b) = other_messages {
                form.includes_other_messages = b;
            }
            if let Some(t) = cutoff_instructions {
                form.cutoff_instructions = t;
            }
            if let Some(t) = transfer_instructions {
                form.transfer_instructions = t;
            }
            if let Some(a) = records_officer {
                form.records_officer = Some(approval(&a)?);
            }
            if let Some(a) = senior_official {
                form.senior_official = Some(approval(&a)?);
            }
            if let Some(a) = nara {
                form.nara = Some(approval(&a)?);
            }
            let text = match form.renewal() {
                Some(d) => format!("NA-1005 recorded; renewal due {d}"),
                None => "NA-1005 recorded (not approved by NARA yet)".into(),
            };
            decide(dir, signin, Event::Na1005 { form }, json, text).await
        }
    }
}
