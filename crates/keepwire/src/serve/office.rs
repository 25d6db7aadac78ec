//! The records office: where privileged actions on the archive are taken
//! while the records service runs — viewing a record, destroying one,
//! having a checkpoint signed, managing accounts, escrowing the archive
//! key, keeping the schedules and the role directory ([`lifecycle`]).
//!
//! An action's actor must be someone, not whatever `--actor` or `$USER`
//! said: every request is signed in with an account of the archive
//! ([`keepwire_records::accounts`], Argon2id passwords, one role each),
//! and the account's role must allow the action. Only the records
//! service holds the archive key and the checkpoint key; the `records`
//! commands that act come here ([`crate::records_cmd`]), and only
//! `verify`, `proof`, `consistency` and `list` open the archive
//! themselves, read-only and without a key.
//!
//! An action's result is given only once a checkpoint the log signed
//! covers the action's leaf: erasing that leaf afterwards contradicts a
//! signed checkpoint (kept in the archive, published to the server and
//! sent to the witnesses at once). Checkpoints for actions are batched, at
//! most one per [`BATCH`]: the first action after a quiet second is
//! covered at once, and those that come within the second wait for the
//! next one together ([`Batch`]). Witnesses cosign later, on their own:
//! an officer never waits for one.
//!
//! The first account of an archive is an admin made with the setup token
//! the office writes into the records directory while the archive has no
//! account (`records/setup.token`, owner-only): whoever can read it can
//! already read the records directory, and nobody else can claim the
//! archive by being first to the port.
//!
//! The office is one thread that owns its archive connection and the
//! checkpoint signer (which may be a PKCS#11 session), taking requests in
//! turn from a bounded queue; the HTTP shell in front of it
//! ([`http`]) only reads requests and hands over answers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use keepwire_protocol::clock::Clock;
use keepwire_records::accounts::{Account, Role};
use keepwire_records::checkpoint::Notary;
use keepwire_records::{keys, Archive, RecordsError};
use serde_json::{json, Value};

use super::ArchiveAt;

mod batch;
pub mod http;
mod lifecycle;
mod request;

pub use request::Request;
mod throttle;

pub use batch::Batch;
pub use http::{start, Listen, Running};
pub use throttle::Throttle;

/// The stored bytes of a file one answer carries at most (base64 in
/// JSON): few sign-ins for a large file, a bounded answer for each.
pub const FILE_PART: usize = 4 * 1024 * 1024;

/// At most one checkpoint a second for privileged actions.
pub const BATCH: Duration = Duration::from_secs(1);
/// The file the setup token is in, in the records directory.
pub const SETUP_TOKEN: &str = "setup.token";
/// The file the office's URL is in, in the records directory: where the
/// `records` commands find the running service.
pub const URL_FILE: &str = "office.url";

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An account and its password.
    Password { name: String, password: String },
    /// The setup token: creates the first admin, nothing else.
    Setup(String),
}

/// Why a request was not carried out, each with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// A wrong sign-in, or a role that may not.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be taken as it stands (a record destroyed
    /// already, a malformed name).
    #[error("{0}")]
    Invalid(String),
    /// The office cannot act now (no checkpoint could be signed).
    #[error("{0}")]
    Unavailable(String),
    /// Too many wrong passwords for an account just now ([`Throttle`]).
    #[error("{0}")]
    Slowed(String),
    #[error("{0}")]
    Failed(String),
}

impl From<RecordsError> for Refusal {
    fn from(e: RecordsError) -> Self {
        match e {
            RecordsError::Access(m) => Refusal::Forbidden(m),
            e @ RecordsError::SignInRefused => Refusal::Forbidden(e.to_string()),
            RecordsError::Archive(m) => Refusal::Invalid(m),
            other => Refusal::Failed(other.to_string()),
        }
    }
}

/// An answer: given now, or once a checkpoint covers what was logged.
enum Answer {
    Now(Value),
    Covered(Value),
    /// `records checkpoint`: the checkpoint that covers the log.
    Checkpoint,
}

/// The office's state: the archive with its key, the signer, the setup
/// token while there is no account.
pub struct Office {
    archive: Archive,
    notary: Notary,
    at: ArchiveAt,
    clock: Clock,
    setup: Option<String>,
    throttle: Throttle,
}

