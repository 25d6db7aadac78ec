//! Capture failures in PostgreSQL (see the `withheld` module for the
//! idea).

use super::*;

impl CaptureFailureStore for PgStore {
    fn records_archived(
        &mut self,
        records_device: &str,
        conv: &str,
        to: u64,
        withheld: &[WithheldEntry],
        why: Option<&str>,
    ) -> Result<(), ServerError> {
        if withheld.is_empty() {
            return self.ack(records_device, conv, to, true);
        }
        self.pg.transaction(|pg| {
            super::log::ack_in(pg, records_device, conv, to, true)?;
            for w in withheld {
                pg.execute(
                    "INSERT INTO withheld (conv, seq, device, handshake, reason, at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[
                        &w.conv,
                        &(w.seq as i64),
                        &w.device,
                        &w.handshake,
                        &w.reason,
                        &(w.at_ms as i64),
                    ],
                )?;
                let user: Option<String> = pg
                    .query_opt(r#"SELECT "user" FROM devices WHERE id=$1"#, &[&w.device])?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                if user.as_deref() != Some(keepwire_protocol::RECORDS_USER) {
                    pg.execute(
                        "INSERT INTO blocked_devices (device, reason, at_ms) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&w.device, &api::blocked_reason(w), &(w.at_ms as i64)],
                    )?;
                }
            }
            if let Some(why) = why {
                pg.execute(
                    "UPDATE conversations SET suspended=$1 WHERE conv=$2 AND suspended IS NULL",
                    &[&why, &conv],
                )?;
            }
            Ok(())
        })
    }

    fn withheld(&self, conv: Option<&str>) -> Result<Vec<WithheldEntry>, ServerError> {
        all(
            self.pg.query(
                "SELECT conv, seq, device, handshake, reason, at_ms FROM withheld
                 WHERE $1::TEXT IS NULL OR conv = $1::TEXT ORDER BY conv, seq",
                &[&conv],
            )?,
            |r| {
                Ok(WithheldEntry {
                    conv: r.try_get(0)?,
                    seq: u64_at(r, 1)?,
                    device: r.try_get(2)?,
                    handshake: r.try_get(3)?,
                    reason: r.try_get(4)?,
                    at_ms: u64_at(r, 5)?,
                })
            },
        )
    }

    fn blocked_devices(&self) -> Result<Vec<BlockedDevice>, ServerError> {
        all(
            self.pg.query(
                r#"SELECT b.device, COALESCE(d."user", ''), b.reason, b.at_ms FROM blocked_devices b
                   LEFT JOIN devices d ON d.id = b.device ORDER BY b.at_ms"#,
                &[],
            )?,
            |r| {
                Ok(BlockedDevice {
                    device: r.try_get(0)?,
                    user: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    at_ms: u64_at(r, 3)?,
                })
            },
        )
    }

    fn suspended_conversations(&self) -> Result<Vec<SuspendedConversation>, ServerError> {
        all(
            self.pg.query(
                "SELECT conv, suspended FROM conversations WHERE suspended IS NOT NULL ORDER BY conv",
                &[],
            )?,
            |r| {
                Ok(SuspendedConversation {
                    conv: r.try_get(0)?,
                    reason: r.try_get(1)?,
                })
            },
        )
    }

    fn suspension(&self, conv: &str) -> Result<Option<String>, ServerError> {
        Ok(self
            .pg
            .query_opt(
                "SELECT suspended FROM conversations WHERE conv=$1",
                &[&conv],
            )?
            .map(|r| r.try_get::<_, Option<String>>(0))
            .transpose()?
            .flatten())
    }

    fn resume_conversation(
        &mut self,
        conv: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        api::check_resumable(self, conv)?;
        self.pg.transaction(|pg| {
            pg.execute(
                "UPDATE conversations SET suspended=NULL WHERE conv=$1",
                &[&conv],
            )?;
            log_action(pg, now_ms, actor, "resume conversation", conv, reason)
        })
    }

    fn unblock_device(
        &mut self,
        device: &str,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        self.pg.transaction(|pg| {
            let n = pg.execute("DELETE FROM blocked_devices WHERE device=$1", &[&device])?;
            if n == 0 {
                return Err(ServerError::Invalid(format!(
                    "device {device} is not blocked"
                )));
            }
            log_action(pg, now_ms, actor, "unblock device", device, reason)
        })
    }

    fn admin_actions(&self, after: u64) -> Result<Vec<AdminAction>, ServerError> {
        all(
            self.pg.query(
                "SELECT id, at_ms, actor, action, subject, reason FROM admin_actions
                 WHERE id > $1 ORDER BY id LIMIT 100",
                &[&(after as i64)],
            )?,
            |r| {
                Ok(AdminAction {
                    id: u64_at(r, 0)?,
                    at_ms: u64_at(r, 1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    subject: r.try_get(4)?,
                    reason: r.try_get(5)?,
                })
            },
        )
    }
}

fn log_action(
    pg: &Pg,
    at_ms: u64,
    actor: &str,
    action: &str,
    subject: &str,
    reason: &str,
) -> Result<(), ServerError> {
    api::check_reason(reason)?;
    pg.execute(
        "INSERT INTO admin_actions (at_ms, actor, action, subject, reason) VALUES ($1, $2, $3, $4, $5)",
        &[&(at_ms as i64), &actor, &action, &subject, &reason],
    )?;
    Ok(())
}
