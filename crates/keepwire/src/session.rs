//! A device online: the device core plus its connection. Sync drains
//! everything pending, in order, storing each message before acknowledging.

use std::path::Path;

use anyhow::{bail, Context, Result};
use keepwire_client::{Device, Incoming, PendingDevice, StoredMessage};
use keepwire_protocol::clock::Clock;
use keepwire_protocol::content::Content;
use keepwire_protocol::{ClaimedKeyPackage, Policy, Request, ServerBody};

use crate::net::{Conn, Refused};

/// How long creating a conversation waits for the records service to
/// capture it (after which the others are added).
const CREATE_CAPTURE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How many key packages a device keeps on the server.
pub const KEY_PACKAGE_POOL: usize = 20;

pub(crate) mod files;
mod membership;

/// The witnesses whose quorum this device requires on the archive's
/// checkpoints; set once at startup from `--witness`.
static WITNESSES: std::sync::OnceLock<keepwire_client::cosignature::Quorum> =
    std::sync::OnceLock::new();

pub fn require_witnesses(quorum: Option<keepwire_client::cosignature::Quorum>) {
    if let Some(q) = quorum {
        let _ = WITNESSES.set(q);
    }
}

pub struct Online {
    pub device: Device,
    pub conn: Conn,
    pub policy: Policy,
    pub notice_acknowledged: bool,
    pub clock: Clock,
    /// Messages from others stored by this device since it came online.
    pub received: u64,
    joins_checked: bool,
}

/// What the server says when a connection is authenticated.
struct Authenticated {
    user: String,
    device_id: String,
    policy: Policy,
    notice_acknowledged: bool,
}

fn authenticated(body: ServerBody, what: &str) -> Result<Authenticated> {
    match body {
        ServerBody::Authenticated {
            user,
            device_id,
            policy,
            notice_acknowledged,
        } => Ok(Authenticated {
            user,
            device_id,
            policy,
            notice_acknowledged,
        }),
        other => bail!("unexpected answer to {what}: {other:?}"),
    }
}

impl Online {
    fn new(device: Device, conn: Conn, auth: Authenticated) -> Self {
        Online {
            device,
            conn,
            policy: auth.policy,
            notice_acknowledged: auth.notice_acknowledged,
            clock: Clock::from_env(),
            received: 0,
            joins_checked: false,
        }
    }
}

/// The disappearing timer `conv` has, as this device last heard (offline
/// too).
pub fn conversation_timer(device: &Device, conv: &str) -> Result<Option<u64>> {
    Ok(device
        .store()
        .get(TIMER_NS, conv.as_bytes())?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .filter(|t| *t > 0))
}

/// Create a device in `dir` and enrol it with a one-time `code`. If the
/// server refuses, the half-made device is removed, so the same directory
/// can be used again with a good code.
pub async fn enroll(server: &str, code: &str, dir: &Path, passphrase: &str) -> Result<Online> {
    enroll_device(server, code, || Ok(PendingDevice::create(dir, passphrase)?)).await
}

/// Enrol a device that lives in memory only (the load generator's).
pub async fn enroll_in_memory(server: &str, code: &str) -> Result<Online> {
    enroll_device(server, code, || Ok(PendingDevice::in_memory()?)).await
}

async fn enroll_device(
    server: &str,
    code: &str,
    create: impl FnOnce() -> Result<PendingDevice>,
) -> Result<Online> {
    let mut conn = Conn::connect(server).await?;
    let pending = create()?;
    let answer = match conn
        .request(pending.enroll_request(code, &conn.nonce)?)
        .await
        .and_then(|body| authenticated(body, "enroll"))
    {
        Ok(a) => a,
        Err(e) => {
            pending.abandon()?;
            return Err(e);
        }
    };
    let device = pending.complete(&answer.user, &answer.device_id)?;
    conn.request(device.key_packages_request(KEY_PACKAGE_POOL, true)?)
        .await
        .context("uploading key packages")?;
    Ok(Online::new(device, conn, answer))
}

