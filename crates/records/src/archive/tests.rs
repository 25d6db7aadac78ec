//! The archive's storage contract: what every method of [`ArchiveStore`]
//! does, run against both backends — SQLite in a temporary directory and
//! PostgreSQL in a scratch schema on a real server — and the archive as a
//! whole (sealing, listing, destroying, verifying) on each.

use ed25519_dalek::{Signer, SigningKey};
use keepwire_protocol::Receipt;

use super::store::*;
use super::*;
use crate::tlog::{self, Leaf};

/// A fresh, empty store of each kind, with what keeps it alive.
fn sqlite() -> (Box<dyn std::any::Any>, Box<dyn ArchiveStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteArchive::open(&dir.path().join(ARCHIVE_DB)).unwrap();
    (Box::new(dir), Box::new(store))
}

fn postgres() -> (Box<dyn std::any::Any>, Box<dyn ArchiveStore>) {
    let db = keepwire_schema::pg::scratch::Scratch::new()
        .expect("a PostgreSQL server for the storage contract (KEEPWIRE_TEST_POSTGRES)");
    let store = PgArchive::open(&db.url).unwrap();
    (Box::new(db), Box::new(store))
}

/// Each contract test, once per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $name() {
                let (_keep, mut store) = super::sqlite();
                super::$name(&mut store);
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                let (_keep, mut store) = super::postgres();
                super::$name(&mut store);
            })*
        }
    };
}

contract!(
    records_are_stored_once_each_with_its_leaf,
    the_log_reads_back_leaf_by_leaf_and_hash_by_hash,
    destroying_content_leaves_a_tombstone_once,
    rewrapping_replaces_every_data_key_and_logs_it,
    a_decision_is_logged_once_and_settings_are_kept,
    a_checkpoint_is_signed_only_when_the_log_grew,
    a_snapshot_reads_as_of_its_start,
    the_whole_archive_seals_lists_destroys_and_verifies,
    accounts_are_added_once_disabled_and_each_change_logged,
);

fn accounts_are_added_once_disabled_and_each_change_logged(store: &mut Store) {
    let account = |name: &str, role| crate::accounts::Account {
        name: name.into(),
        role,
        created_ms: 5,
        disabled: false,
        password_hash: format!("hash-of-{name}"),
    };
    let admin = account("ada", crate::accounts::Role::Admin);
    assert!(store.accounts().unwrap().is_empty());
    assert!(store.add_account(&admin, true, &action(1)).unwrap());
    // The first-account condition holds once.
    let other = account("eve", crate::accounts::Role::Admin);
    assert!(!store.add_account(&other, true, &action(2)).unwrap());
    assert!(store.account("eve").unwrap().is_none());
    let officer = account("olu", crate::accounts::Role::RecordsOfficer);
    assert!(store.add_account(&officer, false, &action(3)).unwrap());
    assert!(
        !store.add_account(&officer, false, &action(4)).unwrap(),
        "names are unique"
    );
    assert_eq!(store.account("olu").unwrap().unwrap(), officer);
    assert!(store.set_account_disabled("olu", true, &action(5)).unwrap());
    assert!(store.account("olu").unwrap().unwrap().disabled);
    assert!(!store
        .set_account_disabled("nobody", true, &action(6))
        .unwrap());
    assert_eq!(
        store
            .accounts()
            .unwrap()
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["ada", "olu"]
    );
    // Exactly the changes that were made are in the log, in order.
    assert_eq!(store.log_size().unwrap(), 3);
    for (n, at) in [(0, 1), (1, 3), (2, 5)] {
        assert_eq!(store.leaf(n).unwrap().unwrap().2, action(at).to_bytes());
    }
}

type Store = Box<dyn ArchiveStore>;

mod attachments;
mod disposition;
mod lifecycle;

fn meta(conv: &str, seq: u64, kind: RecordKind) -> RecordMeta {
    RecordMeta {
        conv: conv.into(),
        seq,
        kind,
        epoch: 1,
        sender: "alice/d1".into(),
        participants: vec!["alice/d1".into(), "bob/d2".into()],
        server_time_ms: 1_000 + seq,
        captured_at_ms: 2_000 + seq,
        expire_after_secs: Some(60),
        burn_on_read: false,
        note: None,
        attachments: Vec::new(),
    }
}

