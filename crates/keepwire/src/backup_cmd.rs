//! `keepwire admin backup` and `keepwire admin restore`.
//!
//! A backup is the server's store, the records member's store and the
//! archive, cut at one point, with a manifest of their hashes. The cut
//! is what matters: copied one after the other while messages flow, the
//! archive would hold entries the copied log does not, or the log would
//! count as archived what the copied archive lacks — and a restore would
//! reuse sequence numbers or hide lost records. Online, the running
//! server's log writer is held still (`POST /v1/hold` on its admin
//! listener, [`keepwire_server::hold`]) while the three are copied, in the
//! order that keeps them consistent: the server's log, then the records
//! member's state, then the archive. Offline, the directories are locked
//! against a start instead. Each copy is SQLite's `VACUUM INTO`, a
//! consistent snapshot of its database.
//!
//! Keys are not in a backup: the checkpoint key, the archive key and the
//! records device's root key belong to the key provider (a key directory
//! or an HSM, backed up and escrowed on their own), and the server's
//! receipt key stays with the server — a restored server signs with a new
//! one, and its list of receipt keys keeps the old one verifiable. A
//! backup read without the archive key reads nothing; a record destroyed
//! after the backup was taken stays unreadable in it, since its data key
//! is gone from the archive key's wrapping only in the live archive — see
//! docs/operations.md on what that means for disposition.
//!
//! A restore refuses to write over a deployment (any store present, or a
//! directory in use), checks every file against the manifest first, and
//! puts the files in place owner-only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::serve::{self, owner};

/// The manifest's name in a backup directory; written last.
const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "keepwire-backup/1";
/// How long the server's log may be held for one backup.
const HOLD: Duration = Duration::from_secs(120);

/// The databases of a deployment, in the order a backup copies them.
const DATABASES: [&str; 3] = ["server.db", "records/device.db", "records/archive.db"];
/// The small files kept beside them (none is a key).
const FILES: [&str; 2] = ["records/checkpoint.pub", "records/device.sealed"];

#[derive(Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub keepwire_version: String,
    pub created_ms: u64,
    /// Whether the server was running (its log held for the copy).
    pub online: bool,
    pub files: Vec<FileEntry>,
    /// Each conversation's last sequence number in the copied log.
    pub log_heads: std::collections::BTreeMap<String, u64>,
    /// The archive's log: leaves, and its latest checkpoint.
    pub archive_leaves: u64,
    pub archive_checkpoint: Option<String>,
    pub keys: String,
}

#[derive(Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let bytes = std::io::copy(&mut f, &mut h)?;
    Ok((bytes, hex_of(&h.finalize())))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A consistent copy of the SQLite database `from` at `to`.
