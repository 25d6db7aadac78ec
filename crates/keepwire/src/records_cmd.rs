//! `keepwire records`: the records service apart, and the archive from the
//! command line — listing, viewing (itself logged), destruction, key
//! rotation, and the transparency log as JSON any RFC 9162 verifier can
//! check (docs/verification.md walks through one by hand).

use std::path::Path;

use anyhow::{bail, Context, Result};
use keepwire_protocol::b64;
use keepwire_records::checkpoint::{self, Notary};
use keepwire_records::{verify, Archive};
use serde::Serialize;

mod account_cmd;
mod disposition_cmd;
mod file_cmd;
mod key_cmd;
mod lifecycle_cmd;

use keepwire_records::accounts::Action;

use crate::serve::office::Request;
use crate::serve::ArchiveAt;
use crate::{net, print_json, serve, terminated, RecordsCommand};

fn now_ms() -> u64 {
    keepwire_protocol::clock::Clock::from_env().now_ms()
}

/// Sign a checkpoint covering what a maintenance command (run with the
/// records service stopped) just logged, before its result is shown:
/// erasing the action's leaf afterwards contradicts a signed checkpoint
/// (kept in the archive, and published to the server by the records
/// service when it runs again). The signer is opened before the action is
/// taken, so an action that could not be covered is refused, not logged
/// and left uncovered.
pub(crate) fn covered(notary: &Notary, archive: &Archive) -> Result<()> {
    archive.issue_checkpoint(notary, now_ms()).map(drop)?;
    Ok(())
}

/// `records checkpoint`: the running records service signs one covering
/// the log as it stands (batched with officers' actions).
async fn checkpoint(records_dir: &Path, signin: &crate::SignIn, json: bool) -> Result<()> {
    let v = account_cmd::ask(records_dir, signin, &Request::Checkpoint).await?;
    if json {
        crate::print_json(&v)
    } else {
        print!("{}", v["checkpoint"].as_str().unwrap_or_default());
        Ok(())
    }
}

