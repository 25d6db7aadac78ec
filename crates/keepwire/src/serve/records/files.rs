//! Fetching a batch's files before it is written: the records service's
//! half of "a message is archived with its files, or not at all"
//! (`keepwire_records::capture::attachments` has the idea).
//!
//! Each file a staged message references is pulled from the server over
//! the records member's own connection, a frame at a time, into a spool
//! file under the records directory (memory holds one frame, not the
//! file), and opened there as its reference says — every segment
//! authenticated, both hashes and the size checked — before the batch
//! goes to the archive writer, which stores it with its record in one
//! transaction and removes the spooled copy. A file the server does not
//! have, or that is not what its reference says, makes its message
//! withheld; a broken connection is an error like any other, and the
//! batch, never acknowledged, comes again.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use keepwire_client::Authenticator;
use keepwire_protocol::attachment::Attachment;
use keepwire_protocol::clock::Clock;
use keepwire_protocol::MAX_BLOB_CHUNK;
use keepwire_records::capture::{FileJob, FilesOutcome, StagedBatch};
use keepwire_records::Archive;

use crate::net::{Conn, Refused};

/// Where files wait between their fetch and their batch's write.
const SPOOL: &str = "spool";

/// How files come in: where they wait, and the scanner they go through.
#[derive(Clone)]
pub struct Intake {
    spool: PathBuf,
    scan: Option<String>,
    clock: Clock,
}

impl Intake {
    /// The spool directory of the records directory `dir` is removed:
    /// what a crash left there belongs to batches that were never
    /// acknowledged and will come again. The first file fetched makes it
    /// again.
    pub fn new(dir: &Path, scan: Option<String>, clock: Clock) -> Result<Self> {
        let spool = dir.join(SPOOL);
        if spool.exists() {
            std::fs::remove_dir_all(&spool)
                .with_context(|| format!("cannot empty {}", spool.display()))?;
        }
        Ok(Intake { spool, scan, clock })
    }
}

/// Fetch, check and spool every file `batch` wants, each through the
/// agency's scanner if it has one; a message whose files cannot all be
/// had as referenced is withheld. In line, for the records member's own
/// commits' batches; deliveries' files are fetched beside capture
/// ([`Fetcher`]).
pub async fn fetch(
    conn: &mut Conn,
    intake: &Intake,
    archive: &mut Archive,
    batch: &mut StagedBatch,
) -> Result<()> {
    for (index, references) in batch.wanted() {
        match fetch_message(conn, intake, &references).await? {
            Ok((files, verdicts)) => {
                store_files(archive, &references, &files, intake.clock.now_ms())?;
                batch.attach(index, verdicts);
            }
            Err(why) => batch.withhold(index, &why),
        }
    }
    Ok(())
}

/// Fetch, check, spool and scan one message's files: their spool paths
/// and verdicts, or why the message cannot be captured with them (the
/// outer error is the connection's or the disk's, and retried).
async fn fetch_message(
    conn: &mut Conn,
    intake: &Intake,
    references: &[Attachment],
) -> Result<std::result::Result<(Vec<PathBuf>, Vec<Option<String>>), String>> {
    let (spool, scan) = (&intake.spool, intake.scan.as_deref());
    let mut files = Vec::with_capacity(references.len());
    let mut verdicts = Vec::with_capacity(references.len());
    for (n, reference) in references.iter().enumerate() {
        match fetch_one(conn, spool, reference, scan.is_some()).await? {
            Ok(path) => {
                verdicts.push(match scan {
                    Some(command) => Some(scan_one(command, spool, reference).await?),
                    None => None,
                });
                files.push(path);
            }
            Err(why) => {
                for f in files {
                    let _ = std::fs::remove_file(f);
                }
                return Ok(Err(format!("its file {n} ({}): {why}", reference.blob)));
            }
        }
    }
    Ok(Ok((files, verdicts)))
}

