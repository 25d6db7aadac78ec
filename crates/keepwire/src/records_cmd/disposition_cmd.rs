//! `keepwire records disposition|hold|incident|destroy`: what may be
//! destroyed, batches proposed, approved by a second account and run,
//! their certificates; holds; the incident register. The rules are the
//! records crate's; every action goes to the records office.

use std::path::Path;

use anyhow::{Context, Result};
use keepwire_records::lifecycle::holds::Scope;
use keepwire_records::lifecycle::Event;
use serde_json::Value;

use super::account_cmd::ask;
use crate::serve::office::Request;
use crate::{print_json, DispositionCommand, HoldCommand, IncidentCommand, ReportCommand, SignIn};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

async fn state(dir: &Path, signin: &SignIn) -> Result<Value> {
    ask(dir, signin, &Request::LifecycleState { on: None }).await
}

async fn decide(dir: &Path, signin: &SignIn, event: Event, json: bool, text: String) -> Result<()> {
    let done = ask(dir, signin, &Request::Lifecycle { event }).await?;
    let text = format!("{text} (lifecycle event {}, logged)", done["event"]);
    crate::report(json, done, text)
}

/// Propose a batch and say what happens next.
pub async fn propose(
    dir: &Path,
    signin: &SignIn,
    records: Option<Vec<i64>>,
    forced: Option<String>,
    note: String,
    json: bool,
) -> Result<()> {
    let done = ask(
        dir,
        signin,
        &Request::Propose {
            records,
            forced,
            note,
        },
    )
    .await?;
    let next = if done["needs_approval"] == true {
        format!(
            "another account approves it: `keepwire records disposition approve {}`",
            done["batch"]
        )
    } else {
        format!(
            "run it: `keepwire records disposition execute {}`",
            done["batch"]
        )
    };
    let text = format!(
        "disposition batch {} proposed: {} record(s){}; {next}",
        done["batch"],
        done["records"],
        if done["forced"].is_string() {
            " — FORCED: records that are not eligible; executing it opens an incident"
        } else {
            ""
        }
    );
    crate::report(json, done, text)
}

fn print_certificate(c: &Value) {
    println!(
        "disposition certificate — batch {}: {} record(s) destroyed, {} kept",
        c["batch"],
        c["destroyed"].as_array().map_or(0, Vec::len),
        c["kept"].as_array().map_or(0, Vec::len)
    );
    if let Some(reason) = c["forced"].as_str() {
        println!("  FORCED: {reason}");
    }
    println!(
        "  sent between {} and {}",
        s(&c["first_sent"]),
        s(&c["last_sent"])
    );
    for (item, n) in c["counts"].as_object().into_iter().flatten() {
        println!("  {item}: {n}");
    }
    for (conv, ranges) in c["conversations"].as_object().into_iter().flatten() {
        let r: Vec<String> = ranges
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| match (r[0].as_u64(), r[1].as_u64()) {
                (Some(a), Some(b)) if a == b => format!("#{a}"),
                (Some(a), Some(b)) => format!("#{a}–#{b}"),
                _ => String::new(),
            })
            .collect();
        println!("  conversation {conv}: {}", r.join(", "));
    }
    let approved: Vec<&str> = c["approved_by"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    println!(
        "  proposed by {}, approved by {}, executed by {}",
        s(&c["proposed_by"]),
        if approved.is_empty() {
            "nobody (no second approval required)".to_string()
        } else {
            approved.join(", ")
        },
        s(&c["executed_by"])
    );
    for k in c["kept"].as_array().into_iter().flatten() {
        println!("  kept record {}: {}", k["id"], s(&k["why"]));
    }
}

