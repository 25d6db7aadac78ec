//! Each record row against its leaf: the row as stored (read tolerantly,
//! since an insider may have written anything into it), the leaf rebuilt
//! from it, the receipt's signature, the content commitment.

use super::*;

/// A record as its row stands, to be checked against its leaf.
pub(super) struct Row {
    pub(super) id: i64,
    pub(super) meta: RecordMeta,
    /// The receipt as stored (JSON), parsed when checked.
    pub(super) receipt: String,
    pub(super) has_content: bool,
    pub(super) leaf: Option<u64>,
}

/// A row whose kind is no record kind: altered, and nothing to rebuild.
pub(super) struct Unreadable {
    pub(super) id: i64,
    pub(super) conv: String,
    pub(super) seq: u64,
    pub(super) kind: String,
}

pub(super) fn check_row(
    archive: &Archive,
    row: &Row,
    known_keys: &ServerKeys,
    tombstoned: &BTreeSet<u64>,
    report: &mut Report,
) -> Result<(), RecordsError> {
    let here = |kind, detail: String| {
        Problem::new(kind, detail).at(Some(row.id), &row.meta.conv, row.meta.seq)
    };
    let receipt: Receipt = match serde_json::from_str(&row.receipt) {
        Ok(r) => r,
        Err(e) => {
            report.problems.push(here(
                ProblemKind::Altered,
                format!("receipt does not parse: {e}"),
            ));
            return Ok(());
        }
    };
    // The receipt: the server's signature over this entry's place and hash.
    let signed = receipt_signed_bytes(
        &row.meta.conv,
        row.meta.seq,
        &receipt.message_sha256,
        receipt.server_time_ms,
    );
    if !signature_ok(&receipt.server_key, &receipt.signature, &signed) {
        report.problems.push(here(
            ProblemKind::BadSignature,
            "the server's receipt signature does not verify for this entry".into(),
        ));
    } else {
        match known_keys.get(&receipt.server_key) {
            None => report.problems.push(here(
                ProblemKind::BadSignature,
                format!(
                    "the receipt is signed by {}, which is not a known server key",
                    hex::encode(&receipt.server_key)
                ),
            )),
            Some((from, until))
                if receipt.server_time_ms < *from
                    || until.is_some_and(|u| receipt.server_time_ms > u) =>
            {
                report.problems.push(here(
                    ProblemKind::BadSignature,
                    "the receipt's key was not the server's key at the receipt's time".into(),
                ))
            }
            Some(_) => {}
        }
    }
    let Some(n) = row.leaf else {
        report.problems.push(here(
            ProblemKind::Missing,
            "the record has no leaf in the transparency log".into(),
        ));
        return Ok(());
    };
    let Some((_, leaf_record, data)) = archive.store().leaf(n)? else {
        report.problems.push(
            here(
                ProblemKind::Missing,
                format!("its leaf {n} is gone from the log"),
            )
            .leaf(n),
        );
        return Ok(());
    };
    let stored: Leaf = match serde_json::from_slice(&data) {
        Ok(l @ Leaf::Record { .. }) => l,
        _ => {
            report.problems.push(
                here(
                    ProblemKind::Altered,
                    format!("leaf {n} is not a record leaf"),
                )
                .leaf(n),
            );
            return Ok(());
        }
    };
    let Leaf::Record {
        meta:
            RecordMeta {
                conv: leaf_conv,
                seq: leaf_seq,
                ..
            },
        content_commitment: leaf_commitment,
        ..
    } = &stored
    else {
        return Ok(());
    };
    if leaf_record != Some(row.id) || leaf_conv != &row.meta.conv || *leaf_seq != row.meta.seq {
        report.problems.push(
            here(
                ProblemKind::Reordered,
                format!(
                    "row holds {}#{} but its leaf {n} records {leaf_conv}#{leaf_seq}",
                    row.meta.conv, row.meta.seq
                ),
            )
            .leaf(n),
        );
        return Ok(());
    }
    // The commitment: recomputed from the content when we can read it;
    // otherwise taken from the leaf (and content presence checked below).
    let commitment = if row.has_content && archive.has_key() {
        match archive.recompute_commitment(row.id) {
            Ok(c) => c,
            Err(e) => {
                report.problems.push(
                    here(ProblemKind::Altered, format!("content does not open: {e}")).leaf(n),
                );
                return Ok(());
            }
        }
    } else {
        leaf_commitment.clone()
    };
    let rebuilt = record_leaf(&row.meta, &receipt, commitment);
    if rebuilt.to_bytes() != data {
        report.problems.push(
            here(
                ProblemKind::Altered,
                format!(
                    "differs from its leaf {n} in: {}",
                    differing_fields(&rebuilt, &stored)
                ),
            )
            .leaf(n),
        );
    }
    // The files, as stored, against the hashes the leaf commits to (no
    // key needed: the archive keeps them as they arrived, encrypted).
    if row.has_content {
        for (i, a) in row.meta.attachments.iter().enumerate() {
            let (size, hash) = stored_file(archive, row.id, i as u32)?;
            if size != a.cipher_size || hash != a.cipher_sha256 {
                report.problems.push(
                    here(
                        ProblemKind::Altered,
                        format!(
                            "its file {i} as stored ({size} bytes) is not the file its leaf {n} \
                             commits to ({} bytes)",
                            a.cipher_size
                        ),
                    )
                    .leaf(n),
                );
            }
        }
    }
    if leaf_commitment.is_some() && !row.has_content && !tombstoned.contains(&n) {
        report.problems.push(
            here(
                ProblemKind::MissingTombstone,
                "its content is gone but no tombstone names an authority".into(),
            )
            .leaf(n),
        );
    }
    Ok(())
}