/// Store a message's checked files in the archive (each consumed from
/// the spool), once all of them are what their references say.
fn store_files(
    archive: &mut Archive,
    references: &[Attachment],
    files: &[PathBuf],
    now_ms: u64,
) -> Result<()> {
    for (reference, path) in references.iter().zip(files) {
        archive.put_file(&reference.cipher_sha256, path, now_ms)?;
    }
    Ok(())
}

/// A message's files, fetched beside capture.
pub struct Fetched {
    pub conv: String,
    pub seq: u64,
    /// The outer error is the connection's or the disk's: capture starts
    /// again, and the message comes again.
    pub outcome: Result<FilesOutcome>,
}

/// Fetches the files of messages that wait for them
/// ([`keepwire_records::capture::FileJob`]), one message at a time, over
/// a connection of its own: the capture's connection stays free for
/// deliveries and acknowledgements, and other conversations' capture
/// goes on meanwhile. The connection is made when files are wanted and
/// closed when none are (the records service holds one connection while
/// nothing arrives, as `keepwire_records_service_connections` says).
pub struct Fetcher {
    jobs: tokio::sync::mpsc::UnboundedSender<FileJob>,
    task: tokio::task::JoinHandle<()>,
}

impl Fetcher {
    /// Fetch from `server`, signing in as the records device, telling
    /// `done` of each message's files in the order asked.
    pub fn start(
        server: String,
        auth: Authenticator,
        intake: Intake,
        mut archive: Archive,
        done: tokio::sync::mpsc::UnboundedSender<Fetched>,
    ) -> Self {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<FileJob>();
        let task = tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            while let Some(job) = rx.recv().await {
                let outcome = match fetch_job(&mut conn, &server, &auth, &intake, &job).await {
                    Ok(Ok((files, verdicts))) => {
                        // Into the archive on the blocking pool: on
                        // PostgreSQL a large file's chunks are written out.
                        let now_ms = intake.clock.now_ms();
                        let references = job.references.clone();
                        let stored = tokio::task::spawn_blocking(move || {
                            let r = store_files(&mut archive, &references, &files, now_ms);
                            (archive, r)
                        })
                        .await;
                        match stored {
                            Ok((a, r)) => {
                                archive = a;
                                r.map(|()| Ok(verdicts))
                            }
                            Err(e) => {
                                let _ = done.send(Fetched {
                                    conv: job.conv,
                                    seq: job.seq,
                                    outcome: Err(anyhow::anyhow!("storing files stopped: {e}")),
                                });
                                return;
                            }
                        }
                    }
                    Ok(Err(why)) => Ok(Err(why)),
                    Err(e) => Err(e),
                };
                let broken = outcome.is_err();
                let sent = done.send(Fetched {
                    conv: job.conv,
                    seq: job.seq,
                    outcome,
                });
                if sent.is_err() || broken {
                    return;
                }
                if rx.is_empty() {
                    conn = None;
                }
            }
        });
        Self { jobs, task }
    }

    pub fn fetch(&self, job: FileJob) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the file fetcher stopped"))
    }
}

/// One job's files, over the fetcher's connection (made, and signed in,
/// if there is none).
async fn fetch_job(
    conn: &mut Option<Conn>,
    server: &str,
    auth: &Authenticator,
    intake: &Intake,
    job: &FileJob,
) -> Result<std::result::Result<(Vec<PathBuf>, Vec<Option<String>>), String>> {
    if conn.is_none() {
        let mut c = Conn::connect(server).await?;
        c.request(auth.auth_request(&c.nonce)?).await?;
        *conn = Some(c);
    }
    let c = conn.as_mut().context("no connection")?;
    fetch_message(c, intake, &job.references).await
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        // Its connection goes with it; what it had spooled is removed at
        // the next start.
        self.task.abort();
    }
}

