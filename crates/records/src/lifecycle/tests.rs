//! The schedule as a function of events and a record's day: a year of
//! messages from staff, a Capstone official and a support role, then the
//! directory changes under them.

use super::schedule::*;
use super::*;
use crate::RecordKind;

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

fn meta(conv: &str, sent: &str, users: &[&str]) -> RecordMeta {
    let mut participants: Vec<String> = users.iter().map(|u| format!("{u}/d1")).collect();
    participants.push(format!("{}/r1", keepwire_protocol::RECORDS_USER));
    RecordMeta {
        conv: conv.into(),
        seq: 1,
        kind: RecordKind::Application,
        epoch: 1,
        sender: participants[0].clone(),
        participants,
        server_time_ms: day(sent).start_ms() + 13 * 3_600_000,
        captured_at_ms: day(sent).start_ms() + 13 * 3_600_000,
        expire_after_secs: Some(3600),
        burn_on_read: false,
        note: None,
        attachments: Vec::new(),
    }
}

fn role(user: &str, position: &str, category: &str, from: &str) -> Event {
    Event::RoleStart {
        role: Role {
            user: user.into(),
            position: position.into(),
            title: format!("{position} title"),
            office: "Office of Field Operations".into(),
            category: category.parse().unwrap(),
            from: day(from),
            until: None,
        },
    }
}

/// Apply events in order, numbering them, as the archive would.
fn state(events: &[Event]) -> Lifecycle {
    let mut s = Lifecycle::default();
    for (i, e) in events.iter().enumerate() {
        s.apply(i as u64 + 1, e).unwrap();
    }
    s
}

#[test]
fn staff_capstone_and_support_messages_get_their_items_and_dates() {
    let s = state(&[
        role("dana", "COMM", "capstone:1", "2025-01-20"),
        role("sam", "CLERK", "support", "2024-06-01"),
    ]);
    // Staff by default (not in the directory): GRS 6.1 item 011, cut off
    // at the end of the calendar year, destroyable 7 years after.
    let a = s.assign(&meta("c1", "2026-05-04", &["alice"]));
    assert_eq!(a.item, GRS_6_1_011);
    assert_eq!(a.cutoff_day, Some(day("2026-12-31")));
    assert_eq!(a.disposition_day, Some(day("2034-01-01")));
    assert_eq!(a.transfer_day, None);
    assert!(!a.permanent);
    // Support alone: 3 years.
    let a = s.assign(&meta("c2", "2026-05-04", &["sam"]));
    assert_eq!(a.item, GRS_6_1_012);
    assert_eq!(a.disposition_day, Some(day("2030-01-01")));
    // With staff: the longest-retained wins.
    assert_eq!(
        s.assign(&meta("c3", "2026-05-04", &["sam", "alice"])).item,
        GRS_6_1_011
    );
    // A Capstone official: permanent, transferred 15 years after cutoff.
    let a = s.assign(&meta("c4", "2026-05-04", &["dana", "sam", "alice"]));
    assert_eq!(a.item, GRS_6_1_010);
    assert!(a.permanent);
    assert_eq!(a.transfer_day, Some(day("2042-01-01")));
    assert_eq!(a.disposition_day, None);
    assert_eq!(a.offices, vec!["Office of Field Operations".to_string()]);
    // Before the official took office, the same pair was staff.
    assert_eq!(
        s.assign(&meta("c4", "2025-01-19", &["dana"])).item,
        GRS_6_1_011
    );
}

#[test]
fn guests_take_the_agency_participants_item() {
    let s = state(&[
        role("sam", "CLERK", "support", "2024-06-01"),
        role("gabriela", "LIAISON", "guest", "2024-01-01"),
        role("dana", "COMM", "capstone:1", "2025-01-20"),
    ]);
    assert_eq!(
        s.assign(&meta("c", "2026-03-01", &["sam", "gabriela"]))
            .item,
        GRS_6_1_012
    );
    assert_eq!(
        s.assign(&meta("c", "2026-03-01", &["dana", "gabriela"]))
            .item,
        GRS_6_1_010
    );
}

