//! Witnesses: independent parties that cosign the archive's checkpoints,
//! as C2SP tlog-witness and tlog-cosignature define — no crate implements
//! them, so this one protocol is written here, from the specs.
//!
//! A checkpoint signed with the archive's key proves only that whoever
//! holds the key signed it: with the key stolen, a rewritten log can be
//! signed as well. A witness — an inspector general's office, NARA — keeps,
//! for each log it follows, the latest checkpoint it cosigned, and cosigns
//! a new one only with a valid RFC 9162 consistency proof from that one. A
//! fork therefore gets no cosignature from any honest witness, and anyone
//! who accepts checkpoints only with a quorum of known witnesses never
//! accepts it.
//!
//! This module is the protocol's core, with no I/O: the cosignature/v1
//! format ([`Cosigner`], [`CosignatureVerifier`]) and the witness's
//! `add-checkpoint` decision ([`Witness::add_checkpoint`]: a request body
//! and the time in, an HTTP status and body out), over a [`WitnessState`]
//! that keeps the latest cosigned size and root per log atomically.

use std::collections::HashMap;

use ed25519_dalek::{Signer as _, SigningKey};
use signed_note::{Note, VerifierList};
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::Hash;

use crate::RecordsError;

pub use keepwire_client::cosignature::{cosignature_message, CosignatureVerifier};
use keepwire_client::cosignature::{key_id, COSIGNATURE_V1};

fn bad(msg: impl Into<String>) -> RecordsError {
    RecordsError::Log(msg.into())
}

/// A witness's signing key and name.
pub struct Cosigner {
    name: String,
    key: SigningKey,
    id: u32,
}

impl Cosigner {
    /// The cosigner `name` (a schema-less URL, say `witness.ig.example/1`)
    /// with the Ed25519 key `seed`.
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<Self, RecordsError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(bad(format!("`{name}` is not a valid key name")));
        }
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_string(),
            id: key_id(name, &key.verifying_key()),
            key,
        })
    }

    /// Its verifier key, `name+id+base64(0x04 || public key)`: what logs,
    /// devices and auditors are configured with.
    pub fn verifier_key(&self) -> String {
        let public = [&[COSIGNATURE_V1][..], self.key.verifying_key().as_bytes()].concat();
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            keepwire_protocol::b64::encode(&public)
        )
    }

    /// The note signature line cosigning the checkpoint `body` at
    /// `time_s`: `— name base64(key ID || timestamp || signature)`.
    pub fn cosign(&self, body: &[u8], time_s: u64) -> String {
        let sig = self.key.sign(&cosignature_message(body, time_s));
        let mut bytes = self.id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&time_s.to_be_bytes());
        bytes.extend_from_slice(&sig.to_bytes());
        format!(
            "\u{2014} {} {}\n",
            self.name,
            keepwire_protocol::b64::encode(&bytes)
        )
    }
}

/// What a witness keeps per log: the size and root hash of the latest
/// checkpoint it cosigned. `advance` must be atomic (the spec's race: two
/// requests checked against the same old size must not both land).
pub trait WitnessState: Send {
    fn latest(&self, origin: &str) -> Result<Option<(u64, Hash)>, RecordsError>;

    /// Record `(size, root)` for `origin` if the latest is still
    /// `expected_size` (0 for none); false, changing nothing, otherwise.
    fn advance(
        &mut self,
        origin: &str,
        expected_size: u64,
        size: u64,
        root: Hash,
    ) -> Result<bool, RecordsError>;
}

/// State in memory (tests, and the base of the file-backed state).
#[derive(Default)]
pub struct MemoryState(pub HashMap<String, (u64, Hash)>);

impl WitnessState for MemoryState {
    fn latest(&self, origin: &str) -> Result<Option<(u64, Hash)>, RecordsError> {
        Ok(self.0.get(origin).copied())
    }

    fn advance(
        &mut self,
        origin: &str,
        expected_size: u64,
        size: u64,
        root: Hash,
    ) -> Result<bool, RecordsError> {
        let current = self.0.get(origin).map(|(s, _)| *s).unwrap_or(0);
        if current != expected_size {
            return Ok(false);
        }
        self.0.insert(origin.to_string(), (size, root));
        Ok(true)
    }
}

/// State in a file, for a witness that runs for years: a JSON map from
/// origin to `[size, root]`, replaced whole on every advance (written
/// beside it, fsynced, renamed over it, the directory fsynced), so a
/// crash leaves the old state or the new, and an advance returns only
/// once it is durable — the spec asks that the cosigned checkpoint be
/// persisted before the answer. One process owns the file.
pub struct FileState {
    path: std::path::PathBuf,
    memory: MemoryState,
}