/// A record as the office gives it (`Archive::get`'s JSON), for people.
fn print_record(r: &serde_json::Value) {
    // The record's metadata is flattened into it.
    let m = r;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    println!(
        "record {} — conversation {} #{}",
        r["id"],
        s(&m["conv"]),
        m["seq"]
    );
    println!("  kind:         {}", s(&m["kind"]));
    println!("  sender:       {}", s(&m["sender"]));
    let participants: Vec<String> = m["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    println!("  participants: {}", participants.join(", "));
    println!(
        "  sent:         {}",
        crate::when(m["server_time_ms"].as_u64().unwrap_or_default())
    );
    println!(
        "  captured:     {}",
        crate::when(m["captured_at_ms"].as_u64().unwrap_or_default())
    );
    let timer = match (
        m["expire_after_secs"].as_u64(),
        m["burn_on_read"].as_bool() == Some(true),
    ) {
        (Some(t), true) => format!("{t} s after sending, or once read"),
        (Some(t), false) => format!("{t} s after sending"),
        (None, true) => "once read".to_string(),
        (None, false) => "none".to_string(),
    };
    println!("  on devices:   disappears {timer} (the record stays)");
    if let Some(note) = m["note"].as_str() {
        println!("  note:         {note}");
    }
    match (r["text"].as_str(), r["has_content"].as_bool() == Some(true)) {
        (Some(t), _) => println!("  text:         {t}"),
        (None, false) => println!("  text:         (destroyed)"),
        (None, true) => println!("  text:         (not opened)"),
    }
    for (n, f) in r["files"].as_array().into_iter().flatten().enumerate() {
        println!(
            "  file {n}:       {} ({}, {} bytes, SHA-256 {})",
            s(&f["name"]),
            s(&f["media_type"]),
            f["size"],
            s(&f["sha256"])
        );
        if let Some(scan) = f["scan"].as_str() {
            println!("                malware scan: {scan}");
        }
    }
}

#[derive(Serialize)]
struct InclusionOut {
    record_id: i64,
    leaf_index: u64,
    tree_size: u64,
    /// The leaf's exact bytes (UTF-8 JSON); its hash is SHA-256(0x00 || leaf).
    leaf: String,
    leaf_hash: String,
    root_hash: String,
    /// RFC 9162 inclusion path, from the leaf's sibling upwards (base64).
    inclusion_path: Vec<String>,
    /// The signed checkpoint whose root this proof reaches.
    checkpoint: String,
}

/// The proof against the latest checkpoint the archive signed, the
/// archive opened read-only and no key needed: an auditor's command.
pub fn proof(at: &ArchiveAt, record_id: i64) -> Result<()> {
    let archive = at.open_read_only(false)?;
    let record = archive
        .get(record_id, false)?
        .with_context(|| format!("no record {record_id}"))?;
    let n = record
        .leaf
        .with_context(|| format!("record {record_id} has no leaf in the log"))?;
    let verifier_key = at.verifier_key()?;
    let (_, _, note) = archive.checkpoints()?.pop().with_context(|| {
        "the archive has signed no checkpoint yet (the records service signs one every \
         --checkpoint-secs; or run `keepwire records checkpoint`)"
    })?;
    let cp = checkpoint::open_note(&note, &verifier_key).map_err(anyhow::Error::msg)?;
    if n >= cp.size() {
        bail!(
            "the latest checkpoint covers {} leaves, and record {record_id} is leaf {n}: wait for \
             the next (the records service signs one every --checkpoint-secs), or run \
             `keepwire records checkpoint`",
            cp.size()
        );
    }
    let (_, _, data) = archive
        .log_leaf(n)?
        .with_context(|| format!("leaf {n} is gone"))?;
    let path = archive.prove_inclusion(cp.size(), n)?;
    // Nothing leaves that does not check out: the proof is verified here,
    // against the signed checkpoint, as the auditor will verify it.
    let leaf_hash = tlog_tiles::tlog::record_hash(&data);
    tlog_tiles::tlog::check_record(&path, cp.size(), *cp.hash(), n, leaf_hash).map_err(|e| {
        anyhow::anyhow!(
            "the inclusion proof of record {record_id} does not check out against the archive's own \
             checkpoint ({e}): the log is damaged; run `keepwire records verify`"
        )
    })?;
    crate::print_json(&InclusionOut {
        record_id,
        leaf_index: n,
        tree_size: cp.size(),
        leaf: String::from_utf8_lossy(&data).into_owned(),
        leaf_hash: b64::encode(&leaf_hash.0),
        root_hash: b64::encode(&cp.hash().0),
        inclusion_path: path.iter().map(|h| b64::encode(&h.0)).collect(),
        checkpoint: note,
    })
}

#[derive(Serialize)]
struct ConsistencyOut {
    old_size: u64,
    new_size: u64,
    old_root: String,
    new_root: String,
    /// RFC 9162 consistency path (base64).
    consistency_path: Vec<String>,
}

pub fn consistency(at: &ArchiveAt, old: u64, new: u64) -> Result<()> {
    let archive = at.open_read_only(false)?;
    let size = archive.log_size()?;
    if new > size {
        bail!("the log has {size} leaves; no tree of size {new} exists yet");
    }
    let path = archive.prove_consistency(old, new)?;
    let (old_root, new_root) = (archive.log_root(old)?, archive.log_root(new)?);
    if old > 0 {
        tlog_tiles::tlog::check_tree(&path, new, new_root, old, old_root).map_err(|e| {
            anyhow::anyhow!(
                "the consistency proof from {old} to {new} leaves does not check out ({e}): the log \
                 is damaged; run `keepwire records verify`"
            )
        })?;
    }
    crate::print_json(&ConsistencyOut {
        old_size: old,
        new_size: new,
        old_root: b64::encode(&old_root.0),
        new_root: b64::encode(&new_root.0),
        consistency_path: path.iter().map(|h| b64::encode(&h.0)).collect(),
    })
}

/// What an auditor brings to `verify` from outside the archive.
pub struct VerifyInputs {
    pub verifier_key: Option<String>,
    pub checkpoints: Vec<std::path::PathBuf>,
    pub server_keys: Option<std::path::PathBuf>,
    /// The latest checkpoint the server published (its store's chain),
    /// when this deployment's server store could be read.
    pub published: Option<String>,
    /// The witnesses whose cosignatures count, and how many.
    pub witnesses: Option<keepwire_records::witness::quorum::Quorum>,
    /// What the witnesses given with a URL said about the log.
    pub witness_answers: Vec<verify::WitnessAnswer>,
}

/// Ask each witness given as `KEY@URL` where it stands on this log: the
/// latest checkpoint, sent from its own size, is cosigned again (the
/// witness is there) or answered with the witness's size, or refused as a
/// fork. Nothing changes at the witness. A witness that cannot be reached
/// is named on stderr, not counted against the archive.
async fn ask_witnesses(at: &ArchiveAt, witnesses: &[String]) -> Result<Vec<verify::WitnessAnswer>> {
    use keepwire_records::witness::quorum::{read_reply, Peer, Reply};
    let peers: Vec<Peer> = witnesses
        .iter()
        .filter(|w| {
            keepwire_records::witness::quorum::split_witness(w)
                .1
                .is_some()
        })
        .map(|w| w.parse())
        .collect::<Result<_, _>>()?;
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    let archive = at.open_read_only(false)?;
    let Some((size, note)) = archive.latest_checkpoint()? else {
        return Ok(Vec::new());
    };
    let mut answers = Vec::new();
    for peer in peers {
        let witness = peer.name().to_string();
        let body = archive.witness_request(size, size, &note)?;
        let url = format!("{}/add-checkpoint", peer.url);
        let reply =
            match crate::net::http::post(&url, body, 16 * 1024, std::time::Duration::from_secs(10))
                .await
            {
                Ok((status, answer)) => read_reply(status, &answer),
                Err(e) => Reply::Failed(format!("{e:#}")),
            };
        match reply {
            Reply::Cosigned(_) => answers.push(verify::WitnessAnswer::At { witness, size }),
            Reply::Latest(at) => answers.push(verify::WitnessAnswer::At { witness, size: at }),
            Reply::Disagrees(why) => answers.push(verify::WitnessAnswer::Refuses { witness, why }),
            Reply::Refused(why) | Reply::Failed(why) => {
                eprintln!("note: the witness {witness} could not be asked: {why}")
            }
        }
    }
    Ok(answers)
}

/// The server's published receipt keys (`GET /v1/receipt-keys`, saved).
fn read_server_keys(path: &Path) -> Result<verify::ServerKeys> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not the JSON list from /v1/receipt-keys",
            path.display()
        )
    })?;
    let mut keys = verify::ServerKeys::new();
    for k in list {
        let key = k["key"]
            .as_str()
            .and_then(|s| b64::decode(s).ok())
            .with_context(|| format!("{}: an entry without a base64 `key`", path.display()))?;
        keys.insert(
            key,
            (k["from_ms"].as_u64().unwrap_or(0), k["until_ms"].as_u64()),
        );
    }
    Ok(keys)
}

