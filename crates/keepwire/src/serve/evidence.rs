//! No silent fresh start.
//!
//! A server or an archive that finds its database missing or empty would,
//! left alone, start a new one — at sequence number 1, at leaf 0 — and
//! carry on as if nothing had been there (a 0-byte `archive.db` started a
//! new archive; a 0-byte `server.db` an empty server). That is only right
//! on a first start. So before opening, each component looks for evidence
//! that it ran here before, and if there is some, an absent or empty
//! database is an error naming the file and the evidence — to restore from
//! a backup, or to move aside deliberately. An archive that does open but
//! no longer holds what its key signed is caught later, against the
//! server's published chain (`keepwire_records::checkpoint::check_against`).

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The server's store at `data_dir` (SQLite) or `database`, if the data
/// directory shows a server ran here: its receipt-signing key exists.
pub fn check_server(data_dir: &Path, database: Option<&str>) -> Result<()> {
    let key = data_dir.join("receipt.key");
    if !key.exists() {
        return Ok(()); // a first start
    }
    let evidence = format!(
        "{} shows a server ran on this data directory",
        key.display()
    );
    match database {
        None => check_file(&data_dir.join(keepwire_server::SERVER_DB), &evidence),
        Some(url) => keepwire_server::store::PgStore::open_existing(url)
            .map(drop)
            .with_context(|| format!("{evidence}, but its store is not there")),
    }
}

/// The archive in `records_dir` (SQLite) or `database`, if the records
/// directory shows an archive was kept: the checkpoint key's public half
/// is there (written right after the archive, on the first connection;
/// an archive made before key providers kept the private key there).
pub fn check_archive(records_dir: &Path, database: Option<&str>) -> Result<()> {
    use keepwire_records::checkpoint::{KEY_FILE, PUB_FILE};
    let Some(key) = [PUB_FILE, KEY_FILE]
        .iter()
        .map(|f| records_dir.join(f))
        .find(|p| p.exists())
    else {
        return Ok(());
    };
    let evidence = format!("{} shows an archive was kept here", key.display());
    match database {
        None => check_file(
            &records_dir.join(keepwire_records::archive::ARCHIVE_DB),
            &evidence,
        ),
        Some(url) => keepwire_records::archive::PgArchive::open_existing(url)
            .map(drop)
            .with_context(|| format!("{evidence}, but the archive is not there")),
    }
}

/// The server's log against the archive, where both are at hand (the
/// embedded records service): each conversation's log must reach at
/// least as far as the archive holds it, and the archive must hold it at
/// least as far as the server recorded it archived. A store restored on
/// its own from an older copy breaks one or the other — a server behind
/// the archive would receipt new messages at sequence numbers already
/// used; an archive behind the server has lost what the server counted
/// as kept — and is refused at start, naming the conversations.
pub fn check_agreement(
    server: &dyn keepwire_server::store::ServerStore,
    archive: &super::ArchiveAt,
) -> Result<()> {
    let server: Vec<(String, u64, u64)> = server
        .conversations()?
        .into_iter()
        .map(|c| (c.conv, c.last_seq, c.records_acked))
        .collect();
    let heads = archive.store()?.heads()?;
    match disagreement(&server, &heads) {
        None => Ok(()),
        Some(why) => bail!(
            "the server's store and the archive disagree: {why}. One of them was restored on its \
             own from an older copy; starting would reuse sequence numbers or hide lost records. \
             Restore both from one backup (`keepwire admin restore`, docs/operations.md)"
        ),
    }
}

