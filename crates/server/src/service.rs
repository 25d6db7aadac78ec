//! The delivery service's core, a state machine without I/O: a request,
//! its session and the time go in ([`Core::handle`], then
//! [`Core::answer`]); the reply, the pushes it causes and the entries to
//! make durable come out as [`Effect`]s, in order ([`Core::take_effects`]).
//! It holds no socket, channel, thread or clock; the shell
//! ([`crate::shell`], [`crate::ws`], [`crate::log_writer`]) carries the
//! effects out, and its tests (`service/tests.rs`) drive it directly.
//!
//! Promise 1 lives in [`Core::append`], [`Core::archived`] and
//! [`crate::gate`]: a message is appended to its conversation's durable
//! log (one group commit, flushed) before the sender gets a receipt and
//! before the records member gets it, and reaches any other member only
//! once the records service has archived it — never if it was withheld;
//! log entries are deleted only by [`Core::collect_garbage`], never past
//! the records service's acknowledgement and never if withheld.
//! Fail-closed capture is [`Core::capture_open`].

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use keepwire_protocol::{
    ConversationInfo, ErrorCode, Policy, ProtocolError, Request, ServerBody, RECORDS_USER,
};

use crate::gate::Gate;
use crate::roster::{self, Followed, MemberDevice, Registry};
use crate::store::{DeviceRow, ServerStore};
use crate::ServerError;

mod access;
mod blobs;
mod check;
mod checkpoints;
mod conversations;
mod delivery;
mod effects;
mod gc;
mod keys;
mod release;
#[cfg(test)]
mod tests;
use access::blocked_message;
pub use blobs::blob_body;
pub use check::{Check, Checked};
use conversations::others_of;
pub use effects::{Answer, Effect, Job};
use release::hold_after_restart;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Entries not yet archived by the records service, across all
    /// conversations, beyond which new messages are refused.
    pub max_capture_backlog: u64,
    /// How long a captured entry stays on the relay for devices that have
    /// not fetched it.
    pub relay_ttl_ms: u64,
    /// Bytes of pushes a connection may have waiting before it is closed
    /// (a reader that fell behind catches up by sync).
    pub max_outbox_bytes: usize,
    /// Connections held at once; more are refused (HTTP 503) until some
    /// close. Sized for 50,000 devices, some with two connections.
    pub max_connections: usize,
    /// TLS handshakes in progress at once; more wait in the kernel's
    /// accept queue.
    pub max_tls_handshakes: usize,
    /// Time a connection has to authenticate (`auth` or `enroll`) before
    /// it is closed.
    pub auth_timeout_ms: u64,
    /// Time a frame (or, before the WebSocket starts, the HTTP request)
    /// that has started arriving has to finish ([`crate::deadline`]).
    pub frame_timeout_ms: u64,
    /// Connections one device may hold at once (otherwise one enrolled
    /// device could hold every connection slot).
    pub max_sessions_per_device: usize,
    /// Free bytes the store's disk keeps in reserve: below this, new
    /// messages are refused (`storage_full`) rather than risk a write
    /// failing half way, and accepted again once space returns.
    pub min_free_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_capture_backlog: 10_000,
            relay_ttl_ms: 30 * 24 * 3600 * 1000,
            max_outbox_bytes: 16 * 1024 * 1024,
            max_connections: 60_000,
            max_tls_handshakes: 1_024,
            auth_timeout_ms: 10_000,
            frame_timeout_ms: 30_000,
            max_sessions_per_device: 8,
            min_free_bytes: 256 << 20,
        }
    }
}

struct Conv {
    group: Followed,
    members: Vec<MemberDevice>,
    /// The members' devices but the records member's, shared by the
    /// entries held under this roster (see [`crate::gate::Held::members`]).
    others: std::sync::Arc<[String]>,
    last_seq: u64,
    /// Which entries are durable, archived, released (see [`crate::gate`]).
    /// The records member's pushes go out at the durable mark, everyone
    /// else's at the released one; `sync` replays only up to the same
    /// marks, so a device never gets an entry twice out of order, nor a
    /// delivery before the Welcome that lets it read it.
    gate: Gate,
    /// Set when the records service could not capture an entry.
    suspended: Option<String>,
    /// Handshakes (commits, proposals) applied since the server started:
    /// a check done without the core's lock holds only if this has not
    /// moved since ([`check`]).
    version: u64,
}

