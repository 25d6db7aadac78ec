//! Where the records service's secrets live: with a key provider, never
//! in the data directory.
//!
//! Three secrets guard the archive. The **checkpoint key** signs the log:
//! whoever holds it can sign a rewritten history. The **archive key**
//! wraps every record's data key: whoever holds it reads every record, and
//! losing it destroys them all. The **records device's store secret**
//! unlocks the MLS state with which the records member decrypts. An
//! independent audit forged the archive from a copy of the data directory,
//! because all three lay there beside the data; now none does. A copy of
//! the data directory — a backup, a snapshot, a read as the database's
//! owner — yields ciphertext and public keys, never the means to read or
//! to forge.
//!
//! A [`KeyProvider`] holds two keys that never leave it: the checkpoint
//! key (it signs inside) and a *root key* (it seals and opens small
//! secrets inside). The archive key and the device secret are ordinary
//! software keys stored *sealed by the root key* — the archive key in the
//! archive's settings, the device secret beside the device store — so
//! capture seals each record's data key in memory and asks the provider
//! nothing per record: an HSM is called once at start and once per
//! checkpoint (about one a second), which keeps capture at the file
//! provider's rate (docs/benchmarks.md).
//!
//! Two providers: [`FileKeys`], a directory of its own (`--key-dir`,
//! owner-only, refused when group or others can read it), and
//! [`Pkcs11Keys`], an HSM through PKCS#11 (tested against SoftHSM2). The
//! archive key is escrowed as an M-of-N split ([`escrow`]), so that losing
//! the provider does not destroy the records.

use std::path::Path;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::RecordsError;

pub mod escrow;
mod file;
mod pkcs11;
pub mod softhsm;
pub use file::FileKeys;
pub use pkcs11::{Pkcs11Config, Pkcs11Keys};

/// A holder of the checkpoint key and of the root key.
pub trait KeyProvider: Send + Sync {
    /// What it is, for logs and errors (never a secret).
    fn describe(&self) -> String;

    /// The checkpoint key's signer, the key made on first use.
    fn checkpoint_signer(&self) -> Result<Box<dyn NoteSigner>, RecordsError>;

    /// Whether it holds a checkpoint key (without making one).
    fn has_checkpoint_key(&self) -> Result<bool, RecordsError>;

    /// Take in a checkpoint key made elsewhere (a C2SP note private key):
    /// the one an archive made before key providers kept in its records
    /// directory.
    fn import_checkpoint_key(&self, skey: &str) -> Result<(), RecordsError>;

    /// The checkpoint key, for escrow, where it may leave the provider (a
    /// key directory); `None` where it never does (an HSM).
    fn export_checkpoint_key(&self) -> Result<Option<String>, RecordsError>;

    /// Seal `secret` under the root key, bound to `purpose`.
    fn wrap(&self, purpose: &str, secret: &[u8]) -> Result<Vec<u8>, RecordsError>;

    /// Open what [`KeyProvider::wrap`] sealed for the same `purpose`.
    fn unwrap(&self, purpose: &str, wrapped: &[u8]) -> Result<Vec<u8>, RecordsError>;
}

/// A checkpoint signer: a C2SP signed-note signer that also names its
/// verifier key (`name+id+base64`, what auditors and devices are given).
pub trait NoteSigner: signed_note::Signer + Send + Sync {
    fn verifier_key(&self) -> String;
}

/// The verifier key (`name+id+base64`) of a C2SP note private key.
pub fn verifier_key_of(skey: &str) -> Result<String, RecordsError> {
    Ok(file::verifier_of(skey)?.1)
}

fn keys_error(e: impl std::fmt::Display) -> RecordsError {
    RecordsError::Keys(e.to_string())
}

/// Seal `msg` with XChaCha20-Poly1305 under `cipher`, bound to `aad`: a
/// random 24-byte nonce, then the ciphertext and tag.
pub(crate) fn seal(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    msg: &[u8],
) -> Result<Vec<u8>, RecordsError> {
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| RecordsError::Archive("encryption failed".into()))?;
    Ok([nonce.as_slice(), &ct].concat())
}

/// Open what [`seal`] made; `what` names it in the error.
pub(crate) fn open(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Vec<u8>, RecordsError> {
    if sealed.len() < 24 {
        return Err(RecordsError::Archive(format!("{what} is truncated")));
    }
    cipher
        .decrypt(
            XNonce::from_slice(&sealed[..24]),
            Payload {
                msg: &sealed[24..],
                aad,
            },
        )
        .map_err(|_| {
            RecordsError::Archive(format!(
                "{what} failed authentication: altered, or wrong key"
            ))
        })
}

/// A fresh 32-byte secret (`rand`'s thread RNG, a CSPRNG seeded by the OS).
pub fn fresh_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    k
}

/// A cipher under a 32-byte key.
pub(crate) fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// The records device's store secret, sealed by the provider's root key in
/// `device.sealed` beside the device store; made on first use.
///
/// A records directory made before key providers kept it in plain text
/// (`passphrase`): it is sealed and that file removed.
pub fn device_secret(dir: &Path, keys: &dyn KeyProvider) -> Result<String, RecordsError> {
    let sealed = dir.join(DEVICE_SEALED);
    match std::fs::read(&sealed) {
        Ok(w) => {
            let plain = keys.unwrap(DEVICE_PURPOSE, &w).map_err(|e| {
                RecordsError::Keys(format!(
                    "{} does not open with {}: {e}",
                    sealed.display(),
                    keys.describe()
                ))
            })?;
            return String::from_utf8(plain).map_err(keys_error);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let legacy = dir.join(LEGACY_PASSPHRASE);
    let secret = match std::fs::read_to_string(&legacy) {
        Ok(p) => p.trim().to_string(),
        // A device whose secret is gone is not given a new one: its store
        // would not open with it, and the operator would be told about a
        // passphrase instead of what happened.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound && keepwire_client::Device::exists(dir) =>
        {
            return Err(RecordsError::Keys(format!(
                "the records device in {} has no sealed secret ({DEVICE_SEALED} is missing): \
                 restore it from escrow (`keepwire records key restore`)",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            keepwire_protocol::b64::encode(&fresh_key())
        }
        Err(e) => return Err(e.into()),
    };
    seal_device_secret(dir, keys, &secret)?;
    if legacy.exists() {
        tracing::warn!(
            "the records device's secret moved from the data directory into {}; older backups \
             of the data directory still hold it",
            keys.describe()
        );
    }
    remove_legacy(&legacy)?;
    Ok(secret)
}

/// Seal the records device's store secret under `keys` into `dir` (made
/// anew, or restored from escrow onto a new provider).
pub fn seal_device_secret(
    dir: &Path,
    keys: &dyn KeyProvider,
    secret: &str,
) -> Result<(), RecordsError> {
    std::fs::create_dir_all(dir)?;
    keepwire_protocol::files::replace_private(
        &dir.join(DEVICE_SEALED),
        &keys.wrap(DEVICE_PURPOSE, secret.as_bytes())?,
    )?;
    Ok(())
}

const DEVICE_PURPOSE: &str = "keepwire records device store";

/// The sealed records device secret's file.
pub const DEVICE_SEALED: &str = "device.sealed";
/// Where a records directory made before key providers kept it.
const LEGACY_PASSPHRASE: &str = "passphrase";

/// Remove a secret that was moved to the provider, durably.
pub(crate) fn remove_legacy(path: &Path) -> Result<(), RecordsError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "moved to the key provider; removed from the data directory");
            if let Some(dir) = path.parent() {
                keepwire_protocol::files::sync_dir(dir)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