/// What is wrong between the server's conversations (conv, last sequence
/// number, archived up to) and the archive's heads (conv, highest
/// archived), if anything: a few conversations named, and how many.
fn disagreement(server: &[(String, u64, u64)], heads: &[(String, u64)]) -> Option<String> {
    let logged: std::collections::HashMap<&str, (u64, u64)> = server
        .iter()
        .map(|(c, last, acked)| (c.as_str(), (*last, *acked)))
        .collect();
    let archived: std::collections::HashMap<&str, u64> =
        heads.iter().map(|(c, h)| (c.as_str(), *h)).collect();
    let mut found = Vec::new();
    for (conv, head) in heads {
        let (last, _) = logged.get(conv.as_str()).copied().unwrap_or((0, 0));
        if *head > last {
            found.push(format!(
                "the archive holds {conv} up to #{head}, the server's log only to #{last} (the \
                 server's store is older)"
            ));
        }
    }
    for (conv, _, acked) in server {
        let head = archived.get(conv.as_str()).copied().unwrap_or(0);
        if *acked > head {
            found.push(format!(
                "the server counts {conv} archived up to #{acked}, the archive holds it only to \
                 #{head} (the archive is older)"
            ));
        }
    }
    if found.is_empty() {
        return None;
    }
    found.sort();
    let more = found.len().saturating_sub(3);
    found.truncate(3);
    let mut why = found.join("; ");
    if more > 0 {
        why.push_str(&format!("; and {more} more"));
    }
    Some(why)
}

/// A SQLite database that must exist and hold something.
fn check_file(db: &Path, evidence: &str) -> Result<()> {
    let advice = "restore it from a backup (docs/operations.md); to start over deliberately, \
                  move the whole directory aside first";
    match std::fs::metadata(db) {
        Ok(m) if m.len() > 0 => Ok(()),
        Ok(_) => bail!("{} is empty, but {evidence}: {advice}", db.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is missing, but {evidence}: {advice}", db.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", db.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_behind_the_other_is_named_and_agreement_passes() {
        let s = |v: &[(&str, u64, u64)]| -> Vec<(String, u64, u64)> {
            v.iter().map(|(c, l, a)| (c.to_string(), *l, *a)).collect()
        };
        let h = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(c, n)| (c.to_string(), *n)).collect()
        };
        // In step, or the archive behind the server's log but not behind
        // what it counted archived (capture lag): fine.
        assert_eq!(disagreement(&s(&[("a", 9, 7)]), &h(&[("a", 8)])), None);
        assert_eq!(disagreement(&[], &[]), None);
        // The server restored from an older copy.
        let why = disagreement(&s(&[("a", 5, 5)]), &h(&[("a", 8), ("b", 2)])).unwrap();
        assert!(
            why.contains("holds a up to #8, the server's log only to #5"),
            "{why}"
        );
        assert!(
            why.contains("holds b up to #2, the server's log only to #0"),
            "{why}"
        );
        // The archive restored from an older copy.
        let why = disagreement(&s(&[("a", 9, 9)]), &h(&[("a", 4)])).unwrap();
        assert!(
            why.contains("counts a archived up to #9, the archive holds it only to #4"),
            "{why}"
        );
        // Many: three named, the rest counted.
        let many: Vec<(String, u64)> = (0..5).map(|i| (format!("c{i}"), 1)).collect();
        assert!(disagreement(&[], &many).unwrap().ends_with("and 2 more"));
    }

    #[test]
    fn an_empty_or_missing_store_is_refused_only_where_evidence_says_one_existed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        check_server(d, None).expect("a first start");
        std::fs::write(d.join("receipt.key"), [1u8; 32]).unwrap();
        let err = format!("{:#}", check_server(d, None).unwrap_err());
        assert!(err.contains("server.db is missing"), "{err}");
        assert!(err.contains("receipt.key shows a server ran"), "{err}");
        std::fs::write(d.join("server.db"), b"").unwrap();
        let err = format!("{:#}", check_server(d, None).unwrap_err());
        assert!(err.contains("server.db is empty"), "{err}");
        std::fs::write(d.join("server.db"), b"SQLite format 3\0").unwrap();
        check_server(d, None).unwrap();

        check_archive(d, None).expect("no archive kept yet");
        std::fs::write(d.join("checkpoint.pub"), b"k").unwrap();
        std::fs::write(d.join("archive.db"), b"").unwrap();
        let err = format!("{:#}", check_archive(d, None).unwrap_err());
        assert!(err.contains("archive.db is empty"), "{err}");
        assert!(err.contains("checkpoint.pub shows an archive"), "{err}");
    }
}