impl FileState {
    /// The state in `path` (empty if the file does not exist yet).
    pub fn open(path: &std::path::Path) -> Result<Self, RecordsError> {
        let mut memory = MemoryState::default();
        match std::fs::read(path) {
            Ok(bytes) => {
                let map: HashMap<String, (u64, String)> = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                for (origin, (size, root)) in map {
                    let root = keepwire_protocol::b64::decode(&root)
                        .ok()
                        .and_then(|r| <[u8; 32]>::try_from(r).ok())
                        .ok_or_else(|| bad(format!("{}: a root is not a hash", path.display())))?;
                    memory.0.insert(origin, (size, Hash(root)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Self {
            path: path.to_path_buf(),
            memory,
        })
    }

    fn persist(&self) -> Result<(), RecordsError> {
        let map: HashMap<&String, (u64, String)> = self
            .memory
            .0
            .iter()
            .map(|(o, (s, h))| (o, (*s, keepwire_protocol::b64::encode(&h.0))))
            .collect();
        let bytes = serde_json::to_vec_pretty(&map).map_err(|e| bad(e.to_string()))?;
        keepwire_protocol::files::replace_private(&self.path, &bytes)?;
        Ok(())
    }
}

impl WitnessState for FileState {
    fn latest(&self, origin: &str) -> Result<Option<(u64, Hash)>, RecordsError> {
        self.memory.latest(origin)
    }

    fn advance(
        &mut self,
        origin: &str,
        expected_size: u64,
        size: u64,
        root: Hash,
    ) -> Result<bool, RecordsError> {
        let before = self.memory.0.get(origin).copied();
        if !self.memory.advance(origin, expected_size, size, root)? {
            return Ok(false);
        }
        if let Err(e) = self.persist() {
            // Not durable, so not advanced: nothing is cosigned.
            match before {
                Some(b) => self.memory.0.insert(origin.to_string(), b),
                None => self.memory.0.remove(origin),
            };
            return Err(e);
        }
        Ok(true)
    }
}

/// A witness's answer to `add-checkpoint`: the HTTP status and body the
/// spec prescribes.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// 200: the cosignature line(s).
    Cosigned(String),
    /// 400: a malformed request, or an old size beyond the checkpoint's.
    BadRequest(String),
    /// 403: no signature by a key the witness trusts for the origin.
    Forbidden,
    /// 404: a log the witness does not follow.
    UnknownLog,
    /// 409: the old size is not the witness's latest (which it names, as
    /// `text/x.tlog.size`), or the same size with another root — a fork.
    Conflict(Option<u64>),
    /// 422: the consistency proof does not verify.
    Unprocessable,
}

impl Answer {
    pub fn status(&self) -> u16 {
        match self {
            Answer::Cosigned(_) => 200,
            Answer::BadRequest(_) => 400,
            Answer::Forbidden => 403,
            Answer::UnknownLog => 404,
            Answer::Conflict(_) => 409,
            Answer::Unprocessable => 422,
        }
    }

    /// The response body (`text/x.tlog.size` for a 409 naming a size).
    pub fn body(&self) -> String {
        match self {
            Answer::Cosigned(lines) => lines.clone(),
            Answer::Conflict(Some(size)) => format!("{size}\n"),
            Answer::Conflict(None) => "a different root hash for the size last cosigned\n".into(),
            Answer::Unprocessable => "the consistency proof does not verify\n".into(),
            Answer::BadRequest(why) => format!("{why}\n"),
            Answer::Forbidden => "no signature by a key this witness trusts\n".into(),
            Answer::UnknownLog => "this witness does not follow that log\n".into(),
        }
    }
}

/// The largest request a witness reads: an old size line, 63 proof lines,
/// and a checkpoint with a few signatures.
pub const MAX_REQUEST: usize = 16 * 1024;

/// A witness: its cosigner, the logs it follows (origin → the log's
/// verifier key), and its state.
pub struct Witness<S: WitnessState> {
    cosigner: Cosigner,
    logs: HashMap<String, String>,
    state: S,
}

impl<S: WitnessState> Witness<S> {
    /// A witness following `logs` (C2SP note verifier keys; the origin is
    /// the key's name).
    pub fn new(cosigner: Cosigner, logs: &[String], state: S) -> Result<Self, RecordsError> {
        let mut map = HashMap::new();
        for vkey in logs {
            signed_note::StandardVerifier::new(vkey)
                .map_err(|e| bad(format!("log key `{vkey}`: {e}")))?;
            let origin = vkey.split('+').next().unwrap_or_default().to_string();
            map.insert(origin, vkey.clone());
        }
        Ok(Self {
            cosigner,
            logs: map,
            state,
        })
    }

    pub fn cosigner(&self) -> &Cosigner {
        &self.cosigner
    }

    /// The latest checkpoint size it cosigned for `origin`.
    pub fn latest(&self, origin: &str) -> Result<Option<u64>, RecordsError> {
        Ok(self.state.latest(origin)?.map(|(s, _)| s))
    }

    /// C2SP tlog-witness `add-checkpoint`: `request` is the POST body, at
    /// `now_s` (POSIX seconds). Errors are the witness's own (its state
    /// could not be read or written): a 500, never a cosignature.
    pub fn add_checkpoint(&mut self, request: &[u8], now_s: u64) -> Result<Answer, RecordsError> {
        if request.len() > MAX_REQUEST {
            return Ok(Answer::BadRequest("request too large".into()));
        }
        let Ok(text) = std::str::from_utf8(request) else {
            return Ok(Answer::BadRequest("not UTF-8".into()));
        };
        let Some((head, note)) = text.split_once("\n\n") else {
            return Ok(Answer::BadRequest(
                "no empty line before the checkpoint".into(),
            ));
        };
        let mut lines = head.split('\n');
        let old = match lines.next().and_then(|l| l.strip_prefix("old ")) {
            Some(n) if n == "0" || (!n.starts_with('0') && !n.is_empty()) => match n.parse::<u64>()
            {
                Ok(n) => n,
                Err(_) => return Ok(Answer::BadRequest("bad old size".into())),
            },
            _ => return Ok(Answer::BadRequest("no `old N` line".into())),
        };
        let mut proof = Vec::new();
        for l in lines {
            let Some(h) = keepwire_protocol::b64::decode(l)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
            else {
                return Ok(Answer::BadRequest(
                    "a proof line is not a base64 hash".into(),
                ));
            };
            proof.push(Hash(h));
        }
        if proof.len() > 63 {
            return Ok(Answer::BadRequest("more than 63 proof lines".into()));
        }
        let Ok(parsed) = Note::from_bytes(note.as_bytes()) else {
            return Ok(Answer::BadRequest("not a signed note".into()));
        };
        let Ok(cp) = Checkpoint::from_bytes(parsed.text()) else {
            return Ok(Answer::BadRequest("not a checkpoint".into()));
        };
        let Some(vkey) = self.logs.get(cp.origin()) else {
            return Ok(Answer::UnknownLog);
        };
        let verifier =
            signed_note::StandardVerifier::new(vkey).map_err(|e| bad(format!("log key: {e}")))?;
        // Signatures by unknown keys are ignored; one by the log's key
        // must verify.
        if parsed
            .verify(&VerifierList::new(vec![Box::new(verifier)]))
            .is_err()
        {
            return Ok(Answer::Forbidden);
        }
        if old > cp.size() {
            return Ok(Answer::BadRequest(format!(
                "old size {old} beyond the checkpoint's {}",
                cp.size()
            )));
        }
        let latest = self.state.latest(cp.origin())?;
        let (latest_size, latest_root) = latest.unwrap_or((0, Hash([0; 32])));
        if old != latest_size {
            return Ok(Answer::Conflict(Some(latest_size)));
        }
        if old == 0 {
            if !proof.is_empty() {
                return Ok(Answer::Unprocessable);
            }
        } else if old == cp.size() {
            if *cp.hash() != latest_root {
                // The same size with another root: a fork.
                return Ok(Answer::Conflict(None));
            }
        } else if tlog_tiles::tlog::check_tree(&proof, cp.size(), *cp.hash(), old, latest_root)
            .is_err()
        {
            return Ok(Answer::Unprocessable);
        }
        if !self
            .state
            .advance(cp.origin(), old, cp.size(), *cp.hash())?
        {
            // Another request moved it since it was read.
            let now = self.state.latest(cp.origin())?.map(|(s, _)| s);
            return Ok(Answer::Conflict(now));
        }
        Ok(Answer::Cosigned(self.cosigner.cosign(parsed.text(), now_s)))
    }
}

pub mod quorum;

#[cfg(test)]
mod tests;