/// The core's figures for operations (`/metrics`, `/readyz`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Entries appended to the log since the server started.
    pub accepted: u64,
    /// Entries the records service reported archived since it started.
    pub captured: u64,
    /// Entries durable and not yet archived.
    pub backlog: u64,
    /// New messages are refused: the backlog is at its limit.
    pub fail_closed: bool,
    pub suspended: usize,
    pub conversations: usize,
    /// Authenticated connections of the records service.
    pub records_connected: usize,
    /// When the oldest entry still waiting for capture was appended.
    pub waiting_since_ms: Option<u64>,
    /// The size of the latest checkpoint the records service published.
    pub checkpoint_size: Option<u64>,
    /// Signatures on it besides the log's own: its witnesses'
    /// cosignatures, as the records service gathered and published them.
    pub checkpoint_cosignatures: usize,
    /// Free bytes on the store's disk (None: not measured here).
    pub free_space: Option<u64>,
    /// New messages are refused: the disk is nearly full.
    pub storage_full: bool,
}

/// One connection's state.
pub struct Session {
    pub id: u64,
    pub nonce: Vec<u8>,
    pub device: Option<DeviceRow>,
}

pub struct Core {
    store: Box<dyn ServerStore>,
    convs: HashMap<String, Conv>,
    /// The sessions pushes go to, per device (those that synced).
    live: HashMap<String, Vec<u64>>,
    /// Authenticated connections per device.
    sessions: HashMap<String, usize>,
    backlog: u64,
    /// Whether capture was closed at the last change of the backlog (for
    /// logging each transition once, [`Core::note_backlog`]).
    fail_closed: bool,
    /// Authenticated sessions of the records service's devices.
    records_connected: usize,
    /// Free bytes on the store's disk, as last measured by the shell.
    free_space: Option<u64>,
    /// Entries appended, and reported archived, since the start.
    accepted: u64,
    captured: u64,
    limits: Limits,
    key: SigningKey,
    /// The same key in aws-lc, which signs the same (deterministic
    /// Ed25519) signatures in under half the time: one per message.
    signer: aws_lc_rs::signature::Ed25519KeyPair,
    /// The time of the request being handled, as the caller gave it: the
    /// core reads no clock.
    now_ms: u64,
    /// What the shell is to do, in order ([`Core::take_effects`]).
    effects: Vec<Effect>,
    /// The session whose request is being handled (see [`Core::handle`]):
    /// its own commits are pushed to the device's other sessions only.
    handling_session: u64,
    /// An append of the request being handled, held until its answer is
    /// attached ([`Core::answer`]) and then given to the log writer, which
    /// sends that answer once the entry is durable.
    pending: Option<Job>,
    /// The request being handled was checked without the lock
    /// ([`Core::handle_checked`]).
    checked: Option<Checked>,
    /// Blobs carried by entries appended and not yet durable: their rows
    /// say so only once the entry's write lands.
    blobs_in_flight: std::collections::HashSet<keepwire_protocol::attachment::BlobId>,
}

pub struct StoreRegistry<'a>(pub &'a dyn ServerStore);

impl Registry for StoreRegistry<'_> {
    fn device(&self, id: &str) -> Option<DeviceRow> {
        self.0.device(id).ok().flatten()
    }

    fn handed_out(&self, device_id: &str, key_package_ref: &[u8]) -> bool {
        self.0
            .handed_out(device_id, key_package_ref)
            .unwrap_or(false)
    }
}

fn refuse(code: ErrorCode, msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, msg)
}

fn internal(e: ServerError) -> ProtocolError {
    tracing::error!(error = %e, "internal error");
    refuse(
        ErrorCode::Internal,
        "internal server error; the request had no effect",
    )
}

