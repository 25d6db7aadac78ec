//! Key packages: uploaded by devices (each checked to be the uploader's,
//! in the agency's cipher suite), claimed by a member about to add people
//! (distinct users it may add, capped), and remembered by reference once
//! handed out, so a commit can add only what this server handed out for
//! that device.

use keepwire_protocol::{ClaimedKeyPackage, ErrorCode, ProtocolError, ServerBody, RECORDS_USER};
use mls_rs::CryptoProvider;
use mls_rs_crypto_awslc::AwsLcCryptoProvider;

use super::{internal, refuse, Core};
use crate::roster::{self};
use crate::store::DeviceRow;
use crate::ServerError;

impl Core {
    pub(super) fn check_key_package(
        &self,
        kp: &[u8],
        device: &DeviceRow,
    ) -> Result<(), ProtocolError> {
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

    pub(super) fn claim(
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
    pub(super) fn hand_out(&self, device: &str, kp: &[u8]) -> Result<(), ProtocolError> {
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
            .hand_out(device, &r, self.now_ms)
            .map_err(internal)
    }
}
