//! The storage contract: what every method of [`ServerStore`] does, run
//! against both backends — SQLite in a temporary directory and
//! PostgreSQL in a scratch schema on a real server (see
//! `keepwire_schema::pg::scratch`). A backend passes or it is not one.

use std::collections::VecDeque;

use super::api::{PolicyChange, POLICY_GUESTS, POLICY_MAX_TIMER, POLICY_PHOTO_METADATA};
use super::*;

/// A fresh, empty store of each kind, with what keeps it alive.
fn sqlite() -> (Box<dyn std::any::Any>, Box<dyn ServerStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    (Box::new(dir), Box::new(store))
}

fn postgres() -> (Box<dyn std::any::Any>, Box<dyn ServerStore>) {
    let db = keepwire_schema::pg::scratch::Scratch::new()
        .expect("a PostgreSQL server for the storage contract (KEEPWIRE_TEST_POSTGRES)");
    let store = PgStore::open(&db.url).unwrap();
    (Box::new(db), Box::new(store))
}

/// Each contract test, once per backend.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $name() {
                let (_keep, mut store) = super::sqlite();
                super::$name(&mut *store);
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $name() {
                let (_keep, mut store) = super::postgres();
                super::$name(&mut *store);
            })*
        }
    };
}

contract!(
    the_policy_has_defaults_and_an_unreadable_setting_is_an_error,
    users_are_checked_listed_and_provisioned_all_or_nothing,
    an_enrolment_code_enrols_one_device_once_and_only_in_time,
    devices_are_listed_revoked_once_and_the_notice_acknowledged_once,
    a_device_pool_of_key_packages_is_bounded_keeping_the_newest,
    handed_out_key_packages_are_remembered_until_they_expire,
    a_group_commit_is_all_or_nothing_with_what_a_commit_changes,
    cursors_move_only_forward_and_drop_passed_welcomes,
    a_sender_that_had_everything_moves_past_its_own_message,
    garbage_goes_a_bounded_chunk_per_commit_never_past_its_bounds,
    the_status_counts_what_an_admin_checks,
    receipt_keys_and_checkpoints_are_kept_in_order,
    capture_failures_block_suspend_and_need_a_reasoned_decision,
    another_handle_sees_the_same_store,
);

mod blobs;

fn entry(conv: &str, seq: u64) -> LogEntry {
    LogEntry {
        conv: conv.into(),
        seq,
        sender_user: "alice".into(),
        sender_device: "d1".into(),
        server_time_ms: 1,
        message: vec![seq as u8],
        sha256: vec![0; 32],
        signature: vec![0; 64],
    }
}

fn plain(entry: &LogEntry, create: bool) -> Append<'_> {
    Append {
        entry,
        roster: None,
        create,
        blobs: &[],
    }
}