fn snapshot(from: &Path, to: &Path) -> Result<()> {
    let conn =
        rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", from.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

/// The running server's admin listener.
pub struct Admin {
    pub url: String,
    pub token: Option<String>,
}

impl Admin {
    async fn call(&self, method: &str, path: &str) -> Result<()> {
        let (status, body) = crate::net::http::request(
            method,
            &format!("{}{path}", self.url.trim_end_matches('/')),
            self.token
                .as_ref()
                .map(|t| format!("Bearer {t}"))
                .as_deref(),
            Vec::new(),
            4096,
            Duration::from_secs(40),
        )
        .await?;
        if status != 200 {
            bail!(
                "{} {path}: HTTP {status}: {}",
                self.url,
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(())
    }
}

/// `keepwire admin backup --to DIR`.
pub async fn backup(data_dir: &Path, to: &Path, admin: &Admin, now_ms: u64) -> Result<Manifest> {
    if !data_dir.join("server.db").is_file() {
        bail!(
            "{} holds no keepwire server store (server.db): nothing to back up here (on \
             PostgreSQL, back up the databases with PostgreSQL's own tools, docs/operations.md)",
            data_dir.display()
        );
    }
    // All three here, or the cut cannot be made here: an archive or a
    // records member kept in PostgreSQL, or a records service run on
    // another machine, is backed up with the tools of where it lives.
    for db in DATABASES {
        if !data_dir.join(db).is_file() {
            bail!(
                "{} is not here: `admin backup` copies a deployment whose server, records member \
                 and archive are all in {} (the embedded default on SQLite). Where one is in \
                 PostgreSQL or on another machine, back up each with the tools of where it \
                 lives, at one moment (docs/operations.md, \"Backup and restore\")",
                data_dir.join(db).display(),
                data_dir.display()
            );
        }
    }
    if to.exists() && std::fs::read_dir(to)?.next().is_some() {
        bail!(
            "{} is not empty: a backup goes into a new directory",
            to.display()
        );
    }
    owner::make_private_dir(to)?;
    owner::make_private_dir(&to.join("records"))?;
    // Offline: lock the directories against a start while copying.
    // Online: hold the running server's log.
    let claims = (
        owner::claim_dir(data_dir, "server.lock", "keepwire admin backup", "backup"),
        owner::claim_dir(
            &serve::records_dir(data_dir),
            "service.lock",
            "keepwire admin backup",
            "backup",
        ),
    );
    let online = match &claims {
        (Ok(_), Ok(_)) => false,
        (Err(e), _) => {
            admin
                .call("POST", &format!("/v1/hold?secs={}", HOLD.as_secs()))
                .await
                .with_context(|| {
                    format!(
                        "{e:#}; holding its log through its admin listener failed (--admin-url, \
                         --admin-token-file)"
                    )
                })?;
            true
        }
        (Ok(_), Err(e)) => bail!(
            "{e:#}: a records service runs on this deployment's archive without its server; \
             stop it, or back up while the server runs"
        ),
    };
    let copied = copy_all(data_dir, to);
    if online {
        // Released whatever happened; the lease would end it anyway.
        if let Err(e) = admin.call("DELETE", "/v1/hold").await {
            tracing::warn!(error = %format!("{e:#}"), "could not release the log's hold; it ends with its lease");
        }
    }
    drop(claims);
    copied?;
    let manifest = describe(to, online, now_ms)?;
    let text = serde_json::to_vec_pretty(&manifest)?;
    keepwire_protocol::files::write_private(&to.join(MANIFEST), &text)?;
    Ok(manifest)
}

/// Where attachments' bytes are kept apart from the databases: the
/// server's blobs beside `server.db`, the archive's files beside
/// `records/archive.db`.
const FILE_DIRS: [&str; 2] = ["blobs", "records/files"];

/// The attachment files under `dir` (blobs and archived files), as paths
/// relative to it.
fn blob_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for sub in FILE_DIRS {
        let from = dir.join(sub);
        if !from.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&from)? {
            let f = f?;
            if f.file_type()?.is_file() {
                out.push(format!("{sub}/{}", f.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copy the databases in order, then the attachment files, then the
/// small files. The files come after the databases: every blob the copy
/// of `server.db` names was complete, and every file the copy of the
/// archive links was stored, before the copy began.
fn copy_all(data_dir: &Path, to: &Path) -> Result<()> {
    for db in DATABASES {
        snapshot(&data_dir.join(db), &to.join(db))?;
    }
    for f in blob_files(data_dir)? {
        let target = to.join(&f);
        if let Some(parent) = target.parent() {
            owner::make_private_dir(parent)?;
        }
        std::fs::copy(data_dir.join(&f), &target).with_context(|| format!("cannot copy {f}"))?;
    }
    for f in FILES {
        let from = data_dir.join(f);
        if from.is_file() {
            let bytes = std::fs::read(&from)?;
            keepwire_protocol::files::write_private(&to.join(f), &bytes)?;
        }
    }
    Ok(())
}

/// The manifest of what was copied to `to`: read from the copies
/// (read-only), then every file hashed.
fn describe(to: &Path, online: bool, now_ms: u64) -> Result<Manifest> {
    let server = rusqlite::Connection::open_with_flags(
        to.join("server.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let log_heads = server
        .prepare("SELECT conv, last_seq FROM conversations")?
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<_, _>>()?;
    drop(server);
    let (archive_leaves, archive_checkpoint) = if to.join("records/archive.db").is_file() {
        use keepwire_records::archive::ArchiveStore;
        let a = keepwire_records::archive::SqliteArchive::open_read_only(
            &to.join("records/archive.db"),
        )?;
        (a.log_size()?, a.latest_checkpoint()?.map(|(_, n)| n))
    } else {
        (0, None)
    };
    let mut files = Vec::new();
    let blobs = blob_files(to)?;
    for f in DATABASES
        .iter()
        .chain(FILES.iter())
        .copied()
        .chain(blobs.iter().map(String::as_str))
    {
        let p = to.join(f);
        if p.is_file() {
            let (bytes, sha256) = sha256_file(&p)?;
            files.push(FileEntry {
                path: f.to_string(),
                bytes,
                sha256,
            });
        }
    }
    Ok(Manifest {
        format: FORMAT.into(),
        keepwire_version: env!("CARGO_PKG_VERSION").into(),
        created_ms: now_ms,
        online,
        files,
        log_heads,
        archive_leaves,
        archive_checkpoint,
        keys: "not included: the checkpoint key, the archive key and the records device's root \
               key are the key provider's (its own backup and escrow); the server's receipt key \
               stays with the server, and a restored server makes a new one"
            .into(),
    })
}

/// `keepwire admin restore --from DIR`: into `data_dir`, which must hold
/// no deployment.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest> {
    let text = std::fs::read(from.join(MANIFEST)).with_context(|| {
        format!(
            "{} has no {MANIFEST}: not a keepwire backup, or an incomplete one",
            from.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a keepwire backup manifest", from.display()))?;
    if manifest.format != FORMAT {
        bail!(
            "{}: backup format {} is not {FORMAT}",
            from.display(),
            manifest.format
        );
    }
    // Every file checked before anything is written.
    for f in &manifest.files {
        let p = from.join(&f.path);
        let (bytes, sha256) = sha256_file(&p)?;
        if bytes != f.bytes || sha256 != f.sha256 {
            bail!(
                "{} does not match the backup's manifest (it was changed or damaged since the \
                 backup): nothing restored",
                p.display()
            );
        }
    }
    let live: Vec<PathBuf> = DATABASES
        .iter()
        .chain(FILES.iter())
        .map(|f| data_dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if !live.is_empty() {
        bail!(
            "{} already holds a deployment ({}): a restore never writes over one; restore into \
             an empty directory, or move this one aside first",
            data_dir.display(),
            live.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _claims = (
        owner::claim_dir(data_dir, "server.lock", "keepwire admin restore", "restore")?,
        owner::claim_dir(
            &serve::records_dir(data_dir),
            "service.lock",
            "keepwire admin restore",
            "restore",
        )?,
    );
    for f in &manifest.files {
        let bytes = std::fs::read(from.join(&f.path))?;
        let to = data_dir.join(&f.path);
        if let Some(parent) = to.parent() {
            owner::make_private_dir(parent)?;
        }
        keepwire_protocol::files::write_private(&to, &bytes)?;
    }
    Ok(manifest)
}
