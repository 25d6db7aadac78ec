//! The records lifecycle through the real binary (issue 14): the records
//! officer keeps the role directory and the schedules at the records
//! office; every captured message has an item and dates from them; a
//! backdated move re-schedules what was sent since; every decision is a
//! logged event that `verify` checks. On the controllable clock, so two
//! dates weeks apart take no waiting; on both backends.

mod common;

use common::{offset_to, ok, on_postgres, stderr, Agency};
use serde_json::Value;

const AUD: &str = "aud's long passphrase";

#[test]
fn records_get_items_and_dates_from_the_directory_and_a_backdated_move_reschedules() {
    lifecycle(Agency::start);
}

#[test]
fn on_postgres_records_get_items_and_dates_from_the_directory_and_a_backdated_move_reschedules() {
    on_postgres(|| lifecycle(Agency::start));
}

fn lifecycle(start: fn() -> Agency) {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("clock");
    std::fs::write(&clock, offset_to("2030-03-02").to_string()).unwrap();
    common::use_clock(&clock);
    let agency = start();
    let officer = |args: &[&str]| -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&ok(agency.records_output(&all))).unwrap()
    };

    // People and conversations: dana will be a Capstone official, sam and
    // tom support staff, alice staff (not in the directory).
    let alice = agency.user("alice", "staff");
    let dana = agency.user("dana", "staff");
    let sam = agency.user("sam", "staff");
    agency.user("tom", "staff");
    for d in [&alice, &dana, &sam] {
        d.accept_notice();
    }
    let with_dana = alice.create(&["dana"]);
    let support = sam.create(&["tom"]);
    let lunch = alice.create(&["sam"]);

    // The directory and the schedules, as the records officer keeps them.
    for (user, position, title, category, from) in [
        ("dana", "COMM", "Commissioner", "capstone:1", "2030-01-01"),
        ("sam", "CLERK-1", "Mail clerk", "support", "2029-01-01"),
        ("tom", "CLERK-2", "Mail clerk", "support", "2029-01-01"),
    ] {
        let done = officer(&[
            "directory",
            "start",
            user,
            "--position",
            position,
            "--title",
            title,
            "--office",
            "Office of Field Operations",
            "--category",
            category,
            "--from",
            from,
        ]);
        assert_eq!(done["kind"], "role-start");
    }
    let schedule_file = agency.tmp.path().join("schedule.toml");
    std::fs::write(
        &schedule_file,
        "[[item]]\ncode = \"N1-563-08-4 item 2\"\nauthority = \"N1-563-08-4\"\n\
         title = \"Case coordination messages\"\nretention = \"10 years\"\ncutoff = \"fiscal-year\"\n",
    )
    .unwrap();
    officer(&["schedule", "load", schedule_file.to_str().unwrap()]);
    officer(&[
        "schedule",
        "assign",
        &lunch,
        "--transitory",
        "--from",
        "2030-03-01",
        "--reason",
        "lunch orders",
    ]);
    officer(&[
        "na1005",
        "set",
        "--nara",
        "NARA Records Management@2026-06-15",
    ]);

    // Bad decisions are refused with what is wrong, and change nothing.
    for (args, why) in [
        (
            vec![
                "directory",
                "start",
                "dana",
                "--position",
                "COMM",
                "--title",
                "t",
                "--office",
                "o",
                "--category",
                "staff",
                "--from",
                "2030-02-01",
            ],
            "already holds COMM",
        ),
        (
            vec![
                "directory",
                "end",
                "alice",
                "--position",
                "COMM",
                "--on",
                "2030-02-01",
            ],
            "holds no open role",
        ),
        (
            vec![
                "schedule",
                "assign",
                &with_dana,
                "--item",
                "N9-unknown",
                "--reason",
                "x",
            ],
            "no item `N9-unknown`",
        ),
        (
            vec!["schedule", "set", "--transfer-years", "17"],
            "15, 20, 25 or 30",
        ),
        (
            vec![
                "directory",
                "start",
                "x",
                "--position",
                "p",
                "--title",
                "t",
                "--office",
                "o",
                "--category",
                "capstone:11",
                "--from",
                "2030-01-01",
            ],
            "is no category",
        ),
        (
            vec![
                "directory",
                "start",
                "x",
                "--position",
                "p",
                "--title",
                "t",
                "--office",
                "o",
                "--category",
                "staff",
                "--from",
                "2030-02-30",
            ],
            "no such day",
        ),
    ] {
        let out = agency.records_output(&args);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }

    // Messages of 2 March 2030.
    alice.send(&with_dana, "to the commissioner");
    sam.send(&support, "the mail is in");
    alice.send(&lunch, "sandwiches?");
    let records = common::wait_for("three captured messages", 60, || {
        let r = agency.records(false);
        (r.len() >= 3).then_some(r)
    });
    let id_in = |conv: &str, nth: usize| -> String {
        agency
            .records(false)
            .iter()
            .filter(|r| r["conv"] == conv)
            .nth(nth)
            .map(|r| r["id"].to_string())
            .unwrap()
    };
    assert_eq!(records.len(), 3);
    let listed = officer(&["schedule", "list"]);
    let schedule_of = |listed: &Value, id: &str| -> Value {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"].as_i64().map(|n| n.to_string()).as_deref() == Some(id))
            .map(|r| r["schedule"].clone())
            .unwrap()
    };
    let to_dana = id_in(&with_dana, 0);
    let mail = id_in(&support, 0);
    let sandwiches = id_in(&lunch, 0);
    let s = schedule_of(&listed, &to_dana);
    assert_eq!(s["item"], "GRS 6.1 item 010", "{s}");
    assert_eq!(s["permanent"], true);
    assert_eq!(s["cutoff_day"], "2030-12-31");
    assert_eq!(s["transfer_day"], "2046-01-01");
    assert_eq!(s["offices"][0], "Office of Field Operations");
    let s = schedule_of(&listed, &mail);
    assert_eq!(s["item"], "GRS 6.1 item 012", "{s}");
    assert_eq!(s["disposition_day"], "2034-01-01");
    let s = schedule_of(&listed, &sandwiches);
    assert_eq!(s["item"], "GRS 5.2 item 010", "{s}");
    assert_eq!(
        s["disposition_day"], "2030-08-30",
        "180 days after the day sent"
    );

    // Dana leaves the Capstone position at the end of March; entered on
    // 10 April, as is the news that sam was promoted to a Capstone
    // position on 1 March — before the mail message.
    std::fs::write(&clock, offset_to("2030-04-10").to_string()).unwrap();
    officer(&[
        "directory",
        "end",
        "dana",
        "--position",
        "COMM",
        "--on",
        "2030-03-31",
    ]);
    officer(&[
        "directory",
        "start",
        "dana",
        "--position",
        "ADVISOR",
        "--title",
        "Senior advisor",
        "--office",
        "Office of Field Operations",
        "--category",
        "staff",
        "--from",
        "2030-04-01",
    ]);
    let promoted = officer(&[
        "directory",
        "start",
        "sam",
        "--position",
        "DEP-DIR",
        "--title",
        "Deputy director",
        "--office",
        "Office of Field Operations",
        "--category",
        "capstone:3",
        "--from",
        "2030-03-01",
    ]);
    officer(&[
        "directory",
        "end",
        "sam",
        "--position",
        "CLERK-1",
        "--on",
        "2030-02-28",
    ]);
    alice.send(&with_dana, "to the advisor");
    common::wait_for("the fourth message captured", 60, || {
        (agency.records(false).len() >= 4).then_some(())
    });
    let to_advisor = id_in(&with_dana, 1);
    let listed = officer(&["schedule", "list"]);
    assert_eq!(
        schedule_of(&listed, &to_dana)["item"],
        "GRS 6.1 item 010",
        "sent while dana held the Capstone position: still permanent"
    );
    let s = schedule_of(&listed, &to_advisor);
    assert_eq!(s["item"], "GRS 6.1 item 011", "{s}");
    assert_eq!(s["disposition_day"], "2038-01-01");
    // The mail message is re-scheduled by the backdated promotion, and
    // its history says by which event, who, and what it was given when
    // captured (after the six events of 2 March); sam's old role ending
    // after the promotion changes nothing.
    let shown = officer(&["schedule", "show", &mail]);
    assert_eq!(shown["schedule"]["item"], "GRS 6.1 item 010");
    let history: Vec<(u64, String)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["event"].as_u64().unwrap(),
                c["assignment"]["item"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            (6, "GRS 6.1 item 012".to_string()),
            (
                promoted["event"].as_u64().unwrap(),
                "GRS 6.1 item 010".to_string()
            )
        ],
        "{shown}"
    );
    assert_eq!(shown["history"][1]["actor"], common::OFFICER.0);

    // The NA-1005: computed positions, renewal due within 90 days.
    let form = officer(&["na1005", "show"]);
    assert_eq!(form["renewal_due"], "2030-06-15");
    assert_eq!(form["renewal_needed"], true);
    assert_eq!(form["capstone_positions"]["3"][0]["position"], "DEP-DIR");
    assert!(
        form["capstone_positions"].get("1").is_none(),
        "COMM is vacant: {form}"
    );

    // An auditor reads schedules but changes nothing.
    ok(agency.records_output_env(
        &["account", "add", "aud", "--role", "auditor"],
        &[("KEEPWIRE_RECORDS_NEW_PASSWORD", AUD)],
    ));
    let as_aud = [
        ("KEEPWIRE_RECORDS_USER", "aud"),
        ("KEEPWIRE_RECORDS_PASSWORD", AUD),
    ];
    ok(agency.records_output_env(&["schedule", "show", &mail], &as_aud));
    let out = agency.records_output_env(
        &[
            "schedule",
            "assign",
            &with_dana,
            "--transitory",
            "--reason",
            "hiding it",
        ],
        &as_aud,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("may not change schedules"),
        "{}",
        stderr(&out)
    );

    // Every decision is in the log, and verify checks each against it.
    let lifecycle_leaves = agency.leaves("lifecycle");
    assert_eq!(lifecycle_leaves.len(), 10, "{lifecycle_leaves:?}");
    let verified: Value =
        serde_json::from_str(&ok(agency.records_output(&["verify", "--json"]))).unwrap();
    assert_eq!(verified["problems"], serde_json::json!([]), "{verified}");
}

