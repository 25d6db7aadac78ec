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