pub async fn connect(server: &str, dir: &Path, passphrase: &str) -> Result<Online> {
    let device = Device::open(dir, passphrase)?;
    attach(server, device).await.map_err(|(_, e)| e)
}

/// How long connecting (TCP, TLS, WebSocket) may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connect an already opened device; on failure the device comes back
/// with the error, so a client that works offline keeps it.
pub async fn attach(
    server: &str,
    device: Device,
) -> std::result::Result<Online, (Device, anyhow::Error)> {
    // An unreachable host would otherwise wait for the system's TCP
    // timeout (minutes) with the device held.
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::connect(server)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err((device, e)),
        Err(_) => {
            return Err((
                device,
                anyhow::anyhow!("{server} did not answer within {CONNECT_TIMEOUT:?}"),
            ))
        }
    };
    let auth = match device.auth_request(&conn.nonce) {
        Ok(r) => r,
        Err(e) => return Err((device, e.into())),
    };
    let body = match conn
        .request(auth)
        .await
        .and_then(|b| authenticated(b, "auth"))
    {
        Ok(b) => b,
        Err(e) => return Err((device, e)),
    };
    let online = Online::new(device, conn, body);
    if let Err(e) = online.device.store().purge_expired(online.clock.now_ms()) {
        return Err((online.device, e.into()));
    }
    Ok(online)
}

impl Online {
    pub async fn acknowledge_notice(&mut self) -> Result<()> {
        self.conn.request(Request::AcknowledgeNotice).await?;
        self.notice_acknowledged = true;
        Ok(())
    }

    /// Fetch and process everything pending. Returns the new messages.
    /// The first sync of a connection also joins, by external commit, the
    /// conversations this device's user is in and it is not (a new device).
    pub async fn sync(&mut self) -> Result<Vec<StoredMessage>> {
        let mut out = Vec::new();
        loop {
            let more = self.conn.sync().await?;
            while let Some(push) = self.conn.queued_push() {
                if let Some(m) = self.handle_push(push).await? {
                    out.push(m);
                }
            }
            if !more {
                break;
            }
        }
        if !self.joins_checked {
            self.joins_checked = true;
            self.join_existing().await?;
            self.witness().await?;
        }
        self.device.store().purge_expired(self.clock.now_ms())?;
        Ok(out)
    }

