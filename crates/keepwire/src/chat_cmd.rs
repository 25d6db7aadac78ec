//! `keepwire chat SUBCOMMAND`: one scriptable action as a device (the
//! interactive client is `tui.rs`).

use anyhow::Result;

use crate::{passphrase, print_json, session, ChatCommand, DeviceArgs};

pub async fn chat(command: ChatCommand, device: DeviceArgs) -> Result<()> {
    device.apply()?;
    match command {
        ChatCommand::Enroll { code } => {
            let online =
                session::enroll(&device.server, &code, &device.device_dir, &passphrase()?).await?;
            if device.json {
                print_json(
                    &serde_json::json!({"user": online.device.user, "device_id": online.device.device_id}),
                )?;
            } else {
                println!(
                    "enrolled {} as device {}",
                    online.device.user, online.device.device_id
                );
                if !online.notice_acknowledged {
                    println!(
                        "\n{}\n\nAcknowledge with `keepwire chat notice --accept` before sending.",
                        keepwire_protocol::content::RECORDS_NOTICE
                    );
                }
            }
        }
        ChatCommand::Notice { accept } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            if accept {
                online.acknowledge_notice().await?;
            }
            if device.json {
                print_json(
                    &serde_json::json!({"notice": keepwire_protocol::content::RECORDS_NOTICE, "acknowledged": online.notice_acknowledged}),
                )?;
            } else {
                println!(
                    "{}\n\nacknowledged: {}",
                    keepwire_protocol::content::RECORDS_NOTICE,
                    online.notice_acknowledged
                );
            }
        }
        ChatCommand::Conversations => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            online.sync().await?;
            let mut out = Vec::new();
            for conv in online.device.conversations()? {
                let members = online.device.participants(&conv)?;
                out.push(serde_json::json!({"conv": conv, "members": members}));
            }
            if device.json {
                print_json(&out)?;
            } else {
                for c in out {
                    println!("{}  {}", c["conv"].as_str().unwrap_or(""), c["members"]);
                }
            }
        }
        ChatCommand::Create { users } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            let conv = online.create(&users).await?;
            if device.json {
                print_json(&serde_json::json!({"conv": conv}))?;
            } else {
                println!("{conv}");
            }
        }
        ChatCommand::Add { conv, users } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            let conv = online.device.resolve_conversation(&conv)?;
            let seq = online.add(&conv, &users).await?;
            println!("{}", serde_json::json!({"conv": conv, "seq": seq}));
        }
        ChatCommand::Remove { conv, users } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            let conv = online.device.resolve_conversation(&conv)?;
            let seq = online.remove(&conv, &users).await?;
            println!("{}", serde_json::json!({"conv": conv, "seq": seq}));
        }
        ChatCommand::Checkpoint => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            online.sync().await?;
            let pinned = online.pinned_checkpoint()?;
            if device.json {
                print_json(&pinned)?;
            } else {
                match pinned {
                    Some(p) => {
                        print!("{}", p.checkpoint);
                        if !p.cosigners.is_empty() {
                            println!("(cosigned by {})", p.cosigners.join(", "));
                        }
                    }
                    None => println!("no archive checkpoint witnessed yet"),
                }
            }
        }
        ChatCommand::Leave { conv } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            let conv = online.device.resolve_conversation(&conv)?;
            let seq = online.leave(&conv).await?;
            println!("{}", serde_json::json!({"conv": conv, "seq": seq}));
        }
        ChatCommand::Send {
            conv,
            text,
            files,
            timer,
            burn_on_read,
            wait_captured,
        } => {
            if text.is_none() && files.is_empty() {
                anyhow::bail!("nothing to send: give a text, a --file, or both");
            }
            let text = text.unwrap_or_default();
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            let conv = online.device.resolve_conversation(&conv)?;
            let seq = if files.is_empty() {
                online.send(&conv, &text, timer, burn_on_read).await?
            } else {
                let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
                online
                    .send_files(&conv, &text, &paths, timer, burn_on_read)
                    .await?
            };
            if let Some(secs) = wait_captured {
                online
                    .wait_captured(&conv, seq, std::time::Duration::from_secs(secs))
                    .await?;
            }
            let captured = wait_captured.is_some();
            if device.json {
                print_json(&serde_json::json!({"conv": conv, "seq": seq, "captured": captured}))?;
            } else if captured {
                println!("sent as #{seq}; captured by the records service");
            } else {
                println!("sent as #{seq}");
            }
        }
        ChatCommand::Read { conv, follow } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            online.sync().await?;
            let conv = conv
                .map(|c| online.device.resolve_conversation(&c))
                .transpose()?;
            let messages = online.device.store().messages(conv.as_deref())?;
            online.device.store().mark_read(conv.as_deref())?;
            let names = if device.json && !follow {
                Default::default()
            } else {
                online.display_names().await?
            };
            if device.json && !follow {
                print_json(&messages)?;
            } else {
                for m in &messages {
                    print_message(m, online.clock.now_ms(), device.json, &names)?;
                }
            }
            if follow {
                follow_messages(&mut online, conv.as_deref(), device.json, &names).await?;
            }
        }
        ChatCommand::Save {
            conv,
            seq,
            file,
            out,
        } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            online.sync().await?;
            let conv = online.device.resolve_conversation(&conv)?;
            let size = online.save_file(&conv, seq, file, &out)?;
            if device.json {
                print_json(
                    &serde_json::json!({"conv": conv, "seq": seq, "file": file, "out": out, "bytes": size}),
                )?;
            } else {
                println!(
                    "saved file {file} of #{seq} to {} ({size} bytes)",
                    out.display()
                );
            }
        }
        ChatCommand::Timer { conv, secs } => {
            let mut online =
                session::connect(&device.server, &device.device_dir, &passphrase()?).await?;
            online.sync().await?;
            let conv = online.device.resolve_conversation(&conv)?;
            let (timer, seq) = match secs {
                Some(t) => (
                    Some(t).filter(|t| *t > 0),
                    Some(online.set_timer(&conv, t).await?),
                ),
                None => (online.conversation_timer(&conv)?, None),
            };
            if device.json {
                print_json(&serde_json::json!({"conv": conv, "timer_secs": timer, "seq": seq}))?;
            } else {
                match timer {
                    Some(t) => println!(
                        "messages disappear {} after sending",
                        session::human_secs(t)
                    ),
                    None => println!("no disappearing timer"),
                }
            }
        }
    }
    Ok(())
}

