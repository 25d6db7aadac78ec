//! The file key provider: a directory of its own, readable by its owner
//! only, holding the checkpoint key (`checkpoint.key`, C2SP note private
//! key format) and the root key (`root.key`, 32 random bytes).
//!
//! It protects against what the audit did — read the data directory, a
//! backup or a snapshot — as long as the key directory is not copied with
//! them: give it a volume (or a host) of its own. Against an administrator
//! who can read any file it does nothing; that is what [`super::Pkcs11Keys`]
//! is for.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use signed_note::{Signer, StandardSigner};
use zeroize::Zeroizing;

use super::{cipher, fresh_key, keys_error, open, seal, KeyProvider, NoteSigner};
use crate::RecordsError;

const CHECKPOINT_KEY: &str = "checkpoint.key";
const ROOT_KEY: &str = "root.key";

pub struct FileKeys {
    dir: PathBuf,
}

impl FileKeys {
    /// The key directory `dir`, made (0700) if missing. One that group or
    /// others may read, or that another user owns, is refused: keys there
    /// are not the records service's alone.
    pub fn open(dir: &Path) -> Result<Self, RecordsError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            tracing::info!(key_dir = %dir.display(), "key directory made");
        }
        check_private(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// A key file's bytes, if it exists; refused if others can read it.
    /// Wiped from memory when dropped: freed heap is reused, and what was
    /// in it can end up in the unused parts of a database page written
    /// later (measured: a key's bytes found in `records/device.db-wal`).
    fn read(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, RecordsError> {
        let path = self.dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        check_private(&path)?;
        Ok(Some(Zeroizing::new(std::fs::read(&path)?)))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RecordsError> {
        keepwire_protocol::files::write_private(&self.dir.join(name), bytes)?;
        keepwire_protocol::files::sync_dir(&self.dir)?;
        Ok(())
    }

    /// The root key, made on first use (`make`); opening never makes one.
    fn root(&self, make: bool) -> Result<chacha20poly1305::XChaCha20Poly1305, RecordsError> {
        let key = Zeroizing::new(match self.read(ROOT_KEY)? {
            Some(b) => <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                RecordsError::Keys(format!(
                    "{} is not a 32-byte key",
                    self.dir.join(ROOT_KEY).display()
                ))
            })?,
            None if make => {
                let k = fresh_key();
                self.write(ROOT_KEY, &k)?;
                k
            }
            None => {
                return Err(RecordsError::Keys(format!(
                    "{} is missing: the wrong key directory, or a new one — restore the archive \
                     key from escrow (`keepwire records key restore`)",
                    self.dir.join(ROOT_KEY).display()
                )))
            }
        });
        Ok(cipher(&key))
    }
}

/// Refuse `path` unless only its owner — this process's user — can read it.
fn check_private(path: &Path) -> Result<(), RecordsError> {
    let m = std::fs::metadata(path)?;
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(RecordsError::Keys(format!(
            "{} is readable by group or others (mode {mode:o}): keys must be the records \
             service's alone (chmod {} {})",
            path.display(),
            if m.is_dir() { "700" } else { "600" },
            path.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(RecordsError::Keys(format!(
            "{} belongs to user {}, not to this process's user {me}",
            path.display(),
            m.uid()
        )));
    }
    Ok(())
}

/// The checkpoint key, signing with AWS-LC (deterministic Ed25519: the
/// same signatures `signed_note`'s own signer makes; in a `fips` build,
/// made by the FIPS module).
struct FileSigner {
    name: String,
    id: u32,
    key: aws_lc_rs::signature::Ed25519KeyPair,
    verifier_key: String,
}

impl Signer for FileSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        Ok(self.key.sign(msg).as_ref().to_vec())
    }
}

impl NoteSigner for FileSigner {
    fn verifier_key(&self) -> String {
        self.verifier_key.clone()
    }
}

/// The signer of the C2SP Ed25519 note private key `skey`.
fn file_signer(skey: &str) -> Result<FileSigner, RecordsError> {
    let (parsed, verifier_key) = verifier_of(skey)?;
    let raw = private_key_bytes(skey)?;
    let key =
        aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(raw.get(1..).unwrap_or_default())
            .map_err(|e| keys_error(format!("the checkpoint key: {e}")))?;
    Ok(FileSigner {
        name: parsed.name().to_string(),
        id: parsed.key_id(),
        key,
        verifier_key,
    })
}

/// The verifier key of a C2SP Ed25519 note private key.
pub(super) fn verifier_of(skey: &str) -> Result<(StandardSigner, String), RecordsError> {
    let signer = StandardSigner::new(skey).map_err(keys_error)?;
    let raw = private_key_bytes(skey)?;
    let seed: [u8; 32] = raw
        .get(1..)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| keys_error("the checkpoint key is not an Ed25519 key"))?;
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let vkey = signed_note::new_ed25519_verifier_key(signer.name(), &public);
    Ok((signer, vkey))
}

/// The key bytes of a C2SP note private key, `PRIVATE+KEY+name+id+base64`
/// (base64 may itself hold `+`).
pub(super) fn private_key_bytes(skey: &str) -> Result<Zeroizing<Vec<u8>>, RecordsError> {
    let b64 = skey
        .splitn(5, '+')
        .nth(4)
        .ok_or_else(|| keys_error("malformed checkpoint key"))?;
    keepwire_protocol::b64::decode(b64)
        .map(Zeroizing::new)
        .map_err(keys_error)
}

/// A fresh checkpoint key's name: the log's origin line.
pub(super) fn fresh_log_name() -> String {
    format!("keepwire.archive/{}", hex::encode(&fresh_key()[..8]))
}

impl KeyProvider for FileKeys {
    fn describe(&self) -> String {
        format!("key directory {}", self.dir.display())
    }

    fn checkpoint_signer(&self) -> Result<Box<dyn NoteSigner>, RecordsError> {
        let skey = match self.read(CHECKPOINT_KEY)? {
            Some(b) => b,
            None => {
                let (skey, _) =
                    signed_note::generate_key(&mut rand::rngs::OsRng, &fresh_log_name());
                let skey = Zeroizing::new(skey.into_bytes());
                self.write(CHECKPOINT_KEY, &skey)?;
                skey
            }
        };
        let text = std::str::from_utf8(&skey).map_err(keys_error)?;
        Ok(Box::new(file_signer(text.trim())?))
    }

    fn has_checkpoint_key(&self) -> Result<bool, RecordsError> {
        Ok(self.dir.join(CHECKPOINT_KEY).exists())
    }

    fn import_checkpoint_key(&self, skey: &str) -> Result<(), RecordsError> {
        verifier_of(skey)?;
        if self.has_checkpoint_key()? {
            return Err(RecordsError::Keys(format!(
                "{} already holds a checkpoint key",
                self.describe()
            )));
        }
        self.write(CHECKPOINT_KEY, skey.as_bytes())
    }

    fn export_checkpoint_key(&self) -> Result<Option<String>, RecordsError> {
        self.read(CHECKPOINT_KEY)?
            .map(|b| std::str::from_utf8(&b).map(|s| s.trim().to_string()))
            .transpose()
            .map_err(keys_error)
    }

    fn wrap(&self, purpose: &str, secret: &[u8]) -> Result<Vec<u8>, RecordsError> {
        seal(&self.root(true)?, purpose.as_bytes(), secret)
    }

    fn unwrap(&self, purpose: &str, wrapped: &[u8]) -> Result<Vec<u8>, RecordsError> {
        open(&self.root(false)?, purpose.as_bytes(), wrapped, purpose)
    }
}