fn seqs(store: &dyn ServerStore, conv: &str) -> Vec<u64> {
    store
        .log_after(conv, 0)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// A user with one enrolled device; its id.
fn enrolled(store: &mut dyn ServerStore, name: &str, key: &[u8]) -> String {
    store.add_user(name, name, "staff", 1).unwrap();
    let code = store.new_enrolment_code(name, 1).unwrap();
    store.redeem_code(&code, key, 2).unwrap().device_id
}

fn the_policy_has_defaults_and_an_unreadable_setting_is_an_error(store: &mut dyn ServerStore) {
    let p = store.policy().unwrap();
    assert_eq!(
        (p.max_timer_secs, p.guests_allowed, p.keep_photo_metadata),
        (7 * 24 * 3600, true, false),
        "photos lose their location unless the agency keeps it"
    );
    store
        .set_policy(PolicyChange {
            max_timer_secs: Some(3600),
            ..Default::default()
        })
        .unwrap();
    store
        .set_policy(PolicyChange {
            guests_allowed: Some(false),
            keep_photo_metadata: Some(true),
            ..Default::default()
        })
        .unwrap();
    let p = store.policy().unwrap();
    assert_eq!(
        (p.max_timer_secs, p.guests_allowed, p.keep_photo_metadata),
        (3600, false, true)
    );
    assert_eq!(
        store.meta(POLICY_MAX_TIMER).unwrap().as_deref(),
        Some("3600")
    );
    assert_eq!(store.meta("nothing").unwrap(), None);
    // Never a default for what cannot be read: no guests let in by a
    // damaged setting.
    store.set_meta(POLICY_GUESTS, "nope").unwrap();
    assert!(store.policy().is_err());
    store.set_meta(POLICY_GUESTS, "false").unwrap();
    store.set_meta(POLICY_PHOTO_METADATA, "maybe").unwrap();
    assert!(store.policy().is_err());
    store.set_meta(POLICY_PHOTO_METADATA, "false").unwrap();
    store.set_meta(POLICY_MAX_TIMER, "a week").unwrap();
    assert!(store.policy().is_err());
}

fn users_are_checked_listed_and_provisioned_all_or_nothing(store: &mut dyn ServerStore) {
    store.add_user("zoe", "Zoe Ray", "capstone", 5).unwrap();
    store.add_user("al.ng", "Al Ng", "staff", 6).unwrap();
    let e = store.add_user("zoe", "Another", "staff", 7).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    for bad in ["", "has space", "sl/ash", &"x".repeat(65)] {
        assert!(store.add_user(bad, "x", "staff", 7).is_err(), "{bad:?}");
    }
    let zoe = store.user("zoe").unwrap().unwrap();
    assert_eq!(
        (zoe.display.as_str(), zoe.category.as_str()),
        ("Zoe Ray", "capstone")
    );
    assert_eq!(zoe.notice_acknowledged_at_ms, None);
    assert!(store.user("nobody").unwrap().is_none());
    let names: Vec<_> = store.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["al.ng", "zoe"], "by name");

    let bad = ["ok-1".to_string(), "not ok/2".to_string()];
    let e = store.add_users_with_codes(&bad, "staff", 1).unwrap_err();
    assert!(e.to_string().contains("not ok/2"), "{e}");
    assert!(store.user("ok-1").unwrap().is_none(), "nothing was added");
    let names = ["u1".to_string(), "u2".to_string()];
    let codes = store.add_users_with_codes(&names, "staff", 1).unwrap();
    assert_eq!(codes.len(), 2);
    assert_ne!(codes[0], codes[1]);
    assert_eq!(
        store.redeem_code(&codes[1], b"key-2", 2).unwrap().user,
        "u2"
    );
    assert!(
        store.add_users_with_codes(&names[..1], "staff", 3).is_err(),
        "u1 exists"
    );
}

fn an_enrolment_code_enrols_one_device_once_and_only_in_time(store: &mut dyn ServerStore) {
    let e = store.new_enrolment_code("ghost", 1).unwrap_err();
    assert!(e.to_string().contains("no user named ghost"), "{e}");
    store.add_user("ann", "Ann", "staff", 1).unwrap();
    let code = store.new_enrolment_code("ann", 1_000).unwrap();
    assert_eq!(code.len(), 19, "four groups of four: {code}");
    let e = store.redeem_code("NOPE-NOPE", b"k1", 2_000).unwrap_err();
    assert!(e.to_string().contains("not known"), "{e}");
    // Expired 24 hours after it was made.
    let late = 1_000 + ENROLMENT_CODE_TTL_MS + 1;
    let e = store.redeem_code(&code, b"k1", late).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    let d = store.redeem_code(&code, b"k1", 2_000).unwrap();
    assert_eq!((d.user.as_str(), d.revoked), ("ann", false));
    assert_eq!(d.device_id.len(), 16);
    let e = store.redeem_code(&code, b"k2", 2_001).unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
    // A key enrolled twice is refused, and the code stays usable.
    let code2 = store.new_enrolment_code("ann", 3_000).unwrap();
    let e = store.redeem_code(&code2, b"k1", 3_001).unwrap_err();
    assert!(e.to_string().contains("already enrolled"), "{e}");
    assert!(store.redeem_code(&code2, b"k3", 3_002).is_ok());
    assert_eq!(store.devices(Some("ann")).unwrap().len(), 2);
}

