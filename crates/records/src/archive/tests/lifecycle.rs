//! The lifecycle's events in the store, on both backends: numbered from 1
//! without a gap, each with its leaf in one transaction, a stale number
//! refused; and the archive as a whole: events folded into the schedule,
//! an altered event named by `verify`.

use super::*;
use crate::lifecycle::{event_leaf, Event};

contract!(events_are_appended_in_order_each_with_its_leaf);

fn event(n: u64, body: &str) -> StoredEvent {
    StoredEvent {
        n,
        kind: "settings".into(),
        actor: "olu".into(),
        at_ms: 100 + n,
        body: body.into(),
        leaf: None,
    }
}

fn events_are_appended_in_order_each_with_its_leaf(store: &mut Store) {
    assert!(store.events(0).unwrap().is_empty());
    let first = event(1, "{\"a\":1}");
    assert!(store.append_event(&first, &event_leaf(&first)).unwrap());
    // A number that is not the next is refused, writing nothing.
    for n in [1, 3] {
        let e = event(n, "{}");
        assert!(
            !store.append_event(&e, &event_leaf(&e)).unwrap(),
            "event {n}"
        );
    }
    assert_eq!(store.log_size().unwrap(), 1, "no leaf for a refused event");
    let second = event(2, "{\"b\":2}");
    assert!(store.append_event(&second, &event_leaf(&second)).unwrap());
    let stored = store.events(0).unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].body, "{\"b\":2}");
    assert_eq!((stored[0].leaf, stored[1].leaf), (Some(0), Some(1)));
    assert_eq!(store.events(1).unwrap().len(), 1);
    // Each leaf is the one the event's fields make.
    let (kind, _, data) = store.leaf(1).unwrap().unwrap();
    assert_eq!(kind, "lifecycle");
    assert_eq!(data, event_leaf(&stored[1]).to_bytes());
}

#[test]
fn verify_names_a_lifecycle_event_changed_behind_the_service() {
    let keys = tempfile::tempdir().unwrap();
    let provider = crate::keys::FileKeys::open(&keys.path().join("keys")).unwrap();
    let db = keys.path().join(ARCHIVE_DB);
    let mut archive = Archive::with_store(
        Box::new(SqliteArchive::open(&db).unwrap()),
        keys.path(),
        Some(&provider),
    )
    .unwrap();
    let role: crate::lifecycle::directory::Role = serde_json::from_value(serde_json::json!({
        "user": "dana", "position": "COMM", "title": "Commissioner",
        "office": "Office of the Commissioner", "category": "capstone:1", "from": "2025-01-20"
    }))
    .unwrap();
    let (n, state) = archive
        .record_event("olu", &Event::RoleStart { role }, 10)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(state.directory.roles.len(), 1);
    // Refused by the state: nothing logged.
    let end_before = Event::RoleEnd {
        user: "dana".into(),
        position: "COMM".into(),
        on: "2024-01-01".parse().unwrap(),
    };
    assert!(archive.record_event("olu", &end_before, 11).is_err());
    assert_eq!(archive.log_size().unwrap(), 1);
    assert_eq!(archive.lifecycle().unwrap().last_event, 1);

    let check = |archive: &Archive| {
        crate::verify::verify(archive, &Default::default(), |_, _| {})
            .unwrap()
            .problems
    };
    assert!(check(&archive).is_empty());
    // An insider makes the Capstone official staff, so their records
    // would fall due: verify names the event.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE lifecycle_events SET body = replace(body, 'capstone:1', 'staff')",
        [],
    )
    .unwrap();
    let problems = check(&archive);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].detail.contains("lifecycle event 1"),
        "{problems:?}"
    );
    // And one deleted outright is missing.
    conn.execute("DELETE FROM lifecycle_events", []).unwrap();
    let problems = check(&archive);
    assert!(
        problems
            .iter()
            .any(|p| p.kind == crate::verify::ProblemKind::Missing
                && p.detail.contains("lifecycle event 1")),
        "{problems:?}"
    );
}
