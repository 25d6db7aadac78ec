//! Escrow of the records service's secrets: a Shamir M-of-N split
//! (GF(256), the `blahaj` crate), one share per custodian, any M of which
//! give them back.
//!
//! Losing the archive key destroys every record — the key directory's disk
//! dies, the HSM is wiped — so it is split when it is made and whenever it
//! is rotated, and the shares are handed to custodians (the records
//! officer, the CIO, counsel; printed, in separate safes). Fewer than M
//! shares say nothing about what they hold. With the archive key goes
//! what the records service needs to run on: the records device's store
//! secret and, where the provider can export it (a key directory; an HSM
//! cannot, by design), the checkpoint key.
//!
//! A share is a short text file: what it is, the archive key's public id,
//! the escrow's own id, the threshold, and the share itself in base64.
//! Shamir shares carry no integrity of their own — a custodian who alters
//! theirs shifts what is recovered in a way they can steer — so recovery
//! checks that the archive key is the one the archive names (its id is a
//! hash of it), and the rest against an HMAC under that key made at the
//! split: a wrong or altered share is refused, never turned into a key
//! that opens nothing or a checkpoint key that is not the log's.

use serde::{Deserialize, Serialize};

use crate::RecordsError;

const HEADER: &str = "keepwire archive key escrow share";

fn bad(msg: impl Into<String>) -> RecordsError {
    RecordsError::Keys(msg.into())
}

/// What an escrow holds.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub struct Escrowed {
    /// The archive key (hex).
    archive_key: String,
    /// The records device's store secret.
    pub device_secret: Option<String>,
    /// The checkpoint key (C2SP note private key), where exportable.
    pub checkpoint_key: Option<String>,
}

/// The payload split: the secrets, and an HMAC of them under the archive
/// key.
#[derive(Serialize, Deserialize)]
struct Sealed {
    secrets: Escrowed,
    mac: String,
}

fn mac(secrets: &Escrowed) -> Result<String, RecordsError> {
    use hmac::{Hmac, Mac};
    let key = secrets.archive_key()?;
    let mut m =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).map_err(|e| bad(e.to_string()))?;
    m.update(b"keepwire escrow\n");
    m.update(&serde_json::to_vec(secrets).map_err(|e| bad(e.to_string()))?);
    Ok(hex::encode(m.finalize().into_bytes()))
}

impl Escrowed {
    pub fn new(
        archive_key: &[u8; 32],
        device_secret: Option<String>,
        checkpoint_key: Option<String>,
    ) -> Self {
        Self {
            archive_key: hex::encode(archive_key),
            device_secret,
            checkpoint_key,
        }
    }

    pub fn archive_key(&self) -> Result<[u8; 32], RecordsError> {
        hex::decode(&self.archive_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("the escrowed archive key is not a 32-byte key"))
    }

    /// What it holds, in words (for the log of privileged actions).
    pub fn describe(&self) -> String {
        let mut what = vec!["the archive key"];
        if self.device_secret.is_some() {
            what.push("the records device's secret");
        }
        if self.checkpoint_key.is_some() {
            what.push("the checkpoint key");
        }
        what.join(", ")
    }
}

/// Split `secrets` (whose archive key's public id is `key_id`) into
/// `shares` shares, any `threshold` of which recover them. Returns the
/// share texts.
pub fn split(
    secrets: &Escrowed,
    key_id: &str,
    threshold: u8,
    shares: u8,
) -> Result<Vec<String>, RecordsError> {
    if threshold < 2 || shares < threshold {
        return Err(bad(format!(
            "an escrow needs at least 2 shares to recover and no more required than made \
             (asked: {threshold} of {shares})"
        )));
    }
    let payload = serde_json::to_vec(&Sealed {
        mac: mac(secrets)?,
        secrets: secrets.clone(),
    })
    .map_err(|e| bad(e.to_string()))?;
    Ok(deal(&payload, key_id, threshold, shares))
}

/// The share texts of `payload`.
fn deal(payload: &[u8], key_id: &str, threshold: u8, shares: u8) -> Vec<String> {
    let escrow = hex::encode(&super::fresh_key()[..8]);
    blahaj::Sharks(threshold)
        .dealer(payload)
        .take(shares as usize)
        .enumerate()
        .map(|(i, share)| {
            format!(
                "{HEADER}\narchive-key: {key_id}\nescrow: {escrow}\nthreshold: {threshold}\nshare: {} of {shares}\n{}\n",
                i + 1,
                keepwire_protocol::b64::encode(&Vec::from(&share))
            )
        })
        .collect()
}

/// One share read back.
struct Share {
    key_id: String,
    escrow: String,
    threshold: u8,
    share: blahaj::Share,
}

fn parse(text: &str) -> Result<Share, RecordsError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(HEADER) {
        return Err(bad("not a keepwire escrow share"));
    }
    let mut field = |name: &str| -> Result<String, RecordsError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|l| l.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| bad(format!("escrow share: no `{name}:` line")))
    };
    let key_id = field("archive-key")?;
    let escrow = field("escrow")?;
    let threshold: u8 = field("threshold")?
        .parse()
        .map_err(|_| bad("escrow share: the threshold is not a number"))?;
    if threshold < 2 {
        return Err(bad("escrow share: a threshold below 2 is no escrow"));
    }
    field("share")?;
    let body = lines
        .next()
        .ok_or_else(|| bad("escrow share: the share itself is missing"))?;
    let bytes = keepwire_protocol::b64::decode(body)
        .map_err(|_| bad("escrow share: the share is not base64"))?;
    // One x byte, then at least a key's worth; bounded, as input must be.
    if !(33..=4096).contains(&bytes.len()) {
        return Err(bad("escrow share: the share has the wrong length"));
    }
    let share = blahaj::Share::try_from(bytes.as_slice()).map_err(bad)?;
    Ok(Share {
        key_id,
        escrow,
        threshold,
        share,
    })
}

