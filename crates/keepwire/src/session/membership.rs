//! A device online changing who is in a conversation: claiming key
//! packages, creating, adding, removing, leaving — each commit sent only
//! once nothing before it is still being captured, applied once the server
//! accepted it.

use super::*;

impl Online {
    pub(super) async fn claim(
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
                // The others get their Welcome once the records service
                // has captured the commit: only then does the
                // conversation exist for them.
                self.wait_captured(&conv, r.seq, CREATE_CAPTURE_WAIT)
                    .await
                    .with_context(|| format!("conversation {conv} was created"))?;
                Ok(conv)
            }
            Ok(other) => bail!("unexpected answer to create: {other:?}"),
            Err(e) => Err(e),
        }
    }

    /// Build a commit with `build` and send it; while the server says
    /// entries before it are still being captured, wait until this device
    /// has them (or is told they are captured) and build it again.
    pub(super) async fn commit_when_caught_up(
        &mut self,
        conv: &str,
        mut build: impl FnMut(&mut Device) -> Result<Request>,
    ) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + CREATE_CAPTURE_WAIT;
        loop {
            let req = build(&mut self.device)?;
            match self.commit(conv, req).await {
                Err(e)
                    if e.downcast_ref::<Refused>().is_some_and(|r| {
                        r.0.code == keepwire_protocol::ErrorCode::CapturePending
                    }) && tokio::time::Instant::now() < deadline =>
                {
                    self.wait_caught_up(conv, deadline).await?;
                }
                r => return r,
            }
        }
    }

    /// The display names of the people in this device's conversations, by
    /// user name ("alice" → "Alice Ng"), as the server knows them.
    pub async fn display_names(&mut self) -> Result<std::collections::BTreeMap<String, String>> {
        match self.conn.request(Request::Conversations).await? {
            ServerBody::Conversations { conversations } => {
                Ok(conversations.into_iter().flat_map(|c| c.names).collect())
            }
            other => bail!("unexpected answer to conversations: {other:?}"),
        }
    }

    /// Wait until this device has processed, or been told are captured,
    /// all entries of `conv` the server holds now.
    pub(super) async fn wait_caught_up(
        &mut self,
        conv: &str,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let last = match self.conn.request(Request::Conversations).await? {
            ServerBody::Conversations { conversations } => conversations
                .into_iter()
                .find(|c| c.conv == conv)
                .map(|c| c.last_seq)
                .unwrap_or(0),
            other => bail!("unexpected answer to conversations: {other:?}"),
        };
        loop {
            let at = self
                .device
                .cursor(conv)?
                .max(self.device.store().captured_upto(conv)?);
            if at >= last {
                return Ok(());
            }
            let push = match tokio::time::timeout_at(deadline, self.conn.next_push()).await {
                Ok(p) => p?,
                Err(_) => bail!(
                    "entries up to #{last} of this conversation are still waiting for the records service; try again once it has captured them"
                ),
            };
            self.handle_push(push).await?;
        }
    }

    pub(super) async fn commit(&mut self, conv: &str, req: Request) -> Result<u64> {
        match self.conn.request(req).await {
            Ok(ServerBody::Receipt(r)) => {
                // Entries before the commit that arrived while it was on its
                // way are processed first, in the old epoch.
                for d in self.conn.take_deliveries_before(conv, r.seq) {
                    self.handle_push(ServerBody::Deliver(d)).await?;
                }
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
                // Only a definite refusal discards the commit: after a lost
                // connection the server may have accepted it, and the next
                // sync then replays and applies it.
                if e.downcast_ref::<Refused>().is_some() {
                    self.device.commit_refused(conv)?;
                }
                Err(e)
            }
        }
    }

    pub async fn add(&mut self, conv: &str, users: &[String]) -> Result<u64> {
        self.sync().await?;
        let kps = self.claim(users, false).await?;
        self.commit_when_caught_up(conv, |d| Ok(d.add_members(conv, &kps)?))
            .await
    }

    /// Ask to leave `conv`; the records member commits the removal.
    pub async fn leave(&mut self, conv: &str) -> Result<u64> {
        self.sync().await?;
        let req = self.device.leave(conv)?;
        match self.conn.request(req).await? {
            ServerBody::Receipt(r) => {
                // Our own proposal: nothing to process when it comes back.
                if self.device.cursor(conv)? + 1 == r.seq {
                    self.device.skip(conv, r.seq)?;
                    self.conn
                        .request(Request::Ack {
                            conv: conv.to_string(),
                            seq: r.seq,
                        })
                        .await?;
                }
                Ok(r.seq)
            }
            other => bail!("unexpected answer to leave: {other:?}"),
        }
    }

    pub async fn remove(&mut self, conv: &str, users: &[String]) -> Result<u64> {
        self.sync().await?;
        self.commit_when_caught_up(conv, |d| Ok(d.remove_users(conv, users)?))
            .await
    }
}
