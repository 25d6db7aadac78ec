//! Users, enrolment codes, devices, the records notice and settings in
//! PostgreSQL.

use super::*;

impl AccountStore for PgStore {
    fn meta(&self, k: &str) -> Result<Option<String>, ServerError> {
        self.pg
            .query_opt("SELECT v FROM meta WHERE k=$1", &[&k])?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
    }

    fn set_meta(&self, k: &str, v: &str) -> Result<(), ServerError> {
        self.pg.execute(
            "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&k, &v],
        )?;
        Ok(())
    }

    fn add_user(
        &self,
        name: &str,
        display: &str,
        category: &str,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        insert_user(&self.pg, name, display, category, now_ms)
    }

    fn add_users_with_codes(
        &mut self,
        names: &[String],
        category: &str,
        now_ms: u64,
    ) -> Result<Vec<String>, ServerError> {
        self.pg.transaction(|pg| {
            let mut codes = Vec::with_capacity(names.len());
            for name in names {
                insert_user(pg, name, name, category, now_ms)?;
                codes.push(insert_code(pg, name, now_ms)?);
            }
            Ok(codes)
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRow>, ServerError> {
        self.pg
            .query_opt(
                "SELECT name, display, category, notice_acked_ms FROM users WHERE name=$1",
                &[&name],
            )?
            .map(|r| user_row(&r))
            .transpose()
    }

    fn users(&self) -> Result<Vec<UserRow>, ServerError> {
        all(
            self.pg.query(
                "SELECT name, display, category, notice_acked_ms FROM users ORDER BY name",
                &[],
            )?,
            user_row,
        )
    }

    fn new_enrolment_code(&self, user: &str, now_ms: u64) -> Result<String, ServerError> {
        if self.user(user)?.is_none() {
            return Err(ServerError::Invalid(format!("no user named {user}")));
        }
        insert_code(&self.pg, user, now_ms)
    }

    fn redeem_code(
        &mut self,
        code: &str,
        signature_key: &[u8],
        now_ms: u64,
    ) -> Result<DeviceRow, ServerError> {
        let code = api::code_digest(code);
        self.pg.transaction(|pg| {
            let row = pg
                .query_opt(
                    r#"SELECT "user", expires_ms, used_ms FROM enrolment_codes WHERE code=$1 FOR UPDATE"#,
                    &[&code],
                )?
                .map(|r| -> Result<_, ServerError> {
                    Ok((r.try_get(0)?, u64_at(&r, 1)?, opt_u64_at(&r, 2)?))
                })
                .transpose()?;
            let user = api::check_code(row, now_ms)?;
            let device_id = api::new_device_id();
            pg.execute(
                "UPDATE enrolment_codes SET used_ms=$1 WHERE code=$2",
                &[&(now_ms as i64), &code],
            )?;
            let n = pg.execute(
                r#"INSERT INTO devices (id, "user", signature_key, created_ms) VALUES ($1, $2, $3, $4)
                   ON CONFLICT DO NOTHING"#,
                &[&device_id, &user, &signature_key, &(now_ms as i64)],
            )?;
            if n == 0 {
                return Err(api::already_enrolled());
            }
            Ok(DeviceRow {
                device_id,
                user,
                signature_key: signature_key.to_vec(),
                revoked: false,
                blocked: None,
            })
        })
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError> {
        self.pg
            .query_opt(
                r#"SELECT d.id, d."user", d.signature_key, d.revoked_ms, b.reason FROM devices d
                   LEFT JOIN blocked_devices b ON b.device = d.id WHERE d.id=$1"#,
                &[&id],
            )?
            .map(|r| device_row(&r))
            .transpose()
    }

    fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRow>, ServerError> {
        all(
            self.pg.query(
                r#"SELECT d.id, d."user", d.signature_key, d.revoked_ms, b.reason FROM devices d
                   LEFT JOIN blocked_devices b ON b.device = d.id
                   WHERE $1::TEXT IS NULL OR d."user" = $1::TEXT ORDER BY d."user", d.created_ms"#,
                &[&user],
            )?,
            device_row,
        )
    }

    fn revoke_device(&self, id: &str, now_ms: u64) -> Result<bool, ServerError> {
        Ok(self.pg.execute(
            "UPDATE devices SET revoked_ms=$1 WHERE id=$2 AND revoked_ms IS NULL",
            &[&(now_ms as i64), &id],
        )? > 0)
    }

    fn revoked_devices(&self) -> Result<Vec<String>, ServerError> {
        all(
            self.pg
                .query("SELECT id FROM devices WHERE revoked_ms IS NOT NULL", &[])?,
            |r| Ok(r.try_get(0)?),
        )
    }

    fn acknowledge_notice(&self, user: &str, now_ms: u64) -> Result<(), ServerError> {
        self.pg.execute(
            "UPDATE users SET notice_acked_ms=$1 WHERE name=$2 AND notice_acked_ms IS NULL",
            &[&(now_ms as i64), &user],
        )?;
        Ok(())
    }
}

fn user_row(r: &Row) -> Result<UserRow, ServerError> {
    Ok(UserRow {
        name: r.try_get(0)?,
        display: r.try_get(1)?,
        category: r.try_get(2)?,
        notice_acknowledged_at_ms: opt_u64_at(r, 3)?,
    })
}

fn device_row(r: &Row) -> Result<DeviceRow, ServerError> {
    Ok(DeviceRow {
        device_id: r.try_get(0)?,
        user: r.try_get(1)?,
        signature_key: r.try_get(2)?,
        revoked: opt_u64_at(r, 3)?.is_some(),
        blocked: r.try_get(4)?,
    })
}

fn insert_user(
    pg: &Pg,
    name: &str,
    display: &str,
    category: &str,
    now_ms: u64,
) -> Result<(), ServerError> {
    api::check_user_name(name)?;
    let n = pg.execute(
        "INSERT INTO users (name, display, category, created_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[&name, &display, &category, &(now_ms as i64)],
    )?;
    if n == 0 {
        return Err(ServerError::Invalid(format!("user {name} already exists")));
    }
    Ok(())
}

fn insert_code(pg: &Pg, user: &str, now_ms: u64) -> Result<String, ServerError> {
    let (code, expires_ms) = api::new_code(now_ms);
    pg.execute(
        r#"INSERT INTO enrolment_codes (code, "user", expires_ms) VALUES ($1, $2, $3)"#,
        &[&api::code_digest(&code), &user, &(expires_ms as i64)],
    )?;
    Ok(code)
}
