//! `keepwire records attachment ID --out FILE`: a record's file, out of
//! the archive. The records office releases the file's reference (its key)
//! as a logged view covered by a checkpoint, then its stored bytes a part
//! at a time; the command opens them here exactly as the records service
//! did at capture — every segment authenticated, the size and both
//! hashes the reference's — and keeps the output only if they all check.

use std::io::{Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use keepwire_protocol::attachment::Attachment;

use super::account_cmd::{ask_as, authorization};
use crate::cli::SignIn;
use crate::serve::office::Request;

pub async fn attachment(
    records_dir: &Path,
    signin: &SignIn,
    id: i64,
    n: u32,
    out: &Path,
    json: bool,
) -> Result<()> {
    let key = Request::FileKey { id, n };
    let auth = authorization(records_dir, signin, &key)?;
    let answer = ask_as(records_dir, signin, &auth, &key).await?;
    let scan = answer["scan"].as_str().map(str::to_string);
    let reference: Attachment = serde_json::from_value(answer)
        .context("the records office's answer is not a file reference")?;
    let mut spool = tempfile::tempfile().context("cannot make a temporary file")?;
    let size = reference.cipher_size();
    let mut at = 0u64;
    while at < size {
        let part = ask_as(
            records_dir,
            signin,
            &auth,
            &Request::FileBytes { id, n, offset: at },
        )
        .await?;
        let bytes = keepwire_protocol::b64::decode(part["bytes"].as_str().unwrap_or_default())
            .context("the records office sent bytes that are not base64")?;
        if bytes.is_empty() {
            bail!("the archive holds {at} of the {size} bytes of record {id}'s file {n}");
        }
        spool.write_all(&bytes)?;
        at += bytes.len() as u64;
    }
    spool.rewind()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    let opened = keepwire_client::attachment::open(
        &reference,
        &mut std::io::BufReader::new(spool),
        &mut std::io::BufWriter::new(&mut file),
    );
    if let Err(e) = opened {
        drop(file);
        let _ = std::fs::remove_file(out);
        bail!("record {id}'s file {n} does not check out against its reference: {e}");
    }
    file.sync_all()?;
    if json {
        crate::print_json(&serde_json::json!({
            "id": id,
            "file": n,
            "name": reference.name,
            "media_type": reference.media_type,
            "size": reference.size,
            "sha256": reference.sha256,
            "scan": scan,
            "out": out,
        }))
    } else {
        println!(
            "record {id} file {n}: {} ({}, {} bytes, SHA-256 {}) written to {}",
            reference.name,
            reference.media_type,
            reference.size,
            reference.sha256,
            out.display()
        );
        if let Some(scan) = scan {
            println!("malware scan at capture: {scan}");
        }
        Ok(())
    }
}