impl Core {
    pub fn open(
        store: Box<dyn ServerStore>,
        key: SigningKey,
        limits: Limits,
        now_ms: u64,
    ) -> Result<Self, ServerError> {
        store.record_receipt_key(&key.verifying_key().to_bytes(), now_ms)?;
        let signer = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&key.to_bytes())
            .map_err(|e| ServerError::Invalid(format!("receipt key: {e}")))?;
        // Receipt times never go backwards, not even across a restart
        // after the clock was set back.
        let now_ms = now_ms.max(store.latest_entry_time()?.unwrap_or(0));
        let mut convs = HashMap::new();
        let mut backlog = 0;
        let mut withheld: HashMap<String, Vec<u64>> = HashMap::new();
        for w in store.withheld(None)? {
            withheld.entry(w.conv).or_default().push(w.seq);
        }
        for row in store.conversations()? {
            let group = roster::load(&row.snapshot)
                .map_err(|e| ServerError::Invalid(format!("conversation {}: {e}", row.conv)))?;
            backlog += row.last_seq.saturating_sub(row.records_acked);
            let members = roster::members(&group);
            let mut gate = Gate::new(
                row.last_seq,
                row.records_acked,
                withheld.remove(&row.conv).unwrap_or_default(),
            );
            if row.records_acked < row.last_seq {
                hold_after_restart(&*store, &row.conv, row.records_acked, &members, &mut gate)?;
            }
            convs.insert(
                row.conv.clone(),
                Conv {
                    others: others_of(&members),
                    members,
                    group,
                    last_seq: row.last_seq,
                    gate,
                    suspended: row.suspended,
                    version: 0,
                },
            );
        }
        Ok(Self {
            store,
            convs,
            live: HashMap::new(),
            sessions: HashMap::new(),
            fail_closed: backlog >= limits.max_capture_backlog,
            records_connected: 0,
            free_space: None,
            accepted: 0,
            captured: 0,
            backlog,
            limits,
            key,
            signer,
            now_ms,
            effects: Vec::new(),
            pending: None,
            checked: None,
            blobs_in_flight: Default::default(),
            handling_session: 0,
        })
    }

    pub fn store(&self) -> &dyn ServerStore {
        &*self.store
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Every receipt-signing key, current and retired, as JSON.
    pub fn receipt_keys(&self) -> serde_json::Value {
        let keys = self.store.receipt_keys().unwrap_or_default();
        serde_json::Value::Array(
            keys.into_iter()
                .map(|k| {
                    serde_json::json!({
                        "key": keepwire_protocol::b64::encode(&k.key),
                        "from_ms": k.from_ms,
                        "until_ms": k.until_ms,
                    })
                })
                .collect(),
        )
    }

    /// The records service's latest published checkpoint.
    pub fn checkpoint(&self) -> Option<String> {
        self.store
            .latest_checkpoint()
            .ok()
            .flatten()
            .map(|c| c.checkpoint)
    }

    pub fn backlog(&self) -> u64 {
        self.backlog
    }

    /// What operations watch ([`crate::ops`]), as of now.
    pub fn stats(&self) -> Stats {
        let checkpoint = self.checkpoint();
        Stats {
            accepted: self.accepted,
            captured: self.captured,
            backlog: self.backlog,
            fail_closed: self.fail_closed,
            suspended: self
                .convs
                .values()
                .filter(|c| c.suspended.is_some())
                .count(),
            conversations: self.convs.len(),
            records_connected: self.records_connected,
            waiting_since_ms: self
                .convs
                .values()
                .filter_map(|c| c.gate.waiting_since())
                .min(),
            checkpoint_size: checkpoint
                .as_deref()
                .and_then(|note| note.lines().nth(1).and_then(|l| l.parse().ok())),
            // The log's signature comes first; the rest are cosignatures.
            checkpoint_cosignatures: checkpoint.as_deref().map_or(0, |note| {
                note.lines()
                    .filter(|l| l.starts_with("\u{2014} "))
                    .count()
                    .saturating_sub(1)
            }),
            free_space: self.free_space,
            storage_full: self
                .free_space
                .is_some_and(|f| f < self.limits.min_free_bytes),
        }
    }

    /// Live connections of the records service's devices.
    pub fn records_sessions(&self) -> usize {
        let records = self.store.devices(Some(RECORDS_USER)).unwrap_or_default();
        records
            .iter()
            .map(|d| self.live.get(&d.device_id).map_or(0, |l| l.len()))
            .sum()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn policy(&self) -> Result<Policy, ProtocolError> {
        self.store.policy().map_err(internal)
    }

    pub fn disconnect(&mut self, session: &Session) {
        if let Some(d) = &session.device {
            if d.user == RECORDS_USER {
                self.records_connected = self.records_connected.saturating_sub(1);
                if self.records_connected == 0 {
                    tracing::warn!(
                        backlog = self.backlog,
                        "records service disconnected: nothing is delivered until it is back"
                    );
                }
            }
            if let Some(list) = self.live.get_mut(&d.device_id) {
                list.retain(|id| *id != session.id);
            }
            if let Some(n) = self.sessions.get_mut(&d.device_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.sessions.remove(&d.device_id);
                }
            }
        }
    }

    /// Handle one request of `session`, received at `now_ms`.
    pub fn handle(
        &mut self,
        session: &mut Session,
        req: Request,
        now_ms: u64,
    ) -> Result<ServerBody, ProtocolError> {
        // Receipt times never go backwards when the clock is corrected.
        self.now_ms = self.now_ms.max(now_ms);
        // A caller that never attached an answer: the entry still goes,
        // in order, unanswered.
        self.release_pending();
        self.handling_session = session.id;
        let device = match (&req, &session.device) {
            (
                Request::Enroll {
                    code,
                    signature_key,
                    signature,
                },
                None,
            ) => return self.enroll(session, code, signature_key, signature),
            (
                Request::Auth {
                    device_id,
                    signature,
                },
                None,
            ) => return self.auth(session, device_id, signature),
            (Request::Enroll { .. } | Request::Auth { .. }, Some(_)) => {
                return Err(refuse(
                    ErrorCode::BadFrame,
                    "this connection is already authenticated",
                ))
            }
            (_, None) => {
                return Err(refuse(
                    ErrorCode::Unauthorized,
                    "authenticate first (auth or enroll)",
                ))
            }
            (_, Some(d)) => d.clone(),
        };
        // Re-read the device so a revocation by the admin takes effect on
        // open connections at their next request.
        let fresh = self.store.device(&device.device_id).map_err(internal)?;
        if fresh.as_ref().map(|d| d.revoked).unwrap_or(true) {
            return Err(refuse(
                ErrorCode::DeviceRevoked,
                "this device has been revoked",
            ));
        }
        if let Some(why) = fresh.and_then(|d| d.blocked) {
            return Err(refuse(ErrorCode::DeviceBlocked, blocked_message(&why)));
        }
        match req {
            Request::UploadKeyPackages {
                key_packages,
                last_resort,
            } => {
                if key_packages.len() > 1000 {
                    return Err(refuse(
                        ErrorCode::TooLarge,
                        "at most 1000 key packages per upload",
                    ));
                }
                for kp in key_packages.iter().chain(last_resort.iter()) {
                    self.check_key_package(kp, &device)?;
                }
                self.store
                    .add_key_packages(&device.device_id, &key_packages, last_resort.as_deref())
                    .map_err(internal)?;
                Ok(ServerBody::Ok)
            }
            Request::AcknowledgeNotice => {
                self.store
                    .acknowledge_notice(&device.user, self.now_ms)
                    .map_err(internal)?;
                Ok(ServerBody::Ok)
            }
            Request::ClaimKeyPackages {
                users,
                include_records,
            } => self.claim(&device, users, include_records),
            Request::CreateConversation {
                conv,
                group_info,
                commit,
                welcome,
                next_group_info,
            } => self.create(&device, conv, group_info, commit, welcome, next_group_info),
            Request::Submit {
                conv,
                message,
                welcome,
                next_group_info,
            } => {
                let receipt = self.submit(&device, &conv, message, welcome, next_group_info)?;
                Ok(ServerBody::Receipt(receipt))
            }
            Request::Joinable => self.joinable(&device),
            Request::PublishCheckpoint {
                checkpoint,
                verifier_key,
                link,
            } => self.publish_checkpoint(&device, checkpoint, verifier_key, link),
            Request::Checkpoints { since_size } => self.checkpoints(since_size),
            Request::Ack { conv, seq } => self.ack(&device, &conv, seq),
            Request::Archived {
                conv,
                from,
                to,
                withheld,
            } => self.archived(&device, &conv, from, to, withheld),
            Request::DecisionLogged { decision: id } => {
                if device.user != RECORDS_USER {
                    return Err(refuse(
                        ErrorCode::Unauthorized,
                        "only the records service logs administrators' decisions",
                    ));
                }
                let done = self
                    .store
                    .meta("admin_actions.logged")
                    .map_err(internal)?
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if id > done {
                    self.store
                        .set_meta("admin_actions.logged", &id.to_string())
                        .map_err(internal)?;
                }
                Ok(ServerBody::Ok)
            }
            Request::Sync => self.sync(session, &device),
            Request::BlobCreate {
                conv,
                size,
                cipher_sha256,
            } => self.blob_create(&device, &conv, size, cipher_sha256),
            Request::BlobStatus { blob } => self.blob_status(&device, &blob),
            // Its answer is a binary frame the shell reads and sends
            // ([`Core::blob_fetch_allowed`]).
            Request::BlobFetch { .. } => Err(refuse(
                ErrorCode::BadFrame,
                "blob_fetch is answered by the connection, not the core",
            )),
            Request::Conversations => {
                // Each user's display name read once, however many
                // conversations (and devices) they are in.
                let mut display: HashMap<String, Option<String>> = HashMap::new();
                let mut name_of = |user: &str| {
                    display
                        .entry(user.to_string())
                        .or_insert_with(|| self.store.user(user).ok().flatten().map(|u| u.display))
                        .clone()
                };
                Ok(ServerBody::Conversations {
                    conversations: self
                        .convs
                        .iter()
                        .filter(|(_, c)| c.members.iter().any(|m| m.device_id == device.device_id))
                        .map(|(id, c)| ConversationInfo {
                            conv: id.clone(),
                            members: c
                                .members
                                .iter()
                                .map(|m| keepwire_protocol::device_identity(&m.user, &m.device_id))
                                .collect(),
                            epoch: c.group.group_context().epoch(),
                            last_seq: c.last_seq,
                            names: c
                                .members
                                .iter()
                                .filter_map(|m| Some((m.user.clone(), name_of(&m.user)?)))
                                .collect(),
                        })
                        .collect(),
                })
            }
            Request::Enroll { .. } | Request::Auth { .. } => unreachable!("handled above"),
        }
    }
}
