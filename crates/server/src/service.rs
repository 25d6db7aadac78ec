//! The delivery service's core: one request in, one response out, plus the
//! pushes it causes. The WebSocket shell ([`crate::ws`]) only moves frames.
//!
//! Promise 1 lives in [`Core::append`], [`Core::archived`] and
//! [`crate::gate`]: a message is appended to its conversation's durable
//! log (fsync'd SQLite transaction) before the sender gets a receipt and
//! before the records member gets it, and reaches any other member only
//! once the records service has archived it — never if it was withheld;
//! log entries are deleted only by [`Core::collect_garbage`], never past
//! the records service's acknowledgement and never if withheld.
//! Fail-closed capture is [`Core::capture_open`].

use std::collections::HashMap;

use crate::outbox::Outbox;
use ed25519_dalek::SigningKey;
use keepwire_protocol::clock::Clock;
use keepwire_protocol::{
    receipt_signed_bytes, ClaimedKeyPackage, ConversationInfo, Delivery, ErrorCode,
    JoinableConversation, Policy, ProtocolError, Receipt, Request, ServerBody, ServerFrame,
    AUTH_CONTEXT, RECORDS_USER,
};
use mls_rs::CipherSuiteProvider;
use mls_rs::CryptoProvider;
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use sha2::{Digest, Sha256};

use crate::gate::{Gate, Held};
use crate::roster::{self, Followed, MemberDevice, Registry};
use crate::store::{Append, DeviceRow, LogEntry, RosterUpdate, Store};
use crate::ServerError;

mod check;
mod release;
use check::{vet_create, vet_submit, Vetted};
pub use check::{Check, Checked};
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
        }
    }
}