fn receipt(conv: &str, seq: u64, key: &SigningKey) -> Receipt {
    let sha = vec![seq as u8; 32];
    let signed = keepwire_protocol::receipt_signed_bytes(conv, seq, &sha, 1_000 + seq);
    Receipt {
        conv: conv.into(),
        seq,
        message_sha256: sha,
        server_time_ms: 1_000 + seq,
        signature: key.sign(&signed).to_bytes().to_vec(),
        server_key: key.verifying_key().to_bytes().to_vec(),
    }
}

fn sealed<'a>(m: &'a RecordMeta, r: &'a Receipt, content: bool) -> SealedRecord<'a> {
    SealedRecord {
        meta: m,
        participants_json: serde_json::to_string(&m.participants).unwrap(),
        receipt_json: serde_json::to_string(r).unwrap(),
        server_key: &r.server_key,
        wrapped_key: content.then(|| vec![1; 72]),
        body: content.then(|| vec![2; 40]),
        leaf: record_leaf(m, r, None),
    }
}

fn action(i: u64) -> Leaf {
    Leaf::Action {
        actor: "officer".into(),
        action: "view".into(),
        target: format!("record {i}"),
        at_ms: i,
    }
}

fn records_are_stored_once_each_with_its_leaf(store: &mut Store) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let (m1, m2, m3) = (
        meta("c", 1, RecordKind::Application),
        meta("c", 2, RecordKind::Commit),
        meta("d", 1, RecordKind::Withheld),
    );
    let (r1, r2, r3) = (
        receipt("c", 1, &key),
        receipt("c", 2, &key),
        receipt("d", 1, &key),
    );
    assert_eq!(
        store
            .insert_records(&[sealed(&m1, &r1, true), sealed(&m2, &r2, false)])
            .unwrap(),
        2
    );
    // Redelivered after a crash: archived once, no second leaf.
    assert_eq!(
        store
            .insert_records(&[sealed(&m2, &r2, false), sealed(&m3, &r3, false)])
            .unwrap(),
        1
    );
    assert_eq!(store.log_size().unwrap(), 3);
    let all = store.records(Which::All, true).unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.conv.as_str(), r.seq, r.leaf))
            .collect::<Vec<_>>(),
        [("c", 1, Some(0)), ("c", 2, Some(1)), ("d", 1, Some(2))]
    );
    let first = &all[0];
    assert_eq!(
        (
            first.kind.as_str(),
            first.epoch,
            first.expire_after_secs,
            first.burn_on_read
        ),
        ("application", 1, Some(60), false)
    );
    assert_eq!(
        (
            first.server_time_ms,
            first.captured_at_ms,
            first.sender.as_str()
        ),
        (1_001, 2_001, "alice/d1")
    );
    assert!(first.has_content);
    assert_eq!(first.wrapped_key.as_deref(), Some(&[1u8; 72][..]));
    assert_eq!(first.body.as_deref(), Some(&[2u8; 40][..]));
    let parsed: Receipt = serde_json::from_str(&first.receipt).unwrap();
    assert_eq!(parsed, r1);
    // Without content: the flag, not the bytes.
    let light = store.records(Which::One(first.id), false).unwrap();
    assert!(light[0].has_content && light[0].wrapped_key.is_none());
    assert!(!all[1].has_content);
    let content = store.sealed_content(first.id).unwrap().unwrap();
    assert_eq!(
        (content.conv.as_str(), content.seq, content.body.len()),
        ("c", 1, 40)
    );
    assert_eq!(store.sealed_content(all[1].id).unwrap(), None);
    let messages: Vec<_> = store
        .records(Which::Messages, false)
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(messages, ["application", "withheld"]);
    assert!(store.records(Which::One(999), false).unwrap().is_empty());
    assert_eq!(store.count(None).unwrap(), 3);
    assert_eq!(store.count(Some("commit")).unwrap(), 1);
    let (kind, note, kept) = store.archived_as("c", 2).unwrap().unwrap();
    assert_eq!((kind.as_str(), note), ("commit", None));
    assert_eq!(serde_json::from_str::<Receipt>(&kept).unwrap(), r2);
    // Each conversation's head, as archived.
    let mut heads = store.heads().unwrap();
    heads.sort();
    assert_eq!(heads, [("c".to_string(), 2), ("d".to_string(), 1)]);
    assert_eq!(store.archived_as("c", 9).unwrap(), None);
    assert_eq!(store.server_keys().unwrap(), vec![r1.server_key.clone()]);
    // The leaf is the record's, linked to its row.
    let (kind, record_id, data) = store.leaf(0).unwrap().unwrap();
    assert_eq!((kind.as_str(), record_id), ("record", Some(first.id)));
    assert_eq!(data, record_leaf(&m1, &r1, None).to_bytes());
}

