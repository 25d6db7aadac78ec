//! Signed checkpoints of the transparency log: C2SP tlog-checkpoint text
//! (origin, tree size, root hash) in a C2SP signed note with an Ed25519
//! key that only the key provider holds ([`crate::keys`]).
//!
//! Every checkpoint issued is kept, so `verify` can show that each one is
//! a prefix of today's tree: a rewritten history shows up as a fork.

use std::path::Path;

use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::Hash;

use crate::keys::{KeyProvider, NoteSigner};
use crate::RecordsError;

/// The public half, in the records directory (what auditors are given;
/// its presence also shows an archive was kept there). An archive made
/// before key providers kept the private key beside it, in `KEY_FILE`.
pub const PUB_FILE: &str = "checkpoint.pub";
pub const KEY_FILE: &str = "checkpoint.key";

/// The archive's checkpoint signer.
pub struct Notary {
    signer: Box<dyn NoteSigner>,
    /// The verifier key, `name+id+base64` (what auditors are given).
    pub verifier_key: String,
}

impl Notary {
    /// The checkpoint key of `keys` (made on first use), its public half
    /// kept in the records directory `dir`. A key another provider made
    /// for this archive is refused by name; a private key an older archive
    /// kept in `dir` is moved into the provider.
    pub fn new(keys: &dyn KeyProvider, dir: &Path) -> Result<Self, RecordsError> {
        let legacy = dir.join(KEY_FILE);
        let pub_path = dir.join(PUB_FILE);
        if legacy.exists() && !keys.has_checkpoint_key()? {
            // Only the key this archive's log is signed by: a file someone
            // dropped into the data directory is not taken in.
            let skey = std::fs::read_to_string(&legacy)?;
            let vkey = crate::keys::verifier_key_of(skey.trim())?;
            match std::fs::read_to_string(&pub_path) {
                Ok(kept) if kept.trim() == vkey => {}
                _ => {
                    return Err(RecordsError::Keys(format!(
                        "{} is not the key of this archive's log ({}): not taken in",
                        legacy.display(),
                        pub_path.display()
                    )))
                }
            }
            keys.import_checkpoint_key(skey.trim())?;
            tracing::warn!(
                "the checkpoint key moved from the data directory into {}; older backups of the \
                 data directory still hold it",
                keys.describe()
            );
        }
        // An archive whose log has a key never gets a new one made for it.
        if pub_path.exists() && !keys.has_checkpoint_key()? {
            return Err(RecordsError::Keys(format!(
                "this archive's log is signed by the key in {}, which {} does not hold: the \
                 wrong key provider, or the key was lost — restore it from escrow (`keepwire \
                 records key restore`) or the HSM's backup (docs/operations.md)",
                pub_path.display(),
                keys.describe()
            )));
        }
        let signer = keys.checkpoint_signer()?;
        let verifier_key = signer.verifier_key();
        match std::fs::read_to_string(&pub_path) {
            Ok(kept) if kept.trim() == verifier_key => {}
            Ok(kept) => {
                return Err(RecordsError::Keys(format!(
                    "this archive's log is signed by {} ({}), but {} holds {verifier_key}: \
                     the wrong key provider for this archive",
                    kept.trim(),
                    pub_path.display(),
                    keys.describe()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                std::fs::write(&pub_path, format!("{verifier_key}\n"))?;
            }
            Err(e) => return Err(e.into()),
        }
        if legacy.exists() {
            crate::keys::remove_legacy(&legacy)?;
        }
        Ok(Self {
            signer,
            verifier_key,
        })
    }

    /// The log's origin line: the key's name.
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The signed note of a checkpoint of the tree of `size` leaves.
    pub(crate) fn sign(&self, size: u64, root: Hash) -> Result<String, RecordsError> {
        let text = Checkpoint::new(self.origin(), size, root, "")
            .map_err(|e| RecordsError::Log(e.to_string()))?
            .to_bytes();
        let mut note = Note::new(&text, &[]).map_err(|e| RecordsError::Log(e.to_string()))?;
        note.add_sigs(&[self.signer.as_ref() as &dyn signed_note::Signer])
            .map_err(|e| RecordsError::Log(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| RecordsError::Log(e.to_string()))
    }
}

/// Check a checkpoint's signature with `verifier_key` and read it.
pub fn open_note(note: &str, verifier_key: &str) -> Result<Checkpoint, String> {
    let verifier = StandardVerifier::new(verifier_key).map_err(|e| format!("verifier key: {e}"))?;
    let list = VerifierList::new(vec![Box::new(verifier)]);
    let n = Note::from_bytes(note.as_bytes()).map_err(|e| format!("not a signed note: {e}"))?;
    let (verified, _) = n
        .verify(&list)
        .map_err(|e| format!("signature does not verify: {e}"))?;
    if verified.is_empty() {
        return Err("no signature by the archive's key".into());
    }
    let cp = Checkpoint::from_bytes(n.text()).map_err(|e| format!("not a checkpoint: {e}"))?;
    // C2SP: the origin line names the log, and must be the key's name.
    let key_name = verifier_key.split('+').next().unwrap_or_default();
    if cp.origin() != key_name {
        return Err(format!(
            "checkpoint is for log `{}`, not `{key_name}`",
            cp.origin()
        ));
    }
    Ok(cp)
}

/// Check the archive against a checkpoint its key signed and that was kept
/// elsewhere (the server's published chain, a witness, an auditor's copy):
/// the log must hold at least that many leaves, with the same root at that
/// size. Anything else means the archive was cut back, restored from an
/// old copy or rewritten since — evidence that data existed which is no
/// longer here. Returns the checkpoint's size.
pub fn check_against(
    archive: &crate::Archive,
    note: &str,
    verifier_key: &str,
) -> Result<u64, RecordsError> {
    let cp = open_note(note, verifier_key).map_err(|e| {
        RecordsError::Diverged(format!(
            "a checkpoint kept elsewhere was not signed by this archive's key ({e}): \
             this is another archive, or its key was replaced"
        ))
    })?;
    let local = archive.log_size()?;
    if cp.size() > local {
        return Err(RecordsError::Diverged(format!(
            "a checkpoint of {} leaves was signed, but the log holds {local}: the archive was cut \
             back or restored from an older copy",
            cp.size()
        )));
    }
    if cp.size() > 0 && archive.log_root(cp.size())? != *cp.hash() {
        return Err(RecordsError::Diverged(format!(
            "the log's first {} leaves are not the ones a signed checkpoint covers: the archive \
             was rewritten",
            cp.size()
        )));
    }
    Ok(cp.size())
}