struct Conv {
    group: Followed,
    members: Vec<MemberDevice>,
    /// The members' devices but the records member's, shared by the
    /// entries held under this roster (see [`Held::members`]).
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

/// One connection's state.
pub struct Session {
    pub id: u64,
    pub nonce: Vec<u8>,
    pub device: Option<DeviceRow>,
    pub out: Outbox,
}

pub struct Core {
    store: Store,
    convs: HashMap<String, Conv>,
    live: HashMap<String, Vec<(u64, Outbox)>>,
    /// Authenticated connections per device.
    sessions: HashMap<String, usize>,
    backlog: u64,
    limits: Limits,
    key: SigningKey,
    /// The same key in aws-lc, which signs the same (deterministic
    /// Ed25519) signatures in under half the time: one per message.
    signer: aws_lc_rs::signature::Ed25519KeyPair,
    clock: Clock,
    writer: Option<std::sync::mpsc::Sender<Job>>,
    /// Relay garbage handed to the log writer, which deletes it a little
    /// at a time (see [`run_log_writer`]).
    garbage: Option<Garbage>,
    /// The session whose request is being handled (see [`Core::handle`]):
    /// its own commits are pushed to the device's other sessions only.
    handling_session: u64,
    /// An append of the request being handled, held until its answer is
    /// attached ([`Core::answer_when_durable`]) and then given to the log
    /// writer, which sends that answer once the entry is durable.
    pending: Option<Job>,
    /// The request being handled was checked without the lock
    /// ([`Core::handle_checked`]).
    checked: Option<Checked>,
}

pub struct StoreRegistry<'a>(pub &'a Store);

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
        store: Store,
        key: SigningKey,
        limits: Limits,
        clock: Clock,
    ) -> Result<Self, ServerError> {
        store.record_receipt_key(&key.verifying_key().to_bytes(), clock.now_ms())?;
        let signer = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&key.to_bytes())
            .map_err(|e| ServerError::Invalid(format!("receipt key: {e}")))?;
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
                hold_after_restart(&store, &row.conv, row.records_acked, &members, &mut gate)?;
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
            backlog,
            limits,
            key,
            signer,
            clock,
            writer: None,
            garbage: None,
            pending: None,
            checked: None,
            handling_session: 0,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
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

    fn policy(&self) -> Policy {
        let max_timer_secs = self
            .store
            .meta("policy.max_timer_secs")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(7 * 24 * 3600);
        let guests_allowed = self
            .store
            .meta("policy.guests_allowed")
            .ok()
            .flatten()
            .map(|v| v == "true")
            .unwrap_or(true);
        Policy {
            max_timer_secs,
            guests_allowed,
        }
    }

    pub fn disconnect(&mut self, session: &Session) {
        if let Some(d) = &session.device {
            if let Some(list) = self.live.get_mut(&d.device_id) {
                list.retain(|(id, _)| *id != session.id);
            }
            if let Some(n) = self.sessions.get_mut(&d.device_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.sessions.remove(&d.device_id);
                }
            }
        }
    }

    /// Handle one request of `session`.
    pub fn handle(
        &mut self,
        session: &mut Session,
        req: Request,
    ) -> Result<ServerBody, ProtocolError> {
        // A caller that never attached an answer: the entry still goes,
        // in order, unanswered.
        self.release_pending(None);
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
                    .acknowledge_notice(&device.user, self.clock.now_ms())
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
            Request::Conversations => Ok(ServerBody::Conversations {
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
                    })
                    .collect(),
            }),
            Request::Enroll { .. } | Request::Auth { .. } => unreachable!("handled above"),
        }
    }

    fn verify_challenge(
        &self,
        session: &Session,
        key: &[u8],
        signature: &[u8],
    ) -> Result<(), ProtocolError> {
        let suite = AwsLcCryptoProvider::new()
            .cipher_suite_provider(mls_rs::CipherSuite::P256_AES128)
            .ok_or_else(|| refuse(ErrorCode::Internal, "cipher suite unavailable"))?;
        let data = [AUTH_CONTEXT, &session.nonce].concat();
        suite
            .verify(&key.to_vec().into(), signature, &data)
            .map_err(|_| {
                refuse(
                    ErrorCode::Unauthorized,
                    "signature over this connection's challenge does not verify",
                )
            })
    }

    fn enroll(
        &mut self,
        session: &mut Session,
        code: &str,
        key: &[u8],
        signature: &[u8],
    ) -> Result<ServerBody, ProtocolError> {
        self.verify_challenge(session, key, signature)?;
        let row = self
            .store
            .redeem_code(code, key, self.clock.now_ms())
            .map_err(|e| match e {
                ServerError::Invalid(m) => refuse(ErrorCode::InvalidEnrollmentCode, m),
                e => internal(e),
            })?;
        tracing::info!(user = %row.user, device = %row.device_id, "device enrolled");
        self.authenticated(session, row)
    }

    fn auth(
        &mut self,
        session: &mut Session,
        device_id: &str,
        signature: &[u8],
    ) -> Result<ServerBody, ProtocolError> {
        let row = self
            .store
            .device(device_id)
            .map_err(internal)?
            .ok_or_else(|| {
                refuse(
                    ErrorCode::Unauthorized,
                    format!("device {device_id} is not enrolled"),
                )
            })?;
        if row.revoked {
            return Err(refuse(
                ErrorCode::DeviceRevoked,
                format!("device {device_id} has been revoked"),
            ));
        }
        self.verify_challenge(session, &row.signature_key, signature)?;
        if let Some(why) = &row.blocked {
            return Err(refuse(ErrorCode::DeviceBlocked, blocked_message(why)));
        }
        self.authenticated(session, row)
    }

    fn authenticated(
        &mut self,
        session: &mut Session,
        row: DeviceRow,
    ) -> Result<ServerBody, ProtocolError> {
        let held = self.sessions.get(&row.device_id).copied().unwrap_or(0);
        if held >= self.limits.max_sessions_per_device {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!(
                    "device {} already holds {held} connections (the limit); close one first",
                    row.device_id
                ),
            ));
        }
        let notice = self
            .store
            .user(&row.user)
            .map_err(internal)?
            .and_then(|u| u.notice_acknowledged_at_ms)
            .is_some();
        *self.sessions.entry(row.device_id.clone()).or_default() += 1;
        let body = ServerBody::Authenticated {
            user: row.user.clone(),
            device_id: row.device_id.clone(),
            notice_acknowledged: notice || row.user == RECORDS_USER,
            policy: self.policy(),
        };
        session.device = Some(row);
        Ok(body)
    }

    fn check_key_package(&self, kp: &[u8], device: &DeviceRow) -> Result<(), ProtocolError> {
        let msg = mls_rs::MlsMessage::from_bytes(kp).map_err(|e| {
            refuse(
                ErrorCode::InvalidMls,
                format!("key package does not parse: {e:?}"),
            )
        })?;
        let validated = roster::observer()
            .validate_key_package(msg, None)
            .map_err(|e| {
                refuse(
                    ErrorCode::InvalidMls,
                    format!("key package does not verify: {e:?}"),
                )
            })?;
        let kp = validated;
        let id = kp
            .signing_identity()
            .credential
            .as_basic()
            .map(|b| b.identifier.clone())
            .unwrap_or_default();
        let expected = keepwire_protocol::device_identity(&device.user, &device.device_id);
        if id != expected.as_bytes()
            || kp.signing_identity().signature_key.as_bytes() != device.signature_key
        {
            return Err(refuse(
                ErrorCode::Unauthorized,
                "key package is not for this device's identity and key",
            ));
        }
        Ok(())
    }

    fn claim(
        &mut self,
        device: &DeviceRow,
        users: Vec<String>,
        include_records: bool,
    ) -> Result<ServerBody, ProtocolError> {
        let mut packages = Vec::new();
        // Distinct users, no more than a conversation may hold: a claim
        // for 200,000 names once answered with a 126 MB frame and held the
        // core's lock for seconds.
        let mut seen = std::collections::HashSet::new();
        let mut wanted: Vec<String> = users
            .into_iter()
            .filter(|u| seen.insert(u.clone()))
            .collect();
        if include_records && seen.insert(RECORDS_USER.to_string()) {
            wanted.push(RECORDS_USER.to_string());
        }
        if wanted.len() > roster::MAX_GROUP_SIZE {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!(
                    "claim key packages for at most {} distinct users at once",
                    roster::MAX_GROUP_SIZE
                ),
            ));
        }
        for user in &wanted {
            if self.store.user(user).map_err(internal)?.is_none() {
                return Err(refuse(
                    ErrorCode::NoKeyPackage,
                    format!("no user named {user}"),
                ));
            }
            let devices: Vec<DeviceRow> = self
                .store
                .devices(Some(user))
                .map_err(internal)?
                .into_iter()
                .filter(|d| !d.revoked && d.device_id != device.device_id)
                .collect();
            let mut found = 0;
            for d in devices {
                if let Some(kp) = self
                    .store
                    .claim_key_package(&d.device_id)
                    .map_err(internal)?
                {
                    found += 1;
                    self.hand_out(&d.device_id, &kp)?;
                    packages.push(ClaimedKeyPackage {
                        user: user.clone(),
                        device_id: d.device_id,
                        key_package: kp,
                    });
                    if user == RECORDS_USER {
                        // One records device per conversation is enough.
                        break;
                    }
                }
            }
            if found == 0 && user != &device.user {
                return Err(refuse(
                    ErrorCode::NoKeyPackage,
                    format!("{user} has no device with a key package"),
                ));
            }
        }
        Ok(ServerBody::KeyPackages { packages })
    }

    /// Remember a key package handed out to be added (only those may be).
    fn hand_out(&self, device: &str, kp: &[u8]) -> Result<(), ProtocolError> {
        let suite = AwsLcCryptoProvider::new()
            .cipher_suite_provider(mls_rs::CipherSuite::P256_AES128)
            .ok_or_else(|| refuse(ErrorCode::Internal, "cipher suite unavailable"))?;
        let r = mls_rs::MlsMessage::from_bytes(kp)
            .ok()
            .and_then(|m| m.key_package_reference(&suite).ok().flatten())
            .ok_or_else(|| {
                internal(ServerError::Invalid(format!(
                    "a stored key package of device {device} does not parse"
                )))
            })?;
        self.store
            .hand_out(device, &r, self.clock.now_ms())
            .map_err(internal)
    }

    /// Whether the records service is close enough behind to accept more.
    fn capture_open(&self) -> Result<(), ProtocolError> {
        if self.backlog >= self.limits.max_capture_backlog {
            return Err(refuse(
                ErrorCode::RecordsUnavailable,
                format!(
                    "records capture unavailable: the records service is {} messages behind (limit {}); \
                     sending resumes automatically once capture catches up",
                    self.backlog, self.limits.max_capture_backlog
                ),
            ));
        }
        Ok(())
    }

    fn check_sender(&self, device: &DeviceRow) -> Result<(), ProtocolError> {
        if device.user == RECORDS_USER {
            return Ok(());
        }
        let acked = self
            .store
            .user(&device.user)
            .map_err(internal)?
            .and_then(|u| u.notice_acknowledged_at_ms)
            .is_some();
        if !acked {
            return Err(refuse(
                ErrorCode::NoticeNotAcknowledged,
                "acknowledge the records notice before sending (messages here are kept as federal records)",
            ));
        }
        Ok(())
    }

    fn check_guests(&self, added: &[MemberDevice]) -> Result<(), ProtocolError> {
        if self.policy().guests_allowed {
            return Ok(());
        }
        for m in added {
            if self
                .store
                .user(&m.user)
                .map_err(internal)?
                .map(|u| u.category == "guest")
                .unwrap_or(false)
            {
                return Err(refuse(
                    ErrorCode::Unauthorized,
                    format!("policy does not allow guests; {} is a guest", m.user),
                ));
            }
        }
        Ok(())
    }

    fn create(
        &mut self,
        device: &DeviceRow,
        conv: String,
        group_info: Vec<u8>,
        commit: Vec<u8>,
        welcome: Vec<u8>,
        next_group_info: Vec<u8>,
    ) -> Result<ServerBody, ProtocolError> {
        self.check_sender(device)?;
        self.capture_open()?;
        if self.convs.contains_key(&conv) {
            return Err(refuse(
                ErrorCode::ConversationExists,
                format!("conversation {conv} already exists"),
            ));
        }
        let vetted = match self.take_vetted_create(&conv) {
            Some(v) => v?,
            None => vet_create(
                device,
                &StoreRegistry(&self.store),
                &conv,
                &group_info,
                &commit,
                &welcome,
                &next_group_info,
            )?,
        };
        self.check_guests(&vetted.added)?;
        self.convs.insert(
            conv.clone(),
            Conv {
                others: others_of(&vetted.creator),
                members: vetted.creator,
                group: *vetted.group,
                last_seq: 0,
                gate: Gate::default(),
                suspended: None,
                version: 0,
            },
        );
        let change = CommitChange {
            group: vetted.next,
            added: vetted.added,
            welcome: Some(welcome),
            group_info: Some(next_group_info),
        };
        let receipt = self.append(device, &conv, commit, Some(change), true);
        if receipt.is_err() {
            self.convs.remove(&conv);
        }
        Ok(ServerBody::Receipt(receipt?))
    }

    fn submit(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        message: Vec<u8>,
        welcome: Option<Vec<u8>>,
        next_group_info: Option<Vec<u8>>,
    ) -> Result<Receipt, ProtocolError> {
        self.capture_open()?;
        // The records member's own commits (evicting a revoked device,
        // carrying out a member's leaving) go on in a suspended
        // conversation: they are what an administrator may be waiting for.
        if device.user != RECORDS_USER {
            self.check_suspension(conv)?;
        }
        let vetted = match self.take_vetted_submit(conv) {
            Some(v) => v?,
            None => {
                let c = self.convs.get(conv).ok_or_else(|| {
                    refuse(
                        ErrorCode::UnknownConversation,
                        format!("no conversation {conv}"),
                    )
                })?;
                vet_submit(
                    &c.group,
                    device,
                    &StoreRegistry(&self.store),
                    &message,
                    welcome.as_deref(),
                    next_group_info.as_deref(),
                )?
            }
        };
        // Proposals (a member asking to leave) carry no content: someone
        // added to a conversation may leave it without having acknowledged
        // the records notice. Everything else needs the acknowledgement.
        if !matches!(vetted, Vetted::Proposal(_)) {
            self.check_sender(device)?;
        }
        match vetted {
            Vetted::Application => self.append(device, conv, message, None, false),
            Vetted::Proposal(group) => {
                let change = CommitChange {
                    group,
                    added: Vec::new(),
                    welcome: None,
                    group_info: None,
                };
                self.append(device, conv, message, Some(change), false)
            }
            Vetted::Commit {
                group,
                added,
                external,
            } => {
                self.check_guests(&added)?;
                // A member's commit moves its device past every entry
                // before it; those it has not been sent yet (still waiting
                // for capture) it would then never process. The records
                // member has them all; a device joining has none to see.
                if let Some(c) = self.convs.get(conv) {
                    if device.user != RECORDS_USER && !external && c.gate.released() < c.last_seq {
                        return Err(refuse(
                            ErrorCode::CapturePending,
                            format!(
                                "entries up to #{} of this conversation are still being captured; commit again once they have arrived",
                                c.last_seq
                            ),
                        ));
                    }
                }
                let change = CommitChange {
                    group,
                    added,
                    welcome: welcome.filter(|_| !external),
                    group_info: next_group_info,
                };
                self.append(device, conv, message, Some(change), false)
            }
        }
    }

    /// Append to the log durably, then answer and push: promise 1.
    ///
    /// With a log writer attached ([`Core::attach_writer`]) the entry joins
    /// the writer's next group commit: the conversation's in-memory state
    /// moves on at once (so the next message gets the next number and is
    /// checked against the new roster), while the receipt and every push
    /// wait until the batch is durable ([`Core::answer_when_durable`]).
    /// Without one the entry is written here, before anything else.
    fn append(
        &mut self,
        device: &DeviceRow,
        conv: &str,
        message: Vec<u8>,
        commit: Option<CommitChange>,
        create: bool,
    ) -> Result<Receipt, ProtocolError> {
        let now = self.clock.now_ms();
        let c = self
            .convs
            .get(conv)
            .ok_or_else(|| refuse(ErrorCode::UnknownConversation, conv.to_string()))?;
        let seq = c.last_seq + 1;
        let sha = Sha256::digest(&message).to_vec();
        let signature = self
            .signer
            .sign(&receipt_signed_bytes(conv, seq, &sha, now))
            .as_ref()
            .to_vec();
        let entry = LogEntry {
            conv: conv.to_string(),
            seq,
            sender_user: device.user.clone(),
            sender_device: device.device_id.clone(),
            server_time_ms: now,
            message,
            sha256: sha,
            signature,
        };
        let roster = match &commit {
            Some(change) => Some(OwnedRosterUpdate {
                snapshot: roster::snapshot(&change.group)?,
                group_info: change.group_info.clone(),
                // A new member needs nothing before the commit that adds
                // it; the records member also receives that commit, to
                // archive it.
                added: change
                    .added
                    .iter()
                    .map(|m| {
                        let from = if m.user == RECORDS_USER { seq - 1 } else { seq };
                        (m.device_id.clone(), from)
                    })
                    .collect(),
                welcome: change.welcome.clone(),
            }),
            None => None,
        };
        if self.writer.is_none() {
            self.store
                .append(&entry, roster.as_ref().map(|r| r.view()).as_ref(), create)
                .map_err(internal)?;
        }
        // From here the entry is (or will be, before anyone hears of it) durable.
        let c = self
            .convs
            .get_mut(conv)
            .ok_or_else(|| refuse(ErrorCode::Internal, "conversation vanished"))?;
        c.last_seq = seq;
        self.backlog += 1;
        // Two sets of pushes: the records member's, which go out as soon
        // as the entry is durable (it must capture it), and everyone
        // else's, held until the records service has archived it.
        let mut effects = Vec::new();
        let is_handshake = commit.is_some();
        let mut held = Held {
            seq,
            sender_device: device.device_id.clone(),
            members: std::sync::Arc::clone(&c.others),
            // The sender's own commit or proposal also goes to its other
            // sessions: one that reconnected before this entry went out is
            // not replayed it by `sync`, and must still apply it.
            sender_gets: is_handshake.then_some(self.handling_session),
            welcomed: Vec::new(),
        };
        let mut records_recipients: Vec<MemberDevice> = c
            .members
            .iter()
            .filter(|m| m.user == RECORDS_USER && m.device_id != device.device_id)
            .cloned()
            .collect();
        if let Some(change) = commit {
            c.version += 1;
            c.members = roster::members(&change.group);
            c.others = others_of(&c.members);
            c.group = *change.group;
            for m in &change.added {
                if m.user == RECORDS_USER {
                    // The records member archives the commit that added
                    // it, and joins from its Welcome at once.
                    records_recipients.push(m.clone());
                    if let Some(welcome) = &change.welcome {
                        let text = ServerFrame::push(ServerBody::WelcomeMessage {
                            conv: conv.to_string(),
                            seq,
                            message: welcome.clone(),
                        })
                        .to_json();
                        effects.push((m.device_id.clone(), None, text));
                    }
                } else if change.welcome.is_some() {
                    held.welcomed.push(m.device_id.clone());
                }
            }
        }
        c.gate.hold(held);
        records_recipients.dedup();
        let receipt = self.receipt(&entry);
        if !records_recipients.is_empty() {
            let text = deliver_text(&entry, receipt.clone());
            for m in records_recipients {
                effects.push((m.device_id, None, text.clone()));
            }
        }
        match &self.writer {
            None => self.apply_effects(conv, seq, &effects),
            Some(_) => {
                self.pending = Some(Job {
                    entry,
                    roster,
                    create,
                    effects,
                    answer: None,
                });
            }
        }
        Ok(receipt)
    }

    /// Give the held append to the log writer, with the answer it sends
    /// once the entry is durable. Still under the core's lock, so entries
    /// reach the writer in the order their numbers were given.
    fn release_pending(&mut self, answer: Option<Answer>) -> bool {
        let Some(mut job) = self.pending.take() else {
            return false;
        };
        job.answer = answer;
        let refused = match &self.writer {
            Some(w) => w.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            // The writer only stops after a storage failure, which ends the
            // process; the entry is not durable, and the sender is told so.
            tracing::error!("the server's log writer has stopped");
            if let Some(a) = job.answer {
                let _ = a.out.send(a.failed);
            }
        }
        true
    }

    /// Entry `seq` of `conv` is durable: push it (and the records
    /// member's Welcome) to the records member's live sessions.
    fn apply_effects(&mut self, conv: &str, seq: u64, effects: &[Effect]) {
        for (device, skip_session, text) in effects {
            self.push_text_except(device, *skip_session, text);
        }
        if let Some(c) = self.convs.get_mut(conv) {
            c.gate.durable(seq);
        }
    }

    /// Hand durable appends, and relay garbage, to a log writer (see
    /// [`run_log_writer`]).
    pub fn attach_writer(&mut self, writer: std::sync::mpsc::Sender<Job>, garbage: Garbage) {
        self.writer = Some(writer);
        self.garbage = Some(garbage);
    }

    /// After [`Core::handle`]: if the request appended to the log, its
    /// answer may only leave once the entry is durable. Then the log writer
    /// sends `reply` (or `failed`, if the write fails) to `out` right after
    /// its group commit, in order with the pushes (returns `None`, handed
    /// over); otherwise `reply` is returned to be sent now.
    pub fn answer_when_durable(
        &mut self,
        out: &Outbox,
        reply: String,
        failed: impl FnOnce() -> String,
    ) -> Option<String> {
        if self.pending.is_none() {
            return Some(reply);
        }
        self.release_pending(Some(Answer {
            out: out.clone(),
            reply,
            failed: failed(),
        }));
        None
    }

    /// Keep the records service's checkpoint and its proof from the one
    /// before. The server cannot and need not check them: devices do, with
    /// the verifier key they pinned.
    fn publish_checkpoint(
        &mut self,
        device: &DeviceRow,
        checkpoint: String,
        verifier_key: String,
        link: keepwire_protocol::CheckpointProof,
    ) -> Result<ServerBody, ProtocolError> {
        if device.user != RECORDS_USER {
            return Err(refuse(
                ErrorCode::Unauthorized,
                "only the records service publishes checkpoints",
            ));
        }
        if checkpoint.len() > 64 * 1024
            || verifier_key.len() > 1024
            || link.consistency_path.len() > 128
        {
            return Err(refuse(
                ErrorCode::TooLarge,
                "checkpoint, key or proof too large",
            ));
        }
        if link.consistency_path.iter().any(|h| h.len() != 32) {
            return Err(refuse(
                ErrorCode::BadFrame,
                "consistency path hashes are 32 bytes",
            ));
        }
        let new = read_checkpoint(&checkpoint)?;
        let size = new.size();
        // Each published checkpoint must extend the one before: the chain
        // devices walk is consistent by construction (they check it too).
        if let Some(last) = self
            .store
            .latest_checkpoint()
            .map_err(internal)?
            .map(|c| read_checkpoint(&c.checkpoint))
            .transpose()?
        {
            let extends = if size == last.size() {
                new.hash() == last.hash()
            } else {
                let path: Vec<tlog_tiles::tlog::Hash> = link
                    .consistency_path
                    .iter()
                    .filter_map(|h| {
                        <[u8; 32]>::try_from(h.as_slice())
                            .ok()
                            .map(tlog_tiles::tlog::Hash)
                    })
                    .collect();
                size > last.size()
                    && link.from_size == Some(last.size())
                    && tlog_tiles::tlog::check_tree(
                        &path,
                        size,
                        *new.hash(),
                        last.size(),
                        *last.hash(),
                    )
                    .is_ok()
            };
            if !extends {
                return Err(refuse(
                    ErrorCode::BadFrame,
                    format!(
                        "this checkpoint (size {size}) does not provably extend the last published one (size {}); publish with a consistency proof from it",
                        last.size()
                    ),
                ));
            }
        }
        self.store
            .add_checkpoint(size, &checkpoint, link.from_size, &link.consistency_path)
            .and_then(|()| self.store.set_meta("records.verifier_key", &verifier_key))
            .map_err(internal)?;
        Ok(ServerBody::Ok)
    }

    fn checkpoints(&self, since_size: u64) -> Result<ServerBody, ProtocolError> {
        let verifier_key = self
            .store
            .meta("records.verifier_key")
            .map_err(internal)?
            .unwrap_or_default();
        let chain = if since_size == 0 {
            // A device that pinned nothing yet starts from the latest.
            self.store
                .latest_checkpoint()
                .map_err(internal)?
                .into_iter()
                .collect()
        } else {
            self.store.checkpoints_after(since_size).map_err(internal)?
        };
        Ok(ServerBody::Checkpoints {
            verifier_key,
            chain,
        })
    }

    /// Conversations `device` may join by external commit: another device
    /// of its user is in them, it is not.
    fn joinable(&self, device: &DeviceRow) -> Result<ServerBody, ProtocolError> {
        let mut conversations = Vec::new();
        for (conv, c) in &self.convs {
            let user_in = c.members.iter().any(|m| m.user == device.user);
            let device_in = c.members.iter().any(|m| m.device_id == device.device_id);
            // Only an epoch the records member has captured, in a
            // conversation that accepts messages: the latest GroupInfo
            // may belong to a commit still waiting for capture (or one it
            // will withhold), and a join from it would land in an epoch
            // nobody may read yet. The device asks again at its next sync.
            let settled = c.gate.released() == c.last_seq && c.suspended.is_none();
            if user_in && !device_in && settled {
                if let Some(group_info) = self.store.group_info(conv).map_err(internal)? {
                    conversations.push(JoinableConversation {
                        conv: conv.clone(),
                        group_info,
                    });
                }
            }
        }
        Ok(ServerBody::Joinable { conversations })
    }

    /// Ask the records service to evict revoked devices that are still in
    /// some conversation's roster. Called periodically: an eviction that
    /// lost a race with another commit is simply asked for again.
    pub fn request_evictions(&mut self) -> Result<usize, ServerError> {
        let revoked = self.store.revoked_devices()?;
        if revoked.is_empty() {
            return Ok(0);
        }
        let mut asks = Vec::new();
        for (conv, c) in &self.convs {
            let devices: Vec<String> = c
                .members
                .iter()
                .filter(|m| revoked.contains(&m.device_id))
                .map(|m| m.device_id.clone())
                .collect();
            if devices.is_empty() {
                continue;
            }
            if let Some(r) = c.members.iter().find(|m| m.user == RECORDS_USER) {
                asks.push((r.device_id.clone(), conv.clone(), devices));
            }
        }
        let n = asks.len();
        for (records, conv, devices) in asks {
            self.push(&records, ServerBody::Evict { conv, devices });
        }
        Ok(n)
    }

    fn receipt(&self, e: &LogEntry) -> Receipt {
        Receipt {
            conv: e.conv.clone(),
            seq: e.seq,
            message_sha256: e.sha256.clone(),
            server_time_ms: e.server_time_ms,
            signature: e.signature.clone(),
            server_key: self.public_key().to_vec(),
        }
    }

    fn push(&mut self, device_id: &str, body: ServerBody) {
        let text = ServerFrame::push(body).to_json();
        self.push_text(device_id, &text);
    }

    fn push_text(&mut self, device_id: &str, text: &str) {
        self.push_text_except(device_id, None, text);
    }

    fn is_live(&self, device_id: &str) -> bool {
        self.live.get(device_id).is_some_and(|l| !l.is_empty())
    }

    /// Push to every live session of `device_id` but `skip`.
    fn push_text_except(&mut self, device_id: &str, skip: Option<u64>, text: &str) {
        if let Some(list) = self.live.get_mut(device_id) {
            list.retain(|(id, tx)| Some(*id) == skip || tx.send(text.to_string()));
        }
    }

    /// Delete log entries nobody needs any more: captured by the records
    /// service and acknowledged by every member device, or captured and
    /// older than the relay TTL. Never anything the records service has
    /// not acknowledged (promise 1). With a log writer, this only works out
    /// what may go and hands it over (returns 0): deleting thousands of
    /// entries here, under the core's lock, stalled every request for tens
    /// of milliseconds. Without one, deletes at once and returns how many.
    pub fn collect_garbage(&mut self) -> Result<usize, ServerError> {
        let now = self.clock.now_ms();
        let before = now.saturating_sub(self.limits.relay_ttl_ms);
        let mut passes = Vec::new();
        for (conv, c) in &self.convs {
            let records_acked = c.gate.archived_seq();
            if records_acked == 0 {
                continue;
            }
            let mut upto = records_acked;
            for m in &c.members {
                upto = upto.min(self.store.cursor(&m.device_id, conv)?.unwrap_or(0));
            }
            passes.push(crate::store::Collectable {
                conv: conv.clone(),
                delivered_upto: upto,
                records_acked,
                expired_before_ms: before,
            });
        }
        if passes.is_empty() {
            return Ok(0);
        }
        match &self.garbage {
            Some(g) => {
                g.hand_over(passes);
                Ok(0)
            }
            None => self.store.collect(&passes),
        }
    }
}