fn devices_are_listed_revoked_once_and_the_notice_acknowledged_once(store: &mut dyn ServerStore) {
    let b1 = enrolled(store, "bob", b"kb1");
    let code = store.new_enrolment_code("bob", 3).unwrap();
    let b2 = store.redeem_code(&code, b"kb2", 4).unwrap().device_id;
    let c1 = enrolled(store, "cat", b"kc1");
    let d = store.device(&b1).unwrap().unwrap();
    assert_eq!(
        (d.user.as_str(), d.signature_key.as_slice()),
        ("bob", &b"kb1"[..])
    );
    assert!(store.device("nope").unwrap().is_none());
    let all: Vec<_> = store
        .devices(None)
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(
        all,
        [b1.clone(), b2.clone(), c1.clone()],
        "by user, oldest first"
    );
    assert_eq!(store.devices(Some("cat")).unwrap().len(), 1);
    assert!(store.revoke_device(&b2, 9).unwrap());
    assert!(!store.revoke_device(&b2, 10).unwrap(), "once");
    assert!(!store.revoke_device("nope", 10).unwrap());
    assert!(store.device(&b2).unwrap().unwrap().revoked);
    assert_eq!(store.revoked_devices().unwrap(), [b2]);

    store.acknowledge_notice("bob", 50).unwrap();
    store.acknowledge_notice("bob", 60).unwrap();
    assert_eq!(
        store
            .user("bob")
            .unwrap()
            .unwrap()
            .notice_acknowledged_at_ms,
        Some(50),
        "the first acknowledgement counts"
    );
}

fn a_device_pool_of_key_packages_is_bounded_keeping_the_newest(store: &mut dyn ServerStore) {
    let d = enrolled(store, "r", b"key");
    assert_eq!(store.claim_key_package(&d).unwrap(), None);
    let batch = |tag: u8| -> Vec<Vec<u8>> {
        (0..600u16)
            .map(|i| [vec![tag], i.to_be_bytes().to_vec()].concat())
            .collect()
    };
    store.add_key_packages(&d, &batch(1), Some(b"lr")).unwrap();
    store.add_key_packages(&d, &batch(2), None).unwrap();
    assert_eq!(
        store.key_package_count(&d).unwrap(),
        MAX_KEY_PACKAGES as u64
    );
    // The oldest 200 of the first upload went; claims start at the oldest kept.
    let first = store.claim_key_package(&d).unwrap().unwrap();
    assert_eq!(first, [vec![1u8], 200u16.to_be_bytes().to_vec()].concat());
    let second = store.claim_key_package(&d).unwrap().unwrap();
    assert_eq!(second, [vec![1u8], 201u16.to_be_bytes().to_vec()].concat());
    assert_eq!(store.key_package_count(&d).unwrap(), 998);

    // Once the pool is empty, the last-resort one, which stays.
    let e = enrolled(store, "s", b"key-s");
    store
        .add_key_packages(&e, &[b"one".to_vec()], Some(b"lr1"))
        .unwrap();
    store.add_key_packages(&e, &[], Some(b"lr2")).unwrap();
    assert_eq!(store.claim_key_package(&e).unwrap().unwrap(), b"one");
    assert_eq!(store.claim_key_package(&e).unwrap().unwrap(), b"lr2");
    assert_eq!(store.claim_key_package(&e).unwrap().unwrap(), b"lr2");
    assert_eq!(store.key_package_count(&e).unwrap(), 0);
}

fn handed_out_key_packages_are_remembered_until_they_expire(store: &mut dyn ServerStore) {
    store.hand_out("d1", b"ref-1", 1_000).unwrap();
    assert!(store.handed_out("d1", b"ref-1").unwrap());
    assert!(
        !store.handed_out("d2", b"ref-1").unwrap(),
        "for that device only"
    );
    assert!(!store.handed_out("d1", b"ref-2").unwrap());
    // Handing out another, long after, forgets the expired one.
    store
        .hand_out("d1", b"ref-2", 1_000 + HANDED_OUT_TTL_MS + 1)
        .unwrap();
    assert!(!store.handed_out("d1", b"ref-1").unwrap());
    assert!(store.handed_out("d1", b"ref-2").unwrap());
}

