//! `keepwire records key`: where the archive's keys are, and the archive
//! key's escrow — split into shares for custodians, and restored from
//! them onto a new key provider when the old one is lost.

use anyhow::{Context, Result};
use keepwire_records::{keys, Archive};

use crate::serve::office::Request;
use crate::serve::{self, ArchiveAt};
use crate::KeyCommand;

pub async fn key(
    command: KeyCommand,
    at: &ArchiveAt,
    office_dir: &std::path::Path,
    signin: &crate::SignIn,
) -> Result<()> {
    match command {
        KeyCommand::Status { json } => {
            // Each key on its own: one that does not open is named, and
            // the other still reported.
            let archive_key = at.open(true).map(|a| a.key_id().unwrap_or_default());
            let checkpoint_key = at.notary().map(|n| n.verifier_key);
            let said = |r: &Result<String>| match r {
                Ok(k) => k.clone(),
                Err(e) => format!("NOT AVAILABLE: {e:#}"),
            };
            let text = format!(
                "keys:            {}\narchive key:     {}\ncheckpoint key:  {}",
                at.keys.describe(),
                said(&archive_key),
                said(&checkpoint_key)
            );
            let value = serde_json::json!({
                "provider": at.keys.describe(),
                "archive_key": archive_key.as_ref().ok(),
                "archive_key_problem": archive_key.as_ref().err().map(|e| format!("{e:#}")),
                "checkpoint_key": checkpoint_key.as_ref().ok(),
                "checkpoint_key_problem": checkpoint_key.as_ref().err().map(|e| format!("{e:#}")),
            });
            crate::report(json, value, text)?;
            if archive_key.is_err() || checkpoint_key.is_err() {
                std::process::exit(1);
            }
            Ok(())
        }
        KeyCommand::Escrow {
            threshold,
            shares,
            out,
            json,
        } => {
            // The running records service splits the key it holds; the
            // shares are written here, where the admin is.
            let made =
                super::account_cmd::ask(office_dir, signin, &Request::Escrow { threshold, shares })
                    .await?;
            let id = made["archive_key"].as_str().unwrap_or_default().to_string();
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let mut files = Vec::new();
            for (i, text) in made["shares"].as_array().into_iter().flatten().enumerate() {
                let path = out.join(format!("archive-key-{id}-share-{}-of-{shares}.txt", i + 1));
                keepwire_protocol::files::write_private(
                    &path,
                    text.as_str().unwrap_or_default().as_bytes(),
                )
                .with_context(|| format!("cannot write {}", path.display()))?;
                files.push(path.display().to_string());
            }
            crate::report(
                json,
                serde_json::json!({"archive_key": id, "threshold": threshold, "shares": files}),
                format!(
                    "archive key {id} split into {shares} shares, any {threshold} of which \
                     recover it:\n  {}\nGive each to a different custodian and delete them here.{}",
                    files.join("\n  "),
                    if made["checkpoint_key_stays_in_provider"].as_bool() == Some(true) {
                        "\nThe checkpoint key stays in the HSM: back it up with the HSM's own \
                         means (a second token of its family)."
                    } else {
                        ""
                    }
                ),
            )
        }
        KeyCommand::Restore { shares, json } => {
            let _lock = serve::lock_records_dir(&at.dir, "cannot restore the archive key")?;
            let who = super::account_cmd::acting_offline(
                &at.open(false)?,
                signin,
                keepwire_records::accounts::Action::ManageKeys,
            )?;
            let texts = shares
                .iter()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let store = at.store()?;
            let provider = at.provider()?;
            let (archive, secrets) =
                Archive::restore_key(store, &*provider, &texts, &who, now_ms())?;
            if let Some(secret) = &secrets.device_secret {
                keys::seal_device_secret(&at.dir, &*provider, secret)?;
            }
            if let Some(skey) = &secrets.checkpoint_key {
                // Only the key this archive's log is signed by.
                if keys::verifier_key_of(skey)? != at.verifier_key()? {
                    anyhow::bail!(
                        "the escrowed checkpoint key is not the key of this archive's log \
                         (records/checkpoint.pub): not taken in"
                    );
                }
                if !provider.has_checkpoint_key()? {
                    provider.import_checkpoint_key(skey)?;
                }
            }
            // Covered by a checkpoint where this provider can sign; a
            // spare HSM without the log's key cannot (docs/operations.md).
            if let Err(e) = at
                .notary()
                .and_then(|notary| super::covered(&notary, &archive))
            {
                eprintln!("warning: the restore is logged but no checkpoint covers it yet: {e:#}");
            }
            let id = archive.key_id().unwrap_or_default();
            crate::report(
                json,
                serde_json::json!({"archive_key": id, "provider": at.keys.describe()}),
                format!(
                    "archive key {id}: {} restored from {} shares into {}",
                    secrets.describe(),
                    texts.len(),
                    at.keys.describe()
                ),
            )
        }
    }
}

fn now_ms() -> u64 {
    keepwire_protocol::clock::Clock::from_env().now_ms()
}
