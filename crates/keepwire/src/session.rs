//! A device online: the device core plus its connection. Sync drains
//! everything pending, in order, storing each message before acknowledging.

use std::path::Path;

use anyhow::{bail, Context, Result};
use keepwire_client::{Device, Incoming, PendingDevice, StoredMessage};
use keepwire_protocol::clock::Clock;
use keepwire_protocol::content::Content;
use keepwire_protocol::{ClaimedKeyPackage, Policy, Request, ServerBody};

use crate::net::Conn;

/// How many key packages a device keeps on the server.
pub const KEY_PACKAGE_POOL: usize = 20;

pub struct Online {
    pub device: Device,
    pub conn: Conn,
    pub policy: Policy,
    pub notice_acknowledged: bool,
    pub clock: Clock,
    /// Messages from others stored by this device since it came online.
    pub received: u64,
}

pub async fn enroll(server: &str, code: &str, dir: &Path, passphrase: &str) -> Result<Online> {
    let mut conn = Conn::connect(server).await?;
    let pending = PendingDevice::create(dir, passphrase)?;
    let body = conn
        .request(pending.enroll_request(code, &conn.nonce)?)
        .await?;
    let (user, device_id, policy, notice) = match body {
        ServerBody::Authenticated {
            user,
            device_id,
            policy,
            notice_acknowledged,
        } => (user, device_id, policy, notice_acknowledged),
        other => bail!("unexpected answer to enroll: {other:?}"),
    };
    let device = pending.complete(&user, &device_id)?;
    conn.request(device.key_packages_request(KEY_PACKAGE_POOL, true)?)
        .await
        .context("uploading key packages")?;
    Ok(Online {
        device,
        conn,
        policy,
        notice_acknowledged: notice,
        clock: Clock::from_env(),
        received: 0,
    })
}

pub async fn connect(server: &str, dir: &Path, passphrase: &str) -> Result<Online> {
    let device = Device::open(dir, passphrase)?;
    let mut conn = Conn::connect(server).await?;
    let body = conn.request(device.auth_request(&conn.nonce)?).await?;
    let (policy, notice) = match body {
        ServerBody::Authenticated {
            policy,
            notice_acknowledged,
            ..
        } => (policy, notice_acknowledged),
        other => bail!("unexpected answer to auth: {other:?}"),
    };
    let online = Online {
        device,
        conn,
        policy,
        notice_acknowledged: notice,
        clock: Clock::from_env(),
        received: 0,
    };
    online.device.store().purge_expired(online.clock.now_ms())?;
    Ok(online)
}

impl Online {
    pub async fn acknowledge_notice(&mut self) -> Result<()> {
        self.conn.request(Request::AcknowledgeNotice).await?;
        self.notice_acknowledged = true;
        Ok(())
    }

    /// Fetch and process everything pending. Returns the new messages.
    pub async fn sync(&mut self) -> Result<Vec<StoredMessage>> {
        self.conn.request(Request::Sync).await?;
        let mut out = Vec::new();
        while let Some(push) = self.conn.queued_push() {
            if let Some(m) = self.handle_push(push).await? {
                out.push(m);
            }
        }
        self.device.store().purge_expired(self.clock.now_ms())?;
        Ok(out)
    }

