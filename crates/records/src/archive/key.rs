//! The archive key: the software key that wraps every record's data key,
//! itself kept in the archive's settings sealed by the key provider's root
//! key ([`crate::keys`]).
//!
//! The archive names its key by a public id (`key_id`, a hash), so a
//! wrong key is refused by name, never used to produce garbage. Rotation
//! re-wraps every data key and stores the new sealed key in the same
//! transaction: a crash leaves the old key and old wrappings, or the new
//! ones, never a mix. Escrow splits the key into shares
//! ([`crate::keys::escrow`]); restore takes the shares back and seals the
//! key under the (new) provider.

use std::path::Path;

use chacha20poly1305::XChaCha20Poly1305;

use super::store::ArchiveStore;
use crate::keys::escrow::Escrowed;
use crate::keys::{self, KeyProvider};
use crate::RecordsError;

/// The setting naming the archive key that wraps the data keys.
const KEY_ID: &str = "key_id";
/// The setting holding the archive key sealed by the provider (base64).
const SEALED: &str = "archive_key";
/// What the provider seals it for.
const PURPOSE: &str = "keepwire archive key";

/// Where an archive made before key providers kept its key, and the key
/// an interrupted rotation was about to install.
pub const LEGACY_KEY: &str = "archive.key";
const LEGACY_NEXT: &str = "archive.key.next";

pub(crate) struct ArchiveKey {
    raw: [u8; 32],
    pub(crate) cipher: XChaCha20Poly1305,
    pub(crate) id: String,
}

impl ArchiveKey {
    fn new(raw: [u8; 32]) -> Self {
        Self {
            cipher: keys::cipher(&raw),
            id: key_id(&raw),
            raw,
        }
    }

    pub(crate) fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// The two settings that hold and name this key — the sealed key
    /// first, so that a crash between two writes never leaves an archive
    /// naming a key it does not hold. The seal is opened once before it is
    /// used: a provider that seals what it cannot open again (an HSM that
    /// changed the IV, say) fails here, not at the next start.
    pub(crate) fn settings(
        &self,
        provider: &dyn KeyProvider,
    ) -> Result<[(&'static str, String); 2], RecordsError> {
        let sealed = provider.wrap(PURPOSE, &self.raw)?;
        if provider.unwrap(PURPOSE, &sealed)? != self.raw {
            return Err(RecordsError::Keys(format!(
                "{} sealed the archive key into something that does not open back to it",
                provider.describe()
            )));
        }
        Ok([
            (SEALED, keepwire_protocol::b64::encode(&sealed)),
            (KEY_ID, self.id.clone()),
        ])
    }

    pub(crate) fn fresh() -> Self {
        Self::new(keys::fresh_key())
    }
}

/// A short public name for an archive key (not a secret).
pub fn key_id(key: &[u8; 32]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest([b"keepwire-archive-key:".as_slice(), key].concat())[..8])
}

fn store_settings(
    store: &dyn ArchiveStore,
    settings: &[(&str, String)],
) -> Result<(), RecordsError> {
    for (k, v) in settings {
        store.set_meta(k, v)?;
    }
    Ok(())
}

