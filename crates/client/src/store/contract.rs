//! The device store's storage contract: what every [`DeviceBackend`]
//! must do, each check on a fresh, empty backend. This crate's tests run
//! it on SQLite; the records crate's run it on PostgreSQL, where a records
//! worker's state can be kept. Test support: it panics on a failed check.

use super::backend::{DeviceBackend, MessageRow};

/// One check, with its name.
pub type Check = (&'static str, fn(Box<dyn DeviceBackend>));

/// Every check of the contract.
pub const CHECKS: &[Check] = &[
    ("settings are kept and replaced", settings),
    (
        "values are put, listed by prefix and deleted together",
        values,
    ),
    ("messages are kept once, read, burned and expired", messages),
];

/// Run every check, each on a backend from `fresh`.
pub fn run_all(mut fresh: impl FnMut() -> Box<dyn DeviceBackend>) {
    for (name, check) in CHECKS {
        eprintln!("device store contract: {name}");
        check(fresh());
    }
}

fn settings(mut b: Box<dyn DeviceBackend>) {
    assert_eq!(b.meta("salt").unwrap(), None);
    b.set_meta(&[("salt", b"s1"), ("check", b"c1")]).unwrap();
    assert_eq!(b.meta("salt").unwrap().as_deref(), Some(&b"s1"[..]));
    assert_eq!(b.meta("check").unwrap().as_deref(), Some(&b"c1"[..]));
    b.set_meta(&[("salt", b"s2")]).unwrap();
    assert_eq!(b.meta("salt").unwrap().as_deref(), Some(&b"s2"[..]));
    assert!(!b.describe().contains("password"));
}

fn values(mut b: Box<dyn DeviceBackend>) {
    assert_eq!(b.get("epoch", b"g1").unwrap(), None);
    b.write(
        &[
            ("epoch", b"g1\x00\x02", b"two"),
            ("epoch", b"g1\x00\x01", b"one"),
            ("epoch", b"g2\x00\x01", b"other"),
            ("state", b"g1", b"state"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        b.get("epoch", b"g1\x00\x01").unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        b.get("state", b"g1\x00\x01").unwrap(),
        None,
        "per namespace"
    );
    assert_eq!(
        b.keys("epoch", b"g1").unwrap(),
        [b"g1\x00\x01".to_vec(), b"g1\x00\x02".to_vec()],
        "by prefix, in byte order"
    );
    assert_eq!(b.keys("epoch", b"").unwrap().len(), 3);
    // Replace one, delete another, in one write.
    b.write(
        &[("epoch", b"g1\x00\x02", b"TWO")],
        &[("epoch", b"g1\x00\x01")],
    )
    .unwrap();
    assert_eq!(b.get("epoch", b"g1\x00\x01").unwrap(), None);
    assert_eq!(
        b.get("epoch", b"g1\x00\x02").unwrap().as_deref(),
        Some(&b"TWO"[..])
    );
    // Deleting what is not there is no error.
    b.write(&[], &[("epoch", b"nothing")]).unwrap();
    // Binary keys and values survive as they are.
    let key: Vec<u8> = (0..=255u8).collect();
    b.write(&[("bin", &key, &key)], &[]).unwrap();
    assert_eq!(b.get("bin", &key).unwrap(), Some(key));
}

fn messages(mut b: Box<dyn DeviceBackend>) {
    let m = |conv: &str, seq, expire_at_ms, burn_on_read| MessageRow {
        conv: conv.into(),
        seq,
        server_time_ms: 10 + seq,
        expire_at_ms,
        burn_on_read,
        read: false,
        body: vec![seq as u8; 8],
    };
    assert_eq!(b.next_expiry().unwrap(), None);
    b.insert_message(&m("c", 2, Some(5_000), false)).unwrap();
    b.insert_message(&m("c", 1, Some(1_000), false)).unwrap();
    b.insert_message(&m("d", 1, None, true)).unwrap();
    let mut again = m("d", 1, None, false);
    again.body = b"changed".to_vec();
    b.insert_message(&again).unwrap();
    assert_eq!(b.message_count().unwrap(), 3, "redelivery is ignored");
    assert_eq!(b.messages(Some("d")).unwrap()[0].body, vec![1u8; 8]);
    let all = b.messages(None).unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.conv.as_str(), r.seq))
            .collect::<Vec<_>>(),
        [("c", 1), ("c", 2), ("d", 1)]
    );
    assert_eq!(all[0], m("c", 1, Some(1_000), false));
    assert_eq!(b.next_expiry().unwrap(), Some(1_000));
    assert_eq!(b.purge_expired(999).unwrap(), 0);
    assert_eq!(b.purge_expired(1_000).unwrap(), 1);
    // Reading "c" burns nothing there; reading "d" burns its message.
    assert_eq!(b.mark_read(Some("c")).unwrap(), 0);
    assert!(b.messages(Some("c")).unwrap()[0].read);
    assert!(!b.messages(Some("d")).unwrap()[0].read);
    assert_eq!(b.mark_read(None).unwrap(), 1);
    assert_eq!(b.message_count().unwrap(), 1);
    assert_eq!(b.next_expiry().unwrap(), Some(5_000));
}