#[test]
fn a_move_out_of_a_capstone_position_reschedules_from_its_date() {
    let mut s = state(&[role("dana", "COMM", "capstone:1", "2025-01-20")]);
    let before = meta("c", "2026-02-27", &["dana", "alice"]);
    let after = meta("c", "2026-03-02", &["dana", "alice"]);
    assert_eq!(s.assign(&after).item, GRS_6_1_010);
    // Entered late: dana left on 2026-02-28 and became staff.
    s.apply(
        2,
        &Event::RoleEnd {
            user: "dana".into(),
            position: "COMM".into(),
            on: day("2026-02-28"),
        },
    )
    .unwrap();
    s.apply(3, &role("dana", "ADVISOR", "staff", "2026-03-01"))
        .unwrap();
    assert_eq!(
        s.assign(&before).item,
        GRS_6_1_010,
        "records before the move stay permanent"
    );
    assert_eq!(
        s.assign(&after).item,
        GRS_6_1_011,
        "records since the move are rescheduled"
    );
    // Overlapping roles in one position, and ends before starts, are refused.
    assert!(s
        .apply(4, &role("dana", "ADVISOR", "staff", "2026-06-01"))
        .is_err());
    assert!(s
        .apply(
            4,
            &Event::RoleEnd {
                user: "dana".into(),
                position: "ADVISOR".into(),
                on: day("2026-01-01"),
            }
        )
        .is_err());
    assert_eq!(s.last_event, 3, "a refused event changes nothing");
}

#[test]
fn cutoffs_fiscal_year_tenure_and_administration() {
    let mut settings = Settings {
        cutoff: Cutoff::FiscalYear,
        ..Settings::default()
    };
    let mut s = state(&[Event::Settings {
        settings: settings.clone(),
    }]);
    // October starts the next fiscal year.
    let a = s.assign(&meta("c", "2026-10-01", &["alice"]));
    assert_eq!(a.cutoff_day, Some(day("2027-09-30")));
    assert_eq!(a.disposition_day, Some(day("2034-10-01")));
    assert_eq!(
        s.assign(&meta("c", "2026-09-30", &["alice"])).cutoff_day,
        Some(day("2026-09-30"))
    );

    // End of tenure: pending while the position is held, then dated.
    settings.cutoff = Cutoff::EndOfTenure;
    settings.transfer_years = 20;
    s.apply(
        2,
        &Event::Settings {
            settings: settings.clone(),
        },
    )
    .unwrap();
    s.apply(3, &role("dana", "COMM", "capstone:1", "2025-01-20"))
        .unwrap();
    let m = meta("c", "2026-05-04", &["dana"]);
    let a = s.assign(&m);
    assert_eq!(a.cutoff_day, None);
    assert!(a.pending.as_deref().unwrap().contains("still held"));
    s.apply(
        4,
        &Event::RoleEnd {
            user: "dana".into(),
            position: "COMM".into(),
            on: day("2029-01-20"),
        },
    )
    .unwrap();
    let a = s.assign(&m);
    assert_eq!(a.cutoff_day, Some(day("2029-01-20")));
    assert_eq!(a.transfer_day, Some(day("2049-01-21")));

    // End of administration: the next listed end.
    settings.cutoff = Cutoff::EndOfAdministration;
    s.apply(
        5,
        &Event::Settings {
            settings: settings.clone(),
        },
    )
    .unwrap();
    assert!(s.assign(&m).pending.is_some(), "no end listed");
    settings.administration_ends = vec![day("2025-01-20"), day("2029-01-20")];
    s.apply(
        6,
        &Event::Settings {
            settings: settings.clone(),
        },
    )
    .unwrap();
    assert_eq!(s.assign(&m).cutoff_day, Some(day("2029-01-20")));

    // Transfer years outside 15–30 in steps of 5 are refused.
    settings.transfer_years = 17;
    assert!(s.apply(7, &Event::Settings { settings }).is_err());
}