fn a_group_commit_is_all_or_nothing_with_what_a_commit_changes(store: &mut dyn ServerStore) {
    let update = RosterUpdate {
        snapshot: b"s",
        group_info: Some(b"g"),
        added: &[("d2".to_string(), 1)],
        welcome: Some(b"w"),
    };
    let (e1, e2, e3) = (entry("c", 1), entry("c", 2), entry("c", 3));
    store
        .append_batch(&[
            Append {
                entry: &e1,
                roster: Some(&update),
                create: true,
                blobs: &[],
            },
            plain(&e2, false),
        ])
        .unwrap();
    assert_eq!(seqs(store, "c"), [1, 2]);
    assert_eq!(store.cursor("d2", "c").unwrap(), Some(1));
    assert_eq!(
        store.cursor("d1", "c").unwrap(),
        Some(0),
        "the creator replays"
    );
    assert_eq!(store.group_info("c").unwrap().as_deref(), Some(&b"g"[..]));
    assert_eq!(store.welcome("d2", "c").unwrap(), Some((1, b"w".to_vec())));
    assert_eq!(store.welcomes_in("c").unwrap(), [("d2".to_string(), 1)]);
    assert_eq!(
        store.welcomes_for("d2").unwrap(),
        [("c".to_string(), 1, b"w".to_vec())]
    );
    let conv = &store.conversations().unwrap()[0];
    assert_eq!((conv.last_seq, conv.snapshot.as_slice()), (2, &b"s"[..]));
    let got = &store.log_range("c", 2, 2).unwrap()[0];
    assert_eq!(
        (got.seq, got.message.as_slice(), got.sender_user.as_str()),
        (2, &[2u8][..], "alice")
    );
    assert_eq!(
        store.log_senders("c", 1).unwrap(),
        [(2, "d1".to_string(), 1)]
    );

    // seq 2 again in the middle of a batch: the whole batch is refused,
    // seq 3 included, and the log is as before.
    let dup = entry("c", 2);
    assert!(store
        .append_batch(&[plain(&e3, false), plain(&dup, false)])
        .is_err());
    assert_eq!(seqs(store, "c"), [1, 2]);
    assert_eq!(store.conversations().unwrap()[0].last_seq, 2);
    assert_eq!(store.log_len().unwrap(), 2);
    // A proposal (no GroupInfo) keeps the epoch's GroupInfo.
    let keep = RosterUpdate {
        snapshot: b"s2",
        group_info: None,
        added: &[],
        welcome: None,
    };
    store.append(&e3, Some(&keep), false).unwrap();
    assert_eq!(store.group_info("c").unwrap().as_deref(), Some(&b"g"[..]));
    assert_eq!(store.group_info("none").unwrap(), None);
}

fn cursors_move_only_forward_and_drop_passed_welcomes(store: &mut dyn ServerStore) {
    let update = RosterUpdate {
        snapshot: b"s",
        group_info: None,
        added: &[("d2".to_string(), 0), ("records-d".to_string(), 0)],
        welcome: Some(b"w"),
    };
    let entries: Vec<_> = (1..=5).map(|s| entry("c", s)).collect();
    store.append(&entries[0], Some(&update), true).unwrap();
    for e in &entries[1..] {
        store.append(e, None, false).unwrap();
    }
    store.ack("d2", "c", 3, false).unwrap();
    store.ack("d2", "c", 2, false).unwrap();
    assert_eq!(store.cursor("d2", "c").unwrap(), Some(3), "never backwards");
    assert_eq!(store.welcome("d2", "c").unwrap(), None, "past its Welcome");
    assert!(store.welcome("records-d", "c").unwrap().is_some());
    store.ack("records-d", "c", 4, true).unwrap();
    store.ack("records-d", "c", 1, true).unwrap();
    assert_eq!(store.records_progress().unwrap(), [("c".to_string(), 4)]);
    let mut cursors = store.cursors_in("c").unwrap();
    cursors.sort();
    assert_eq!(
        cursors,
        [
            ("d1".to_string(), 0),
            ("d2".to_string(), 3),
            ("records-d".to_string(), 4)
        ]
    );
    // A device's first acknowledgement in a conversation creates its cursor.
    store.ack("d9", "c", 5, false).unwrap();
    assert_eq!(store.cursor("d9", "c").unwrap(), Some(5));
    assert_eq!(store.cursor("d9", "other").unwrap(), None);
}

