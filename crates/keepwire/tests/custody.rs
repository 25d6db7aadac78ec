//! Custody: what an insider or an operator could do to a deployment
//! without meaning to — or meaning to — and what keepwire does about it.
//! Each test is a finding of the audit in issue 12, tried the way it was
//! found, through the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{free_port, keepwire, on_postgres, stderr, Agency};

#[test]
fn a_second_server_on_the_same_data_directory_refuses_naming_the_first() {
    second_server_refused(false);
}

#[test]
fn on_postgres_a_second_server_on_the_same_database_refuses_naming_the_first() {
    on_postgres(|| second_server_refused(true));
}

/// Two servers on one data directory both ran, and a message receipted
/// through the second reached no device and no archive. Now the second
/// refuses to start and says who holds it; the first goes on serving. On
/// PostgreSQL the second has a data directory of its own and still
/// refuses: the database is the first one's.
fn second_server_refused(own_directory: bool) {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    bob.accept_notice();
    let conv = alice.create(&["bob"]);
    let pid = agency.server.as_ref().unwrap().child.id();
    let other = agency.tmp.path().join("other");
    let dir = if own_directory {
        other.to_str().unwrap()
    } else {
        agency.data_dir()
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let out = keepwire(
        &agency.with_database(&["serve", "--data-dir", dir, "--listen", &listen]),
        &[],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "a second server started: {err}");
    assert!(err.contains("in use by another keepwire process"), "{err}");
    assert!(
        err.contains(&format!("pid {pid}")),
        "names the holder: {err}"
    );
    assert!(
        std::net::TcpStream::connect(&listen).is_err(),
        "the second server is not listening"
    );
    // The first serves on, and everything still reaches everyone.
    alice.send(&conv, "still here");
    assert_eq!(bob.texts(&conv), ["still here"]);
}

#[test]
fn everything_a_deployment_writes_is_readable_by_its_owner_only() {
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    alice.accept_notice();
    let bob = agency.user("bob", "staff");
    let conv = alice.create(&["bob"]);
    alice.send(&conv, "private");
    assert_eq!(bob.texts(&conv), ["private"]);
    let mut seen = 0;
    for root in [agency.data.as_path(), alice.dir.as_path()] {
        seen += assert_private(root);
    }
    assert!(seen > 8, "looked at {seen} paths");
    // Enrolment codes are in the server's database as hashes only: a copy
    // of it (a backup, an unprivileged reader) enrols nobody.
    let code = agency.admin(&["user", "code", "alice"]);
    let db = std::fs::read(agency.data.join("server.db")).unwrap();
    let wal = std::fs::read(agency.data.join("server.db-wal")).unwrap_or_default();
    let code = code.trim().as_bytes();
    assert!(
        ![db, wal]
            .iter()
            .any(|b| b.windows(code.len()).any(|w| w == code)),
        "the enrolment code is in server.db"
    );
}

/// Every directory under `root` is 0700 and every file 0600 or tighter;
/// how many paths were checked.
fn assert_private(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        n += 1;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    n
}

/// An agency whose server has published a checkpoint of at least `n`
/// leaves (the members' devices have seen it), then stopped as by a crash.
fn stopped_after_checkpoint() -> (Agency, u64) {
    let mut agency = Agency::start_with(&["--checkpoint-secs", "1"]);
    let alice = agency.user("alice", "staff");
    agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    for text in ["one", "two", "three"] {
        alice.send(&conv, text);
    }
    let size = common::wait_for("a published checkpoint", 30, || {
        let v = alice.json(&["chat", "checkpoint"]);
        let size = v["size"].as_u64().unwrap_or(0);
        (size >= 4).then_some(size)
    });
    agency.stop();
    (agency, size)
}

/// `keepwire serve` on the agency's data directory, which must end by
/// itself (within a minute; killed and failed otherwise).
fn serve_once(agency: &Agency) -> std::process::Output {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--data-dir",
            agency.data_dir(),
            "--listen",
            &listen,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for("keepwire serve to stop by itself", 60, || {
        child.try_wait().unwrap()
    });
    child.wait_with_output().unwrap()
}

/// A 0-byte `server.db` started an empty server, a 0-byte `archive.db` a
/// new archive at leaf 0. Where the data directory shows they existed,
/// each is now refused, naming the file and the evidence; put back, the
/// deployment runs on.
#[test]
fn an_emptied_or_missing_database_is_refused_naming_the_file_and_the_evidence() {
    let (mut agency, _) = stopped_after_checkpoint();
    for (db, evidence) in [
        ("server.db", "receipt.key shows a server ran"),
        (
            "records/archive.db",
            "checkpoint.key shows an archive was kept",
        ),
    ] {
        let path = agency.data.join(db);
        let kept = std::fs::read(&path).unwrap();
        let wal = path.with_extension("db-wal");
        let kept_wal = std::fs::read(&wal).ok();
        for (how, damage) in [
            (
                "empty",
                (|p: &Path| std::fs::write(p, b"").unwrap()) as fn(&Path),
            ),
            ("missing", |p: &Path| std::fs::remove_file(p).unwrap()),
        ] {
            damage(&path);
            let _ = std::fs::remove_file(&wal);
            let _ = std::fs::remove_file(path.with_extension("db-shm"));
            let out = serve_once(&agency);
            let err = stderr(&out);
            assert!(!out.status.success(), "{db} {how}: started anyway\n{err}");
            assert!(err.contains(&format!("{db} is {how}")), "{err}");
            assert!(err.contains(evidence), "{err}");
            std::fs::write(&path, &kept).unwrap();
            if let Some(w) = &kept_wal {
                std::fs::write(&wal, w).unwrap();
            }
        }
    }
    agency.restart(&[]);
    assert_eq!(agency.wait_captured(3), ["one", "two", "three"]);
}

/// The log was cut back from 208 to 203 leaves and the service went on:
/// signing size 203, logging an error every tick, receipting messages. An
/// archive that no longer holds what the server's published chain says
/// it signed now stops the records service — and, embedded, the server
/// with it — saying what happened.
#[test]
fn an_archive_cut_back_behind_its_published_checkpoint_stops_everything() {
    let (agency, size) = stopped_after_checkpoint();
    let archive = rusqlite::Connection::open(agency.data.join("records/archive.db")).unwrap();
    archive
        .execute("DELETE FROM tlog_leaves WHERE n >= ?1", [size as i64 - 2])
        .unwrap();
    drop(archive);
    let out = serve_once(&agency);
    let err = stderr(&out);
    assert!(!out.status.success(), "served on a cut archive\n{err}");
    assert!(err.contains("cut back"), "{err}");
    assert!(
        err.contains(&format!("a checkpoint of {size} leaves")),
        "{err}"
    );
    // Nor does the log sign the shorter tree when asked by hand (C2SP: a
    // log never signs a checkpoint inconsistent with one it signed).
    let out = keepwire(
        &["records", "checkpoint", "--data-dir", agency.data_dir()],
        &[],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "signed a fork: {err}");
    assert!(err.contains("cut back"), "{err}");
}
