//! A message's files are captured beside everything else (issue 13):
//! while one conversation's file is still being fetched and checked —
//! here, held in the agency's malware scanner — other conversations'
//! messages are captured and delivered as usual, and only the
//! conversation with the file waits for it, in order. Captured in line, a
//! 256 MiB file had held every conversation's delivery for seconds.

mod common;

use common::Agency;

#[test]
fn a_file_being_captured_holds_up_only_its_own_conversation() {
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("gate");
    let made = std::process::Command::new("mkfifo")
        .arg(&gate)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // A scanner that says "clean" only once the test opens its gate: the
    // read blocks until the test writes to the FIFO.
    let scanner = format!(
        r#"f() {{ read go < '{}'; echo "$1: OK"; }}; f"#,
        gate.display()
    );
    let agency = Agency::start_with(&["--scan-command", &scanner]);
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    let carol = agency.user("carol", "staff");
    alice.accept_notice();
    let with_file = alice.create(&["bob"]);
    let other = alice.create(&["carol"]);
    let dir = agency.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.pdf");
    std::fs::write(&report, b"%PDF-1.7 the report").unwrap();

    alice.ok(&[
        "chat",
        "send",
        &with_file,
        "the report",
        "--file",
        report.to_str().unwrap(),
    ]);
    alice.ok(&["chat", "send", &with_file, "after the report"]);
    // The report's capture is held in the scanner; another conversation
    // is captured and delivered all the same.
    let meanwhile = alice.json(&["chat", "send", &other, "meanwhile", "--wait-captured", "60"]);
    assert_eq!(meanwhile["captured"], true, "{meanwhile}");
    assert_eq!(carol.texts(&other), vec!["meanwhile".to_string()]);
    assert!(
        bob.texts(&with_file).is_empty(),
        "nothing of the conversation with the file is delivered before the file is captured"
    );

    // The scanner gives its verdict: the conversation follows, in order.
    std::fs::write(&gate, "go\n").unwrap();
    let texts = common::wait_for("bob to have both messages", 60, || {
        let t = bob.texts(&with_file);
        (t.len() == 2).then_some(t)
    });
    assert_eq!(texts, ["the report", "after the report"]);
    let record = agency
        .records(false)
        .into_iter()
        .find(|r| r["attachments"].is_array())
        .expect("archived with its file");
    assert_eq!(record["attachments"][0]["scan"], "clean", "{record}");
    let out = agency.records_output(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