#[test]
fn transitory_and_agency_items_by_conversation() {
    let items = AgencyItems::parse(
        r#"
        [[item]]
        code = "N1-563-08-4 item 2"
        authority = "N1-563-08-4"
        title = "Case coordination messages"
        retention = "10 years"
        cutoff = "fiscal-year"
        "#,
    )
    .unwrap();
    let mut s = state(&[Event::AgencyItems { items }]);
    s.apply(
        2,
        &Event::ConversationItem {
            conv: "lunch".into(),
            item: Some(GRS_5_2_010.into()),
            from: day("2026-01-01"),
            reason: "lunch orders".into(),
        },
    )
    .unwrap();
    let a = s.assign(&meta("lunch", "2026-03-01", &["alice"]));
    assert_eq!(a.item, GRS_5_2_010);
    assert_eq!(a.cutoff, Cutoff::None);
    assert_eq!(
        a.disposition_day,
        Some(day("2026-08-29")),
        "180 days after the day sent"
    );
    // Before the marking, the participants' item.
    assert_eq!(
        s.assign(&meta("lunch", "2025-12-31", &["alice"])).item,
        GRS_6_1_011
    );

    s.apply(
        3,
        &Event::ConversationItem {
            conv: "case-77".into(),
            item: Some("N1-563-08-4 item 2".into()),
            from: day("2026-01-01"),
            reason: "case file".into(),
        },
    )
    .unwrap();
    let a = s.assign(&meta("case-77", "2026-11-15", &["alice"]));
    assert_eq!(a.item, "N1-563-08-4 item 2");
    assert_eq!(a.cutoff_day, Some(day("2027-09-30")));
    assert_eq!(a.disposition_day, Some(day("2037-10-01")));

    // Unknown and permanent items are refused for a conversation; the
    // agency cannot withdraw an item in use.
    for item in ["N9-nothing", GRS_6_1_010] {
        assert!(s
            .apply(
                4,
                &Event::ConversationItem {
                    conv: "x".into(),
                    item: Some(item.into()),
                    from: day("2026-01-01"),
                    reason: "r".into(),
                }
            )
            .is_err());
    }
    assert!(s
        .apply(
            4,
            &Event::AgencyItems {
                items: AgencyItems::default()
            }
        )
        .is_err());
    // Nor shorten it under the same code; a new code is fine.
    let shorter = AgencyItems::parse(
        "[[item]]\ncode = \"N1-563-08-4 item 2\"\nauthority = \"N1-563-08-4\"\ntitle = \"t\"\nretention = \"1 days\"\ncutoff = \"fiscal-year\"",
    )
    .unwrap();
    let e = s
        .apply(4, &Event::AgencyItems { items: shorter })
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot change under the same code"),
        "{e}"
    );
    let more = AgencyItems::parse(
        "[[item]]\ncode = \"N1-563-08-4 item 2\"\nauthority = \"N1-563-08-4\"\ntitle = \"renamed\"\nretention = \"10 years\"\ncutoff = \"fiscal-year\"\n[[item]]\ncode = \"N2\"\nauthority = \"N2\"\ntitle = \"t\"\nretention = \"1 days\"",
    )
    .unwrap();
    s.apply(4, &Event::AgencyItems { items: more }).unwrap();
}

