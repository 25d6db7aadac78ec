//! Signed checkpoints of the transparency log: C2SP tlog-checkpoint text
//! (origin, tree size, root hash) in a C2SP signed note with an Ed25519
//! key that only the records service holds.
//!
//! Every checkpoint issued is kept, so `verify` can show that each one is
//! a prefix of today's tree: a rewritten history shows up as a fork.

use std::path::Path;

use rand::RngCore;
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::Hash;

use crate::RecordsError;

/// The signing key file (C2SP note private key format) and its public half.
pub const KEY_FILE: &str = "checkpoint.key";
pub const PUB_FILE: &str = "checkpoint.pub";

/// The archive's checkpoint signer.
pub struct Notary {
    signer: StandardSigner,
    /// The verifier key, `name+id+base64` (what auditors are given).
    pub verifier_key: String,
}

impl Notary {
    /// Load the key from `dir`, creating it (and its public half) on first use.
    pub fn open(dir: &Path) -> Result<Self, RecordsError> {
        let key_path = dir.join(KEY_FILE);
        let pub_path = dir.join(PUB_FILE);
        let skey = match std::fs::read_to_string(&key_path) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut id = [0u8; 8];
                rand::thread_rng().fill_bytes(&mut id);
                let name = format!("keepwire.archive/{}", hex::encode(id));
                let (skey, vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, &name);
                keepwire_protocol::files::write_private(&key_path, skey.as_bytes())?;
                std::fs::write(&pub_path, format!("{vkey}\n"))?;
                skey
            }
            Err(e) => return Err(e.into()),
        };
        let signer = StandardSigner::new(&skey)
            .map_err(|e| RecordsError::Log(format!("{}: {e}", key_path.display())))?;
        let verifier_key = std::fs::read_to_string(&pub_path)
            .map_err(|e| RecordsError::Log(format!("{}: {e}", pub_path.display())))?
            .trim()
            .to_string();
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
        note.add_sigs(&[&self.signer])
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