impl Office {
    /// Open the archive with its key and the checkpoint signer; while the
    /// archive has no account, write a fresh setup token.
    pub fn open(at: &ArchiveAt) -> Result<Self> {
        let notary = at.notary()?;
        let archive = at.open(true)?;
        // An archive that no longer holds what it signed (cut back, an
        // old copy put back) takes no action: logging one would extend
        // the fork, and no checkpoint could cover it.
        if let Some((_, note)) = archive.latest_checkpoint()? {
            keepwire_records::checkpoint::check_against(&archive, &note, &notary.verifier_key)
                .context("the records office does not open")?;
        }
        let mut office = Office {
            archive,
            notary,
            at: at.clone(),
            clock: Clock::from_env(),
            setup: None,
            throttle: Throttle::default(),
        };
        if office.archive.accounts()?.is_empty() {
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
            let token = keepwire_protocol::b64::encode(&bytes);
            let path = at.dir.join(SETUP_TOKEN);
            // Replaced whole: a command reading it meanwhile gets the old
            // token or the new, never no file (seen: a test's first admin
            // refused in that instant).
            keepwire_protocol::files::replace_private(&path, token.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::warn!(
                token_file = %path.display(),
                "this archive has no accounts: create the first admin with \
                 `keepwire records account add NAME --role admin` on this machine (it reads the setup token)"
            );
            office.setup = Some(token);
        }
        Ok(office)
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Who `credential` is, allowed `request`: `None` for the setup token
    /// creating the first admin.
    fn actor(
        &mut self,
        credential: Credential,
        request: &Request,
    ) -> Result<Option<Account>, Refusal> {
        match credential {
            Credential::Setup(token) => {
                use subtle::ConstantTimeEq;
                let first_admin =
                    matches!(request, Request::AddAccount { role, .. } if role == "admin");
                let valid = self
                    .setup
                    .as_deref()
                    .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
                if valid && first_admin {
                    Ok(None)
                } else if valid {
                    Err(Refusal::Forbidden(
                        "the setup token creates the first admin account, nothing else".into(),
                    ))
                } else {
                    Err(Refusal::Forbidden(
                        "this setup token is not (or no longer) valid: the archive has accounts; \
                         sign in as one (--as)"
                            .into(),
                    ))
                }
            }
            Credential::Password { name, password } => {
                if self.setup.is_some() {
                    return Err(Refusal::Forbidden(
                        "this archive has no accounts yet: create the first admin with \
                         `keepwire records account add NAME --role admin` on the records \
                         service's machine"
                            .into(),
                    ));
                }
                let now = Instant::now();
                if let Some(wait) = self.throttle.wait(&name, now) {
                    return Err(Refusal::Slowed(format!(
                        "too many wrong passwords for {name}: try again in {} s",
                        wait.as_secs().max(1)
                    )));
                }
                match self
                    .archive
                    .authenticate(&name, &password, request.action())
                {
                    Err(RecordsError::SignInRefused) => {
                        self.throttle.failed(&name, now);
                        tracing::warn!(account = %name, "a sign-in at the records office was refused");
                        Err(RecordsError::SignInRefused.into())
                    }
                    Err(e) => {
                        // The password was right; the role may not.
                        self.throttle.succeeded(&name);
                        Err(e.into())
                    }
                    Ok(account) => {
                        self.throttle.succeeded(&name);
                        Ok(Some(account))
                    }
                }
            }
        }
    }

    /// Carry out `request` for `credential`.
    fn handle(&mut self, credential: Credential, request: Request) -> Result<Answer, Refusal> {
        if let Request::Lifecycle { event } = &request {
            lifecycle::direct(event)?;
        }
        let actor = self.actor(credential, &request)?;
        let now = self.now_ms();
        let name = actor.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        match request {
            Request::Show { id } => {
                let r = self
                    .archive
                    .get(id, true)?
                    .ok_or_else(|| Refusal::NotFound(format!("no record {id}")))?;
                // Reading content is a privileged action: logged before shown.
                self.archive.log_action(
                    &name,
                    "view",
                    &format!("record {id} ({}#{})", r.meta.conv, r.meta.seq),
                    now,
                )?;
                let mut out =
                    serde_json::to_value(&r).map_err(|e| Refusal::Failed(e.to_string()))?;
                // With the commitment its leaf carries, so that an auditor
                // rebuilds the leaf from this alone (docs/verification.md,
                // "Leaf formats").
                out["content_commitment"] = leaf_commitment(&self.archive, r.leaf)?;
                Ok(Answer::Covered(out))
            }
            Request::FileKey { id, n } => {
                let keepwire_records::archive::FileOut {
                    conv,
                    seq,
                    reference,
                    scan,
                } = self.archive.file_reference(id, n)?.ok_or_else(|| {
                    Refusal::NotFound(format!(
                        "record {id} holds no file {n} (or its content was destroyed)"
                    ))
                })?;
                // The file's key is its content: releasing it is a view,
                // logged and covered before it is given.
                self.archive.log_action(
                    &name,
                    "view-file",
                    &format!("record {id} file {n} ({conv}#{seq}, {})", reference.name),
                    now,
                )?;
                let mut out =
                    serde_json::to_value(&reference).map_err(|e| Refusal::Failed(e.to_string()))?;
                out["scan"] = scan.into();
                Ok(Answer::Covered(out))
            }
            Request::FileBytes { id, n, offset } => {
                let bytes = self.archive.file_bytes(id, n, offset, FILE_PART)?;
                Ok(Answer::Now(json!({
                    "offset": offset,
                    "bytes": keepwire_protocol::b64::encode(&bytes),
                })))
            }
            Request::Checkpoint => Ok(Answer::Checkpoint),
            Request::Accounts => Ok(Answer::Now(
                serde_json::to_value(self.archive.accounts()?)
                    .map_err(|e| Refusal::Failed(e.to_string()))?,
            )),
            Request::AddAccount {
                name: new,
                role,
                password,
            } => {
                let role: Role = role
                    .parse()
                    .map_err(|e: RecordsError| Refusal::Invalid(e.to_string()))?;
                let account =
                    self.archive
                        .add_account(actor.as_ref(), &new, role, &password, now)?;
                if actor.is_none() {
                    self.setup = None;
                    let _ = std::fs::remove_file(self.at.dir.join(SETUP_TOKEN));
                    tracing::info!(admin = %account.name, "the archive's first admin account was made");
                }
                Ok(Answer::Covered(
                    serde_json::to_value(&account).map_err(|e| Refusal::Failed(e.to_string()))?,
                ))
            }
            Request::SetDisabled {
                name: target,
                disabled,
            } => {
                let by = actor.ok_or_else(|| Refusal::Forbidden("sign in (--as)".into()))?;
                self.archive
                    .set_account_disabled(&by, &target, disabled, now)?;
                Ok(Answer::Covered(
                    json!({"name": target, "disabled": disabled}),
                ))
            }
            Request::Escrow { threshold, shares } => self.escrow(&name, threshold, shares, now),
            Request::Lifecycle { event } => self.lifecycle_event(&name, event, now),
            Request::LifecycleState { on } => self.lifecycle_state(on, now),
            Request::Schedule { id } => self.schedule(id),
            Request::Standings { eligible } => self.standings(eligible, now),
            Request::Propose {
                records,
                forced,
                note,
            } => self.propose(&name, records, forced, &note, now),
            Request::Execute { batch } => self.execute(&name, batch, now),
            Request::Certificate { batch } => self.certificate(batch),
            Request::Integrity => {
                let (event, report) =
                    self.archive
                        .integrity_check(&name, &self.notary.verifier_key.clone(), now)?;
                Ok(Answer::Covered(serde_json::json!({
                    "event": event,
                    "report": serde_json::to_value(&report)
                        .map_err(|e| Refusal::Failed(e.to_string()))?,
                })))
            }
            Request::EventProof { event } => self.event_proof(event),
            Request::IncidentReport { id } => {
                let report = self.archive.incident_report(id, now)?;
                Ok(Answer::Now(serde_json::json!({
                    "markdown": report.to_markdown(),
                    "report": serde_json::to_value(&report)
                        .map_err(|e| Refusal::Failed(e.to_string()))?,
                })))
            }
        }
    }

    /// The archive key split into shares, with what the records service
    /// needs to run on after its provider is lost: its device's secret,
    /// and the checkpoint key where it may leave the provider.
    fn escrow(
        &mut self,
        who: &str,
        threshold: u8,
        shares: u8,
        now: u64,
    ) -> Result<Answer, Refusal> {
        let failed = |e: anyhow::Error| Refusal::Failed(format!("{e:#}"));
        let provider = self.at.provider().map_err(failed)?;
        let device = self
            .at
            .dir
            .join(keys::DEVICE_SEALED)
            .exists()
            .then(|| keys::device_secret(&self.at.dir, &*provider))
            .transpose()?;
        let checkpoint = provider.export_checkpoint_key()?;
        let in_provider = checkpoint.is_none();
        let texts = self
            .archive
            .escrow_key(threshold, shares, device, checkpoint, who, now)?;
        Ok(Answer::Covered(json!({
            "archive_key": self.archive.key_id().unwrap_or_default(),
            "threshold": threshold,
            "shares": texts,
            "checkpoint_key_stays_in_provider": in_provider,
        })))
    }

    /// Sign a checkpoint covering the whole log: its size and note.
    fn cover(&self) -> Result<(u64, String), Refusal> {
        self.archive
            .issue_checkpoint(&self.notary, self.now_ms())
            .map_err(|e| {
                tracing::error!(error = %e, "no checkpoint covers the privileged actions just logged");
                Refusal::Unavailable(format!(
                    "the action is logged, but no checkpoint could be signed to cover it ({e}); \
                     nothing is shown until one does"
                ))
            })
    }
}

/// The commitment a record's leaf carries (`content_commitment`), read
/// back from the leaf itself (`null` when it has none, or no leaf).
fn leaf_commitment(archive: &Archive, leaf: Option<u64>) -> Result<Value, Refusal> {
    let Some(n) = leaf else {
        return Ok(Value::Null);
    };
    let Some((_, _, data)) = archive.log_leaf(n)? else {
        return Ok(Value::Null);
    };
    let leaf: Value = serde_json::from_slice(&data)
        .map_err(|e| Refusal::Failed(format!("leaf {n} is not JSON: {e}")))?;
    Ok(leaf
        .get("content_commitment")
        .cloned()
        .unwrap_or(Value::Null))
}

/// One request in the office's queue, with where its answer goes.
pub struct Job {
    pub credential: Credential,
    pub request: Request,
    pub answer: tokio::sync::oneshot::Sender<Result<Value, Refusal>>,
}

/// The office's thread: take requests in turn, answer each once it is
/// covered. Ends when the queue's senders are gone. `signed` is told of
/// each checkpoint, so the records service publishes it at once.
pub fn run(
    mut office: Office,
    jobs: std::sync::mpsc::Receiver<Job>,
    signed: tokio::sync::watch::Sender<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    type Reply = tokio::sync::oneshot::Sender<Result<Value, Refusal>>;
    let mut batch = Batch::default();
    let mut waiting: Vec<(Reply, Option<Value>)> = Vec::new();
    loop {
        let job = match batch.idle(Instant::now()) {
            None => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
            Some(wait) => match jobs.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                // Gone: the answers still waiting are given before it ends.
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                    None
                }
            },
        };
        if let Some(Job {
            credential,
            request,
            answer,
        }) = job
        {
            match office.handle(credential, request) {
                Ok(Answer::Now(v)) => {
                    let _ = answer.send(Ok(v));
                }
                Ok(Answer::Covered(v)) => {
                    batch.wait();
                    waiting.push((answer, Some(v)));
                }
                Ok(Answer::Checkpoint) => {
                    batch.wait();
                    waiting.push((answer, None));
                }
                Err(e) => {
                    let _ = answer.send(Err(e));
                }
            }
        }
        let now = Instant::now();
        if batch.due(now) {
            let covered = office.cover();
            batch.signed(now);
            if covered.is_ok() {
                let _ = signed.send(());
            }
            for (answer, value) in waiting.drain(..) {
                let _ = answer.send(match (&covered, value) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(_), Some(v)) => Ok(v),
                    (Ok((size, note)), None) => Ok(json!({
                        "checkpoint": note,
                        "tree_size": size,
                        "verifier_key": office.notary.verifier_key,
                    })),
                });
            }
        }
    }
}

/// Where the office of the records service in `records_dir` listens, as
/// it wrote it when it started.
pub fn url_of(records_dir: &Path) -> Option<String> {
    std::fs::read_to_string(records_dir.join(URL_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The setup token of the archive in `records_dir`, while it has no
/// account.
pub fn setup_token(records_dir: &Path) -> Option<String> {
    std::fs::read_to_string(records_dir.join(SETUP_TOKEN))
        .ok()
        .map(|s| s.trim().to_string())
}