fn a_sender_that_had_everything_moves_past_its_own_message(store: &mut dyn ServerStore) {
    let (e1, e2, e3) = (entry("c", 1), entry("c", 2), entry("c", 3));
    store.append(&e1, None, true).unwrap();
    // d1 created the conversation at 0 and sends 2 without having
    // acknowledged 1: it stays at 0 (it still needs 1).
    store.append(&e2, None, false).unwrap();
    assert_eq!(store.cursor("d1", "c").unwrap(), Some(0));
    store.ack("d1", "c", 2, false).unwrap();
    store.append(&e3, None, false).unwrap();
    assert_eq!(store.cursor("d1", "c").unwrap(), Some(3));
    // Not past a commit of its own: it must get it replayed after a crash.
    let e4 = entry("c", 4);
    let update = RosterUpdate {
        snapshot: b"s",
        group_info: Some(b"g"),
        added: &[],
        welcome: None,
    };
    store.append(&e4, Some(&update), false).unwrap();
    assert_eq!(store.cursor("d1", "c").unwrap(), Some(3));
}

fn garbage_goes_a_bounded_chunk_per_commit_never_past_its_bounds(store: &mut dyn ServerStore) {
    // Two conversations of 10 entries; in "b", entries 1-4 are old.
    for conv in ["a", "b"] {
        let entries: Vec<LogEntry> = (1..=10)
            .map(|seq| LogEntry {
                server_time_ms: if conv == "b" && seq <= 4 { 10 } else { 1_000 },
                ..entry(conv, seq)
            })
            .collect();
        let appends: Vec<Append<'_>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| plain(e, i == 0))
            .collect();
        store.append_batch(&appends).unwrap();
    }
    // "a": everyone has 1-6 and the records service up to 8.
    // "b": a member is at 0, the records service at 6, 1-4 expired.
    let pass_a = Collectable {
        conv: "a".into(),
        delivered_upto: 6,
        records_acked: 8,
        expired_before_ms: 500,
    };
    let pass_b = Collectable {
        conv: "b".into(),
        delivered_upto: 0,
        records_acked: 6,
        expired_before_ms: 500,
    };
    let mut garbage: VecDeque<Collectable> = [pass_a.clone(), pass_b.clone()].into();
    let e11 = entry("a", 11);
    // A commit carries at most `limit` deletions, oldest first.
    assert_eq!(
        store
            .append_collecting(&[plain(&e11, false)], &mut garbage, 4)
            .unwrap(),
        4
    );
    assert_eq!(seqs(store, "a"), [5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(garbage.len(), 2);
    // The rest of "a" (two), then "b"'s expired entries.
    assert_eq!(store.append_collecting(&[], &mut garbage, 100).unwrap(), 6);
    assert_eq!(
        seqs(store, "a"),
        [7, 8, 9, 10, 11],
        "nothing past delivered_upto"
    );
    assert_eq!(seqs(store, "b"), [5, 6, 7, 8, 9, 10], "only what expired");
    assert!(garbage.is_empty());
    // A pass carried out late deletes nothing it should not.
    let mut late: VecDeque<Collectable> = [pass_b].into();
    assert_eq!(store.append_collecting(&[], &mut late, 100).unwrap(), 0);
    assert_eq!(seqs(store, "b"), [5, 6, 7, 8, 9, 10]);

    // Without a log writer, all at once; a withheld entry is never
    // collected.
    store
        .records_archived(
            "records-d",
            "a",
            11,
            &[WithheldEntry {
                conv: "a".into(),
                seq: 8,
                device: "d1".into(),
                handshake: false,
                reason: "undecryptable".into(),
                at_ms: 5,
            }],
            None,
        )
        .unwrap();
    let everything = Collectable {
        delivered_upto: 11,
        records_acked: 11,
        ..pass_a
    };
    assert_eq!(store.collect(&[everything]).unwrap(), 4);
    assert_eq!(seqs(store, "a"), [8]);
}

fn the_status_counts_what_an_admin_checks(store: &mut dyn ServerStore) {
    let d = enrolled(store, "ann", b"k1");
    enrolled(store, "bo", b"k2");
    store.revoke_device(&d, 3).unwrap();
    for seq in 1..=3 {
        store.append(&entry("c", seq), None, seq == 1).unwrap();
    }
    store.append(&entry("e", 1), None, true).unwrap();
    store.ack("records-d", "c", 1, true).unwrap();
    let s = store.status().unwrap();
    assert_eq!(
        (
            s.users,
            s.active_devices,
            s.revoked_devices,
            s.conversations,
            s.relay_entries,
            s.capture_backlog
        ),
        (2, 1, 1, 2, 4, 3)
    );
    assert_eq!(
        (
            s.suspended_conversations,
            s.blocked_devices,
            s.withheld_entries
        ),
        (0, 0, 0)
    );
}

fn receipt_keys_and_checkpoints_are_kept_in_order(store: &mut dyn ServerStore) {
    store.record_receipt_key(b"k1", 10).unwrap();
    store.record_receipt_key(b"k1", 99).unwrap();
    store.retire_receipt_key(b"k1", 20).unwrap();
    store.retire_receipt_key(b"k1", 30).unwrap();
    store.record_receipt_key(b"k2", 20).unwrap();
    let keys = store.receipt_keys().unwrap();
    let keys: Vec<_> = keys
        .iter()
        .map(|k| (k.key.clone(), k.from_ms, k.until_ms))
        .collect();
    assert_eq!(
        keys,
        [(b"k1".to_vec(), 10, Some(20)), (b"k2".to_vec(), 20, None)]
    );

    assert!(store.latest_checkpoint().unwrap().is_none());
    store.add_checkpoint(1, "note 1", None, &[]).unwrap();
    for size in 2..=300u64 {
        let path = vec![vec![size as u8; 32], vec![1; 32]];
        store
            .add_checkpoint(size, &format!("note {size}"), Some(size - 1), &path)
            .unwrap();
    }
    // The same size again replaces it.
    store
        .add_checkpoint(300, "note 300 again", Some(299), &[vec![9; 32]])
        .unwrap();
    let page = store.checkpoints_after(0).unwrap();
    assert_eq!(page.len(), 256, "a page at a time");
    assert_eq!(page[0].checkpoint, "note 1");
    assert_eq!(page[0].link.from_size, None);
    assert_eq!(page[1].link.consistency_path, [vec![2u8; 32], vec![1; 32]]);
    let rest = store.checkpoints_after(256).unwrap();
    assert_eq!(rest.len(), 44);
    let latest = store.latest_checkpoint().unwrap().unwrap();
    assert_eq!(latest.checkpoint, "note 300 again");
    assert_eq!(
        (latest.link.from_size, latest.link.consistency_path),
        (Some(299), vec![vec![9u8; 32]])
    );
}

fn capture_failures_block_suspend_and_need_a_reasoned_decision(store: &mut dyn ServerStore) {
    let sender = enrolled(store, "ann", b"k-ann");
    store
        .add_user(keepwire_protocol::RECORDS_USER, "Records", "system", 1)
        .unwrap();
    let code = store
        .new_enrolment_code(keepwire_protocol::RECORDS_USER, 1)
        .unwrap();
    let records = store.redeem_code(&code, b"k-rec", 2).unwrap().device_id;
    for (conv, n) in [("c", 4), ("h", 2)] {
        for seq in 1..=n {
            store
                .append(
                    &LogEntry {
                        sender_device: sender.clone(),
                        ..entry(conv, seq)
                    },
                    None,
                    seq == 1,
                )
                .unwrap();
        }
    }
    let withheld = |conv: &str, seq, device: &str, handshake| WithheldEntry {
        conv: conv.into(),
        seq,
        device: device.into(),
        handshake,
        reason: "cannot decrypt".into(),
        at_ms: 100 + seq,
    };
    // A plain acknowledgement changes nothing else.
    store.records_archived(&records, "c", 1, &[], None).unwrap();
    assert_eq!(store.suspension("c").unwrap(), None);
    store
        .records_archived(
            &records,
            "c",
            3,
            &[
                withheld("c", 2, &sender, false),
                withheld("c", 3, &records, false),
            ],
            Some("capture failed at #2"),
        )
        .unwrap();
    assert_eq!(
        store
            .records_progress()
            .unwrap()
            .iter()
            .find(|p| p.0 == "c")
            .unwrap()
            .1,
        3
    );
    assert_eq!(store.withheld(Some("c")).unwrap().len(), 2);
    assert_eq!(store.withheld(None).unwrap().len(), 2);
    let blocked = store.blocked_devices().unwrap();
    assert_eq!(blocked.len(), 1, "never the records device");
    assert_eq!(
        (blocked[0].device.as_str(), blocked[0].user.as_str()),
        (sender.as_str(), "ann")
    );
    assert!(blocked[0].reason.contains("c#2"), "{}", blocked[0].reason);
    assert_eq!(
        store.device(&sender).unwrap().unwrap().blocked.as_deref(),
        Some(blocked[0].reason.as_str())
    );
    assert_eq!(
        store.suspension("c").unwrap().as_deref(),
        Some("capture failed at #2")
    );
    // A second failure keeps the first reason.
    store
        .records_archived(
            &records,
            "c",
            4,
            &[withheld("c", 4, &sender, false)],
            Some("later"),
        )
        .unwrap();
    assert_eq!(
        store.suspension("c").unwrap().as_deref(),
        Some("capture failed at #2")
    );
    let s = store.status().unwrap();
    assert_eq!(
        (
            s.suspended_conversations,
            s.blocked_devices,
            s.withheld_entries
        ),
        (1, 1, 3)
    );

    // A withheld handshake: never resumable.
    store
        .records_archived(
            &records,
            "h",
            2,
            &[withheld("h", 2, &sender, true)],
            Some("commit"),
        )
        .unwrap();
    let suspended: Vec<_> = store
        .suspended_conversations()
        .unwrap()
        .into_iter()
        .map(|s| s.conv)
        .collect();
    assert_eq!(suspended, ["c", "h"]);
    let e = store
        .resume_conversation("h", "admin", "checked", 200)
        .unwrap_err();
    assert!(e.to_string().contains("start a new conversation"), "{e}");
    let e = store
        .resume_conversation("zzz", "admin", "checked", 200)
        .unwrap_err();
    assert!(e.to_string().contains("not suspended"), "{e}");
    // A decision without a reason is refused and changes nothing.
    let e = store
        .resume_conversation("c", "admin", "  ", 200)
        .unwrap_err();
    assert!(e.to_string().contains("say why"), "{e}");
    assert!(store.suspension("c").unwrap().is_some());
    store
        .resume_conversation("c", "admin", "device wiped", 201)
        .unwrap();
    assert_eq!(store.suspension("c").unwrap(), None);
    let e = store.unblock_device(&sender, "admin", "", 202).unwrap_err();
    assert!(e.to_string().contains("say why"), "{e}");
    assert_eq!(store.blocked_devices().unwrap().len(), 1);
    store
        .unblock_device(&sender, "admin", "reissued", 203)
        .unwrap();
    let e = store
        .unblock_device(&sender, "admin", "again", 204)
        .unwrap_err();
    assert!(e.to_string().contains("not blocked"), "{e}");
    assert_eq!(store.device(&sender).unwrap().unwrap().blocked, None);

    let actions = store.admin_actions(0).unwrap();
    let summary: Vec<_> = actions
        .iter()
        .map(|a| {
            (
                a.action.as_str(),
                a.subject.as_str(),
                a.actor.as_str(),
                a.at_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("resume conversation", "c", "admin", 201),
            ("unblock device", sender.as_str(), "admin", 203)
        ]
    );
    assert_eq!(store.admin_actions(actions[0].id).unwrap().len(), 1);
    assert!(store.admin_actions(actions[1].id).unwrap().is_empty());
}

fn another_handle_sees_the_same_store(store: &mut dyn ServerStore) {
    store.add_user("ann", "Ann", "staff", 1).unwrap();
    let other = store
        .reopen()
        .expect("a file or server store reopens")
        .unwrap();
    assert!(other.user("ann").unwrap().is_some());
    other.set_meta("k", "v").unwrap();
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));
    assert!(!store.describe().contains("password"));
}

/// An enrolment code is kept only as its hash: someone who reads the
/// database (a backup, a loose permission) cannot enrol a device with
/// what they find. Checked on the bytes each backend holds.
#[test]
fn enrolment_codes_are_stored_as_hashes_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open(&path).unwrap();
    store.add_user("ann", "Ann", "staff", 1).unwrap();
    let code = store.new_enrolment_code("ann", 1).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default());
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!find(code.as_bytes()), "the code is in the file");
    assert!(find(super::api::code_digest(&code).as_bytes()));

    let db = keepwire_schema::pg::scratch::Scratch::new().unwrap();
    let store = PgStore::open(&db.url).unwrap();
    store.add_user("ann", "Ann", "staff", 1).unwrap();
    let code = store.new_enrolment_code("ann", 1).unwrap();
    let pg = keepwire_schema::pg::Pg::connect(&db.url).unwrap();
    let kept: Vec<String> = pg
        .query("SELECT code FROM enrolment_codes", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [super::api::code_digest(&code)]);
}