/// The size and SHA-256 (hex) of file `n` of record `id` as stored.
fn stored_file(archive: &Archive, id: i64, n: u32) -> Result<(u64, String), RecordsError> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut size = 0u64;
    loop {
        let part = archive.store().attachment_read(
            id,
            n,
            size,
            crate::archive::store::ATTACHMENT_CHUNK,
        )?;
        if part.is_empty() {
            break;
        }
        size += part.len() as u64;
        hash.update(&part);
    }
    Ok((size, hex::encode(hash.finalize())))
}

fn differing_fields(a: &Leaf, b: &Leaf) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return "everything".into();
    };
    let fields: Vec<&str> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    if fields.is_empty() {
        "encoding".into()
    } else {
        fields.join(", ")
    }
}

fn signature_ok(key: &[u8], sig: &[u8], msg: &[u8]) -> bool {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let (Ok(key), Ok(sig)) = (
        <[u8; 32]>::try_from(key)
            .map_err(|_| ())
            .and_then(|k| VerifyingKey::from_bytes(&k).map_err(|_| ())),
        <[u8; 64]>::try_from(sig).map(|s| Signature::from_bytes(&s)),
    ) else {
        return false;
    };
    key.verify(msg, &sig).is_ok()
}

pub(super) fn server_keys(archive: &Archive) -> Result<ServerKeys, RecordsError> {
    Ok(archive
        .store()
        .server_keys()?
        .into_iter()
        .map(|k| (k, (0, None)))
        .collect())
}

pub(super) fn rows(archive: &Archive) -> Result<Vec<Result<Row, Unreadable>>, RecordsError> {
    Ok(archive
        .store()
        .records(Which::All, false)?
        .into_iter()
        .map(|r| {
            let Ok(kind) = r.kind.parse::<RecordKind>() else {
                return Err(Unreadable {
                    id: r.id,
                    conv: r.conv,
                    seq: r.seq,
                    kind: r.kind,
                });
            };
            Ok(Row {
                id: r.id,
                meta: RecordMeta {
                    conv: r.conv,
                    seq: r.seq,
                    kind,
                    epoch: r.epoch,
                    sender: r.sender,
                    participants: serde_json::from_str(&r.participants).unwrap_or_default(),
                    server_time_ms: r.server_time_ms,
                    captured_at_ms: r.captured_at_ms,
                    expire_after_secs: r.expire_after_secs,
                    burn_on_read: r.burn_on_read,
                    note: r.note,
                    // An altered column rebuilds a leaf that differs.
                    attachments: crate::archive::store::parse_attachments(r.attachments.as_deref())
                        .unwrap_or_default(),
                },
                receipt: r.receipt,
                has_content: r.has_content,
                leaf: r.leaf,
            })
        })
        .collect())
}