/// What the shares `texts` recover; `key_id` computes an archive key's
/// id, so a wrong or damaged share is caught. Returns it with the id.
pub fn recover(
    texts: &[String],
    key_id: impl Fn(&[u8; 32]) -> String,
) -> Result<(Escrowed, String), RecordsError> {
    let mut shares = texts
        .iter()
        .enumerate()
        .map(|(i, t)| parse(t).map_err(|e| bad(format!("share {}: {e}", i + 1))))
        .collect::<Result<Vec<_>, _>>()?;
    // The same share given twice is one share (interpolating both would
    // give garbage).
    let mut seen = std::collections::HashSet::new();
    shares.retain(|s| seen.insert(s.share.x.0));
    let first = shares
        .first()
        .ok_or_else(|| bad("no escrow shares given"))?;
    if let Some(other) = shares.iter().find(|s| {
        s.key_id != first.key_id || s.escrow != first.escrow || s.threshold != first.threshold
    }) {
        return Err(bad(format!(
            "the shares are of different escrows (archive key {} escrow {} and archive key {} \
             escrow {})",
            first.key_id, first.escrow, other.key_id, other.escrow
        )));
    }
    let payload = blahaj::Sharks(first.threshold)
        .recover(shares.iter().map(|s| &s.share))
        .map_err(|e| {
            bad(format!(
                "{e}: archive key {} needs {} distinct shares, {} given",
                first.key_id,
                first.threshold,
                shares.len()
            ))
        })?;
    let damaged = || {
        bad(format!(
            "the shares do not give archive key {}: one of them is damaged or of another escrow",
            first.key_id
        ))
    };
    let sealed: Sealed = serde_json::from_slice(&payload).map_err(|_| damaged())?;
    let secrets = sealed.secrets;
    if key_id(&secrets.archive_key().map_err(|_| damaged())?) != first.key_id {
        return Err(damaged());
    }
    // The key is the archive's; the rest must be what was split with it.
    let expected = mac(&secrets)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        sealed.mac.as_bytes(),
    )) {
        return Err(damaged());
    }
    Ok((secrets, first.key_id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: &[u8; 32]) -> String {
        crate::archive::key::key_id(k)
    }

    #[test]
    fn any_m_of_n_shares_give_the_key_back_and_fewer_or_damaged_ones_do_not() {
        let key = [7u8; 32];
        let secrets = || Escrowed::new(&key, Some("device".into()), Some("PRIVATE+KEY+x".into()));
        let shares = split(&secrets(), &id(&key), 3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        for pick in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let chosen: Vec<_> = pick.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(recover(&chosen, id).unwrap(), (secrets(), id(&key)));
        }
        let two = recover(&shares[..2], id).unwrap_err().to_string();
        assert!(two.contains("needs 3 distinct shares, 2 given"), "{two}");
        // The same share twice is one share: not enough, and said so.
        let twice = [shares[0].clone(), shares[0].clone(), shares[1].clone()];
        let e = recover(&twice, id).unwrap_err().to_string();
        assert!(e.contains("needs 3 distinct shares, 2 given"), "{e}");
        let with_repeat = [
            shares[0].clone(),
            shares[0].clone(),
            shares[1].clone(),
            shares[2].clone(),
        ];
        assert_eq!(recover(&with_repeat, id).unwrap().0, secrets());
        // Two escrows of the same key do not mix either.
        let again = split(&secrets(), &id(&key), 3, 5).unwrap();
        let e = recover(
            &[shares[0].clone(), shares[1].clone(), again[2].clone()],
            id,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("different escrows"), "{e}");
        // A flipped byte in one share gives another key: refused.
        for at in [1, 40, 120] {
            let mut damaged = shares[..3].to_vec();
            let body = damaged[1].lines().nth(5).unwrap().to_string();
            let mut bytes = keepwire_protocol::b64::decode(&body).unwrap();
            bytes[at] ^= 1;
            damaged[1] = damaged[1].replace(&body, &keepwire_protocol::b64::encode(&bytes));
            let e = recover(&damaged, id).unwrap_err().to_string();
            assert!(e.contains("damaged"), "byte {at}: {e}");
        }
        // What an altered share could steer: the secrets beside the key,
        // in well-formed JSON. The HMAC under the archive key refuses it.
        let forged = serde_json::to_vec(&Sealed {
            mac: mac(&secrets()).unwrap(),
            secrets: Escrowed::new(&key, Some("steered".into()), Some("PRIVATE+KEY+x".into())),
        })
        .unwrap();
        let e = recover(&deal(&forged, &id(&key), 2, 2), id)
            .unwrap_err()
            .to_string();
        assert!(e.contains("damaged"), "{e}");
        // A threshold below 2 is refused when read, too.
        let lowered = shares[0].replace("threshold: 3", "threshold: 1");
        assert!(recover(&[lowered], id)
            .unwrap_err()
            .to_string()
            .contains("below 2"));
        // Shares of two escrows do not mix.
        let other = split(
            &Escrowed::new(&[8u8; 32], None, None),
            &id(&[8u8; 32]),
            3,
            5,
        )
        .unwrap();
        let mixed = [shares[0].clone(), shares[1].clone(), other[2].clone()];
        assert!(recover(&mixed, id)
            .unwrap_err()
            .to_string()
            .contains("different escrows"));
        assert!(split(&secrets(), "x", 1, 3).is_err());
        assert!(split(&secrets(), "x", 4, 3).is_err());
        assert!(recover(&["garbage".into()], id).is_err());
    }
}