fn the_log_reads_back_leaf_by_leaf_and_hash_by_hash(store: &mut Store) {
    let mut data = Vec::new();
    for i in 0..21 {
        assert_eq!(store.append_leaf(&action(i)).unwrap(), i);
        data.push(action(i).to_bytes());
    }
    assert_eq!(store.log_size().unwrap(), 21);
    assert!(store.leaf(21).unwrap().is_none());
    // Every leaf, in order, as appended; a visitor may stop early.
    let mut seen = Vec::new();
    store
        .for_each_leaf(21, &mut |l| {
            assert_eq!(l.kind, Some("action"));
            seen.push((l.n, l.data.to_vec()));
            Ok(true)
        })
        .unwrap();
    assert_eq!(seen.iter().map(|s| s.1.clone()).collect::<Vec<_>>(), data);
    let mut visited = 0;
    store
        .for_each_leaf(21, &mut |_| {
            visited += 1;
            Ok(visited < 5)
        })
        .unwrap();
    assert_eq!(visited, 5);
    // 2n - popcount(n) stored hashes, in pages.
    let count = tlog_tiles::tlog::stored_hash_count(21);
    let first = store.hashes(0, count, 10).unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].0, 0);
    let rest = store.hashes(10, count, 1_000).unwrap();
    assert_eq!(rest.len() as u64, count - 10);
    assert!(rest.iter().all(|(_, h)| h.is_some()));
    let by_index = store.read_hashes(&[3, 0]).unwrap();
    assert_eq!(by_index[1], first[0].1.unwrap());
    assert!(store.read_hashes(&[count + 5]).is_err());
    // The same leaves make the same tree on any backend: the RFC 9162
    // root of the sequence, recomputed without problems.
    let root = tlog::root(&**store, 21).unwrap();
    assert_eq!(
        root,
        tlog_tiles::tlog::tree_hash(21, &Hashes(&data)).unwrap()
    );
    assert_eq!(tlog::recompute(&**store, |_| {}).unwrap().problem, None);
    let proof = tlog::prove_inclusion(&**store, 21, 7).unwrap();
    assert!(tlog_tiles::tlog::check_record(
        &proof,
        21,
        root,
        7,
        tlog_tiles::tlog::record_hash(&data[7])
    )
    .is_ok());
}

/// The stored hashes of a list of leaves, computed in memory.
struct Hashes<'a>(&'a [Vec<u8>]);

impl tlog_tiles::tlog::HashReader for Hashes<'_> {
    fn read_hashes(
        &self,
        indexes: &[u64],
    ) -> Result<Vec<tlog_tiles::tlog::Hash>, tlog_tiles::tlog::Error> {
        let mut all = Vec::new();
        for (n, d) in self.0.iter().enumerate() {
            let reader = InMemory(&all);
            let new = tlog_tiles::tlog::stored_hashes(n as u64, d, &reader)?;
            all.extend(new);
        }
        Ok(indexes.iter().map(|&i| all[i as usize]).collect())
    }
}

struct InMemory<'a>(&'a [tlog_tiles::tlog::Hash]);

impl tlog_tiles::tlog::HashReader for InMemory<'_> {
    fn read_hashes(
        &self,
        indexes: &[u64],
    ) -> Result<Vec<tlog_tiles::tlog::Hash>, tlog_tiles::tlog::Error> {
        Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
    }
}

