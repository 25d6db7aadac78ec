use super::accounts::POLICY_GUESTS;
use super::*;

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

#[test]
fn the_policy_has_defaults_and_an_unreadable_setting_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let p = store.policy().unwrap();
    assert_eq!((p.max_timer_secs, p.guests_allowed), (7 * 24 * 3600, true));
    store.set_policy(Some(3600), Some(false)).unwrap();
    let p = store.policy().unwrap();
    assert_eq!((p.max_timer_secs, p.guests_allowed), (3600, false));
    // Never a default for what cannot be read: no guests let in by a
    // damaged setting.
    store.set_meta(POLICY_GUESTS, "nope").unwrap();
    assert!(store.policy().is_err());
}

#[test]
fn a_device_pool_of_key_packages_is_bounded_keeping_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let codes = store
        .add_users_with_codes(&["r".to_string()], "staff", 1)
        .unwrap();
    let d = store.redeem_code(&codes[0], b"key", 2).unwrap();
    let batch = |tag: u8| -> Vec<Vec<u8>> {
        (0..600u16)
            .map(|i| [vec![tag], i.to_be_bytes().to_vec()].concat())
            .collect()
    };
    store
        .add_key_packages(&d.device_id, &batch(1), Some(b"lr"))
        .unwrap();
    store
        .add_key_packages(&d.device_id, &batch(2), None)
        .unwrap();
    assert_eq!(
        store.key_package_count(&d.device_id).unwrap(),
        MAX_KEY_PACKAGES as u64
    );
    // The oldest 200 of the first upload went; claims start at the oldest kept.
    let first = store.claim_key_package(&d.device_id).unwrap().unwrap();
    assert_eq!(first, [vec![1u8], 200u16.to_be_bytes().to_vec()].concat());
}

#[test]
fn bulk_provisioning_is_all_or_nothing_and_codes_redeem() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let bad = ["ok-1".to_string(), "not ok/2".to_string()];
    let e = store.add_users_with_codes(&bad, "staff", 1).unwrap_err();
    assert!(e.to_string().contains("not ok/2"), "{e}");
    assert!(store.user("ok-1").unwrap().is_none(), "nothing was added");

    let names = ["u1".to_string(), "u2".to_string()];
    let codes = store.add_users_with_codes(&names, "staff", 1).unwrap();
    assert_eq!(codes.len(), 2);
    assert_ne!(codes[0], codes[1]);
    let d = store.redeem_code(&codes[1], b"key-2", 2).unwrap();
    assert_eq!(d.user, "u2");
    assert!(
        store.add_users_with_codes(&names[..1], "staff", 3).is_err(),
        "u1 exists"
    );
}

#[test]
fn a_group_commit_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
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
            },
            Append {
                entry: &e2,
                roster: None,
                create: false,
            },
        ])
        .unwrap();
    assert_eq!(store.log_after("c", 0).unwrap().len(), 2);
    assert_eq!(store.cursor("d2", "c").unwrap(), Some(1));
    assert_eq!(store.group_info("c").unwrap().as_deref(), Some(&b"g"[..]));

    // seq 2 again in the middle of a batch: the whole batch is refused,
    // seq 3 included, and the log is as before.
    let dup = entry("c", 2);
    assert!(store
        .append_batch(&[
            Append {
                entry: &e3,
                roster: None,
                create: false
            },
            Append {
                entry: &dup,
                roster: None,
                create: false
            },
        ])
        .is_err());
    let log = store.log_after("c", 0).unwrap();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.conversations().unwrap()[0].last_seq, 2);
}

#[test]
fn garbage_goes_a_bounded_chunk_per_commit_never_past_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let seqs = |store: &Store, conv: &str| -> Vec<u64> {
        store
            .log_after(conv, 0)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
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
            .map(|(i, e)| Append {
                entry: e,
                roster: None,
                create: i == 0,
            })
            .collect();
        store.append_batch(&appends).unwrap();
    }
    // "a": everyone has 1-6 and the records service up to 8.
    // "b": a member is at 0, the records service at 6, 1-4 expired.
    let mut garbage: std::collections::VecDeque<Collectable> = [
        Collectable {
            conv: "a".into(),
            delivered_upto: 6,
            records_acked: 8,
            expired_before_ms: 500,
        },
        Collectable {
            conv: "b".into(),
            delivered_upto: 0,
            records_acked: 6,
            expired_before_ms: 500,
        },
    ]
    .into();
    let e11 = entry("a", 11);
    let one = [Append {
        entry: &e11,
        roster: None,
        create: false,
    }];
    // A commit carries at most `limit` deletions, oldest first.
    assert_eq!(store.append_collecting(&one, &mut garbage, 4).unwrap(), 4);
    assert_eq!(seqs(&store, "a"), [5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(garbage.len(), 2);
    // The rest of "a" (two), then "b"'s expired entries.
    assert_eq!(store.append_collecting(&[], &mut garbage, 100).unwrap(), 6);
    assert_eq!(
        seqs(&store, "a"),
        [7, 8, 9, 10, 11],
        "nothing past delivered_upto"
    );
    assert_eq!(seqs(&store, "b"), [5, 6, 7, 8, 9, 10], "only what expired");
    assert!(garbage.is_empty());
    // A pass carried out late deletes nothing it should not.
    let mut late: std::collections::VecDeque<Collectable> = [Collectable {
        conv: "b".into(),
        delivered_upto: 0,
        records_acked: 6,
        expired_before_ms: 500,
    }]
    .into();
    assert_eq!(store.append_collecting(&[], &mut late, 100).unwrap(), 0);
    assert_eq!(seqs(&store, "b"), [5, 6, 7, 8, 9, 10]);
}