/// One file: its spool path, or why it cannot be captured (the outer
/// error is the connection's or the disk's, and retried).
async fn fetch_one(
    conn: &mut Conn,
    spool: &Path,
    reference: &Attachment,
    scanning: bool,
) -> Result<std::result::Result<PathBuf, String>> {
    std::fs::create_dir_all(spool).with_context(|| format!("cannot create {}", spool.display()))?;
    let path = spool.join(reference.blob.as_str());
    let size = reference.cipher_size();
    {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        let mut at = 0u64;
        while at < size {
            let want = (size - at).min(MAX_BLOB_CHUNK as u64) as u32;
            let part = match conn.fetch_blob(&reference.blob, at, want).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return match e.downcast::<Refused>() {
                        Ok(Refused(p)) => Ok(Err(format!("the server refused it ({p})"))),
                        Err(e) => Err(e),
                    };
                }
            };
            if part.is_empty() {
                let _ = std::fs::remove_file(&path);
                return Ok(Err(format!("the server holds {at} of its {size} bytes")));
            }
            out.write_all(&part)?;
            at += part.len() as u64;
        }
        out.flush()?;
    }
    // Opened as the members will open it: the archive keeps only a file
    // that is what its reference says. Every segment is decrypted (about
    // 600 MB/s on one core): on the blocking pool, never on the thread
    // that captures everyone else's messages. With a scanner, the
    // plaintext it reads is written in the same pass.
    let plain = scanning.then(|| plain_path(spool, reference));
    let (checked, r) = (path.clone(), reference.clone());
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Result<(), String>> {
        let mut blob = std::io::BufReader::new(std::fs::File::open(&checked)?);
        let result = match &plain {
            Some(p) => {
                let mut out = std::io::BufWriter::new(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(p)?,
                );
                let r = keepwire_client::attachment::open(&r, &mut blob, &mut out);
                out.flush()?;
                r
            }
            None => keepwire_client::attachment::open(&r, &mut blob, &mut std::io::sink()),
        };
        match result {
            Ok(()) => Ok(Ok(())),
            Err(keepwire_client::attachment::AttachmentError::Io(e)) => Err(e),
            Err(e) => Ok(Err(e.to_string())),
        }
    })
    .await
    .context("the file check stopped")??;
    match opened {
        Ok(()) => Ok(Ok(path)),
        Err(why) => {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(plain_path(spool, reference));
            Ok(Err(why))
        }
    }
}

/// Where the plaintext of a spooled file waits for the scanner.
fn plain_path(spool: &Path, reference: &Attachment) -> PathBuf {
    spool.join(format!("{}.plain", reference.blob))
}

/// How long one scan may take before it counts as failed.
const SCAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Run the agency's scanner on the plaintext of a checked file (written
/// beside it in the spool by the check): its verdict. The plaintext
/// exists only while the scanner runs, owner-only, in the spool; a
/// scanner that fails, or takes too long, is a verdict too (`scan failed:
/// …`) — the file is archived either way, as evidence, its verdict in its
/// record's leaf.
async fn scan_one(command: &str, spool: &Path, reference: &Attachment) -> Result<String> {
    let plain = plain_path(spool, reference);
    // `sh -c 'COMMAND "$1"' scan PATH`: the command as the agency wrote
    // it, the path one argument whatever its characters.
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{command} \"$1\""))
        .arg("keepwire-scan")
        .arg(&plain)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let verdict = match tokio::time::timeout(SCAN_TIMEOUT, run).await {
        Err(_) => format!(
            "scan failed: no verdict within {} s",
            SCAN_TIMEOUT.as_secs()
        ),
        Ok(Err(e)) => format!("scan failed: cannot run the scanner: {e}"),
        Ok(Ok(out)) => {
            let said: String = String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            match out.status.code() {
                Some(0) => "clean".to_string(),
                Some(1) => format!("found: {said}"),
                code => format!(
                    "scan failed: exit {}: {said}",
                    code.map_or("by signal".to_string(), |c| c.to_string())
                ),
            }
        }
    };
    let _ = std::fs::remove_file(&plain);
    if verdict != "clean" {
        tracing::warn!(blob = %reference.blob, %verdict, "a captured file's malware scan did not come back clean");
    }
    Ok(verdict)
}