/// The latest checkpoint the server published, from its store: at
/// `server_database`, or `server.db` in the data directory when there is
/// one (an archive kept apart from its server has none to read).
fn published_checkpoint(data_dir: &Path, server_database: Option<&str>) -> Result<Option<String>> {
    if server_database.is_none() && !data_dir.join(keepwire_server::SERVER_DB).is_file() {
        return Ok(None);
    }
    let store = serve::open_existing_server_store(data_dir, server_database)?;
    Ok(store.latest_checkpoint()?.map(|c| c.checkpoint))
}

/// Returns whether the archive verified.
pub fn verify(at: &ArchiveAt, inputs: VerifyInputs, json: bool) -> Result<bool> {
    let dir = &at.dir;
    // Read-only; content is checked where the archive key can be opened.
    let archive = at.open_read_only(at.keys.present())?;
    let verifier_key = match inputs.verifier_key {
        Some(k) => Some(k),
        None => std::fs::read_to_string(dir.join(checkpoint::PUB_FILE))
            .ok()
            .map(|s| s.trim().to_string()),
    };
    let mut external = Vec::new();
    for (i, p) in inputs.checkpoints.iter().enumerate() {
        external.push(verify::Outside {
            from: format!(
                "the checkpoint held outside the archive (#{}, {})",
                i + 1,
                p.display()
            ),
            note: std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?,
            kept_by_archive: false,
        });
    }
    // The server keeps the chain the records service published, apart
    // from the archive: a rewrite of the log together with the archive's
    // own checkpoints (re-signed with a stolen key) still cannot match it.
    if let Some(note) = inputs.published {
        external.push(verify::Outside {
            from: "the server's latest published checkpoint".into(),
            note,
            kept_by_archive: true,
        });
    }
    let options = verify::Options {
        verifier_key,
        external_checkpoints: external,
        server_keys: inputs
            .server_keys
            .as_deref()
            .map(read_server_keys)
            .transpose()?,
        witnesses: inputs.witnesses,
        witness_answers: inputs.witness_answers,
    };
    let show_progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = indicatif::ProgressBar::hidden();
    if show_progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} leaves ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
    }
    let report = verify::verify(&archive, &options, |done, total| {
        if done % 4096 == 0 || done == total {
            bar.set_length(total);
            bar.set_position(done);
        }
    })?;
    bar.finish_and_clear();
    if json {
        crate::print_json(&report)?;
    } else {
        println!(
            "{} leaves, {} records in {} conversations, {} checkpoints; content {}",
            report.tree_size,
            report.records,
            report.conversations,
            report.checkpoints,
            if report.content_checked {
                "checked"
            } else {
                "not checked (no archive key)"
            }
        );
        if !report.signatures_checked {
            println!("WARNING: checkpoint signatures not checked (no verifier key: --verifier-key or checkpoint.pub)");
        }
        if report.receipt_keys_from == "archive" {
            println!("note: receipts checked against the keys the archive recorded; pass --server-keys (the server's /v1/receipt-keys) to check against the server's own list");
        }
        if report.external_checkpoints == 0 {
            println!("note: no checkpoint from outside the archive (the server's published chain was not found here; --server-database, or --checkpoint FILE); a rewrite of the whole log with its checkpoint history is only caught against one");
        }
        match (&report.witnesses, report.witnessed_size) {
            (Some(quorum), Some(size)) => println!(
                "witnessed: {size} of {} leaves, cosigned by {quorum}",
                report.tree_size
            ),
            (None, _) => println!("note: no witnesses given (--witness KEY, --witness-quorum N): the log's history is checked against this archive and the server alone"),
            _ => {}
        }
        if report.ok() {
            println!("OK: the archive matches its log, every sequence is complete, every signature verifies");
        }
        for p in &report.problems {
            let place = match (&p.record_id, &p.conv, &p.seq) {
                (Some(id), Some(c), Some(s)) => format!("record {id} ({c}#{s})"),
                (None, Some(c), Some(s)) => format!("{c}#{s}"),
                _ => p.leaf.map(|n| format!("leaf {n}")).unwrap_or_default(),
            };
            println!(
                "PROBLEM {:<18} {place}: {}",
                serde_json::to_value(p.kind)?.as_str().unwrap_or_default(),
                p.detail
            );
        }
    }
    Ok(report.ok())
}

