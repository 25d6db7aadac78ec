//! Devices as witnesses of the archive's history.
//!
//! A device remembers the last checkpoint of the archive's transparency log
//! it accepted (and the key that signed it). Each newer checkpoint must be
//! signed by the same key and come with a consistency proof from the one
//! before; the device checks the chain step by step from what it pinned.
//! Anything else — a changed key, a proof that fails, the same size with
//! another root — means someone rewrote the archive's history, and the
//! device says so loudly instead of carrying on.

use crate::cosignature::Quorum;
use keepwire_protocol::PublishedCheckpoint;
use serde::{Deserialize, Serialize};
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::{self, Hash};

/// What a device keeps between runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pinned {
    pub verifier_key: String,
    pub size: u64,
    /// Base64 root hash, as in the checkpoint.
    pub root: String,
    pub checkpoint: String,
    /// The witnesses of the device's quorum that cosigned it (none when
    /// the device has no quorum).
    #[serde(default)]
    pub cosigners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WitnessError {
    #[error("ARCHIVE LOG FORK: {0}")]
    Fork(String),
    #[error("archive checkpoint rejected: {0}")]
    Invalid(String),
}

fn open(note: &str, verifier_key: &str) -> Result<Checkpoint, WitnessError> {
    let verifier = StandardVerifier::new(verifier_key)
        .map_err(|e| WitnessError::Invalid(format!("verifier key: {e}")))?;
    let list = VerifierList::new(vec![Box::new(verifier)]);
    let n = Note::from_bytes(note.as_bytes())
        .map_err(|e| WitnessError::Invalid(format!("not a signed note: {e}")))?;
    n.verify(&list)
        .map_err(|e| WitnessError::Invalid(format!("signature: {e}")))?;
    Checkpoint::from_bytes(n.text()).map_err(|e| WitnessError::Invalid(e.to_string()))
}

fn pin(verifier_key: &str, note: &str, cp: &Checkpoint, quorum: Option<&Quorum>) -> Pinned {
    Pinned {
        verifier_key: verifier_key.to_string(),
        size: cp.size(),
        root: cp.hash().to_string(),
        checkpoint: note.to_string(),
        cosigners: quorum.map(|q| q.cosigners(note)).unwrap_or_default(),
    }
}

/// Whether `note` may be pinned: cosigned by the quorum, if there is one.
fn trusted(note: &str, quorum: Option<&Quorum>) -> bool {
    quorum.is_none_or(|q| q.met(note))
}

/// Check that the server has not gone back behind the checkpoint this
/// device pinned: its latest published checkpoint (`latest_size`; none
/// published at all when `verifier_key` is empty) must be at least as
/// large. A server put back to an older copy would otherwise just answer
/// "nothing newer", and receipt new messages at numbers already used.
pub fn not_rolled_back(
    pinned: Option<&Pinned>,
    verifier_key: &str,
    latest_size: Option<u64>,
) -> Result<(), WitnessError> {
    let Some(pinned) = pinned else {
        return Ok(());
    };
    let latest = match (verifier_key.is_empty(), latest_size) {
        (true, _) => 0,
        (false, Some(l)) => l,
        // A server that does not say: only the chain can tell.
        (false, None) => return Ok(()),
    };
    if latest < pinned.size {
        return Err(WitnessError::Fork(format!(
            "the server's latest archive checkpoint covers {latest} leaves, but this device \
             pinned one of {}: the server was put back to an older copy, or the archive was cut \
             back",
            pinned.size
        )));
    }
    Ok(())
}

