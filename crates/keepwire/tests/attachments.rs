//! Attachments through the real binary (issue 13): a file sealed on the
//! device, uploaded as binary frames over the device's own WebSocket
//! (resuming after a broken connection), carried by a message, fetched
//! and checked by the records service and archived with the message's
//! record — and only then read by another member. A file that is not what
//! its reference says makes its message withheld. On either backend; the
//! protocol is spoken by hand (`common::rogue`) so that every refusal a
//! modified client can meet is reached too.

mod common;

use common::rogue::{refused, Rogue, Rules, Wire};
use common::Agency;
use keepwire_client::attachment::{open, seal};
use keepwire_protocol::attachment::{BlobId, BlobList};
use keepwire_protocol::content::Content;
use keepwire_protocol::{ErrorCode, Request, ServerBody, MAX_BLOB_CHUNK};

#[test]
fn a_file_is_archived_with_its_message_before_any_member_reads_it() {
    uploaded_and_read(Agency::start());
}

#[test]
fn on_postgres_a_file_is_archived_with_its_message_before_any_member_reads_it() {
    common::on_postgres(|| uploaded_and_read(Agency::start()));
}

/// Upload `sealed` from `at` on, a frame at a time: whether the last
/// frame completed the blob.
async fn upload_from(wire: &mut Wire, blob: &BlobId, mut at: u64, sealed: &[u8]) -> bool {
    let mut complete = false;
    while at < sealed.len() as u64 {
        let end = (at as usize + MAX_BLOB_CHUNK).min(sealed.len());
        let (_, r, c) = blob_of(
            wire.chunk(blob, at, &sealed[at as usize..end])
                .await
                .unwrap(),
        );
        (at, complete) = (r, c);
    }
    complete
}

/// A blob's `size` bytes, pulled a frame at a time.
async fn download(wire: &mut Wire, blob: &BlobId, size: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < size {
        let part = wire
            .fetch(blob, got.len() as u64, MAX_BLOB_CHUNK as u32)
            .await
            .unwrap();
        assert!(!part.is_empty() && part.len() <= MAX_BLOB_CHUNK);
        got.extend_from_slice(&part);
    }
    got
}

/// The hash the message's reference gives its first file's ciphertext.
fn reference_hash(content: &Content) -> serde_json::Value {
    content.attachments[0].cipher_sha256.clone().into()
}

fn blob_of(body: ServerBody) -> (BlobId, u64, bool) {
    match body {
        ServerBody::Blob {
            blob,
            received,
            complete,
            ..
        } => (blob, received, complete),
        other => panic!("{other:?}"),
    }
}

