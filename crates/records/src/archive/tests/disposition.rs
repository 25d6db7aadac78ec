//! Disposition on the archive, on both backends: a batch of eligible
//! records runs only once approved by another account; a hold placed
//! after the proposal keeps its records at execution; permanent records
//! are refused; a forced batch destroys them and opens an incident; the
//! certificate lists what went, and verify passes with the tombstones
//! naming their item and batch.

use super::*;
use crate::lifecycle::dates::Day;
use crate::lifecycle::disposition::{BatchState, Standing};
use crate::lifecycle::holds::{HoldKind, Scope};
use crate::lifecycle::Event;

contract!(
    a_batch_runs_only_approved_and_keeps_what_a_hold_covers,
    the_integrity_report_opens_each_incident_once
);

fn the_integrity_report_opens_each_incident_once(store: &mut Store) {
    let keys = tempfile::tempdir().unwrap();
    let provider = crate::keys::FileKeys::open(&keys.path().join("keys")).unwrap();
    let store = std::mem::replace(store, sqlite().1);
    let mut archive = Archive::with_store(store, keys.path(), Some(&provider)).unwrap();
    let notary = crate::checkpoint::Notary::new(&provider, keys.path()).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    for (seq, kind) in [(1, RecordKind::Application), (2, RecordKind::Withheld)] {
        let mut m = meta("c", seq, kind);
        if kind == RecordKind::Withheld {
            m.note = Some("it does not decrypt".into());
        }
        let r = receipt("c", seq, &key);
        let plain = keepwire_protocol::content::Content::text("x", None, false, 1)
            .encode()
            .unwrap();
        archive
            .insert(&NewRecord {
                meta: &m,
                receipt: &r,
                plaintext: (kind == RecordKind::Application).then_some(&plain[..]),
            })
            .unwrap();
    }
    archive.issue_checkpoint(&notary, 5).unwrap();
    let now = day_ms("2027-03-01");
    let (event, report) = archive
        .integrity_check("aud", &notary.verifier_key, now)
        .unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert!(report.content_checked && report.signatures_checked);
    assert_eq!(
        report.incidents_opened.len(),
        1,
        "the withheld entry's incident"
    );
    let state = archive.lifecycle().unwrap();
    let incident = &state.incidents[&report.incidents_opened[0]];
    assert_eq!(
        incident.kind,
        crate::lifecycle::incidents::IncidentKind::CaptureFailure
    );
    assert_eq!(state.last_integrity, Some((event, true)));
    // Again: nothing new to open.
    let (_, again) = archive
        .integrity_check("aud", &notary.verifier_key, now)
        .unwrap();
    assert!(again.incidents_opened.is_empty());

    // Damage opens an archive-damage incident, once: a leaf that names a
    // record the archive does not hold (its row deleted, say).
    let ghost = meta("ghost", 1, RecordKind::Application);
    let r = receipt("ghost", 1, &key);
    archive
        .store_mut()
        .append_leaf(&record_leaf(&ghost, &r, None))
        .unwrap();
    let (_, damaged) = archive
        .integrity_check("aud", &notary.verifier_key, now)
        .unwrap();
    assert!(!damaged.ok);
    assert_eq!(damaged.incidents_opened.len(), 1, "{damaged:?}");
    let state = archive.lifecycle().unwrap();
    let incident = &state.incidents[&damaged.incidents_opened[0]];
    assert_eq!(
        incident.kind,
        crate::lifecycle::incidents::IncidentKind::ArchiveDamage
    );
    assert!(
        incident.description.contains("ghost#1"),
        "{}",
        incident.description
    );
    let (_, again) = archive
        .integrity_check("aud", &notary.verifier_key, now)
        .unwrap();
    assert!(
        !again.ok && again.incidents_opened.is_empty(),
        "the same damage, once"
    );
}

fn day_ms(s: &str) -> u64 {
    s.parse::<Day>().unwrap().start_ms() + 12 * 3_600_000
}