    /// Check the archive's newer checkpoints against the one this device
    /// pinned, and pin the newest. A rewritten history is an error for
    /// every command until someone looks into it.
    async fn witness(&mut self) -> Result<()> {
        use keepwire_client::witness::{self, Pinned, WitnessError};
        let pinned: Option<Pinned> = self
            .device
            .store()
            .get(WITNESS_NS, b"pinned")?
            .and_then(|b| serde_json::from_slice(&b).ok());
        let since = pinned.as_ref().map(|p| p.size).unwrap_or(0);
        let (verifier_key, chain, latest_size) = match self
            .conn
            .request(Request::Checkpoints { since_size: since })
            .await?
        {
            ServerBody::Checkpoints {
                verifier_key,
                chain,
                latest_size,
            } => (verifier_key, chain, latest_size),
            other => bail!("unexpected answer to checkpoints: {other:?}"),
        };
        if let Err(e) = witness::not_rolled_back(pinned.as_ref(), &verifier_key, latest_size) {
            tracing::error!(error = %e, "the server is behind what this device saw");
            return Err(e.into());
        }
        if verifier_key.is_empty() {
            return Ok(()); // nothing published yet
        }
        match witness::advance(pinned.as_ref(), &verifier_key, &chain, WITNESSES.get()) {
            Ok(Some(p)) => {
                if pinned.as_ref() != Some(&p) {
                    tracing::debug!(size = p.size, "archive checkpoint pinned");
                    self.device
                        .store()
                        .put(WITNESS_NS, b"pinned", &serde_json::to_vec(&p)?)?;
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e @ WitnessError::Fork(_)) => {
                tracing::error!(error = %e, "the archive's history was rewritten");
                Err(e.into())
            }
            // The server only keeps a chain whose every link it checked, so
            // a link that does not verify here is as serious as a fork.
            Err(e) => {
                tracing::error!(error = %e, "the archive's checkpoint chain does not verify");
                Err(e.into())
            }
        }
    }

    /// The archive checkpoint this device has pinned, if any.
    pub fn pinned_checkpoint(&self) -> Result<Option<keepwire_client::witness::Pinned>> {
        Ok(self
            .device
            .store()
            .get(WITNESS_NS, b"pinned")?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    async fn join_existing(&mut self) -> Result<()> {
        let list = match self.conn.request(Request::Joinable).await? {
            ServerBody::Joinable { conversations } => conversations,
            other => bail!("unexpected answer to joinable: {other:?}"),
        };
        for j in list {
            let req = match self.device.join_external(&j.conv, &j.group_info) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(conv = %j.conv, error = %e, "cannot join conversation by external commit");
                    continue;
                }
            };
            match self.conn.request(req).await {
                Ok(ServerBody::Receipt(r)) => {
                    self.device.external_join_accepted(&j.conv, r.seq)?;
                    self.conn
                        .request(Request::Ack {
                            conv: j.conv.clone(),
                            seq: r.seq,
                        })
                        .await?;
                    tracing::info!(conv = %j.conv, seq = r.seq, "joined conversation of this user");
                }
                Ok(other) => bail!("unexpected answer to an external join: {other:?}"),
                Err(e) if e.downcast_ref::<Refused>().is_some() => {
                    // Lost a race for the epoch: the next connection retries.
                    self.device.external_join_refused(&j.conv)?;
                    tracing::warn!(conv = %j.conv, error = %format!("{e:#}"), "external join refused");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Process one pushed frame; acknowledges it once stored.
    pub async fn handle_push(&mut self, push: ServerBody) -> Result<Option<StoredMessage>> {
        match push {
            ServerBody::Captured { conv, upto } => {
                self.device.store().set_captured(&conv, upto)?;
                Ok(None)
            }
            ServerBody::WelcomeMessage { conv, seq, message } => {
                self.device.join(&conv, seq, &message)?;
                self.conn.request(Request::Ack { conv, seq }).await?;
                Ok(None)
            }
            ServerBody::Deliver(d) => {
                let incoming = match self.device.process(&d) {
                    Err(keepwire_client::ClientError::UnknownConversation(c)) => {
                        // Not acknowledged: it stays on the relay until this
                        // device can process it (or the relay TTL passes).
                        tracing::warn!(conv = %c, seq = d.seq, "delivery for a conversation this device has no state for");
                        return Ok(None);
                    }
                    // A commit this device cannot process (a modified sender;
                    // the server suspends such a conversation once the
                    // records service reports it): skip it so every other
                    // conversation keeps working.
                    Err(e @ keepwire_client::ClientError::Mls(_)) => {
                        tracing::error!(conv = %d.conv, seq = d.seq, error = %e, "entry cannot be processed; this conversation is broken on this device");
                        self.device.skip(&d.conv, d.seq)?;
                        self.conn
                            .request(Request::Ack {
                                conv: d.conv,
                                seq: d.seq,
                            })
                            .await?;
                        return Ok(None);
                    }
                    r => r?,
                };
                let mut stored = None;
                match incoming {
                    Incoming::Duplicate => {}
                    Incoming::Own => self.device.skip(&d.conv, d.seq)?,
                    Incoming::Undecryptable { reason, .. } => {
                        tracing::warn!(conv = %d.conv, seq = d.seq, sender = %d.sender_device, %reason, "message does not decrypt; skipped");
                        self.device.skip(&d.conv, d.seq)?
                    }
                    Incoming::Application {
                        sender, content, ..
                    } => {
                        // Delivered, so archived: the server releases
                        // nothing before the records service has it.
                        self.device.store().set_captured(&d.conv, d.seq)?;
                        let mut m =
                            self.to_stored(&d.conv, d.seq, &sender, d.server_time_ms, &content)?;
                        if let Some(m) = &mut m {
                            // Its files first: the message is acknowledged
                            // only once the device holds them.
                            let references = Content::decode(&content)
                                .map(|c| c.attachments)
                                .unwrap_or_default();
                            let missing = self.take_files(&d.conv, d.seq, &references).await?;
                            for (f, why) in m.files.iter_mut().zip(missing) {
                                f.missing = why;
                            }
                            self.device.store().insert_message(m)?;
                            self.received += 1;
                        }
                        self.device.save(&d.conv, d.seq)?;
                        stored = m;
                    }
                    Incoming::Commit { .. } | Incoming::Proposal { .. } => {
                        self.device.save(&d.conv, d.seq)?
                    }
                }
                self.conn
                    .request(Request::Ack {
                        conv: d.conv,
                        seq: d.seq,
                    })
                    .await?;
                Ok(stored)
            }
            _ => Ok(None),
        }
    }

    fn to_stored(
        &self,
        conv: &str,
        seq: u64,
        sender: &str,
        server_time_ms: u64,
        content: &[u8],
    ) -> Result<Option<StoredMessage>> {
        let c = match Content::decode(content) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(conv, seq, error = %e, "message content does not parse; dropped on this device");
                return Ok(None);
            }
        };
        let mut text = c.text.clone();
        if let Some(t) = c.set_conversation_timer {
            let t = t.min(self.policy.max_timer_secs);
            self.device
                .store()
                .put(TIMER_NS, conv.as_bytes(), &t.to_be_bytes())?;
            text = if t == 0 {
                "(turned the disappearing timer off)".to_string()
            } else {
                format!("(set the disappearing timer to {})", human_secs(t))
            };
        }
        // The admin's cap applies whatever the sender asked for.
        let timer = c
            .expire_after_secs
            .map(|t| t.min(self.policy.max_timer_secs));
        Ok(Some(StoredMessage {
            conv: conv.to_string(),
            seq,
            sender: sender.to_string(),
            text,
            sent_at_ms: c.sent_at_ms,
            server_time_ms,
            expire_at_ms: timer.map(|t| server_time_ms + t * 1000),
            burn_on_read: c.burn_on_read,
            read: false,
            // Received: delivered only once archived. Sent: not yet.
            captured: sender != self.device.identity(),
            files: files::infos(&c),
        }))
    }

    /// The conversation's expire-after-send timer as this device last saw
    /// it set (seconds; `None` when never set or turned off).
    pub fn conversation_timer(&self, conv: &str) -> Result<Option<u64>> {
        conversation_timer(&self.device, conv)
    }

    /// Set the conversation's timer for every member (0 turns it off).
    pub async fn set_timer(&mut self, conv: &str, secs: u64) -> Result<u64> {
        self.check_timer(secs)?;
        let content = Content::timer_change(secs, self.clock.now_ms());
        self.send_content(conv, content).await
    }

    fn check_timer(&self, secs: u64) -> Result<()> {
        if secs > self.policy.max_timer_secs {
            bail!(
                "timer of {secs} s exceeds the agency's maximum of {} s",
                self.policy.max_timer_secs
            );
        }
        Ok(())
    }

    /// Send a text; returns the receipt's sequence number. Without an
    /// explicit timer the conversation's timer applies.
    pub async fn send(
        &mut self,
        conv: &str,
        text: &str,
        timer_secs: Option<u64>,
        burn_on_read: bool,
    ) -> Result<u64> {
        if let Some(t) = timer_secs {
            self.check_timer(t)?;
        }
        let timer = match timer_secs {
            Some(t) => Some(t),
            None => self.conversation_timer(conv)?,
        };
        let content = Content::text(text, timer, burn_on_read, self.clock.now_ms());
        self.send_content(conv, content).await
    }

    /// Send a text with files (each sealed and uploaded first); returns
    /// the receipt's sequence number. The device keeps its own copy of
    /// each file with the message, under the same timer.
    pub async fn send_files(
        &mut self,
        conv: &str,
        text: &str,
        paths: &[&std::path::Path],
        timer_secs: Option<u64>,
        burn_on_read: bool,
    ) -> Result<u64> {
        if !self.notice_acknowledged {
            bail!("acknowledge the records notice first (`keepwire chat notice --accept`)");
        }
        if paths.len() > keepwire_protocol::attachment::MAX_ATTACHMENTS {
            bail!(
                "at most {} files in one message",
                keepwire_protocol::attachment::MAX_ATTACHMENTS
            );
        }
        if let Some(t) = timer_secs {
            self.check_timer(t)?;
        }
        let timer = match timer_secs {
            Some(t) => Some(t),
            None => self.conversation_timer(conv)?,
        };
        let mut content = Content::text(text, timer, burn_on_read, self.clock.now_ms());
        let mut outgoing = Vec::with_capacity(paths.len());
        for path in paths {
            outgoing.extend(files::Outgoing::prepare(
                path,
                self.policy.keep_photo_metadata,
            )?);
        }
        if outgoing.len() > keepwire_protocol::attachment::MAX_ATTACHMENTS {
            bail!(
                "at most {} files in one message, photos' thumbnails included",
                keepwire_protocol::attachment::MAX_ATTACHMENTS
            );
        }
        let mut photo = 0u32;
        for (n, file) in outgoing.iter_mut().enumerate() {
            let mut reference = self.upload(conv, file).await?;
            if file.thumbnail {
                reference.thumbnail_of = Some(photo);
            } else {
                photo = n as u32;
            }
            content.attachments.push(reference);
        }
        let seq = self.send_content(conv, content).await?;
        self.keep_sent(conv, seq, &mut outgoing)?;
        Ok(seq)
    }

    /// Wait until the records service has archived `conv` up to `seq` (the
    /// server's `captured` notice), processing what arrives meanwhile;
    /// gives up after `timeout` with an error saying so.
    pub async fn wait_captured(
        &mut self,
        conv: &str,
        seq: u64,
        timeout: std::time::Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.device.store().captured_upto(conv)? < seq {
            let push = match tokio::time::timeout_at(deadline, self.conn.next_push()).await {
                Ok(p) => p?,
                Err(_) => bail!(
                    "#{seq} is logged (receipted) but the records service has not archived it within {} s; \
                     the others will receive it once it does",
                    timeout.as_secs()
                ),
            };
            self.handle_push(push).await?;
        }
        Ok(())
    }

    pub(crate) async fn send_content(&mut self, conv: &str, content: Content) -> Result<u64> {
        if !self.notice_acknowledged {
            bail!("acknowledge the records notice first (`keepwire chat notice --accept`)");
        }
        self.sync().await?;
        let bytes = content.encode()?;
        let req = self.device.encrypt(conv, &content)?;
        let r = match self.conn.request(req).await? {
            ServerBody::Receipt(r) => r,
            other => bail!("unexpected answer to send: {other:?}"),
        };
        // The sender keeps its own copy under the same timer.
        let me = self.device.identity();
        if let Some(m) = self.to_stored(conv, r.seq, &me, r.server_time_ms, &bytes)? {
            self.device
                .store()
                .insert_message(&StoredMessage { read: true, ..m })?;
        }
        Ok(r.seq)
    }
}

/// Where a device keeps the archive checkpoint it witnessed.
const WITNESS_NS: &str = "witness";

/// Where a device keeps each conversation's timer.
const TIMER_NS: &str = "timer";

pub fn human_secs(t: u64) -> String {
    match t {
        t if t % 86_400 == 0 => format!("{} d", t / 86_400),
        t if t % 3600 == 0 => format!("{} h", t / 3600),
        t if t % 60 == 0 => format!("{} min", t / 60),
        t => format!("{t} s"),
    }
}