fn destroying_content_leaves_a_tombstone_once(store: &mut Store) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let (m1, m2) = (
        meta("c", 1, RecordKind::Application),
        meta("c", 2, RecordKind::Commit),
    );
    let (r1, r2) = (receipt("c", 1, &key), receipt("c", 2, &key));
    store
        .insert_records(&[sealed(&m1, &r1, true), sealed(&m2, &r2, false)])
        .unwrap();
    let id = store.records(Which::All, false).unwrap()[0].id;
    let grave = |conv: &str, seq: u64, leaf: u64| Leaf::Tombstone {
        conv: conv.into(),
        seq,
        record_leaf: leaf,
        authority: "GRS 5.2 item 020".into(),
        by: "officer".into(),
        at_ms: 9,
    };
    store.destroy(id, &grave).unwrap();
    let row = &store.records(Which::One(id), true).unwrap()[0];
    assert!(!row.has_content && row.wrapped_key.is_none() && row.body.is_none());
    let (kind, record_id, data) = store.leaf(2).unwrap().unwrap();
    assert_eq!((kind.as_str(), record_id), ("tombstone", Some(id)));
    assert_eq!(data, grave("c", 1, 0).to_bytes());
    let e = store.destroy(id, &grave).unwrap_err().to_string();
    assert!(e.contains("no content to destroy"), "{e}");
    let e = store.destroy(999, &grave).unwrap_err().to_string();
    assert!(e.contains("no record 999"), "{e}");
    assert_eq!(store.log_size().unwrap(), 3, "refusals append nothing");
}

fn rewrapping_replaces_every_data_key_and_logs_it(store: &mut Store) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let metas: Vec<_> = (1..=3)
        .map(|s| meta("c", s, RecordKind::Application))
        .collect();
    let receipts: Vec<_> = (1..=3).map(|s| receipt("c", s, &key)).collect();
    let rows: Vec<_> = metas
        .iter()
        .zip(&receipts)
        .enumerate()
        .map(|(i, (m, r))| sealed(m, r, i != 1))
        .collect();
    store.insert_records(&rows).unwrap();
    let mut seen = Vec::new();
    let n = store
        .rewrap_keys(
            &mut |conv, seq, wrapped| {
                seen.push((conv.to_string(), seq));
                Ok([wrapped, b"-new"].concat())
            },
            &[("key_id", "k2"), ("archive_key", "w2")],
            &|count| action(count),
        )
        .unwrap();
    assert_eq!(n, 2, "only the records that hold content");
    seen.sort();
    assert_eq!(seen, [("c".to_string(), 1), ("c".to_string(), 3)]);
    let after = store.records(Which::All, true).unwrap();
    assert!(after[0].wrapped_key.as_ref().unwrap().ends_with(b"-new"));
    assert!(after[1].wrapped_key.is_none());
    assert_eq!(store.meta("key_id").unwrap().as_deref(), Some("k2"));
    assert_eq!(store.meta("archive_key").unwrap().as_deref(), Some("w2"));
    assert_eq!(store.leaf(3).unwrap().unwrap().2, action(2).to_bytes());
    // A failure half-way changes nothing.
    let e = store
        .rewrap_keys(
            &mut |_, seq, _| {
                if seq == 3 {
                    Err(RecordsError::Archive("wrong key".into()))
                } else {
                    Ok(b"bad".to_vec())
                }
            },
            &[("key_id", "k3"), ("archive_key", "w3")],
            &|count| action(count),
        )
        .unwrap_err();
    assert!(e.to_string().contains("wrong key"));
    assert_eq!(store.meta("key_id").unwrap().as_deref(), Some("k2"));
    assert!(store.records(Which::All, true).unwrap()[0]
        .wrapped_key
        .as_ref()
        .unwrap()
        .ends_with(b"-new"));
    assert_eq!(store.log_size().unwrap(), 4);
}

fn a_decision_is_logged_once_and_settings_are_kept(store: &mut Store) {
    assert!(store.append_decision(1, &action(1)).unwrap());
    assert!(store.append_decision(2, &action(2)).unwrap());
    assert!(
        !store.append_decision(2, &action(2)).unwrap(),
        "relayed twice"
    );
    assert!(!store.append_decision(1, &action(1)).unwrap(), "an old one");
    assert_eq!(store.log_size().unwrap(), 2);
    assert_eq!(store.meta("nothing").unwrap(), None);
    store.set_meta("k", "v1").unwrap();
    store.set_meta("k", "v2").unwrap();
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v2"));
}