/// Check `chain` (the server's answer to `checkpoints { since_size }`)
/// against what this device pinned; returns what to pin now: the newest
/// checkpoint of the chain `quorum` accepts (any, without one), or the
/// pin it had.
pub fn advance(
    pinned: Option<&Pinned>,
    verifier_key: &str,
    chain: &[PublishedCheckpoint],
    quorum: Option<&Quorum>,
) -> Result<Option<Pinned>, WitnessError> {
    let Some(pinned) = pinned else {
        // First sight: trust the latest checkpoint on its own signature
        // (and the quorum's cosignatures).
        return match chain.last() {
            Some(c) => {
                let cp = open(&c.checkpoint, verifier_key)?;
                Ok(trusted(&c.checkpoint, quorum)
                    .then(|| pin(verifier_key, &c.checkpoint, &cp, quorum)))
            }
            None => Ok(None),
        };
    };
    if verifier_key != pinned.verifier_key {
        return Err(WitnessError::Fork(format!(
            "the archive's checkpoint key changed from {} to {verifier_key}",
            pinned.verifier_key
        )));
    }
    let mut current = pinned.clone();
    let mut trusted_pin = pinned.clone();
    for link in chain {
        let cp = open(&link.checkpoint, verifier_key)?;
        let root = Hash::parse_hash(&current.root)
            .map_err(|e| WitnessError::Invalid(format!("pinned root: {e}")))?;
        if cp.size() == current.size {
            if cp.hash() != &root {
                return Err(WitnessError::Fork(format!(
                    "two checkpoints of size {} with different roots",
                    cp.size()
                )));
            }
            continue;
        }
        if cp.size() < current.size {
            return Err(WitnessError::Fork(format!(
                "a checkpoint of size {} after one of size {}: the log shrank",
                cp.size(),
                current.size
            )));
        }
        if link.link.from_size != Some(current.size) {
            return Err(WitnessError::Invalid(format!(
                "checkpoint of size {} does not continue from the pinned size {}",
                cp.size(),
                current.size
            )));
        }
        let proof: Vec<Hash> = link
            .link
            .consistency_path
            .iter()
            .map(|h| {
                <[u8; 32]>::try_from(h.as_slice())
                    .map(Hash)
                    .map_err(|_| WitnessError::Invalid("proof hash is not 32 bytes".into()))
            })
            .collect::<Result<_, _>>()?;
        tlog::check_tree(&proof, cp.size(), *cp.hash(), current.size, root).map_err(|_| {
            WitnessError::Fork(format!(
                "the checkpoint of size {} is not an extension of the pinned one of size {}: history was rewritten",
                cp.size(),
                current.size
            ))
        })?;
        current = pin(verifier_key, &link.checkpoint, &cp, quorum);
        if trusted(&link.checkpoint, quorum) {
            trusted_pin = current.clone();
        }
    }
    Ok(Some(trusted_pin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepwire_protocol::CheckpointProof;
    use signed_note::{Note, StandardSigner};

    /// A tiny log of `n` leaves, its checkpoints signed by `skey`.
    struct Log {
        leaves: Vec<Vec<u8>>,
        signer: StandardSigner,
    }

    impl Log {
        fn hashes(&self, n: usize) -> Vec<Hash> {
            let mut stored = Vec::new();
            for (i, l) in self.leaves[..n].iter().enumerate() {
                let r = Reader(&stored);
                stored.extend(tlog::stored_hashes(i as u64, l, &r).unwrap());
            }
            stored
        }

        fn checkpoint(&self, n: usize) -> (String, Hash) {
            let stored = self.hashes(n);
            let root = tlog::tree_hash(n as u64, &Reader(&stored)).unwrap();
            let text = Checkpoint::new("keepwire.archive/test", n as u64, root, "")
                .unwrap()
                .to_bytes();
            let mut note = Note::new(&text, &[]).unwrap();
            note.add_sigs(&[&self.signer]).unwrap();
            (String::from_utf8(note.to_bytes()).unwrap(), root)
        }

        fn link(&self, from: usize, to: usize) -> PublishedCheckpoint {
            let stored = self.hashes(to);
            let path = tlog::prove_tree(to as u64, from as u64, &Reader(&stored)).unwrap();
            PublishedCheckpoint {
                checkpoint: self.checkpoint(to).0,
                link: CheckpointProof {
                    from_size: Some(from as u64),
                    consistency_path: path.iter().map(|h| h.0.to_vec()).collect(),
                },
            }
        }
    }

    struct Reader<'a>(&'a Vec<Hash>);
    impl tlog::HashReader for Reader<'_> {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
            indexes
                .iter()
                .map(|i| {
                    self.0
                        .get(*i as usize)
                        .copied()
                        .ok_or(tlog::Error::IndexesNotInTree)
                })
                .collect()
        }
    }

    fn log(leaves: &[&str]) -> (Log, String) {
        let (skey, vkey) =
            signed_note::generate_key(&mut rand::rngs::OsRng, "keepwire.archive/test");
        (
            Log {
                leaves: leaves.iter().map(|l| l.as_bytes().to_vec()).collect(),
                signer: StandardSigner::new(&skey).unwrap(),
            },
            vkey,
        )
    }

    #[test]
    fn follows_an_honest_log_and_catches_a_rewritten_one() {
        let (honest, vkey) = log(&["a", "b", "c", "d", "e", "f", "g"]);
        let first = PublishedCheckpoint {
            checkpoint: honest.checkpoint(3).0,
            link: CheckpointProof::default(),
        };
        let pinned = advance(None, &vkey, &[first], None).unwrap().unwrap();
        assert_eq!(pinned.size, 3);
        let now = advance(
            Some(&pinned),
            &vkey,
            &[honest.link(3, 5), honest.link(5, 7)],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(now.size, 7);

        // The same key signs a history in which leaf "b" became "x".
        let rewritten = Log {
            leaves: ["a", "x", "c", "d", "e", "f", "g"]
                .iter()
                .map(|l| l.as_bytes().to_vec())
                .collect(),
            signer: honest.signer.clone(),
        };
        let e = advance(Some(&pinned), &vkey, &[rewritten.link(3, 7)], None).unwrap_err();
        assert!(matches!(e, WitnessError::Fork(_)), "{e}");
        assert!(e.to_string().starts_with("ARCHIVE LOG FORK"));

        // Another key, or a bad signature, is not accepted either.
        let (other, other_key) = log(&["a", "b", "c", "d", "e"]);
        assert!(matches!(
            advance(Some(&pinned), &other_key, &[other.link(3, 5)], None),
            Err(WitnessError::Fork(_))
        ));
        assert!(matches!(
            advance(Some(&pinned), &vkey, &[other.link(3, 5)], None),
            Err(WitnessError::Invalid(_))
        ));
    }

    /// A witness `name` with key `seed`: its verifier key, and `link`
    /// with its cosignature added.
    fn witness(
        name: &str,
        seed: u8,
    ) -> (String, impl Fn(&PublishedCheckpoint) -> PublishedCheckpoint) {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let public = [
            &[crate::cosignature::COSIGNATURE_V1][..],
            key.verifying_key().as_bytes(),
        ]
        .concat();
        let id = crate::cosignature::key_id(name, &key.verifying_key());
        let vkey = format!(
            "{name}+{id:08x}+{}",
            keepwire_protocol::b64::encode(&public)
        );
        let name = name.to_string();
        let cosign = move |link: &PublishedCheckpoint| {
            let (text, _) = link.checkpoint.rsplit_once("\n\n").unwrap();
            let text = format!("{text}\n");
            let sig = key.sign(&crate::cosignature::cosignature_message(text.as_bytes(), 7));
            let mut bytes = id.to_be_bytes().to_vec();
            bytes.extend_from_slice(&7u64.to_be_bytes());
            bytes.extend_from_slice(&sig.to_bytes());
            let mut out = link.clone();
            out.checkpoint = format!(
                "{}\u{2014} {name} {}\n",
                link.checkpoint,
                keepwire_protocol::b64::encode(&bytes)
            );
            out
        };
        (vkey, cosign)
    }

    #[test]
    fn a_server_behind_the_pinned_checkpoint_is_caught() {
        let (honest, vkey) = log(&["a", "b", "c", "d", "e"]);
        let first = PublishedCheckpoint {
            checkpoint: honest.checkpoint(5).0,
            link: CheckpointProof::default(),
        };
        let pinned = advance(None, &vkey, &[first], None).unwrap().unwrap();
        assert_eq!(not_rolled_back(Some(&pinned), &vkey, Some(5)), Ok(()));
        assert_eq!(not_rolled_back(Some(&pinned), &vkey, Some(9)), Ok(()));
        assert_eq!(not_rolled_back(None, "", None), Ok(()));
        assert_eq!(
            not_rolled_back(Some(&pinned), &vkey, None),
            Ok(()),
            "an older server"
        );
        for (key, latest) in [(vkey.as_str(), Some(3)), ("", None)] {
            let e = not_rolled_back(Some(&pinned), key, latest).unwrap_err();
            assert!(e.to_string().contains("put back to an older copy"), "{e}");
        }
    }

    #[test]
    fn with_a_quorum_only_cosigned_checkpoints_are_pinned_and_forks_are_still_caught() {
        let (honest, vkey) = log(&["a", "b", "c", "d", "e", "f", "g"]);
        let (w1, cosign1) = witness("w1.example", 1);
        let (w2, cosign2) = witness("w2.example", 2);
        let quorum = Quorum::new(&[w1, w2], Some(2)).unwrap();
        let q = Some(&quorum);
        let first = PublishedCheckpoint {
            checkpoint: honest.checkpoint(3).0,
            link: CheckpointProof::default(),
        };
        // Not cosigned (or by one witness only): nothing is pinned.
        assert_eq!(
            advance(None, &vkey, std::slice::from_ref(&first), q).unwrap(),
            None
        );
        assert_eq!(advance(None, &vkey, &[cosign1(&first)], q).unwrap(), None);
        let pinned = advance(None, &vkey, &[cosign2(&cosign1(&first))], q)
            .unwrap()
            .unwrap();
        assert_eq!((pinned.size, pinned.cosigners.len()), (3, 2));

        // An uncosigned link is checked but not pinned; the pin moves to
        // the newest cosigned one.
        let five = honest.link(3, 5);
        let seven = cosign1(&cosign2(&honest.link(5, 7)));
        let same = advance(Some(&pinned), &vkey, std::slice::from_ref(&five), q)
            .unwrap()
            .unwrap();
        assert_eq!(same.size, 3);
        let now = advance(Some(&pinned), &vkey, &[five, seven], q)
            .unwrap()
            .unwrap();
        assert_eq!(now.size, 7);

        // A rewritten history is a fork, cosigned or not.
        let rewritten = Log {
            leaves: ["a", "x", "c", "d", "e", "f", "g"]
                .iter()
                .map(|l| l.as_bytes().to_vec())
                .collect(),
            signer: honest.signer.clone(),
        };
        let e = advance(Some(&pinned), &vkey, &[rewritten.link(3, 7)], q).unwrap_err();
        assert!(matches!(e, WitnessError::Fork(_)), "{e}");
        // A cosignature line that does not verify does not count.
        let mut fake = cosign1(&cosign2(&honest.link(3, 5)));
        fake.checkpoint = fake.checkpoint.replace("w2.example", "w1.example");
        let still = advance(Some(&pinned), &vkey, &[fake], q).unwrap().unwrap();
        assert_eq!(still.size, 3);
    }
}