#[test]
fn disposition_waits_for_retention_holds_and_a_second_approver() {
    disposition(Agency::start);
}

#[test]
fn on_postgres_disposition_waits_for_retention_holds_and_a_second_approver() {
    on_postgres(|| disposition(Agency::start));
}

fn disposition(start: fn() -> Agency) {
    const LEE: (&str, &str) = ("lee", "lee's long passphrase");
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("clock");
    std::fs::write(&clock, offset_to("2030-03-02").to_string()).unwrap();
    common::use_clock(&clock);
    let agency = start();
    let run = |args: &[&str], who: Option<(&str, &str)>| {
        let mut all = args.to_vec();
        all.push("--json");
        let env = who.map(|(u, p)| {
            [
                ("KEEPWIRE_RECORDS_USER", u),
                ("KEEPWIRE_RECORDS_PASSWORD", p),
            ]
        });
        agency.records_output_env(&all, env.as_ref().map_or(&[][..], |e| &e[..]))
    };
    let officer = |args: &[&str]| -> Value { serde_json::from_str(&ok(run(args, None))).unwrap() };
    let lee = |args: &[&str]| -> Value { serde_json::from_str(&ok(run(args, Some(LEE)))).unwrap() };
    let refused = |args: &[&str], who: Option<(&str, &str)>, why: &str| {
        let out = run(args, who);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    };

    let alice = agency.user("alice", "staff");
    for u in ["bob", "carl", "dana"] {
        agency.user(u, "staff");
    }
    alice.accept_notice();
    let (with_bob, with_carl, with_dana) = (
        alice.create(&["bob"]),
        alice.create(&["carl"]),
        alice.create(&["dana"]),
    );
    officer(&[
        "directory",
        "start",
        "dana",
        "--position",
        "COMM",
        "--title",
        "Commissioner",
        "--office",
        "HQ",
        "--category",
        "capstone:1",
        "--from",
        "2029-01-01",
    ]);
    ok(agency.records_output_env(
        &["account", "add", LEE.0, "--role", "legal"],
        &[("KEEPWIRE_RECORDS_NEW_PASSWORD", LEE.1)],
    ));
    alice.send(&with_bob, "one");
    alice.send(&with_bob, "two");
    alice.send(&with_carl, "three");
    alice.send(&with_dana, "to the commissioner");
    let records = common::wait_for("four captured messages", 60, || {
        let r = agency.records(false);
        (r.len() >= 4).then_some(r)
    });
    // Messages (commits are records too, but hold no content to destroy).
    let ids_in = |conv: &str| -> Vec<i64> {
        records
            .iter()
            .filter(|r| r["conv"] == conv)
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };

    // Nothing is due in 2030.
    refused(&["disposition", "propose"], None, "no record is eligible");
    let one = ids_in(&with_carl)[0].to_string();
    refused(
        &["destroy", &one],
        None,
        "its retention runs until 2038-01-01",
    );

    // 2038: the staff messages are due. A legal hold keeps the bob
    // conversation; dana's message is permanent.
    std::fs::write(&clock, offset_to("2038-01-02").to_string()).unwrap();
    let hold = lee(&[
        "hold",
        "place",
        "--kind",
        "legal",
        "--name",
        "Smith v. Agency",
        "--matter",
        "38-cv-0101",
        "--authority",
        "litigation hold notice",
        "--custodian",
        "bob",
    ]);
    let eligible = officer(&["disposition", "eligible"]);
    let eligible: Vec<i64> = eligible
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        eligible,
        ids_in(&with_carl),
        "only carl's conversation is due and unheld"
    );
    let batch = officer(&["disposition", "propose", "--note", "2030 staff messages"]);
    let b = batch["batch"].to_string();
    assert_eq!(batch["records"], ids_in(&with_carl).len());
    refused(&["disposition", "execute", &b], None, "not approved");
    refused(
        &["disposition", "approve", &b],
        None,
        "another account approves it",
    );
    refused(
        &["disposition", "execute", &b],
        Some(LEE),
        "may not destroy records",
    );
    lee(&["disposition", "approve", &b]);
    let done = officer(&["disposition", "execute", &b]);
    let destroyed: Vec<i64> = done["certificate"]["destroyed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(destroyed, ids_in(&with_carl));
    assert_eq!(done["certificate"]["approved_by"][0], "lee");

    // Released, the held conversation goes in the next batch.
    let h = hold["event"].to_string();
    refused(
        &["hold", "release", &h, "--reason", "x"],
        Some(("aud", "nobody")),
        "wrong account name or password",
    );
    lee(&["hold", "release", &h, "--reason", "case dismissed"]);
    let next = officer(&["disposition", "propose"]);
    assert_eq!(next["records"], ids_in(&with_bob).len());
    let n = next["batch"].to_string();
    lee(&["disposition", "approve", &n]);
    let bob_seqs: Vec<u64> = records
        .iter()
        .filter(|r| r["conv"] == with_bob.as_str())
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let done = officer(&["disposition", "execute", &n]);
    assert_eq!(
        done["certificate"]["conversations"][&with_bob],
        serde_json::json!([[bob_seqs[0], bob_seqs[1]]]),
        "the conversation's two messages, one range"
    );

    // The permanent record: refused, then forced with a second approver,
    // which opens an incident.
    let to_dana = records
        .iter()
        .find(|r| r["conv"] == with_dana.as_str())
        .unwrap()["id"]
        .to_string();
    refused(&["destroy", &to_dana], None, "permanent");
    let forced = officer(&[
        "destroy",
        &to_dana,
        "--force",
        "--reason",
        "court-ordered expungement",
    ]);
    let f = forced["batch"].to_string();
    refused(&["disposition", "execute", &f], None, "not approved");
    lee(&["disposition", "approve", &f]);
    let done = officer(&["disposition", "execute", &f]);
    let incident = done["incident"].as_u64().expect("an incident opened");
    let incidents = officer(&["incident", "list"]);
    let opened = incidents
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == incident)
        .unwrap()
        .clone();
    assert_eq!(opened["kind"], "unauthorized-disposition");
    assert_eq!(opened["report_due"], "2038-02-01");
    assert_eq!(opened["records"][0].to_string(), to_dana);
    officer(&[
        "incident",
        "update",
        &incident.to_string(),
        "--status",
        "reported-to-nara",
        "--nara-case",
        "UD-2038-0001",
        "--note",
        "reported to NARA",
    ]);
    let updated = officer(&["incident", "list"]);
    assert_eq!(updated[0]["status"], "reported-to-nara");
    assert_eq!(updated[0]["nara_case"], "UD-2038-0001");

    // Its 36 CFR 1230.14 report, filled from the archive.
    let out = ok(agency.records_output(&["incident", "report", &incident.to_string()]));
    for element in [
        "## 1. Description",
        "## 2. Office",
        "## 3. Exact circumstances",
        "## 4. Safeguards",
        "## 5. Actions",
    ] {
        assert!(out.contains(element), "{element}:\n{out}");
    }
    assert!(
        out.contains("GRS 6.1 item 010")
            && out.contains("HQ")
            && out.contains("court-ordered expungement"),
        "{out}"
    );
    assert!(out.contains("NARA case UD-2038-0001"), "{out}");

    // The certificate, with the proof that the log holds it under a
    // signed checkpoint.
    let out = agency.tmp.path().join("certificate.json");
    ok(agency.records_output(&[
        "disposition",
        "certificate",
        &b,
        "--out",
        out.to_str().unwrap(),
    ]));
    let cert: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let leaf = cert["leaf"].as_str().unwrap().as_bytes().to_vec();
    let path: Vec<tlog_tiles::tlog::Hash> = cert["inclusion_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let b = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                h.as_str().unwrap(),
            )
            .unwrap();
            tlog_tiles::tlog::Hash(b.try_into().unwrap())
        })
        .collect();
    let note = cert["checkpoint"].as_str().unwrap();
    let root_line = note.lines().nth(2).unwrap();
    let root =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, root_line).unwrap();
    tlog_tiles::tlog::check_record(
        &path,
        cert["tree_size"].as_u64().unwrap(),
        tlog_tiles::tlog::Hash(root.try_into().unwrap()),
        cert["leaf_index"].as_u64().unwrap(),
        tlog_tiles::tlog::record_hash(&leaf),
    )
    .expect("the certificate's leaf is in the signed tree");
    assert!(String::from_utf8(leaf).unwrap().contains("batch-execute"));
    assert_eq!(cert["certificate"]["batch"].to_string(), b);

    // A certificate for records nobody destroyed cannot be sent as a plain
    // event, whoever signs in: the archive makes certificates.
    let forged = serde_json::json!({
        "op": "lifecycle",
        "event": {"event": "batch-execute", "certificate": {
            "batch": 1, "destroyed": [], "conversations": {}, "first_sent": null, "last_sent": null,
            "counts": {}, "proposed_by": "x", "approved_by": [], "executed_by": "x", "kept": []
        }}
    });
    let answer = office_post(&agency, &forged, common::OFFICER);
    assert!(
        answer.contains("executed with `records disposition execute`"),
        "{answer}"
    );

    // The integrity report: verify run by the records service, logged and
    // covered by a checkpoint; clean here, so it opens nothing.
    let integrity: Value = serde_json::from_str(&ok(agency.records_output(&[
        "report",
        "integrity",
        "--json",
    ])))
    .unwrap();
    assert_eq!(integrity["detail"]["report"]["ok"], true, "{integrity}");
    assert_eq!(integrity["detail"]["report"]["content_checked"], true);
    assert_eq!(
        integrity["detail"]["report"]["incidents_opened"],
        serde_json::json!([])
    );
    assert!(integrity["leaf"]
        .as_str()
        .unwrap()
        .contains("integrity-report"));

    let verified: Value =
        serde_json::from_str(&ok(agency.records_output(&["verify", "--json"]))).unwrap();
    assert_eq!(verified["problems"], serde_json::json!([]), "{verified}");
}

/// POST `body` to the running records office as `who`: the answer's text.
fn office_post(agency: &Agency, body: &Value, who: (&str, &str)) -> String {
    use std::io::{Read, Write};
    let url = std::fs::read_to_string(agency.data.join("records").join("office.url")).unwrap();
    let addr = url
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let body = body.to_string();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", who.0, who.1),
    );
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v1/office HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}