/// The archive's key: opened with the provider, or made on first use.
/// A key an archive made before key providers kept in `dir` is sealed
/// into the archive and its file removed.
pub(crate) fn load(
    dir: &Path,
    store: &dyn ArchiveStore,
    provider: &dyn KeyProvider,
) -> Result<ArchiveKey, RecordsError> {
    let expected = store.meta(KEY_ID)?;
    if let Some(sealed) = store.meta(SEALED)? {
        let bytes = keepwire_protocol::b64::decode(&sealed)
            .map_err(|_| RecordsError::Keys("the sealed archive key is not base64".into()))?;
        let raw = provider.unwrap(PURPOSE, &bytes).map_err(|e| {
            RecordsError::Keys(format!(
                "the archive key does not open with {}: {e}",
                provider.describe()
            ))
        })?;
        let raw: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| RecordsError::Keys("the archive key has the wrong length".into()))?;
        let key = ArchiveKey::new(raw);
        match expected {
            // A crash between the two writes of a first start.
            None => store.set_meta(KEY_ID, &key.id)?,
            Some(id) if id == key.id => {}
            Some(id) => {
                return Err(RecordsError::Keys(format!(
                    "the archive's data keys are wrapped by archive key {id}, but its sealed key \
                     is {}",
                    key.id
                )))
            }
        }
        // Legacy copies left by an interrupted move go now.
        keys::remove_legacy(&dir.join(LEGACY_NEXT))?;
        keys::remove_legacy(&dir.join(LEGACY_KEY))?;
        return Ok(key);
    }
    let key = match (legacy(dir, expected.as_deref())?, &expected) {
        (Some(k), _) => k,
        (None, None) => ArchiveKey::fresh(),
        (None, Some(id)) => {
            return Err(RecordsError::Keys(format!(
                "the archive's data keys are wrapped by archive key {id}, which is in neither \
                 the archive nor {}: restore it from escrow (`keepwire records key restore`)",
                dir.join(LEGACY_KEY).display()
            )))
        }
    };
    // Sealed into the archive first; only then does the file go.
    store_settings(store, &key.settings(provider)?)?;
    if dir.join(LEGACY_KEY).exists() || dir.join(LEGACY_NEXT).exists() {
        tracing::warn!(
            "the archive key moved from the data directory into the archive, sealed by {}; older \
             backups of the data directory still hold it: rotate it (keepwire records rotate-key) \
             and escrow the new one",
            provider.describe()
        );
    }
    keys::remove_legacy(&dir.join(LEGACY_NEXT))?;
    keys::remove_legacy(&dir.join(LEGACY_KEY))?;
    Ok(key)
}

/// The key a pre-provider archive kept in `dir`: `archive.key`, or the
/// `archive.key.next` of a rotation a crash interrupted, whichever the
/// archive names.
fn legacy(dir: &Path, expected: Option<&str>) -> Result<Option<ArchiveKey>, RecordsError> {
    let current = read_key(&dir.join(LEGACY_KEY))?.map(ArchiveKey::new);
    let Some(id) = expected else {
        return Ok(current);
    };
    if let Some(k) = current.filter(|k| k.id == id) {
        return Ok(Some(k));
    }
    match read_key(&dir.join(LEGACY_NEXT))?.map(ArchiveKey::new) {
        Some(k) if k.id == id => Ok(Some(k)),
        _ if dir.join(LEGACY_KEY).exists() => Err(RecordsError::Keys(format!(
            "the archive's data keys are wrapped by archive key {id}, but {} holds another",
            dir.join(LEGACY_KEY).display()
        ))),
        _ => Ok(None),
    }
}

fn read_key(path: &Path) -> Result<Option<[u8; 32]>, RecordsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b.as_slice().try_into().map_err(|_| {
            RecordsError::Keys(format!("{} is not a 32-byte key", path.display()))
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The archive key the escrow `shares` recover, sealed under `provider`
/// in place of whatever the archive held, and what else the escrow held.
/// Refused unless it is the key the archive's data keys are wrapped by.
pub(crate) fn restore(
    store: &dyn ArchiveStore,
    provider: &dyn KeyProvider,
    shares: &[String],
) -> Result<(ArchiveKey, Escrowed), RecordsError> {
    let expected = store.meta(KEY_ID)?.ok_or_else(|| {
        RecordsError::Keys("this archive has no archive key yet: nothing to restore".into())
    })?;
    let (secrets, id) = keys::escrow::recover(shares, key_id)?;
    if id != expected {
        return Err(RecordsError::Keys(format!(
            "the shares are of archive key {id}, but this archive's data keys are wrapped by {expected}"
        )));
    }
    let key = ArchiveKey::new(secrets.archive_key()?);
    store_settings(store, &key.settings(provider)?)?;
    Ok((key, secrets))
}