/// One message for people: when, who (by display name where the server
/// gave one), what, how long it has left.
fn print_message(
    m: &keepwire_client::StoredMessage,
    now_ms: u64,
    json: bool,
    names: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(m)?);
        return Ok(());
    }
    let left = m.remaining(now_ms);
    let captured = if m.captured {
        ""
    } else {
        "  [awaiting capture]"
    };
    let user = m.sender.split('/').next().unwrap_or(&m.sender);
    let who = names.get(user).map(String::as_str).unwrap_or(user);
    println!(
        "[{}#{} {}] {}: {}  ({left}){captured}",
        &m.conv[..8.min(m.conv.len())],
        m.seq,
        crate::when(m.server_time_ms),
        who,
        m.text
    );
    for (n, f) in m.files.iter().enumerate() {
        let state = match (&f.missing, f.thumbnail_of) {
            (Some(why), _) => format!("  [not on this device: {why}]"),
            (None, Some(of)) => format!("  [thumbnail of file {of}]"),
            (None, None) => String::new(),
        };
        println!(
            "    file {n}: {} ({}, {} bytes){state}",
            f.name, f.media_type, f.size
        );
    }
    Ok(())
}

/// `read --follow`: print each new message as it is stored, and delete
/// expired ones on time, until interrupted.
async fn follow_messages(
    online: &mut session::Online,
    conv: Option<&str>,
    json: bool,
    names: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            push = online.conn.next_push() => {
                if let Some(m) = online.handle_push(push?).await? {
                    if conv.is_none_or(|c| c == m.conv) {
                        print_message(&m, online.clock.now_ms(), json, names)?;
                        online.device.store().mark_read(Some(&m.conv))?;
                    }
                }
            }
            _ = tick.tick() => {
                online.device.store().purge_expired(online.clock.now_ms())?;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