pub async fn disposition(command: DispositionCommand, dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        DispositionCommand::Eligible { json } => {
            let v = ask(dir, signin, &Request::Standings { eligible: true }).await?;
            if json {
                return print_json(&v);
            }
            let rows = v.as_array().cloned().unwrap_or_default();
            for r in &rows {
                let conv = s(&r["conv"]);
                println!(
                    "{:>6}  {}#{:<5} {:<18} due {}",
                    r["id"],
                    &conv[..8.min(conv.len())],
                    r["seq"],
                    s(&r["schedule"]["item"]),
                    s(&r["schedule"]["disposition_day"])
                );
            }
            println!("{} record(s) eligible for disposition", rows.len());
            Ok(())
        }
        DispositionCommand::Propose {
            ids,
            force,
            reason,
            note,
            json,
        } => {
            let records = (!ids.is_empty()).then_some(ids);
            let forced = if force { reason } else { None };
            propose(dir, signin, records, forced, note, json).await
        }
        DispositionCommand::Approve { batch, json } => {
            decide(
                dir,
                signin,
                Event::BatchApprove { batch },
                json,
                format!("disposition batch {batch} approved"),
            )
            .await
        }
        DispositionCommand::Cancel {
            batch,
            reason,
            json,
        } => {
            decide(
                dir,
                signin,
                Event::BatchCancel { batch, reason },
                json,
                format!("disposition batch {batch} cancelled"),
            )
            .await
        }
        DispositionCommand::Execute { batch, json } => {
            let done = ask(dir, signin, &Request::Execute { batch }).await?;
            if json {
                return print_json(&done);
            }
            print_certificate(&done["certificate"]);
            if let Some(i) = done["incident"].as_u64() {
                println!(
                    "  INCIDENT {i} opened: report it to NARA (`keepwire records incident list`)"
                );
            }
            Ok(())
        }
        DispositionCommand::List { json } => {
            let v = state(dir, signin).await?;
            if json {
                return print_json(&v["batches"]);
            }
            for b in v["batches"].as_array().into_iter().flatten() {
                println!(
                    "batch {:<5} {:<9} {} record(s), proposed by {}{}{}",
                    b["id"],
                    s(&b["state"]),
                    b["records"],
                    s(&b["proposed_by"]),
                    if b["forced"].is_string() {
                        ", FORCED"
                    } else {
                        ""
                    },
                    if b["state"] == "proposed" && b["ready"] == false {
                        ", awaiting a second approval"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        DispositionCommand::Certificate { batch, out, json } => {
            let v = ask(dir, signin, &Request::Certificate { batch }).await?;
            match out {
                Some(path) => {
                    let text = serde_json::to_string_pretty(&v)?;
                    keepwire_protocol::files::write_private(&path, text.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    crate::report(
                        json,
                        serde_json::json!({"batch": batch, "out": path}),
                        format!(
                            "the certificate of batch {batch}, with its inclusion proof and checkpoint: {}",
                            path.display()
                        ),
                    )
                }
                None => print_json(&v),
            }
        }
    }
}

pub async fn hold(command: HoldCommand, dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        HoldCommand::Place {
            kind,
            name,
            matter,
            authority,
            custodians,
            conversations,
            from,
            until,
            everything,
            json,
        } => {
            let scope = Scope {
                custodians,
                conversations,
                from: from.as_deref().map(str::parse).transpose()?,
                until: until.as_deref().map(str::parse).transpose()?,
                everything,
            };
            let text = format!("hold `{name}` placed ({matter})");
            let event = Event::HoldPlace {
                kind: kind.parse()?,
                name,
                matter,
                authority,
                scope,
            };
            decide(dir, signin, event, json, text).await
        }
        HoldCommand::Release { hold, reason, json } => {
            decide(
                dir,
                signin,
                Event::HoldRelease { hold, reason },
                json,
                format!("hold {hold} released"),
            )
            .await
        }
        HoldCommand::List { json } => {
            let v = state(dir, signin).await?;
            if json {
                return print_json(&v["holds"]);
            }
            for h in v["holds"].as_array().into_iter().flatten() {
                let released = match h["released"].as_object() {
                    Some(r) => format!(
                        "released by {} ({})",
                        r["by"].as_str().unwrap_or_default(),
                        r["reason"].as_str().unwrap_or_default()
                    ),
                    None => "IN FORCE".into(),
                };
                println!(
                    "hold {:<5} {:<6} {} — {} ({}); placed by {}; {released}; covers {}",
                    h["id"],
                    s(&h["kind"]),
                    s(&h["name"]),
                    s(&h["matter"]),
                    s(&h["authority"]),
                    s(&h["placed_by"]),
                    scope_text(&h["scope"])
                );
            }
            Ok(())
        }
    }
}

/// What a hold covers, in words.
fn scope_text(scope: &Value) -> String {
    if scope["everything"] == true {
        return "every record".into();
    }
    let list =
        |k: &str| -> Vec<&str> { scope[k].as_array().into_iter().flatten().map(s).collect() };
    let mut parts = Vec::new();
    if !list("custodians").is_empty() {
        parts.push(format!("custodians {}", list("custodians").join(", ")));
    }
    if !list("conversations").is_empty() {
        parts.push(format!(
            "conversations {}",
            list("conversations").join(", ")
        ));
    }
    match (scope["from"].as_str(), scope["until"].as_str()) {
        (Some(f), Some(u)) => parts.push(format!("sent {f} to {u}")),
        (Some(f), None) => parts.push(format!("sent from {f}")),
        (None, Some(u)) => parts.push(format!("sent until {u}")),
        (None, None) => {}
    }
    format!("records of {}", parts.join(", "))
}

pub async fn incident(command: IncidentCommand, dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        IncidentCommand::List { json } => {
            let v = state(dir, signin).await?;
            if json {
                return print_json(&v["incidents"]);
            }
            for i in v["incidents"].as_array().into_iter().flatten() {
                println!(
                    "incident {:<5} {:<26} {:<16} report due {}{} — {}",
                    i["id"],
                    s(&i["kind"]),
                    s(&i["status"]),
                    s(&i["report_due"]),
                    i["nara_case"]
                        .as_str()
                        .map(|c| format!(", NARA case {c}"))
                        .unwrap_or_default(),
                    s(&i["description"])
                );
            }
            Ok(())
        }
        IncidentCommand::Report {
            incident,
            out,
            json,
        } => {
            let v = ask(dir, signin, &Request::IncidentReport { id: incident }).await?;
            let text = if json {
                serde_json::to_string_pretty(&v["report"])?
            } else {
                s(&v["markdown"]).to_string()
            };
            match out {
                Some(path) => {
                    keepwire_protocol::files::write_private(&path, text.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("the report of incident {incident}: {}", path.display());
                    let incomplete: Vec<&str> = v["report"]["incomplete"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    if !incomplete.is_empty() {
                        eprintln!("still to complete: {}", incomplete.join("; "));
                    }
                }
                None => println!("{text}"),
            }
            Ok(())
        }
        IncidentCommand::Update {
            incident,
            status,
            nara_case,
            note,
            circumstances,
            safeguards,
            salvage,
            json,
        } => {
            let event = Event::IncidentUpdate {
                incident,
                status: status.as_deref().map(str::parse).transpose()?,
                nara_case,
                note,
                circumstances,
                safeguards,
                salvage,
            };
            decide(
                dir,
                signin,
                event,
                json,
                format!("incident {incident} updated"),
            )
            .await
        }
    }
}

pub async fn report(command: ReportCommand, dir: &Path, signin: &SignIn) -> Result<()> {
    match command {
        ReportCommand::Integrity { out, json } => {
            let done = ask(dir, signin, &Request::Integrity).await?;
            let event = done["event"].as_u64().unwrap_or_default();
            let proof = ask(dir, signin, &Request::EventProof { event }).await?;
            if let Some(path) = &out {
                let text = serde_json::to_string_pretty(&proof)?;
                keepwire_protocol::files::write_private(path, text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if json {
                return print_json(&proof);
            }
            let r = &done["report"];
            println!(
                "integrity report (lifecycle event {event}, leaf {} under the checkpoint of {} leaves): {}",
                proof["leaf_index"],
                proof["tree_size"],
                if r["ok"] == true { "OK" } else { "PROBLEMS FOUND" }
            );
            println!(
                "  {} leaves, {} records in {} conversations, {} checkpoints; content {}, checkpoint signatures {}",
                r["tree_size"],
                r["records"],
                r["conversations"],
                r["checkpoints"],
                if r["content_checked"] == true { "checked" } else { "not checked" },
                if r["signatures_checked"] == true { "checked" } else { "not checked" }
            );
            for p in r["problems"].as_array().into_iter().flatten() {
                println!("  PROBLEM {}: {}", s(&p["kind"]), s(&p["detail"]));
            }
            for i in r["incidents_opened"].as_array().into_iter().flatten() {
                println!("  INCIDENT {i} opened: `keepwire records incident report {i}`");
            }
            if let Some(path) = out {
                println!("  written with its proof: {}", path.display());
            }
            Ok(())
        }
    }
}