    /// Process one pushed frame; acknowledges it once stored.
    pub async fn handle_push(&mut self, push: ServerBody) -> Result<Option<StoredMessage>> {
        match push {
            ServerBody::WelcomeMessage { conv, seq, message } => {
                self.device.join(&conv, seq, &message)?;
                self.conn.request(Request::Ack { conv, seq }).await?;
                Ok(None)
            }
            ServerBody::Deliver(d) => {
                let incoming = self.device.process(&d)?;
                let mut stored = None;
                match incoming {
                    Incoming::Duplicate => {}
                    Incoming::Own => self.device.skip(&d.conv, d.seq)?,
                    Incoming::Application {
                        sender, content, ..
                    } => {
                        let m = self.to_stored(&d.conv, d.seq, &sender, d.server_time_ms, &content);
                        if let Some(m) = &m {
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
    ) -> Option<StoredMessage> {
        let c = match Content::decode(content) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(conv, seq, error = %e, "message content does not parse; dropped on this device");
                return None;
            }
        };
        // The admin's cap applies whatever the sender asked for.
        let timer = c
            .expire_after_secs
            .map(|t| t.min(self.policy.max_timer_secs));
        Some(StoredMessage {
            conv: conv.to_string(),
            seq,
            sender: sender.to_string(),
            text: c.text,
            sent_at_ms: c.sent_at_ms,
            server_time_ms,
            expire_at_ms: timer.map(|t| server_time_ms + t * 1000),
            burn_on_read: c.burn_on_read,
            read: false,
        })
    }

    async fn claim(
        &mut self,
        users: &[String],
        include_records: bool,
    ) -> Result<Vec<ClaimedKeyPackage>> {
        match self
            .conn
            .request(Request::ClaimKeyPackages {
                users: users.to_vec(),
                include_records,
            })
            .await?
        {
            ServerBody::KeyPackages { packages } => Ok(packages),
            other => bail!("unexpected answer to claim: {other:?}"),
        }
    }

    /// Create a conversation with `users` (and the records member).
    pub async fn create(&mut self, users: &[String]) -> Result<String> {
        self.sync().await?;
        let kps = self.claim(users, true).await?;
        let (conv, req) = self.device.create_conversation(&kps)?;
        match self.conn.request(req).await {
            Ok(ServerBody::Receipt(r)) => {
                self.device.commit_accepted(&conv, r.seq)?;
                self.conn
                    .request(Request::Ack {
                        conv: conv.clone(),
                        seq: r.seq,
                    })
                    .await?;
                Ok(conv)
            }
            Ok(other) => bail!("unexpected answer to create: {other:?}"),
            Err(e) => Err(e),
        }
    }

    async fn commit(&mut self, conv: &str, req: Request) -> Result<u64> {
        match self.conn.request(req).await {
            Ok(ServerBody::Receipt(r)) => {
                self.device.commit_accepted(conv, r.seq)?;
                self.conn
                    .request(Request::Ack {
                        conv: conv.to_string(),
                        seq: r.seq,
                    })
                    .await?;
                Ok(r.seq)
            }
            Ok(other) => bail!("unexpected answer: {other:?}"),
            Err(e) => {
                self.device.commit_refused(conv);
                Err(e)
            }
        }
    }

    pub async fn add(&mut self, conv: &str, users: &[String]) -> Result<u64> {
        self.sync().await?;
        let kps = self.claim(users, false).await?;
        let req = self.device.add_members(conv, &kps)?;
        self.commit(conv, req).await
    }

    pub async fn remove(&mut self, conv: &str, users: &[String]) -> Result<u64> {
        self.sync().await?;
        let req = self.device.remove_users(conv, users)?;
        self.commit(conv, req).await
    }

    /// Send a text; returns the receipt's sequence number.
    pub async fn send(
        &mut self,
        conv: &str,
        text: &str,
        timer_secs: Option<u64>,
        burn_on_read: bool,
    ) -> Result<u64> {
        if !self.notice_acknowledged {
            bail!("acknowledge the records notice first (`keepwire chat notice --accept`)");
        }
        self.sync().await?;
        if let Some(t) = timer_secs {
            if t > self.policy.max_timer_secs {
                bail!(
                    "timer of {t} s exceeds the agency's maximum of {} s",
                    self.policy.max_timer_secs
                );
            }
        }
        let content = Content {
            format: keepwire_protocol::content::CONTENT_FORMAT,
            text: text.to_string(),
            expire_after_secs: timer_secs,
            burn_on_read,
            sent_at_ms: self.clock.now_ms(),
        };
        let req = self.device.encrypt(conv, &content)?;
        let r = match self.conn.request(req).await? {
            ServerBody::Receipt(r) => r,
            other => bail!("unexpected answer to send: {other:?}"),
        };
        // The sender keeps its own copy under the same timer.
        let me = self.device.identity();
        if let Some(m) = self.to_stored(conv, r.seq, &me, r.server_time_ms, &content.encode()?) {
            self.device
                .store()
                .insert_message(&StoredMessage { read: true, ..m })?;
        }
        Ok(r.seq)
    }
}