fn uploaded_and_read(mut agency: Agency) {
    let code = |user: &str| {
        agency
            .admin(&[
                "user",
                "add",
                user,
                "--display",
                user,
                "--category",
                "staff",
            ])
            .trim()
            .to_string()
    };
    let (code_a, code_b, code_c) = (code("alice"), code("bob"), code("carol"));
    let url = agency.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut alice = Rogue::enroll(&url, "alice", &code_a).await;
        let mut bob = Rogue::enroll(&url, "bob", &code_b).await;
        let mut carol = Rogue::enroll(&url, "carol", &code_c).await;
        for r in [&mut alice, &mut bob, &mut carol] {
            r.wire.call(Request::AcknowledgeNotice).await.unwrap();
        }
        let (ca, cb) = (alice.client(Rules::default()), bob.client(Rules::default()));
        bob.upload_key_package(&cb).await;
        let (conv, mut g) = alice.create(&ca, &["bob"]).await;

        // A file of two and a half frames, sealed on the device.
        let file: Vec<u8> = (0..MAX_BLOB_CHUNK * 5 / 2)
            .map(|i| (i % 241) as u8)
            .collect();
        let mut sealed_bytes = Vec::new();
        let sealed = seal(&mut &file[..], &mut sealed_bytes).unwrap();
        let create = |size: u64| Request::BlobCreate {
            conv: conv.clone(),
            size,
            cipher_sha256: sealed.cipher_sha256.clone(),
        };
        refused(
            carol.wire.call(create(sealed_bytes.len() as u64)).await,
            ErrorCode::NotMember,
            "a non-member uploading",
        );
        let (blob, received, _) = blob_of(
            alice
                .wire
                .call(create(sealed_bytes.len() as u64))
                .await
                .unwrap(),
        );
        assert_eq!(received, 0);

        // The first frame; then the connection breaks off and the upload
        // resumes, on a new connection, from what the server holds.
        let first = &sealed_bytes[..MAX_BLOB_CHUNK];
        let (_, received, _) = blob_of(alice.wire.chunk(&blob, 0, first).await.unwrap());
        assert_eq!(received, MAX_BLOB_CHUNK as u64);
        refused(
            alice.wire.chunk(&blob, 0, first).await,
            ErrorCode::BadFrame,
            "a chunk sent twice",
        );
        refused(
            bob.wire.chunk(&blob, received, b"x").await,
            ErrorCode::UnknownBlob,
            "a chunk into another device's upload",
        );
        let mut again = common::rogue::Wire::connect(&url).await;
        alice.auth_on(&mut again).await.unwrap();
        let (_, at, _) = blob_of(
            again
                .call(Request::BlobStatus { blob: blob.clone() })
                .await
                .unwrap(),
        );
        let complete = upload_from(&mut again, &blob, at, &sealed_bytes).await;
        assert!(
            complete,
            "the last chunk completes the blob, its hash checked"
        );

        // Nobody but its uploader reads an upload no message carries; the
        // uploader reads it whole, a frame at a time, and it opens to the
        // file.
        refused(
            bob.wire.fetch(&blob, 0, 16).await,
            ErrorCode::UnknownBlob,
            "an upload no message carries",
        );
        let downloaded = download(&mut again, &blob, sealed_bytes.len()).await;
        let reference = sealed.reference(blob.clone(), "scene.jpg", "image/jpeg");
        let mut opened = Vec::new();
        open(&reference, &mut &downloaded[..], &mut opened).unwrap();
        assert!(
            opened == file,
            "the file read back opens to the file sealed"
        );

        // An upload whose bytes do not hash to what was declared is
        // discarded when its last byte arrives.
        let (lying, _, _) = blob_of(alice.wire.call(create(4)).await.unwrap());
        refused(
            alice.wire.chunk(&lying, 0, b"four").await,
            ErrorCode::BadFrame,
            "bytes that do not hash to what was declared",
        );
        refused(
            alice.wire.call(Request::BlobStatus { blob: lying }).await,
            ErrorCode::UnknownBlob,
            "the discarded upload",
        );

        // The message carries it: the reference inside, the id in the clear.
        let mut content = Content::text("the scene, as found", None, false, 1);
        content.attachments = vec![reference];
        let message = g
            .encrypt_application_message(
                &content.encode().unwrap(),
                BlobList::of(&content.attachments).encode(),
            )
            .unwrap();
        let seq = alice.submit(&conv, &message, None, None).await.unwrap();
        alice.wire.wait_captured(&conv, seq).await;

        // Captured: archived with its file, which the leaf commits to.
        let record = agency
            .records(true)
            .into_iter()
            .find(|r| r["seq"] == seq && r["conv"] == conv.as_str())
            .expect("the message is archived");
        assert_eq!(record["kind"], "application", "{record}");
        assert_eq!(
            record["attachments"][0]["cipher_sha256"],
            reference_hash(&content),
            "{record}"
        );
        let out = agency.records_output(&["verify"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // An officer sees what the file is, from the sealed content.
        let id = record["id"].to_string();
        let shown: serde_json::Value =
            serde_json::from_str(&common::ok(agency.records_output(&["show", &id, "--json"])))
                .unwrap();
        assert_eq!(shown["files"][0]["name"], "scene.jpg", "{shown}");
        assert_eq!(shown["files"][0]["size"], file.len(), "{shown}");

        // Only now may bob read it, and it opens to the file; carol, not
        // a member, never.
        let got = download(&mut bob.wire, &blob, sealed_bytes.len()).await;
        assert!(got == sealed_bytes, "bob reads what alice uploaded");
        refused(
            carol.wire.fetch(&blob, 0, 16).await,
            ErrorCode::UnknownBlob,
            "a non-member",
        );

        // The agency's limits, set with `admin policy`: a file over the
        // size limit, and one past the user's quota (the first file is
        // still held: bob has not acknowledged it).
        let policy = |args: &[&str]| {
            let mut all = vec!["policy"];
            all.extend_from_slice(args);
            agency.admin(&all)
        };
        policy(&["--max-attachment-mb", "1"]);
        refused(
            alice.wire.call(create(2 << 20)).await,
            ErrorCode::TooLarge,
            "a file over the agency's limit",
        );
        policy(&["--max-attachment-mb", "100", "--attachment-quota-mb", "3"]);
        refused(
            alice.wire.call(create(1 << 20)).await,
            ErrorCode::QuotaExceeded,
            "a file past the user's quota",
        );
        policy(&["--attachment-quota-mb", "10240"]);

        // A reference that does not match its file (a modified client
        // lying about the hash): the records service withholds the
        // message, its sender is blocked, and nobody reads the file.
        let mut other = Vec::new();
        let liar = seal(&mut &b"a second file"[..], &mut other).unwrap();
        let (second, _, _) = blob_of(
            alice
                .wire
                .call(Request::BlobCreate {
                    conv: conv.clone(),
                    size: other.len() as u64,
                    cipher_sha256: liar.cipher_sha256.clone(),
                })
                .await
                .unwrap(),
        );
        blob_of(alice.wire.chunk(&second, 0, &other).await.unwrap());
        let mut lie = liar.reference(second.clone(), "note.txt", "text/plain");
        lie.sha256 = "0".repeat(64);
        let mut content = Content::text("and a second", None, false, 2);
        content.attachments = vec![lie];
        let message = g
            .encrypt_application_message(
                &content.encode().unwrap(),
                BlobList::of(&content.attachments).encode(),
            )
            .unwrap();
        let lied = alice.submit(&conv, &message, None, None).await.unwrap();
        let withheld = common::wait_for("the lying message archived", 60, || {
            agency
                .records(true)
                .into_iter()
                .find(|r| r["seq"] == lied && r["conv"] == conv.as_str())
        });
        assert_eq!(withheld["kind"], "withheld", "{withheld}");
        assert!(
            withheld["note"].as_str().unwrap().contains("SHA-256"),
            "{withheld}"
        );
        refused(
            bob.wire.fetch(&second, 0, 16).await,
            ErrorCode::UnknownBlob,
            "the file of a withheld message",
        );
        refused(
            alice.wire.call(Request::BlobStatus { blob: second }).await,
            ErrorCode::DeviceBlocked,
            "the sender of a withheld message",
        );

        // An insider who alters a stored file is named by verify, which
        // needs no key for it (on SQLite, where the test can reach in:
        // the archive keeps files' bytes in records/files/, by hash).
        let files = agency.data.join("records").join("files");
        if files.exists() {
            let stored = std::fs::read_dir(&files)
                .unwrap()
                .next()
                .expect("a stored file")
                .unwrap()
                .path();
            let mut bytes = std::fs::read(&stored).unwrap();
            bytes[0] ^= 1;
            std::fs::write(&stored, bytes).unwrap();
            let out = agency.records_output(&["verify"]);
            assert!(!out.status.success());
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(report.contains("its file 0 as stored"), "{report}");
        }
    });

    // A backup holds the files the server still relays and those the
    // archive keeps (on SQLite, the deployment `admin backup` copies),
    // each in its manifest.
    if agency.data.join("server.db").is_file() {
        agency.stop();
        let to = agency.tmp.path().join("backup");
        let out = common::keepwire(
            &[
                "admin",
                "--data-dir",
                agency.data_dir(),
                "backup",
                "--to",
                to.to_str().unwrap(),
                "--json",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", common::stderr(&out));
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for dir in ["blobs/", "records/files/"] {
            let files: Vec<&serde_json::Value> = manifest["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["path"].as_str().unwrap().starts_with(dir))
                .collect();
            assert!(!files.is_empty(), "{dir}: {manifest}");
            for f in files {
                assert!(to.join(f["path"].as_str().unwrap()).is_file());
            }
        }
    }
}

/// The devices' side, through the CLI: a file sent with `chat send
/// --file`, received with the message (the device acknowledges it only
/// once it holds the file), shown by `chat read`, saved by `chat save`;
/// a burn-on-read message's file cannot be saved and goes with it.
#[test]
fn devices_send_read_and_save_files_and_burn_them_with_their_message() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    let dir = agency.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    // A recording (photos are cleaned before they go: tests/photos.rs).
    let photo = dir.join("scene interview.m4a");
    let mut bytes = b"\0\0\0\x20ftypM4A the interview at the scene".to_vec();
    bytes.extend((0..3 << 20).map(|i: u32| (i % 251) as u8));
    std::fs::write(&photo, &bytes).unwrap();
    let report = dir.join("report.pdf");
    std::fs::write(&report, b"%PDF-1.7 the report").unwrap();

    let sent = alice.json(&[
        "chat",
        "send",
        &conv,
        "the scene, and the report",
        "--file",
        photo.to_str().unwrap(),
        "--file",
        report.to_str().unwrap(),
        "--wait-captured",
        "60",
    ]);
    assert_eq!(sent["captured"], true, "{sent}");
    let seq = sent["seq"].as_u64().unwrap().to_string();

    let messages = bob.read(&conv);
    let m = messages.last().unwrap();
    assert_eq!(m["text"], "the scene, and the report");
    assert_eq!(m["files"][0]["name"], "scene interview.m4a", "{m}");
    assert_eq!(m["files"][0]["media_type"], "audio/mp4");
    assert_eq!(m["files"][0]["size"], bytes.len());
    assert_eq!(m["files"][1]["name"], "report.pdf");
    assert!(m["files"][0]["missing"].is_null(), "{m}");
    let out = dir.join("saved.m4a");
    bob.ok(&["chat", "save", &conv, &seq, "--out", out.to_str().unwrap()]);
    assert!(
        std::fs::read(&out).unwrap() == bytes,
        "bob saves the recording alice sent"
    );
    let again = bob.run(&["chat", "save", &conv, &seq, "--out", out.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );
    // The sender keeps its own copy too.
    let mine = dir.join("mine.pdf");
    alice.ok(&[
        "chat",
        "save",
        &conv,
        &seq,
        "--file",
        "1",
        "--out",
        mine.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&mine).unwrap(), b"%PDF-1.7 the report");

    // Burn on read: shown once, never saved, then gone with the message.
    let burn = alice.json(&[
        "chat",
        "send",
        &conv,
        "--file",
        report.to_str().unwrap(),
        "--burn-on-read",
        "--wait-captured",
        "60",
    ]);
    let burn_seq = burn["seq"].as_u64().unwrap().to_string();
    let shown = bob.read(&conv);
    assert_eq!(shown.last().unwrap()["files"][0]["name"], "report.pdf");
    let gone = dir.join("burnt.pdf");
    let refused = bob.run(&[
        "chat",
        "save",
        &conv,
        &burn_seq,
        "--out",
        gone.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        common::stderr(&refused).contains("holds no message"),
        "{}",
        common::stderr(&refused)
    );
    assert!(!gone.exists());

    // The archive holds every file, and verifies; an officer extracts
    // one, checked against its reference, and the log says so.
    let records = agency.records(false);
    let with_files: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["attachments"].is_array())
        .collect();
    assert_eq!(with_files.len(), 2, "{records:?}");
    let id = with_files[0]["id"].to_string();
    let extracted = dir.join("extracted.m4a");
    let got: serde_json::Value = serde_json::from_str(&common::ok(agency.records_output(&[
        "attachment",
        &id,
        "--out",
        extracted.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(got["name"], "scene interview.m4a", "{got}");
    assert!(
        std::fs::read(&extracted).unwrap() == bytes,
        "the officer extracts the recording"
    );
    let views = agency.leaves("action").join("\n");
    assert!(views.contains("view-file"), "{views}");
    let (leaves, covered) = agency.log_and_checkpoint_sizes();
    assert_eq!(covered, leaves, "a signed checkpoint covers the release");
    let out = agency.records_output(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every captured file goes through the agency's scanner (`--scan-command`):
/// its verdict is in the record's leaf and shown wherever the file is
/// offered; a finding does not keep the file out of the record.
#[test]
fn captured_files_go_through_the_agencys_malware_scanner() {
    // A stand-in for `clamdscan --no-summary`: exit 1 and a line naming
    // the finding for a file holding the test string, 0 otherwise.
    let scanner = r#"f() { if grep -q KEEPWIRE-TEST-MALWARE "$1"; then echo "$1: Test-Signature FOUND"; exit 1; fi; echo "$1: OK"; }; f"#;
    let agency = Agency::start_with(&["--scan-command", scanner]);
    let alice = agency.user("alice", "staff");
    agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    let dir = agency.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let clean = dir.join("minutes.txt");
    std::fs::write(&clean, b"minutes of the meeting").unwrap();
    let bad = dir.join("invoice.pdf");
    std::fs::write(&bad, b"%PDF-1.7 KEEPWIRE-TEST-MALWARE").unwrap();
    let sent = alice.json(&[
        "chat",
        "send",
        &conv,
        "two files",
        "--file",
        clean.to_str().unwrap(),
        "--file",
        bad.to_str().unwrap(),
        "--wait-captured",
        "60",
    ]);
    assert_eq!(sent["captured"], true, "{sent}");

    let record = agency
        .records(false)
        .into_iter()
        .find(|r| r["attachments"].is_array())
        .expect("the message is archived with its files");
    assert_eq!(record["attachments"][0]["scan"], "clean", "{record}");
    let found = record["attachments"][1]["scan"].as_str().unwrap();
    assert!(
        found.starts_with("found: ") && found.contains("Test-Signature FOUND"),
        "{found}"
    );
    let leaves = agency.leaves("record").join("\n");
    assert!(
        leaves.contains("Test-Signature FOUND"),
        "the verdict is in the leaf"
    );

    // Offered to an officer with its verdict.
    let id = record["id"].to_string();
    let shown: serde_json::Value =
        serde_json::from_str(&common::ok(agency.records_output(&["show", &id, "--json"]))).unwrap();
    assert_eq!(shown["files"][1]["scan"], found);
    let out = dir.join("extracted.pdf");
    let got: serde_json::Value = serde_json::from_str(&common::ok(agency.records_output(&[
        "attachment",
        &id,
        "--file",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(got["scan"], found);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"%PDF-1.7 KEEPWIRE-TEST-MALWARE",
        "kept as evidence, whatever the verdict"
    );
    // The plaintext the scanner read is gone from the spool.
    let spool = agency.data.join("records").join("spool");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// kill -9 of the server in the middle of an upload: the upload resumes
/// on a new connection from what the server holds, completes, and the
/// message carrying it is archived with it and read by the other member.
#[test]
fn an_upload_cut_by_a_killed_server_resumes_and_nothing_is_lost() {
    let mut agency = Agency::start();
    let code = |user: &str| {
        agency
            .admin(&[
                "user",
                "add",
                user,
                "--display",
                user,
                "--category",
                "staff",
            ])
            .trim()
            .to_string()
    };
    let (code_a, code_b) = (code("alice"), code("bob"));
    let url = agency.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let file: Vec<u8> = (0..MAX_BLOB_CHUNK * 3).map(|i| (i % 239) as u8).collect();
    let mut sealed_bytes = Vec::new();
    let sealed = seal(&mut &file[..], &mut sealed_bytes).unwrap();
    let (mut alice, mut bob, conv, mut g, blob) = rt.block_on(async {
        let mut alice = Rogue::enroll(&url, "alice", &code_a).await;
        let mut bob = Rogue::enroll(&url, "bob", &code_b).await;
        alice.wire.call(Request::AcknowledgeNotice).await.unwrap();
        let (ca, cb) = (alice.client(Rules::default()), bob.client(Rules::default()));
        bob.upload_key_package(&cb).await;
        let (conv, g) = alice.create(&ca, &["bob"]).await;
        let (blob, _, _) = blob_of(
            alice
                .wire
                .call(Request::BlobCreate {
                    conv: conv.clone(),
                    size: sealed_bytes.len() as u64,
                    cipher_sha256: sealed.cipher_sha256.clone(),
                })
                .await
                .unwrap(),
        );
        blob_of(
            alice
                .wire
                .chunk(&blob, 0, &sealed_bytes[..MAX_BLOB_CHUNK])
                .await
                .unwrap(),
        );
        (alice, bob, conv, g, blob)
    });
    // kill -9, mid-upload; then the same deployment again.
    agency.restart(&[]);
    rt.block_on(async {
        for r in [&mut alice, &mut bob] {
            let mut w = common::rogue::Wire::connect(&url).await;
            r.auth_on(&mut w).await.unwrap();
            r.wire = w;
        }
        let (_, at, _) = blob_of(
            alice
                .wire
                .call(Request::BlobStatus { blob: blob.clone() })
                .await
                .unwrap(),
        );
        assert!(
            at <= MAX_BLOB_CHUNK as u64,
            "it holds at most what was sent: {at}"
        );
        assert!(upload_from(&mut alice.wire, &blob, at, &sealed_bytes).await);
        let mut content = Content::text("after the restart", None, false, 1);
        content.attachments =
            vec![sealed.reference(blob.clone(), "log.bin", "application/octet-stream")];
        let message = g
            .encrypt_application_message(
                &content.encode().unwrap(),
                BlobList::of(&content.attachments).encode(),
            )
            .unwrap();
        let seq = alice.submit(&conv, &message, None, None).await.unwrap();
        alice.wire.wait_captured(&conv, seq).await;
        let got = download(&mut bob.wire, &blob, sealed_bytes.len()).await;
        let mut opened = Vec::new();
        open(&content.attachments[0], &mut &got[..], &mut opened).unwrap();
        assert!(
            opened == file,
            "bob opens the file alice began before the crash"
        );
    });
    let out = agency.records_output(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A 50 MiB file end to end while the records service is frozen, then
/// killed (kill -9) in the middle of fetching it: nothing reaches the
/// other member before capture, and after a restart the message is
/// archived once with its file, which bob saves byte for byte.
#[test]
fn a_records_service_killed_mid_capture_of_a_file_loses_and_doubles_nothing() {
    let mut agency = Agency::start_split(&[]);
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    let dir = agency.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("recording.wav");
    let bytes: Vec<u8> = (0..50u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&big, &bytes).unwrap();

    // What a send and a read peak at without a file: the baselines the
    // file's own memory is measured against.
    let (out, text_peak) = alice.run_measured(&["chat", "send", &conv, "before the file"]);
    common::ok(out);
    let (out, read_peak) = bob.run_measured(&["chat", "read", &conv, "--json"]);
    common::ok(out);

    agency.pause_records(true);
    let (out, send_peak) = alice.run_measured(&[
        "chat",
        "send",
        &conv,
        "the recording",
        "--file",
        big.to_str().unwrap(),
        "--json",
    ]);
    let sent: serde_json::Value = serde_json::from_str(&common::ok(out)).unwrap();
    let seq = sent["seq"].as_u64().unwrap();
    // Memory stays flat: the file moves a segment and a frame at a time.
    // Both baselines already hold the passphrase's Argon2id pass (19 MiB,
    // freed before anything else runs), which hides growth below it; a
    // file held whole (50 MiB, and its ciphertext) cannot hide.
    assert_within(send_peak, text_peak, "sending a 50 MiB file");
    assert!(
        !bob.texts(&conv).contains(&"the recording".to_string()),
        "nothing reaches bob before the records service has it"
    );

    // Let it go, and kill it while it fetches the file (or, on a fast
    // machine, right after it archived it: nothing may be lost either way).
    let spool = agency.data.join("records").join("spool");
    agency.pause_records(false);
    common::wait_for("the records service to take the file", 120, || {
        let fetching = std::fs::read_dir(&spool).is_ok_and(|mut d| d.next().is_some());
        (fetching || agency.records(false).iter().any(|r| r["seq"] == seq)).then_some(())
    });
    agency.stop_records();
    agency.start_records(None);

    // The read that receives the message takes the file in (download,
    // open, store): its peak is measured.
    let (got, take_peak) = common::wait_for("bob to have the message", 120, || {
        let (out, peak) = bob.run_measured(&["chat", "read", &conv, "--json"]);
        let read: serde_json::Value = serde_json::from_str(&common::ok(out)).unwrap();
        read.as_array()
            .unwrap()
            .iter()
            .find(|m| m["text"] == "the recording")
            .cloned()
            .map(|m| (m, peak))
    });
    assert!(got["files"][0]["missing"].is_null(), "{got}");
    assert_within(take_peak, read_peak, "taking in a 50 MiB file");
    let out = dir.join("saved.wav");
    let (saved, save_peak) = bob.run_measured(&[
        "chat",
        "save",
        &conv,
        &seq.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    common::ok(saved);
    assert_within(save_peak, read_peak, "saving a 50 MiB file");
    assert!(
        std::fs::read(&out).unwrap() == bytes,
        "the 50 MiB file arrives whole"
    );
    let archived: Vec<serde_json::Value> = agency
        .records(false)
        .into_iter()
        .filter(|r| r["seq"] == seq)
        .collect();
    assert_eq!(archived.len(), 1, "archived once: {archived:?}");
    assert_eq!(archived[0]["attachments"][0]["size"], bytes.len());
    let out = agency.records_output(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Peak memory growth a file may cause in a device's process, against
/// the same command without it: the issue's bound for a 1 GiB file
/// (32 MiB) halved, since a 50 MiB file held whole would still fit
/// under the full bound beside the baseline's Argon2id pass.
const FLAT_GROWTH: u64 = 16 << 20;

fn assert_within(peak: u64, baseline: u64, what: &str) {
    eprintln!(
        "{what}: peak {:.1} MiB, {:.1} MiB without the file",
        peak as f64 / 1048576.0,
        baseline as f64 / 1048576.0
    );
    assert!(
        peak <= baseline + FLAT_GROWTH,
        "{what} peaked at {} MiB, {} MiB above the same command without it (at most {} MiB)",
        peak >> 20,
        peak.saturating_sub(baseline) >> 20,
        FLAT_GROWTH >> 20
    );
}