/// The devices of `members` but the records member's.
fn others_of(members: &[MemberDevice]) -> std::sync::Arc<[String]> {
    members
        .iter()
        .filter(|m| m.user != RECORDS_USER)
        .map(|m| m.device_id.clone())
        .collect::<Vec<_>>()
        .into()
}

/// The frame that delivers a log entry.
fn deliver_text(e: &LogEntry, receipt: Receipt) -> String {
    ServerFrame::push(ServerBody::Deliver(Delivery {
        conv: e.conv.clone(),
        seq: e.seq,
        sender_user: e.sender_user.clone(),
        sender_device: e.sender_device.clone(),
        server_time_ms: e.server_time_ms,
        message: e.message.clone(),
        receipt,
    }))
    .to_json()
}

fn blocked_message(why: &str) -> String {
    format!("this device is blocked until an administrator unblocks it: {why}")
}

/// Relay garbage on its way from the core to the log writer: the latest
/// passes only (bounds only grow, so newer passes cover older ones).
#[derive(Clone, Default)]
pub struct Garbage(std::sync::Arc<std::sync::Mutex<Option<Vec<crate::store::Collectable>>>>);

impl Garbage {
    fn hand_over(&self, passes: Vec<crate::store::Collectable>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(passes);
    }

    fn take(&self) -> Option<Vec<crate::store::Collectable>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A push: (device, a session of it not to push to, frame).
type Effect = (String, Option<u64>, String);

/// One entry on its way to the log writer, with what to push and whom
/// to answer once it is durable.
pub struct Job {
    entry: LogEntry,
    roster: Option<OwnedRosterUpdate>,
    create: bool,
    /// Pushes, in order.
    effects: Vec<Effect>,
    answer: Option<Answer>,
}

/// The answer to the request that appended an entry: `reply` once it is
/// durable, `failed` if writing it failed.
struct Answer {
    out: Outbox,
    reply: String,
    failed: String,
}

struct OwnedRosterUpdate {
    snapshot: Vec<u8>,
    group_info: Option<Vec<u8>>,
    added: Vec<(String, u64)>,
    welcome: Option<Vec<u8>>,
}

impl OwnedRosterUpdate {
    fn view(&self) -> RosterUpdate<'_> {
        RosterUpdate {
            snapshot: &self.snapshot,
            group_info: self.group_info.as_deref(),
            added: &self.added,
            welcome: self.welcome.as_deref(),
        }
    }
}

