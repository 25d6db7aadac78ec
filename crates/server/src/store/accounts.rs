//! Users, enrolment codes, devices, the records notice, policy and settings.

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};

use super::*;
use crate::ServerError;

impl Store {
    pub fn meta(&self, k: &str) -> Result<Option<String>, ServerError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k=?1")?
            .query_row(params![k], |r| r.get(0))
            .optional()?)
    }

    /// The agency's messaging policy. Unset settings take their defaults
    /// (a week's longest timer, guests allowed); an unreadable one is an
    /// error, never a default (a failing read must not let guests in).
    pub fn policy(&self) -> Result<keepwire_protocol::Policy, ServerError> {
        let max_timer_secs = match self.meta(POLICY_MAX_TIMER)? {
            None => 7 * 24 * 3600,
            Some(v) => v.parse().map_err(|_| {
                ServerError::Invalid(format!(
                    "policy: {POLICY_MAX_TIMER} is {v:?}, not a number of seconds"
                ))
            })?,
        };
        let guests_allowed = match self.meta(POLICY_GUESTS)?.as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(ServerError::Invalid(format!(
                    "policy: {POLICY_GUESTS} is {v:?}, not true or false"
                )))
            }
        };
        Ok(keepwire_protocol::Policy {
            max_timer_secs,
            guests_allowed,
        })
    }

    /// Change the messaging policy (each setting left as it is when None).
    pub fn set_policy(
        &self,
        max_timer_secs: Option<u64>,
        guests_allowed: Option<bool>,
    ) -> Result<(), ServerError> {
        if let Some(t) = max_timer_secs {
            self.set_meta(POLICY_MAX_TIMER, &t.to_string())?;
        }
        if let Some(g) = guests_allowed {
            self.set_meta(POLICY_GUESTS, &g.to_string())?;
        }
        Ok(())
    }

    pub fn set_meta(&self, k: &str, v: &str) -> Result<(), ServerError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")?
            .execute(params![k, v])?;
        Ok(())
    }

    pub fn add_user(
        &self,
        name: &str,
        display: &str,
        category: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        insert_user(&self.conn, name, display, category, now_ms)
    }

    /// Provision many users at once, each with a fresh enrolment code, in
    /// one transaction (one durable write instead of two per user): for
    /// bulk onboarding and the load generator. All or none are added.
    pub fn add_users_with_codes(
        &mut self,
        names: &[String],
        category: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, ServerError> {
        let tx = self.conn.transaction()?;
        let mut codes = Vec::with_capacity(names.len());
        for name in names {
            insert_user(&tx, name, name, category, now_ms)?;
            codes.push(insert_code(&tx, name, now_ms)?);
        }
        tx.commit()?;
        Ok(codes)
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRow>, ServerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT name, display, category, notice_acked_ms FROM users WHERE name=?1",
            )?
            .query_row(params![name], user_row)
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<UserRow>, ServerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, display, category, notice_acked_ms FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], user_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A fresh one-time enrolment code for `user`, valid for 24 hours.
    pub fn new_enrolment_code(&self, user: &str, now_ms: u64) -> Result<String, ServerError> {
        if self.user(user)?.is_none() {
            return Err(ServerError::Invalid(format!("no user named {user}")));
        }
        insert_code(&self.conn, user, now_ms)
    }

    /// Redeem a code: creates the device and burns the code, atomically.
    pub fn redeem_code(
        &mut self,
        code: &str,
        signature_key: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRow, ServerError> {
        let tx = self.conn.transaction()?;
        let row: Option<(String, i64, Option<i64>)> = tx
            .prepare_cached("SELECT user, expires_ms, used_ms FROM enrolment_codes WHERE code=?1")?
            .query_row(params![code], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let user = match row {
            None => return Err(ServerError::Invalid("enrolment code is not known".into())),
            Some((_, _, Some(_))) => {
                return Err(ServerError::Invalid(
                    "enrolment code was already used".into(),
                ))
            }
            Some((_, expires, None)) if (expires as u64) < now_ms => {
                return Err(ServerError::Invalid(
                    "enrolment code has expired (codes are valid for 24 hours)".into(),
                ))
            }
            Some((user, _, None)) => user,
        };
        let mut id = [0u8; 8];
        rand::thread_rng().fill(&mut id);
        let device_id = hex::encode(id);
        tx.prepare_cached("UPDATE enrolment_codes SET used_ms=?1 WHERE code=?2")?
            .execute(params![now_ms as i64, code])?;
        let n = tx.prepare_cached("INSERT OR IGNORE INTO devices (id, user, signature_key, created_ms) VALUES (?1, ?2, ?3, ?4)")?.execute(params![device_id, user, signature_key, now_ms as i64],
        )?;
        if n == 0 {
            return Err(ServerError::Invalid(
                "this signature key is already enrolled".into(),
            ));
        }
        tx.commit()?;
        Ok(DeviceRow {
            device_id,
            user,
            signature_key: signature_key.to_vec(),
            revoked: false,
            blocked: None,
        })
    }

    pub fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT d.id, d.user, d.signature_key, d.revoked_ms, b.reason FROM devices d
                 LEFT JOIN blocked_devices b ON b.device = d.id WHERE d.id=?1",
            )?
            .query_row(params![id], device_row)
            .optional()?)
    }

    pub fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, ServerError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.id, d.user, d.signature_key, d.revoked_ms, b.reason FROM devices d
             LEFT JOIN blocked_devices b ON b.device = d.id
             WHERE ?1 IS NULL OR d.user=?1 ORDER BY d.user, d.created_ms",
        )?;
        let rows = stmt.query_map(params![user], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, ServerError> {
        Ok(self
            .conn
            .prepare_cached("UPDATE devices SET revoked_ms=?1 WHERE id=?2 AND revoked_ms IS NULL")?
            .execute(params![now_ms as i64, id])?
            > 0)
    }

    pub fn acknowledge_notice(&self, user: &str, now_ms: u64) -> Result<(), ServerError> {
        self.conn
            .prepare_cached(
                "UPDATE users SET notice_acked_ms=?1 WHERE name=?2 AND notice_acked_ms IS NULL",
            )?
            .execute(params![now_ms as i64, user])?;
        Ok(())
    }

    pub fn revoked_devices(&self) -> Result<Vec<String>, ServerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM devices WHERE revoked_ms IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

pub(super) const POLICY_MAX_TIMER: &str = "policy.max_timer_secs";

pub(super) const POLICY_GUESTS: &str = "policy.guests_allowed";

pub(super) fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        display: r.get(1)?,
        category: r.get(2)?,
        notice_acknowledged_at_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
    })
}

