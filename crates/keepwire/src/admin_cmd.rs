//! `keepwire admin`: users, devices, conversations and policy, on the
//! server's data directory (the server may be running: SQLite serialises
//! the writes, and the server reads what changes it must act on).

use anyhow::{bail, Result};
use keepwire_protocol::clock::Clock;

use crate::{
    print_json, report, serve, AdminCommand, ConversationCommand, DeviceCommand, UserCommand,
};

pub fn admin(
    data_dir: &std::path::Path,
    database: Option<&str>,
    command: AdminCommand,
    clock: &Clock,
) -> Result<()> {
    let mut store = serve::open_existing_server_store(data_dir, database)?;
    match command {
        AdminCommand::User {
            command:
                UserCommand::Add {
                    name,
                    display,
                    category,
                    json,
                },
        } => {
            store.add_user(&name, &display, &category, clock.now_ms())?;
            let code = store.new_enrolment_code(&name, clock.now_ms())?;
            print_code(&name, &code, json)?;
        }
        AdminCommand::User {
            command: UserCommand::Code { name, json },
        } => {
            let code = store.new_enrolment_code(&name, clock.now_ms())?;
            print_code(&name, &code, json)?;
        }
        AdminCommand::User {
            command: UserCommand::List { json },
        } => {
            let users = store.users()?;
            if json {
                print_json(&users)?;
            } else {
                for u in users {
                    let notice = if u.notice_acknowledged_at_ms.is_some() {
                        "notice acknowledged"
                    } else {
                        "notice NOT acknowledged"
                    };
                    println!(
                        "{:<16} {:<10} {:<32} {notice}",
                        u.name, u.category, u.display
                    );
                }
            }
        }
        AdminCommand::Device {
            command: DeviceCommand::List { user, json },
        } => {
            let devices = store.devices(user.as_deref())?;
            if json {
                let v: Vec<_> = devices.iter().map(|d| serde_json::json!({"device_id": d.device_id, "user": d.user, "revoked": d.revoked, "blocked": d.blocked})).collect();
                print_json(&v)?;
            } else {
                for d in devices {
                    let state = match (&d.blocked, d.revoked) {
                        (_, true) => "revoked".to_string(),
                        (Some(why), false) => format!("BLOCKED: {why}"),
                        (None, false) => "active".to_string(),
                    };
                    println!("{} {:<16} {state}", d.device_id, d.user);
                }
            }
        }
        AdminCommand::Device {
            command: DeviceCommand::Revoke { device_id, json },
        } => {
            if !store.revoke_device(&device_id, clock.now_ms())? {
                bail!("no active device {device_id}");
            }
            report(
                json,
                serde_json::json!({"revoked": device_id}),
                format!("revoked {device_id}"),
            )?;
        }
        AdminCommand::Device {
            command:
                DeviceCommand::Unblock {
                    device_id,
                    reason,
                    actor,
                    json,
                },
        } => {
            let actor = crate::actor(actor);
            store.unblock_device(&device_id, &actor, &reason, clock.now_ms())?;
            report(
                json,
                serde_json::json!({"unblocked": device_id, "actor": actor, "reason": reason}),
                format!("unblocked {device_id}"),
            )?;
        }
        AdminCommand::Conversation {
            command: ConversationCommand::Suspended { json },
        } => {
            let suspended = store.suspended_conversations()?;
            let withheld = store.withheld(None)?;
            if json {
                print_json(&serde_json::json!({"suspended": suspended, "withheld": withheld}))?;
            } else {
                for c in &suspended {
                    println!("{}  {}", c.conv, c.reason);
                    for w in withheld.iter().filter(|w| w.conv == c.conv) {
                        println!(
                            "    withheld #{} from device {}: {}",
                            w.seq, w.device, w.reason
                        );
                    }
                }
                if suspended.is_empty() {
                    println!("no suspended conversations");
                }
            }
        }
        AdminCommand::Conversation {
            command:
                ConversationCommand::Resume {
                    conv,
                    reason,
                    actor,
                    json,
                },
        } => {
            let suspended = store.suspended_conversations()?.into_iter().map(|c| c.conv);
            let conv = match keepwire_protocol::named_by(&conv, suspended) {
                keepwire_protocol::Named::One(c) => c,
                keepwire_protocol::Named::None => bail!("no suspended conversation {conv}"),
                keepwire_protocol::Named::Several(ids) => {
                    bail!(
                        "{conv} could be {}: give more of the conversation id",
                        ids.join(", ")
                    )
                }
            };
            let actor = crate::actor(actor);
            store.resume_conversation(&conv, &actor, &reason, clock.now_ms())?;
            report(
                json,
                serde_json::json!({"resumed": conv, "actor": actor, "reason": reason}),
                format!("resumed {conv}"),
            )?;
        }
        // Taken before the store is opened (`main`, `backup_cmd`): a
        // restore goes where no store is yet.
        AdminCommand::Backup { .. } | AdminCommand::Restore { .. } => {
            bail!("backup and restore are not run on an open store")
        }
        AdminCommand::RotateReceiptKey { json } => {
            let key = keepwire_server::rotate_key(data_dir, &*store, clock.now_ms())?;
            let key = keepwire_protocol::b64::encode(&key);
            report(
                json,
                serde_json::json!({"receipt_key": key, "restart_required": true}),
                format!("new receipt key {key}; restart the server to use it"),
            )?;
        }
        AdminCommand::Status { json } => {
            let s = store.status()?;
            if json {
                let mut v = serde_json::to_value(&s)?;
                // Where the store is (never a password).
                v["store"] = serde_json::json!(store.describe());
                print_json(&v)?;
            } else {
                println!("store            {}", store.describe());
                println!("users            {}", s.users);
                println!(
                    "devices          {} active, {} revoked",
                    s.active_devices, s.revoked_devices
                );
                println!("conversations    {}", s.conversations);
                println!("relay entries    {}", s.relay_entries);
                println!("capture backlog  {}", s.capture_backlog);
                println!(
                    "capture failures {} withheld entries, {} suspended conversations, {} blocked devices",
                    s.withheld_entries, s.suspended_conversations, s.blocked_devices
                );
                for c in store.suspended_conversations()? {
                    println!("  suspended {}: {}", c.conv, c.reason);
                }
                for d in store.blocked_devices()? {
                    println!("  blocked {} ({}): {}", d.device, d.user, d.reason);
                }
            }
        }
        AdminCommand::Policy {
            max_timer_secs,
            guests_allowed,
            max_attachment_mb,
            attachment_quota_mb,
            unsent_attachment_hours,
            keep_photo_location,
            json,
        } => {
            // Without settings, says what the policy is.
            store.set_policy(keepwire_server::store::api::PolicyChange {
                max_timer_secs,
                guests_allowed,
                keep_photo_metadata: keep_photo_location,
            })?;
            store.set_attachment_policy(keepwire_server::store::api::AttachmentPolicyChange {
                max_file_bytes: max_attachment_mb.map(|m| m << 20),
                quota_bytes: attachment_quota_mb.map(|m| m << 20),
                unsent_ttl_ms: unsent_attachment_hours.map(|h| h * 3600 * 1000),
            })?;
            let p = store.policy()?;
            let a = store.attachment_policy()?;
            report(
                json,
                serde_json::json!({
                    "max_timer_secs": p.max_timer_secs,
                    "guests_allowed": p.guests_allowed,
                    "max_attachment_bytes": a.max_file_bytes,
                    "attachment_quota_bytes": a.quota_bytes,
                    "unsent_attachment_ttl_ms": a.unsent_ttl_ms,
                    "keep_photo_location": p.keep_photo_metadata,
                }),
                format!(
                    "longest timer {} s; guests {}; attachments up to {} MiB each, {} MiB held per \
                     user, unsent uploads kept {} h; photos sent {}",
                    p.max_timer_secs,
                    if p.guests_allowed {
                        "allowed"
                    } else {
                        "not allowed"
                    },
                    a.max_file_bytes >> 20,
                    a.quota_bytes >> 20,
                    a.unsent_ttl_ms / 3_600_000,
                    if p.keep_photo_metadata {
                        "as taken (location kept)"
                    } else {
                        "without their location and camera data"
                    }
                ),
            )?;
        }
    }
    Ok(())
}

/// An enrolment code: alone on a line (what scripts have read so far), or
/// as JSON with the user and how long it is valid.
fn print_code(user: &str, code: &str, json: bool) -> Result<()> {
    if json {
        print_json(&serde_json::json!({
            "user": user,
            "code": code,
            "valid_for_secs": keepwire_server::store::ENROLMENT_CODE_TTL_MS / 1000,
        }))
    } else {
        println!("{code}");
        Ok(())
    }
}
