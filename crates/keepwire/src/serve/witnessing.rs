//! The records service's witnesses: each checkpoint it signs is sent to
//! every witness it is given (`--witness KEY@URL`), and the cosignatures
//! that come back are kept on the checkpoint in the archive, then
//! published with it to the server, where devices fetch them.
//!
//! This runs beside capture, never in its way: a witness that is down or
//! slow delays only its own cosignature (each request is bounded by
//! [`TIMEOUT`]), and records officers and members never wait for one. What
//! the records service sees of each witness is a state, logged once when
//! it changes: cosigning, unreachable, refusing this log (a configuration
//! error), or disagreeing with it — the witness cosigned a history this
//! archive is not an extension of, the loudest thing it can say.
//!
//! The protocol's decisions are the records crate's
//! ([`keepwire_records::witness::quorum`],
//! [`keepwire_records::Archive::witness_request`]); this is the I/O.

use std::time::Duration;

use anyhow::Result;
use keepwire_records::witness::quorum::{read_reply, Peer, Reply};
use keepwire_records::Archive;
use tokio::sync::watch;

use super::ArchiveAt;

/// How long one request to a witness may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a witness (a few cosignature lines).
const MAX_ANSWER: usize = 16 * 1024;
/// Attempts per checkpoint and witness: a 409 naming the witness's size
/// is answered with a proof from it.
const ATTEMPTS: usize = 3;

/// How the records service runs beside capture: a checkpoint every
/// `every` when the log grew, sent to `witnesses`; where its records
/// office listens for officers' actions, each covered by a checkpoint
/// ([`super::office`]); and the malware scanner each captured file goes
/// through (`super::records` `files`).
#[derive(Clone, Debug)]
pub struct Publishing {
    pub every: Duration,
    pub witnesses: Vec<Peer>,
    pub office: Option<super::office::Listen>,
    pub scan: Option<String>,
}

/// Where a witness stands, as the records service last saw it.
#[derive(Clone, Debug, PartialEq)]
enum Health {
    /// Not asked yet.
    Unknown,
    /// It cosigned the latest checkpoint sent (of this many leaves).
    Cosigning(u64),
    Unreachable(String),
    /// It does not follow this log or trust its key.
    Refusing(String),
    /// It cosigned a history this log does not extend.
    Disagreeing(String),
}

impl Health {
    fn same_state(&self, other: &Health) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// One witness: where it is, the size it last cosigned as far as the
/// records service knows (learned from its answers), its state.
struct Follower {
    peer: Peer,
    at: Option<u64>,
    health: Health,
}

/// The two ends the records service's loop holds.
pub struct Witnessing {
    /// Signalled when a new checkpoint is signed.
    pub signed: watch::Sender<()>,
    /// Changes when a cosignature was kept: time to publish it.
    pub cosigned: watch::Receiver<()>,
}

/// Start sending checkpoints to `publishing.witnesses` (none: nothing
/// runs, and `None`). It runs until the returned [`Witnessing`] is
/// dropped.
pub fn spawn(at: &ArchiveAt, publishing: &Publishing) -> Result<Option<Witnessing>> {
    if publishing.witnesses.is_empty() {
        return Ok(None);
    }
    // Locked for each short read or write, never across a request: the
    // store is not shared between threads otherwise.
    let archive = std::sync::Mutex::new(at.open(false)?);
    let (signed, mut wake) = watch::channel(());
    let (cosigned_tx, cosigned) = watch::channel(());
    let mut followers: Vec<Follower> = publishing
        .witnesses
        .iter()
        .map(|peer| Follower {
            peer: peer.clone(),
            at: None,
            health: Health::Unknown,
        })
        .collect();
    // Witnesses that failed are asked again at this pace even when no new
    // checkpoint comes.
    let retry = publishing.every;
    tokio::spawn(async move {
        loop {
            match round(&archive, &mut followers).await {
                Ok(true) => {
                    let _ = cosigned_tx.send(());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the checkpoint to send to the witnesses")
                }
            }
            let pending = followers
                .iter()
                .any(|f| !matches!(f.health, Health::Cosigning(_)));
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(retry), if pending => {}
            }
        }
    });
    tracing::info!(
        witnesses = publishing.witnesses.len(),
        "checkpoints go to witnesses: {}",
        publishing
            .witnesses
            .iter()
            .map(|p| format!("{} at {}", p.name(), p.url))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(Witnessing { signed, cosigned }))
}

