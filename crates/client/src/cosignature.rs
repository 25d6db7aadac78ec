//! Cosignatures: how anyone who relies on the archive's checkpoints — a
//! device, an auditor's `records verify` — checks that independent
//! witnesses vouched for them (C2SP tlog-cosignature, `cosignature/v1`;
//! no crate implements it, so it is written here from the spec).
//!
//! A witness's cosignature is one more signature line on a checkpoint's
//! signed note. It signs `cosignature/v1`, the time, and the checkpoint's
//! text; its key ID covers the key type byte 0x04. A [`Quorum`] is the
//! witnesses someone trusts and how many of them must have cosigned a
//! checkpoint for it to count: a history rewritten with the stolen
//! checkpoint key never reaches one, because no honest witness cosigns a
//! fork of what it saw.

use ed25519_dalek::{Verifier as _, VerifyingKey};
use signed_note::Signature;

/// A cosignature key, note or quorum that does not hold together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CosignatureError(pub String);

fn bad(msg: impl Into<String>) -> CosignatureError {
    CosignatureError(msg.into())
}

/// The signature type byte of an Ed25519 cosignature key (C2SP
/// tlog-cosignature): in its key ID and its verifier key.
pub const COSIGNATURE_V1: u8 = 0x04;

/// The message a cosignature/v1 signs: a header line, a time line, then
/// the checkpoint's whole note body.
pub fn cosignature_message(body: &[u8], time_s: u64) -> Vec<u8> {
    [format!("cosignature/v1\ntime {time_s}\n").as_bytes(), body].concat()
}

/// The key ID of the cosignature key `public` named `name`.
pub fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    signed_note::key_id(name, &[&[COSIGNATURE_V1][..], public.as_bytes()].concat())
}

/// Checks one witness's cosignatures (a [`signed_note::Verifier`], so a
/// note's log signature and its cosignatures verify in one pass).
#[derive(Clone, Debug)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// From a verifier key `name+id+base64(0x04 || key)`.
    pub fn new(vkey: &str) -> Result<Self, CosignatureError> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("`{vkey}` is not a verifier key")));
        };
        let raw = keepwire_protocol::b64::decode(key)
            .map_err(|_| bad(format!("`{vkey}`: the key is not base64")))?;
        let (Some(&COSIGNATURE_V1), Ok(public)) = (
            raw.first(),
            <[u8; 32]>::try_from(raw.get(1..).unwrap_or_default()),
        ) else {
            return Err(bad(format!(
                "`{vkey}` is not an Ed25519 cosignature key (type 0x04)"
            )));
        };
        let key = VerifyingKey::from_bytes(&public).map_err(|e| bad(e.to_string()))?;
        let expected = key_id(name, &key);
        if u32::from_str_radix(id, 16).ok() != Some(expected) || id.len() != 8 {
            return Err(bad(format!(
                "`{vkey}`: the key ID does not match the name and key"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            id: expected,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time a valid cosignature `sig` (timestamp || signature) of
    /// `body` was made.
    pub fn time_of(&self, body: &[u8], sig: &[u8]) -> Option<u64> {
        let (time, sig) = sig.split_at_checked(8)?;
        let time = u64::from_be_bytes(time.try_into().ok()?);
        let sig = ed25519_dalek::Signature::from_slice(sig).ok()?;
        (time < 1 << 63)
            .then(|| self.key.verify(&cosignature_message(body, time), &sig).ok())
            .flatten()
            .map(|()| time)
    }
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.time_of(msg, sig).is_some()
    }
}

/// A signed note split into its text and its signature lines (a note with
/// none is malformed, as C2SP signed-note says).
pub fn split_note(note: &str) -> Result<(&str, Vec<Signature>), CosignatureError> {
    let (text, sigs) = note
        .rsplit_once("\n\n")
        .ok_or_else(|| bad("not a signed note: no blank line before the signatures"))?;
    let text = &note[..text.len() + 1];
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or_else(|| bad("not a signed note: no final newline"))?;
    let sigs = sigs
        .split('\n')
        .map(|l| Signature::from_bytes(l.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a signed note: {e}")))?;
    Ok((text, sigs))
}

/// Whether `sig` is a valid cosignature of `text` by `witness`.
pub fn cosigned_by(witness: &CosignatureVerifier, text: &str, sig: &Signature) -> bool {
    use signed_note::Verifier as _;
    sig.name() == witness.name()
        && sig.id() == witness.key_id()
        && witness.time_of(text.as_bytes(), sig.signature()).is_some()
}

/// The witnesses someone relies on, and how many of them must have
/// cosigned a checkpoint for it to count.
#[derive(Clone, Debug)]
pub struct Quorum {
    witnesses: Vec<CosignatureVerifier>,
    need: usize,
}

impl Quorum {
    /// From the witnesses' verifier keys; `need` of them (all, if not
    /// given). Refused: no witness, a quorum of 0 or more than there are
    /// witnesses, the same witness twice.
    pub fn new(keys: &[String], need: Option<usize>) -> Result<Self, CosignatureError> {
        let witnesses = keys
            .iter()
            .map(|k| CosignatureVerifier::new(k))
            .collect::<Result<Vec<_>, _>>()?;
        if witnesses.is_empty() {
            return Err(bad("a witness quorum needs at least one witness"));
        }
        for (i, w) in witnesses.iter().enumerate() {
            if witnesses[..i].iter().any(|o| o.name() == w.name()) {
                return Err(bad(format!("the witness {} is given twice", w.name())));
            }
        }
        let need = need.unwrap_or(witnesses.len());
        if need == 0 || need > witnesses.len() {
            return Err(bad(format!(
                "a quorum of {need} out of {} witnesses cannot be met or means nothing",
                witnesses.len()
            )));
        }
        Ok(Self { witnesses, need })
    }

    pub fn need(&self) -> usize {
        self.need
    }

    pub fn len(&self) -> usize {
        self.witnesses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.witnesses.is_empty()
    }

    /// The known witnesses whose valid cosignatures `note` carries.
    pub fn cosigners(&self, note: &str) -> Vec<String> {
        let Ok((text, sigs)) = split_note(note) else {
            return Vec::new();
        };
        self.witnesses
            .iter()
            .filter(|w| sigs.iter().any(|s| cosigned_by(w, text, s)))
            .map(|w| w.name().to_string())
            .collect()
    }

    /// Whether `note` is cosigned by a quorum.
    pub fn met(&self, note: &str) -> bool {
        self.cosigners(note).len() >= self.need
    }

    /// "2 of the 3 witnesses (a, b, c)", for messages.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.witnesses.iter().map(|w| w.name()).collect();
        format!(
            "{} of the {} witnesses ({})",
            self.need,
            self.witnesses.len(),
            names.join(", ")
        )
    }
}
