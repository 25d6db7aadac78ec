//! Who may do what. A device proves itself once with a one-time
//! enrolment code and its MLS signature key, and on every connection by
//! signing the connection's challenge; a device may hold only so many
//! connections. Its standing to send is checked on each append: the
//! records notice acknowledged, not blocked after a capture failure.

use keepwire_protocol::{ErrorCode, ProtocolError, ServerBody, AUTH_CONTEXT, RECORDS_USER};
use mls_rs::CipherSuiteProvider;
use mls_rs::CryptoProvider;
use mls_rs_crypto_awslc::AwsLcCryptoProvider;

use super::{internal, refuse, Core, Session};
use crate::store::DeviceRow;
use crate::ServerError;

impl Core {
    pub(super) fn verify_challenge(
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

    pub(super) fn enroll(
        &mut self,
        session: &mut Session,
        code: &str,
        key: &[u8],
        signature: &[u8],
    ) -> Result<ServerBody, ProtocolError> {
        self.verify_challenge(session, key, signature)?;
        let row = self
            .store
            .redeem_code(code, key, self.now_ms)
            .map_err(|e| match e {
                ServerError::Invalid(m) => refuse(ErrorCode::InvalidEnrollmentCode, m),
                e => internal(e),
            })?;
        tracing::info!(user = %row.user, device = %row.device_id, "device enrolled");
        self.authenticated(session, row)
    }

    pub(super) fn auth(
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

    pub(super) fn authenticated(
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
        if row.user == RECORDS_USER {
            self.records_connected += 1;
            if self.records_connected == 1 {
                tracing::info!(
                    device = %row.device_id,
                    backlog = self.backlog,
                    "records service connected"
                );
            }
        }
        let body = ServerBody::Authenticated {
            user: row.user.clone(),
            device_id: row.device_id.clone(),
            notice_acknowledged: notice || row.user == RECORDS_USER,
            policy: self.policy()?,
        };
        session.device = Some(row);
        Ok(body)
    }

    pub(super) fn check_sender(&self, device: &DeviceRow) -> Result<(), ProtocolError> {
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
}

pub(super) fn blocked_message(why: &str) -> String {
    format!("this device is blocked until an administrator unblocks it: {why}")
}