type Shared = std::sync::Mutex<Archive>;

fn with<T>(archive: &Shared, f: impl FnOnce(&Archive) -> T) -> T {
    f(&archive.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Send the latest checkpoint to every witness that has not cosigned it.
/// Whether a cosignature was kept.
async fn round(archive: &Shared, followers: &mut [Follower]) -> Result<bool> {
    let mut kept = false;
    for f in followers.iter_mut() {
        // Re-read: another witness's cosignature changed the note.
        let Some((size, note)) = with(archive, |a| a.latest_checkpoint())? else {
            return Ok(false);
        };
        if f.peer.has_cosigned(&note) {
            f.at = Some(size);
            f.health = Health::Cosigning(size);
            continue;
        }
        let health = submit(archive, f, size, &note).await;
        kept |= matches!(health, Health::Cosigning(_));
        report(f, size, health);
    }
    Ok(kept)
}

/// Ask one witness to cosign the checkpoint `note` of `size` leaves.
async fn submit(archive: &Shared, f: &mut Follower, size: u64, note: &str) -> Health {
    let url = format!("{}/add-checkpoint", f.peer.url);
    for _ in 0..ATTEMPTS {
        let old = f.at.unwrap_or(0);
        let body = match with(archive, |a| a.witness_request(old, size, note)) {
            Ok(b) => b,
            Err(e) => return Health::Disagreeing(e.to_string()),
        };
        let (status, answer) = match crate::net::http::post(&url, body, MAX_ANSWER, TIMEOUT).await {
            Ok(r) => r,
            Err(e) => return Health::Unreachable(format!("{e:#}")),
        };
        match read_reply(status, &answer) {
            Reply::Cosigned(line) => {
                return match with(archive, |a| {
                    a.add_cosignature(size, &line, &f.peer.verifier)
                }) {
                    Ok(_) => {
                        f.at = Some(size);
                        Health::Cosigning(size)
                    }
                    Err(e) => Health::Refusing(e.to_string()),
                }
            }
            Reply::Latest(n) => f.at = Some(n),
            Reply::Disagrees(why) => return Health::Disagreeing(why),
            Reply::Refused(why) => return Health::Refusing(why),
            Reply::Failed(why) => return Health::Unreachable(why),
        }
    }
    Health::Unreachable(format!(
        "it kept naming another size after {ATTEMPTS} attempts"
    ))
}

/// Take a witness's new state, logging it once when it changes.
fn report(f: &mut Follower, size: u64, health: Health) {
    let witness = f.peer.name().to_string();
    if !health.same_state(&f.health) {
        match &health {
            Health::Cosigning(_) => {
                tracing::info!(%witness, size, "witness cosigning this archive's checkpoints")
            }
            Health::Unreachable(why) => tracing::warn!(
                %witness, size, error = %why,
                "witness unreachable: its cosignature waits (nothing else does); asked again each checkpoint"
            ),
            Health::Refusing(why) => tracing::error!(
                %witness, size, error = %why,
                "witness refuses this log: check its --log and this service's --witness"
            ),
            Health::Disagreeing(why) => tracing::error!(
                %witness, size, error = %why,
                "WITNESS DISAGREEMENT: the witness cosigned a history this archive does not extend"
            ),
            Health::Unknown => {}
        }
    } else if let Health::Cosigning(_) = health {
        tracing::debug!(%witness, size, "witness cosigned");
    }
    f.health = health;
}
