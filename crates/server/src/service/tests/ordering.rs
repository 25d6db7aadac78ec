//! Order and time: a device syncing in the middle of a group commit gets
//! each entry once and in order; receipt times never go back; a nearly
//! full disk refuses new messages until space returns.

use super::*;

#[test]
pub(super) fn a_device_syncing_during_a_group_commit_gets_each_entry_once_in_order() {
    let mut w = World::with_writer();
    let mut mallory = w.device("mallory", "staff");
    let mut bob = w.device("bob", "staff");
    let mut records = w.device(RECORDS_USER, "records");
    let (cm, cb, cr) = (
        mallory.client(Rules::default()),
        bob.client(Rules::default()),
        records.client(Rules::default()),
    );
    w.upload(&mut bob, &cb);
    w.upload(&mut records, &cr);
    w.call(&mut mallory, Request::AcknowledgeNotice).unwrap();
    w.call(&mut records, Request::Sync).unwrap();
    w.call(&mut bob, Request::Sync).unwrap();
    let kps = w.claim(&mut mallory, &["bob"], true);
    let mut g = cm
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    let conv = hex::encode(g.group_id());
    w.call(&mut mallory, creation(&mut g, &kps)).unwrap();
    g.apply_pending_commit().unwrap();
    w.flush();
    assert_eq!(
        w.delivered(&records, &conv),
        [0, 1],
        "the Welcome, then the commit"
    );
    w.call(
        &mut records,
        Request::Archived {
            conv: conv.clone(),
            from: 1,
            to: 1,
            withheld: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(
        w.delivered(&bob, &conv),
        [0],
        "bob's Welcome, once captured"
    );
    // Bob joins from it: up to #1 is his.
    w.call(
        &mut bob,
        Request::Ack {
            conv: conv.clone(),
            seq: 1,
        },
    )
    .unwrap();

    // Message 2 is in the group commit: written, its pushes not yet out.
    let m = g.encrypt_application_message(b"two", vec![]).unwrap();
    w.call(&mut mallory, submit(&conv, &m, None)).unwrap();
    let batch = w.write();
    // Meanwhile the records service reconnects and syncs: the store
    // already holds #2, but its push has not gone out, so the replay
    // stops before it...
    let mut session = w.session();
    session.device = records.session.device.clone();
    let mut again = Dev {
        session,
        secret: records.secret.clone(),
        public: records.public.clone(),
    };
    w.call(&mut again, Request::Sync).unwrap();
    assert_eq!(w.delivered(&again, &conv), Vec::<u64>::new());
    // ...and the push brings it, once.
    w.durable(batch);
    assert_eq!(w.delivered(&again, &conv), [2]);
    // Bob, syncing before the records service reports #2 archived, is
    // replayed nothing; the report releases it to him, once.
    w.call(&mut bob, Request::Sync).unwrap();
    assert_eq!(w.delivered(&bob, &conv), Vec::<u64>::new());
    w.call(
        &mut again,
        Request::Archived {
            conv: conv.clone(),
            from: 2,
            to: 2,
            withheld: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(w.delivered(&bob, &conv), [2]);
    // Acknowledged, it is not replayed again.
    w.call(
        &mut bob,
        Request::Ack {
            conv: conv.clone(),
            seq: 2,
        },
    )
    .unwrap();
    w.call(&mut bob, Request::Sync).unwrap();
    assert_eq!(w.delivered(&bob, &conv), Vec::<u64>::new());
}

/// Receipt times never go backwards when the clock is set back, and a
/// nearly full disk refuses new messages (`storage_full`) — before a write
/// can fail half way — then accepts them again once space returns.
#[test]
fn receipt_times_never_go_back_and_a_full_disk_refuses_until_space_returns() {
    let mut w = World::new();
    let mut alice = w.device("alice", "staff");
    let mut bob = w.device("bob", "staff");
    let mut records = w.device(RECORDS_USER, "records");
    let (ca, cb, cr) = (
        alice.client(Rules::default()),
        bob.client(Rules::default()),
        records.client(Rules::default()),
    );
    w.upload(&mut bob, &cb);
    w.upload(&mut records, &cr);
    w.call(&mut alice, Request::AcknowledgeNotice).unwrap();
    let kps = w.claim(&mut alice, &["bob"], true);
    let mut g = ca
        .create_group(ExtensionList::new(), ExtensionList::new(), None)
        .unwrap();
    let conv = hex::encode(g.group_id());
    w.call(&mut alice, creation(&mut g, &kps)).unwrap();
    g.apply_pending_commit().unwrap();
    let mut send = |w: &mut World, text: &[u8], at: u64| {
        let m = g.encrypt_application_message(text, vec![]).unwrap();
        let r = w
            .core
            .handle(&mut alice.session, submit(&conv, &m, None), at);
        w.core.answer(alice.session.id, String::new(), String::new);
        w.pump();
        r
    };
    let receipt_time = |r: Result<ServerBody, ProtocolError>| match r {
        Ok(ServerBody::Receipt(r)) => r.server_time_ms,
        other => panic!("{other:?}"),
    };
    let t = now();
    let first = receipt_time(send(&mut w, b"one", t));
    let second = receipt_time(send(&mut w, b"two", t - 60_000));
    assert!(
        second >= first,
        "the clock went back a minute: {second} < {first}"
    );

    let reserve = Limits::default().min_free_bytes;
    w.core.set_free_space(Some(reserve - 1));
    refused(
        send(&mut w, b"three", t),
        ErrorCode::StorageFull,
        "a message while the disk is nearly full",
    );
    assert!(w.core.stats().storage_full);
    w.core.set_free_space(Some(reserve * 4));
    receipt_time(send(&mut w, b"three", t));
    assert!(!w.core.stats().storage_full);
}
