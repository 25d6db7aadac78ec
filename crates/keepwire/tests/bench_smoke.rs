//! `keepwire bench --quick` end to end, as CI's smoke run: the real binary
//! starts its own server, drives every scenario through it and writes its
//! figures; `bench report` turns them into a table and a PNG. What is
//! checked is that every scenario ran to completion and measured something
//! (every message sent was receipted, delivered and archived — the bench
//! fails otherwise); how fast is never asserted here.

mod common;

use common::{keepwire, ok};
use serde_json::Value;

#[test]
fn quick_bench_runs_every_scenario_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("results.jsonl");
    // Bounded, so a hang fails the test instead of stalling CI (a quick
    // run takes about 15 s in release, under a minute in debug).
    let run = std::process::Command::new("timeout")
        .arg("300")
        .arg(common::BIN)
        .args([
            "bench",
            "--quick",
            "--json",
            json.to_str().unwrap(),
            "--dir",
            tmp.path().join("data").to_str().unwrap(),
        ])
        .output()
        .expect("run keepwire bench");
    let out = ok(run);
    assert!(
        out.contains("durable mode"),
        "the output says which mode ran:\n{out}"
    );
    assert!(out.contains("bench finished in"), "{out}");

    let lines: Vec<Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |scenario: &str| -> Vec<&Value> {
        lines.iter().filter(|v| v["scenario"] == scenario).collect()
    };
    // 4 windows × (pre-encrypted, live)
    let throughput = of("throughput");
    assert_eq!(throughput.len(), 8, "{lines:?}");
    for v in throughput
        .iter()
        .chain(of("latency").iter())
        .chain(of("fanout").iter())
    {
        assert_eq!(v["system"], "keepwire");
        assert_eq!(v["durable"], true);
        assert!(v["messages"].as_u64().unwrap() > 0, "{v}");
        for f in [
            "accepted_per_s",
            "captured_per_s",
            "ack_p99_ms",
            "e2e_p99_ms",
            "capture_p99_ms",
        ] {
            let x = v[f].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x > 0.0, "{f} measured in {v}");
        }
    }
    // Live clients, then the same pace with the clients' crypto done
    // beforehand.
    let latency = of("latency");
    assert_eq!(
        latency
            .iter()
            .map(|v| v["mode"].clone())
            .collect::<Vec<_>>(),
        ["live", "pre-encrypted"]
    );
    assert_eq!(of("fanout").len(), 1);
    let conns = of("connections");
    assert_eq!(conns.len(), 1);
    assert_eq!(
        conns[0]["connected"], conns[0]["devices"],
        "every idle device connected"
    );
    let capture = of("capture");
    assert_eq!(capture.len(), 1);
    for f in ["bare_per_s", "batched_per_s", "pipelined_per_s"] {
        assert!(capture[0][f].as_f64().unwrap() > 0.0, "{f} measured");
    }

    // Files: three sizes moved, each step's rate measured; memory while
    // the largest moved; text beside it and alone.
    let files = of("files");
    assert_eq!(files.len(), 3, "{lines:?}");
    for v in &files {
        for f in ["upload_mb_s", "capture_mb_s", "download_mb_s"] {
            let x = v[f].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x > 0.0, "{f} measured in {v}");
        }
    }
    assert_eq!(of("files-memory").len(), 1);
    let beside = of("files-text");
    assert_eq!(beside.len(), 3, "{lines:?}");
    for v in beside {
        assert!(v["e2e_p99_ms"].as_f64().unwrap() > 0.0, "{v}");
    }

    let doc = tmp.path().join("benchmarks.md");
    std::fs::write(
        &doc,
        "intro\n<!-- bench:table -->\nold\n<!-- /bench:table -->\nrest\n",
    )
    .unwrap();
    let png = tmp.path().join("plot.png");
    ok(keepwire(
        &[
            "bench",
            "report",
            json.to_str().unwrap(),
            "--doc",
            doc.to_str().unwrap(),
            "--plot",
            png.to_str().unwrap(),
        ],
        &[],
    ));
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(
        text.starts_with("intro\n<!-- bench:table -->\n| system |"),
        "{text}"
    );
    assert!(
        text.contains("| keepwire | throughput | pre-encrypted | 256 | 1 |"),
        "{text}"
    );
    assert!(!text.contains("old"), "the section was replaced:\n{text}");
    assert!(text.ends_with("<!-- /bench:table -->\nrest\n"), "{text}");
    let image = std::fs::read(&png).unwrap();
    assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n", "a PNG was drawn");
    assert!(
        image.len() > 10_000,
        "the plot has content ({} bytes)",
        image.len()
    );
}

#[test]
fn the_bench_runs_on_postgresql_in_schemas_it_drops_afterwards() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("results.jsonl");
    let base = keepwire_schema::pg::scratch::server_url();
    let schemas = || -> i64 {
        keepwire_schema::pg::Pg::connect(&base)
            .unwrap()
            .query_one(
                "SELECT COUNT(*) FROM pg_namespace WHERE nspname LIKE 'kwtest%'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let before = schemas();
    let run = std::process::Command::new("timeout")
        .arg("300")
        .arg(common::BIN)
        .args([
            "bench",
            "--quick",
            "--scenarios",
            "throughput",
            "--database",
            &base,
            "--json",
            json.to_str().unwrap(),
            "--dir",
            tmp.path().join("data").to_str().unwrap(),
        ])
        .output()
        .expect("run keepwire bench");
    let out = ok(run);
    assert!(out.contains("stores in PostgreSQL"), "{out}");
    let lines: Vec<Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "{lines:?}");
    for v in &lines {
        assert!(v["captured_per_s"].as_f64().unwrap() > 0.0, "{v}");
    }
    // The server under test kept nothing in SQLite, and its schemas are gone.
    let data = tmp.path().join("data").join("0-throughput");
    assert!(!data.join("server.db").exists());
    assert!(!data.join("records").join("archive.db").exists());
    assert!(schemas() <= before, "the bench dropped its schemas");
}