pub(super) fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        device_id: r.get(0)?,
        user: r.get(1)?,
        signature_key: r.get(2)?,
        revoked: r.get::<_, Option<i64>>(3)?.is_some(),
        blocked: r.get(4)?,
    })
}

pub(super) fn insert_user(
    conn: &Connection,
    name: &str,
    display: &str,
    category: &str,
    now_ms: u64,
) -> Result<(), ServerError> {
    if name.is_empty()
        || name.contains('/')
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ServerError::Invalid(format!(
            "user name {name:?} must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"
        )));
    }
    let n = conn.prepare_cached("INSERT OR IGNORE INTO users (name, display, category, created_ms) VALUES (?1, ?2, ?3, ?4)")?.execute(params![name, display, category, now_ms as i64],
    )?;
    if n == 0 {
        return Err(ServerError::Invalid(format!("user {name} already exists")));
    }
    Ok(())
}

/// A one-time enrolment code for an existing `user`, valid for 24 hours.
pub(super) fn insert_code(
    conn: &Connection,
    user: &str,
    now_ms: u64,
) -> Result<String, ServerError> {
    // 16 characters from a 32-symbol alphabet without look-alikes: 80 bits.
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    let raw: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let code = format!(
        "{}-{}-{}-{}",
        &raw[0..4],
        &raw[4..8],
        &raw[8..12],
        &raw[12..16]
    );
    conn.prepare_cached(
        "INSERT INTO enrolment_codes (code, user, expires_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![code, user, (now_ms + ENROLMENT_CODE_TTL_MS) as i64])?;
    Ok(code)
}