#[test]
fn schedule_files_are_checked() {
    for bad in [
        "[[item]]\ncode = \"GRS 6.1 item 011\"\nauthority = \"x\"\ntitle = \"t\"\nretention = \"7 years\"",
        "[[item]]\ncode = \"A\"\nauthority = \"x\"\ntitle = \"t\"\nretention = \"forever\"",
        "[[item]]\ncode = \"A\"\nauthority = \"x\"\ntitle = \"t\"\nretention = \"transitory\"",
        "[[item]]\ncode = \"A\"\nauthority = \"x\"\ntitle = \"t\"\nretention = \"7 years\"\n[[item]]\ncode = \"A\"\nauthority = \"x\"\ntitle = \"t\"\nretention = \"7 years\"",
        "[[item]]\ncode = \"A\"\nauthority = \"x\"\ntitle = \"t\"\nretention = \"7 years\"\nextra = 1",
        "[[item]]\ncode = \"\"\nauthority = \"x\"\ntitle = \"t\"\nretention = \"7 years\"",
    ] {
        assert!(AgencyItems::parse(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn history_names_the_event_that_rescheduled_a_record() {
    let mut m = meta("c", "2026-05-04", &["dana"]);
    m.captured_at_ms = 500;
    let events: Vec<StoredEvent> = [
        role("dana", "COMM", "capstone:1", "2026-01-01"),
        Event::RoleEnd {
            user: "dana".into(),
            position: "COMM".into(),
            on: day("2026-03-31"),
        },
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| StoredEvent {
        n: i as u64 + 1,
        kind: e.kind().into(),
        actor: "olu".into(),
        at_ms: 1000 + i as u64,
        body: e.to_json(),
        leaf: Some(i as u64),
    })
    .collect();
    let h = Lifecycle::history(&m, &events).unwrap();
    let items: Vec<(u64, &str)> = h
        .iter()
        .map(|c| (c.event, c.assignment.item.as_str()))
        .collect();
    assert_eq!(
        items,
        vec![(0, GRS_6_1_011), (1, GRS_6_1_010), (2, GRS_6_1_011)]
    );
    assert_eq!(h[2].actor, "olu");
    assert_eq!(h[2].kind, "role-end");
}

#[test]
fn the_na1005_counts_capstone_positions_and_says_when_to_renew() {
    let mut s = state(&[
        role("dana", "COMM", "capstone:1", "2025-01-20"),
        role("eli", "DEP", "capstone:2", "2025-01-20"),
        role("fay", "DEP", "capstone:2", "2025-02-01"),
    ]);
    let v = s.na1005_on(day("2026-06-01"));
    assert!(v.unapproved);
    assert_eq!(v.capstone_positions[&1][0].holders, 1);
    assert_eq!(v.capstone_positions[&2][0].holders, 2);
    assert!(v.items_used.contains(&GRS_6_1_010.to_string()));
    let form = na1005::Na1005 {
        nara: Some(na1005::Approval {
            name: "NARA".into(),
            on: day("2023-01-10"),
        }),
        ..Default::default()
    };
    s.apply(4, &Event::Na1005 { form }).unwrap();
    let v = s.na1005_on(day("2026-06-01"));
    assert_eq!(v.renewal_due, Some(day("2027-01-10")));
    assert!(!v.renewal_needed);
    assert!(
        s.na1005_on(day("2026-10-15")).renewal_needed,
        "within 90 days"
    );
}

#[test]
fn a_second_approval_can_be_turned_off_but_never_for_a_forced_batch() {
    let mut s = Lifecycle::default();
    let propose = |forced: Option<&str>| Event::BatchPropose {
        records: vec![1],
        forced: forced.map(String::from),
        note: String::new(),
    };
    s.apply_as(1, "olu", 1, &propose(None)).unwrap();
    assert!(
        !s.may_execute(&s.batches[&1]),
        "approved by another account first"
    );
    let settings = Settings {
        second_approver: false,
        ..Settings::default()
    };
    s.apply_as(2, "olu", 2, &Event::Settings { settings })
        .unwrap();
    assert!(
        !s.may_execute(&s.batches[&1]),
        "turning the setting off spares no batch proposed under it"
    );
    s.apply_as(3, "olu", 3, &propose(None)).unwrap();
    assert!(
        s.may_execute(&s.batches[&3]),
        "proposed with the setting off"
    );
    s.apply_as(4, "olu", 4, &propose(Some("court order")))
        .unwrap();
    assert!(
        !s.may_execute(&s.batches[&4]),
        "a forced batch always needs one"
    );
    assert!(s
        .apply_as(5, "olu", 5, &Event::BatchApprove { batch: 4 })
        .is_err());
    s.apply_as(5, "lee", 5, &Event::BatchApprove { batch: 4 })
        .unwrap();
    assert!(s.may_execute(&s.batches[&4]));
    // Approving twice, releasing what is not held: refused, nothing
    // changed.
    assert!(s
        .apply_as(6, "kim", 6, &Event::BatchApprove { batch: 4 })
        .is_err());
    assert!(s
        .apply_as(
            6,
            "lee",
            6,
            &Event::HoldRelease {
                hold: 9,
                reason: "r".into()
            }
        )
        .is_err());
    assert_eq!(s.last_event, 5);
}

#[test]
fn equal_items_take_the_tenure_that_lasts_longest_and_leap_days_never_end_early() {
    let settings = Settings {
        cutoff: Cutoff::EndOfTenure,
        ..Settings::default()
    };
    let mut s = state(&[
        Event::Settings { settings },
        role("alice", "A", "staff", "2019-01-01"),
        role("bob", "B", "staff", "2019-01-01"),
    ]);
    s.apply(
        4,
        &Event::RoleEnd {
            user: "alice".into(),
            position: "A".into(),
            on: "2020-06-30".parse().unwrap(),
        },
    )
    .unwrap();
    // alice's tenure ended, bob's runs: pending, not due in 2028.
    let a = s.assign(&meta("c", "2020-03-01", &["alice", "bob"]));
    assert_eq!(a.cutoff_day, None, "{a:?}");
    assert!(a.pending.is_some());
    // A tenure ending on 28 February 2028 plus 3 years: due 1 March 2031.
    let item = grs_items()[2].clone();
    assert_eq!(
        due_day(&item, day("2028-02-28"), &Settings::default()),
        day("2031-03-01")
    );
    assert_eq!(
        due_day(&item, day("2028-02-29"), &Settings::default()),
        day("2031-03-01")
    );
}