pub async fn records(
    command: RecordsCommand,
    data_dir: &std::path::Path,
    database: Option<&str>,
    keys: serve::KeySource,
    signin: crate::SignIn,
) -> Result<()> {
    let existing = || ArchiveAt::existing(data_dir, database, keys.clone());
    // Where the running records service says where its office is.
    let office_dir = serve::records_dir(data_dir);
    match command {
        RecordsCommand::Serve {
            server,
            records_dir,
            code,
            ca_cert,
            checkpoints,
        } => {
            net::trust_ca(ca_cert);
            let records_dir = records_dir.unwrap_or_else(|| serve::records_dir(data_dir));
            let at = ArchiveAt::new(records_dir, database.map(String::from), keys.clone());
            if let Some(code) = code {
                serve::enroll_records(&server, &at, &code).await?;
            }
            eprintln!("records service running against {server}");
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let signal = terminated()?;
            tokio::spawn(async move {
                signal.await;
                let _ = stop.send(true);
            });
            serve::run_records(server, at, None, checkpoints.publishing()?, Some(stopped)).await?;
            eprintln!("records service stopped");
            Ok(())
        }
        RecordsCommand::Office { office } => {
            let listen = office
                .listen()?
                .context("--records-listen off: the records office needs somewhere to listen")?;
            let at = existing()?;
            let _claim = serve::owner::claim(
                &at.dir,
                "service.lock",
                at.database.as_deref().map(|url| (url, "archive")),
                "keepwire records office",
                "cannot start the records office",
            )?;
            let _office = serve::office::start(&at, &listen).await?;
            eprintln!("records office running on {}", at.dir.display());
            terminated()?.await;
            eprintln!("records office stopped");
            Ok(())
        }
        RecordsCommand::List { all, json } => {
            // Metadata only, no key: read-only, like verify.
            let archive = existing()?.open_read_only(false)?;
            let records = archive.list(all, false)?;
            if json {
                print_json(&records)?;
            } else {
                for r in records {
                    println!(
                        "{:>6}  {}#{}  {:<12} {}  epoch {}",
                        r.id,
                        &r.meta.conv[..8.min(r.meta.conv.len())],
                        r.meta.seq,
                        r.meta.kind,
                        r.meta.sender,
                        r.meta.epoch
                    );
                }
            }
            Ok(())
        }
        RecordsCommand::Show { id, json } => {
            let r = account_cmd::ask(&office_dir, &signin, &Request::Show { id }).await?;
            if json {
                print_json(&r)
            } else {
                print_record(&r);
                Ok(())
            }
        }
        RecordsCommand::Attachment {
            id,
            file,
            out,
            json,
        } => file_cmd::attachment(&office_dir, &signin, id, file, &out, json).await,
        RecordsCommand::Checkpoint { json } => checkpoint(&office_dir, &signin, json).await,
        RecordsCommand::Proof { record_id, .. } => proof(&existing()?, record_id),
        RecordsCommand::Consistency {
            old_size, new_size, ..
        } => consistency(&existing()?, old_size, new_size),
        RecordsCommand::Destroy {
            id,
            force,
            reason,
            json,
        } => {
            let forced = if force { reason } else { None };
            disposition_cmd::propose(
                &office_dir,
                &signin,
                Some(vec![id]),
                forced,
                String::new(),
                json,
            )
            .await
        }
        RecordsCommand::Disposition { command } => {
            disposition_cmd::disposition(command, &office_dir, &signin).await
        }
        RecordsCommand::Hold { command } => {
            disposition_cmd::hold(command, &office_dir, &signin).await
        }
        RecordsCommand::Report { command } => {
            disposition_cmd::report(command, &office_dir, &signin).await
        }
        RecordsCommand::Incident { command } => {
            disposition_cmd::incident(command, &office_dir, &signin).await
        }
        RecordsCommand::RotateKey { json } => {
            let at = existing()?;
            let _lock = serve::lock_records_dir(&at.dir, "cannot rotate the archive key")?;
            let notary = at.notary()?;
            let mut archive = at.open(true)?;
            let who = account_cmd::acting_offline(&archive, &signin, Action::ManageKeys)?;
            let n = archive.rotate_key(&*at.provider()?, &who, now_ms())?;
            covered(&notary, &archive)?;
            let id = archive.key_id().unwrap_or_default();
            crate::report(
                json,
                serde_json::json!({"rewrapped_data_keys": n, "archive_key": id}),
                format!(
                    "archive key rotated to {id}: {n} data keys re-wrapped, no content \
                     re-encrypted. Escrow shares of the old key open nothing now: split the new \
                     one (keepwire records key escrow)"
                ),
            )
        }
        RecordsCommand::Schedule { command } => {
            lifecycle_cmd::schedule(command, &office_dir, &signin).await
        }
        RecordsCommand::Directory { command } => {
            lifecycle_cmd::directory(command, &office_dir, &signin).await
        }
        RecordsCommand::Na1005 { command } => {
            lifecycle_cmd::na1005(command, &office_dir, &signin).await
        }
        RecordsCommand::Key { command } => {
            key_cmd::key(command, &existing()?, &office_dir, &signin).await
        }
        RecordsCommand::Account { command } => {
            account_cmd::account(command, &office_dir, &signin).await
        }
        RecordsCommand::Verify {
            verifier_key,
            checkpoint,
            server_keys,
            server_database,
            witness,
            witness_quorum,
            json,
        } => {
            let inputs = VerifyInputs {
                verifier_key,
                checkpoints: checkpoint,
                server_keys,
                published: published_checkpoint(data_dir, server_database.as_deref())?,
                witnesses: crate::cli::witness_quorum(&witness, witness_quorum)?,
                witness_answers: ask_witnesses(&existing()?, &witness).await?,
            };
            if !verify(&existing()?, inputs, json)? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