fn a_batch_runs_only_approved_and_keeps_what_a_hold_covers(store: &mut Store) {
    let keys = tempfile::tempdir().unwrap();
    let provider = crate::keys::FileKeys::open(&keys.path().join("keys")).unwrap();
    let store = std::mem::replace(store, sqlite().1);
    let mut archive = Archive::with_store(store, keys.path(), Some(&provider)).unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    // Six messages of 2020: alice and bob are staff (GRS 6.1 item 011,
    // destroyable from 2028-01-01); conversation `boss` has dana, a
    // Capstone official (permanent).
    let sent = day_ms("2020-06-01");
    let mut ids = std::collections::BTreeMap::new();
    for (conv, seq) in [
        ("c", 1),
        ("c", 2),
        ("c", 3),
        ("d", 1),
        ("d", 2),
        ("boss", 1),
    ] {
        let mut m = meta(conv, seq, RecordKind::Application);
        m.server_time_ms = sent;
        m.captured_at_ms = sent;
        if conv == "boss" {
            m.participants.push("dana/d3".into());
        }
        let r = receipt(conv, seq, &key);
        let plain = keepwire_protocol::content::Content::text("x", None, false, 1)
            .encode()
            .unwrap();
        archive
            .insert(&NewRecord {
                meta: &m,
                receipt: &r,
                plaintext: Some(&plain),
            })
            .unwrap();
    }
    for r in archive.list(true, false).unwrap() {
        ids.insert((r.meta.conv.clone(), r.meta.seq), r.id);
    }
    let role = serde_json::from_value(serde_json::json!({
        "user": "dana", "position": "COMM", "title": "Commissioner",
        "office": "HQ", "category": "capstone:1", "from": "2019-01-01"
    }))
    .unwrap();
    archive
        .record_event("olu", &Event::RoleStart { role }, day_ms("2020-01-02"))
        .unwrap();

    // Before the retention ends, nothing is eligible.
    let early = day_ms("2027-12-31");
    assert!(archive
        .propose_batch("olu", None, None, "", early)
        .unwrap_err()
        .to_string()
        .contains("no record is eligible"));
    let (_, rows) = archive.standings(Day::of_ms(early)).unwrap();
    assert!(rows
        .iter()
        .any(|r| matches!(r.standing, Standing::NotDue { .. })));

    let now = day_ms("2028-01-02");
    // The permanent record is refused by name, unforced.
    let boss = ids[&("boss".to_string(), 1)];
    let e = archive
        .propose_batch("olu", Some(vec![boss]), None, "", now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("permanent") && e.contains("unlawful"), "{e}");

    // Every eligible record: the five staff messages.
    let (batch, proposed) = archive
        .propose_batch("olu", None, None, "FY28 disposition", now)
        .unwrap();
    assert_eq!(proposed.len(), 5);
    // Not approved: it cannot run; the proposer cannot approve it.
    assert!(archive.execute_batch("olu", batch, now).is_err());
    assert!(archive
        .record_event("olu", &Event::BatchApprove { batch }, now)
        .unwrap_err()
        .to_string()
        .contains("another account"));
    // A hold on conversation d, placed after the proposal, before approval.
    let (hold, _) = archive
        .record_event(
            "lee",
            &Event::HoldPlace {
                kind: HoldKind::Legal,
                name: "Smith v. Agency".into(),
                matter: "24-cv-0001".into(),
                authority: "litigation hold notice of 2027-12-30".into(),
                scope: Scope {
                    conversations: vec!["d".into()],
                    ..Scope::default()
                },
            },
            now,
        )
        .unwrap();
    archive
        .record_event("lee", &Event::BatchApprove { batch }, now)
        .unwrap();
    let (cert, _, incident) = archive.execute_batch("olu", batch, now).unwrap();
    assert_eq!(incident, None);
    assert_eq!(cert.destroyed.len(), 3, "{cert:?}");
    assert_eq!(cert.kept.len(), 2);
    assert!(cert
        .kept
        .iter()
        .all(|k| k.why.contains(&format!("hold {hold}"))));
    assert_eq!(cert.conversations["c"], vec![(1, 3)]);
    assert_eq!(cert.counts["GRS 6.1 item 011"], 3);
    assert_eq!(cert.approved_by, vec!["lee".to_string()]);
    assert_eq!(cert.first_sent, Some("2020-06-01".parse().unwrap()));
    let state = archive.lifecycle().unwrap();
    assert_eq!(state.batches[&batch].state, BatchState::Executed);
    // Run twice: refused.
    assert!(archive.execute_batch("olu", batch, now).is_err());
    for seq in 1..=3 {
        let id = ids[&("c".to_string(), seq)];
        assert!(!archive.get(id, false).unwrap().unwrap().has_content);
    }
    assert!(
        archive
            .get(ids[&("d".to_string(), 1)], false)
            .unwrap()
            .unwrap()
            .has_content
    );

    // Released, the held records go in the next batch.
    archive
        .record_event(
            "lee",
            &Event::HoldRelease {
                hold,
                reason: "case settled".into(),
            },
            now,
        )
        .unwrap();
    let (next, proposed) = archive.propose_batch("olu", None, None, "", now).unwrap();
    assert_eq!(proposed.len(), 2);
    archive
        .record_event("lee", &Event::BatchApprove { batch: next }, now)
        .unwrap();
    assert_eq!(
        archive
            .execute_batch("olu", next, now)
            .unwrap()
            .0
            .destroyed
            .len(),
        2
    );

    // Forced, but a hold placed after the proposal: the approvers never
    // saw it, so the record is kept.
    let (first, _) = archive
        .propose_batch("olu", Some(vec![boss]), Some("expungement".into()), "", now)
        .unwrap();
    let (late_hold, _) = archive
        .record_event(
            "lee",
            &Event::HoldPlace {
                kind: HoldKind::Foia,
                name: "FOIA 2028-17".into(),
                matter: "request of 2028-01-02".into(),
                authority: "5 U.S.C. 552".into(),
                scope: Scope {
                    conversations: vec!["boss".into()],
                    ..Scope::default()
                },
            },
            now,
        )
        .unwrap();
    archive
        .record_event("lee", &Event::BatchApprove { batch: first }, now)
        .unwrap();
    let (cert, _, incident) = archive.execute_batch("olu", first, now).unwrap();
    assert!(cert.destroyed.is_empty() && incident.is_none(), "{cert:?}");
    assert!(cert.kept[0]
        .why
        .contains("placed after the batch was proposed"));
    assert!(archive.get(boss, false).unwrap().unwrap().has_content);
    archive
        .record_event(
            "lee",
            &Event::HoldRelease {
                hold: late_hold,
                reason: "request withdrawn".into(),
            },
            now,
        )
        .unwrap();

    // Forced: the permanent record goes, and an incident opens.
    let (forced, _) = archive
        .propose_batch(
            "olu",
            Some(vec![boss]),
            Some("court-ordered expungement".into()),
            "",
            now,
        )
        .unwrap();
    assert!(
        archive.execute_batch("olu", forced, now).is_err(),
        "a forced batch is approved first"
    );
    archive
        .record_event("lee", &Event::BatchApprove { batch: forced }, now)
        .unwrap();
    let (cert, _, incident) = archive.execute_batch("olu", forced, now).unwrap();
    let incident = incident.expect("an incident opened");
    assert!(cert.destroyed[0]
        .unlawful
        .as_deref()
        .unwrap()
        .contains("permanent"));
    let state = archive.lifecycle().unwrap();
    let opened = &state.incidents[&incident];
    assert_eq!(opened.records, vec![boss]);
    assert_eq!(opened.report_due, "2028-02-01".parse().unwrap(), "30 days");

    // The 36 CFR 1230.14 report: the five elements, filled from the
    // archive, waiting for the officer's account where only a person can
    // give it.
    let report = archive.incident_report(incident, now).unwrap();
    assert_eq!(report.description.records, 1);
    assert_eq!(report.description.conversations["boss"], vec![(1, 1)]);
    assert!(report
        .description
        .items
        .keys()
        .any(|k| k.starts_with("GRS 6.1 item 010")));
    assert_eq!(report.offices, vec!["HQ".to_string()]);
    assert!(report
        .circumstances
        .iter()
        .any(|c| c.contains("court-ordered expungement")));
    assert!(report
        .circumstances
        .iter()
        .any(|c| c.contains("was not eligible: permanent")));
    assert!(report.salvage[0].contains("crypto-shredded"));
    assert_eq!(report.incomplete.len(), 3);
    archive
        .record_event(
            "olu",
            &Event::IncidentUpdate {
                incident,
                status: None,
                nara_case: None,
                note: "the officer's account".into(),
                circumstances: Some("The order was later found to be forged.".into()),
                safeguards: Some(
                    "Forced dispositions now need legal's approval in writing.".into(),
                ),
                salvage: Some("Devices' copies had expired; nothing could be recovered.".into()),
            },
            now,
        )
        .unwrap();
    let report = archive.incident_report(incident, now).unwrap();
    assert!(report.incomplete.is_empty());
    let md = report.to_markdown();
    for heading in [
        "## 1. Description of the records, with volume and dates",
        "## 2. Office maintaining the records",
        "## 3. Exact circumstances of the removal, alteration or destruction",
        "## 4. Safeguards established to prevent further loss",
        "## 5. Actions taken to salvage, retrieve or reconstruct the records",
    ] {
        assert!(md.contains(heading), "{heading} missing:\n{md}");
    }
    assert!(
        md.contains("later found to be forged") && !md.contains("to be completed"),
        "{md}"
    );

    // The archive verifies; every tombstone names its item and batch.
    let report = crate::verify::verify(&archive, &Default::default(), |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut tombstones = 0;
    for n in 0..archive.log_size().unwrap() {
        let (kind, _, data) = archive.log_leaf(n).unwrap().unwrap();
        if kind == "tombstone" {
            tombstones += 1;
            let text = String::from_utf8(data).unwrap();
            assert!(text.contains("disposition batch"), "{text}");
            assert!(text.contains("GRS 6.1 item 01"), "{text}");
        }
    }
    assert_eq!(tombstones, 6);
}
