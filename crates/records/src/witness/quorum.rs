//! The log's side of witnessing, and everyone else's check of it.
//!
//! The records service sends each checkpoint to its witnesses
//! ([`add_checkpoint_request`], [`Reply`]): a witness answers with a
//! cosignature only if the checkpoint extends the last one it cosigned for
//! this log. The cosignature is one more signature line on the checkpoint's
//! signed note ([`with_cosignature`]), so a cosigned checkpoint is still a
//! checkpoint any note reader accepts, and its cosignatures travel with it:
//! into the archive, to the server's published chain, to devices.
//!
//! Whoever relies on a checkpoint — a device, `records verify` — holds a
//! [`Quorum`]: the witnesses it knows and how many of them must have
//! cosigned. A checkpoint counts only with that many. Someone with the
//! stolen checkpoint key can sign a rewritten log, but no honest witness
//! cosigns it, so it never reaches a quorum.

use signed_note::Signature;
use tlog_tiles::checkpoint::Checkpoint;
use tlog_tiles::tlog::Hash;

use super::CosignatureVerifier;
use crate::RecordsError;
use keepwire_client::cosignature::cosigned_by;
pub use keepwire_client::cosignature::{split_note, Quorum};

fn bad(msg: impl Into<String>) -> RecordsError {
    RecordsError::Log(msg.into())
}

/// `note` with the cosignature line `line` by `witness` added (replacing
/// an earlier one by the same key), once `line` is checked to cosign
/// exactly this checkpoint.
pub fn with_cosignature(
    note: &str,
    line: &str,
    witness: &CosignatureVerifier,
) -> Result<String, RecordsError> {
    let (text, mut sigs) = split_note(note)?;
    let sig = Signature::from_bytes(line.trim_end_matches('\n').as_bytes())
        .map_err(|e| bad(format!("not a signature line: {e}")))?;
    if !cosigned_by(witness, text, &sig) {
        return Err(bad(format!(
            "the witness {} answered with a line that is not its cosignature of this checkpoint",
            witness.name()
        )));
    }
    sigs.retain(|s| !(s.name() == sig.name() && s.id() == sig.id()));
    sigs.push(sig);
    let mut out = format!("{text}\n");
    for s in &sigs {
        out.push_str(&String::from_utf8_lossy(&s.to_bytes()));
    }
    Ok(out)
}

/// A witness the records service submits checkpoints to: its verifier
/// key and where it listens, given as `KEY@URL`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub verifier: CosignatureVerifier,
    /// The verifier key as given.
    pub key: String,
    /// Its base URL (`https://witness.ig.example`); requests go to
    /// `{url}/add-checkpoint`.
    pub url: String,
}

impl Peer {
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// Whether `note` already carries this witness's valid cosignature.
    pub fn has_cosigned(&self, note: &str) -> bool {
        split_note(note)
            .map(|(text, sigs)| sigs.iter().any(|s| cosigned_by(&self.verifier, text, s)))
            .unwrap_or(false)
    }
}

/// A witness as given on a command line: its verifier key, and its URL
/// when given as `KEY@URL` (the one place that form is read).
pub fn split_witness(s: &str) -> (&str, Option<&str>) {
    match ["@http://", "@https://"]
        .iter()
        .filter_map(|p| s.find(p))
        .min()
    {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    }
}

impl std::str::FromStr for Peer {
    type Err = RecordsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, Some(url)) = split_witness(s) else {
            return Err(bad(format!(
                "`{s}` is not a witness: give its verifier key, `@`, and its http(s) URL"
            )));
        };
        Ok(Self {
            verifier: CosignatureVerifier::new(key)?,
            key: key.to_string(),
            url: url.trim_end_matches('/').to_string(),
        })
    }
}

/// The body of C2SP tlog-witness `add-checkpoint`: the size of the
/// checkpoint the witness last cosigned (`old`), the consistency proof
/// from it, a blank line, the checkpoint.
pub fn add_checkpoint_request(old: u64, proof: &[Hash], note: &str) -> Vec<u8> {
    let mut body = format!("old {old}\n");
    for h in proof {
        body.push_str(&keepwire_protocol::b64::encode(&h.0));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body.into_bytes()
}

/// What a witness's answer means to the log.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Cosigned: the cosignature line.
    Cosigned(String),
    /// The witness last cosigned a checkpoint of this size: ask again
    /// with a proof from it.
    Latest(u64),
    /// The witness refuses this checkpoint as inconsistent with what it
    /// cosigned (409 with no size: the same size with another root; 422:
    /// the proof does not verify): the log forked.
    Disagrees(String),
    /// The witness does not follow this log or trust its key (404, 403),
    /// or found the request malformed (400): a configuration error.
    Refused(String),
    /// Anything else (a 5xx, a proxy's page): try again later.
    Failed(String),
}

/// Read a witness's answer: its HTTP status and body.
pub fn read_reply(status: u16, body: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(body);
    let first_line = text.lines().next().unwrap_or_default().trim();
    match status {
        200 => match text.lines().find(|l| l.starts_with("\u{2014} ")) {
            Some(line) => Reply::Cosigned(format!("{line}\n")),
            None => Reply::Failed("200 without a cosignature line".into()),
        },
        409 => match first_line.parse::<u64>() {
            Ok(size) if !first_line.is_empty() => Reply::Latest(size),
            _ => Reply::Disagrees(
                "it cosigned another checkpoint of the same size: the log forked".into(),
            ),
        },
        422 => Reply::Disagrees(
            "the consistency proof from the checkpoint it cosigned does not verify: the log \
             was rewritten"
                .into(),
        ),
        404 => Reply::Refused("it does not follow this log".into()),
        403 => Reply::Refused("it does not trust this log's key".into()),
        400 => Reply::Refused(format!("it found the request malformed: {first_line}")),
        s => Reply::Failed(format!(
            "HTTP {s}: {}",
            first_line.chars().take(200).collect::<String>()
        )),
    }
}

/// The size of the checkpoint in `note`.
pub fn size_of(note: &str) -> Result<u64, RecordsError> {
    let (text, _) = split_note(note)?;
    Checkpoint::from_bytes(text.as_bytes())
        .map(|c| c.size())
        .map_err(|e| bad(format!("not a checkpoint: {e}")))
}