/// Most entries one group commit takes.
const MAX_BATCH: usize = 1024;

/// The log writer: takes every entry queued since its last commit, writes
/// them in one transaction on its own connection (one fsync), then, under
/// the core's lock, pushes them and releases their receipts, in order.
/// Each commit also deletes a little relay garbage (a bounded number of
/// entries, in proportion to the batch, so collection keeps ahead of
/// appends without lengthening any commit much); when no entries come, it
/// collects on its own. Runs on its own thread until the core drops its
/// sender. A storage failure ends the process: the in-memory state ran
/// ahead of the disk, and only a restart from the durable log is safe.
pub fn run_log_writer(
    mut store: Store,
    jobs: std::sync::mpsc::Receiver<Job>,
    core: std::sync::Arc<std::sync::Mutex<Core>>,
    garbage: Garbage,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut pending: std::collections::VecDeque<crate::store::Collectable> = Default::default();
    loop {
        if let Some(newer) = garbage.take() {
            pending = newer.into();
        }
        // Idle with garbage waiting: collect soon; otherwise look for new
        // garbage now and then.
        let wait = if pending.is_empty() {
            GC_IDLE_POLL
        } else {
            std::time::Duration::from_millis(10)
        };
        let first = match jobs.recv_timeout(wait) {
            Ok(j) => Some(j),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<Job> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if batch.is_empty() && pending.is_empty() {
            continue;
        }
        let views: Vec<Option<RosterUpdate<'_>>> = batch
            .iter()
            .map(|j| j.roster.as_ref().map(|r| r.view()))
            .collect();
        let appends: Vec<Append<'_>> = batch
            .iter()
            .zip(&views)
            .map(|(j, v)| Append {
                entry: &j.entry,
                roster: v.as_ref(),
                create: j.create,
            })
            .collect();
        let limit = if batch.is_empty() {
            GC_IDLE_CHUNK
        } else {
            GC_PER_COMMIT + 2 * batch.len()
        };
        let result = store.append_collecting(&appends, &mut pending, limit);
        drop(appends);
        drop(views);
        match result {
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::debug!(deleted, "relay entries deleted");
                }
                if batch.is_empty() {
                    continue;
                }
                let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
                for j in batch {
                    core.apply_effects(&j.entry.conv, j.entry.seq, &j.effects);
                    if let Some(a) = j.answer {
                        let _ = a.out.send(a.reply);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "log write failed; stopping the server");
                for a in batch.into_iter().filter_map(|j| j.answer) {
                    let _ = a.out.send(a.failed);
                }
                std::process::exit(1);
            }
        }
    }
}

/// Relay entries deleted with each group commit, beyond twice its size.
const GC_PER_COMMIT: usize = 64;
/// Entries deleted per transaction when no appends come.
const GC_IDLE_CHUNK: usize = 1024;
/// How often an idle log writer looks for garbage handed over.
const GC_IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The checkpoint inside a signed note. The signature is the devices' to
/// check (against the key they pinned); the server only keeps the chain
/// consistent.
fn read_checkpoint(note: &str) -> Result<tlog_tiles::checkpoint::Checkpoint, ProtocolError> {
    let n = signed_note::Note::from_bytes(note.as_bytes())
        .map_err(|e| refuse(ErrorCode::BadFrame, format!("not a signed note: {e}")))?;
    tlog_tiles::checkpoint::Checkpoint::from_bytes(n.text())
        .map_err(|e| refuse(ErrorCode::BadFrame, format!("not a tlog checkpoint: {e}")))
}

/// What an accepted commit (or proposal) changes in the followed group.
struct CommitChange {
    group: Box<Followed>,
    added: Vec<MemberDevice>,
    welcome: Option<Vec<u8>>,
    /// The new epoch's GroupInfo; none for a proposal.
    group_info: Option<Vec<u8>>,
}