fn a_checkpoint_is_signed_only_when_the_log_grew(store: &mut Store) {
    store.append_leaf(&action(0)).unwrap();
    store.append_leaf(&action(1)).unwrap();
    let mut signed = Vec::new();
    let mut sign = |size: u64, root: tlog_tiles::tlog::Hash| {
        signed.push((size, root));
        Ok(format!("note {size}"))
    };
    assert_eq!(
        store.checkpoint(&mut sign, 10).unwrap(),
        (2, "note 2".to_string())
    );
    assert_eq!(
        store.checkpoint(&mut sign, 11).unwrap(),
        (2, "note 2".to_string()),
        "the latest one covers the log"
    );
    store.append_leaf(&action(2)).unwrap();
    store.checkpoint(&mut sign, 12).unwrap();
    assert_eq!(signed.len(), 2);
    assert_eq!(signed[1].1, tlog::root(&**store, 3).unwrap());
    let kept: Vec<_> = store
        .checkpoints()
        .unwrap()
        .into_iter()
        .map(|(_, size, note)| (size, note))
        .collect();
    assert_eq!(kept, [(2, "note 2".to_string()), (3, "note 3".to_string())]);
    // A signer that fails keeps nothing.
    store.append_leaf(&action(3)).unwrap();
    assert!(store
        .checkpoint(&mut |_, _| Err(RecordsError::Log("no key".into())), 13)
        .is_err());
    assert_eq!(store.checkpoints().unwrap().len(), 2);
}

fn a_snapshot_reads_as_of_its_start(store: &mut Store) {
    store.append_leaf(&action(0)).unwrap();
    let mut other = store
        .reopen()
        .expect("a file or server store reopens")
        .unwrap();
    {
        let _snapshot = store.read_snapshot().unwrap();
        assert_eq!(store.log_size().unwrap(), 1);
        other.append_leaf(&action(1)).unwrap();
        assert_eq!(store.log_size().unwrap(), 1, "as of the snapshot");
    }
    assert_eq!(store.log_size().unwrap(), 2);
    assert!(!store.describe().contains("password"));
}

fn the_whole_archive_seals_lists_destroys_and_verifies(store: &mut Store) {
    let keys = tempfile::tempdir().unwrap();
    let store = std::mem::replace(store, sqlite().1);
    let provider = crate::keys::FileKeys::open(&keys.path().join("keys")).unwrap();
    let mut archive = Archive::with_store(store, keys.path(), Some(&provider)).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let texts = ["first", "second", "third"];
    for (i, text) in texts.iter().enumerate() {
        let seq = i as u64 + 1;
        let m = meta("c", seq, RecordKind::Application);
        let r = receipt("c", seq, &key);
        let plain = keepwire_protocol::content::Content::text(text, None, false, 1)
            .encode()
            .unwrap();
        assert!(archive
            .insert(&NewRecord {
                meta: &m,
                receipt: &r,
                plaintext: Some(&plain),
            })
            .unwrap());
    }
    let listed = archive.list(false, true).unwrap();
    assert_eq!(
        listed.iter().map(|r| r.text.as_deref()).collect::<Vec<_>>(),
        [Some("first"), Some("second"), Some("third")]
    );
    let id = listed[1].id;
    assert!(archive.recompute_commitment(id).unwrap().is_some());
    archive
        .destroy(id, "GRS 5.2 item 020", "officer", 5)
        .unwrap();
    assert_eq!(archive.get(id, true).unwrap().unwrap().text, None);
    archive
        .log_action("auditor", "verify", "archive", 6)
        .unwrap();
    let notary = crate::checkpoint::Notary::new(&provider, keys.path()).unwrap();
    archive.issue_checkpoint(&notary, 7).unwrap();
    let report = crate::verify::verify(
        &archive,
        &crate::verify::Options {
            verifier_key: Some(notary.verifier_key.clone()),
            ..Default::default()
        },
        |_, _| {},
    )
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        (report.records, report.tree_size, report.checkpoints),
        (3, 5, 1)
    );
    assert!(report.content_checked && report.signatures_checked);
}
