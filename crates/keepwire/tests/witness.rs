//! `keepwire witness` over HTTP (C2SP tlog-witness `add-checkpoint`),
//! driven with checkpoints and consistency proofs from a real archive:
//! cosigned from first contact, growth cosigned with a proof, a stale
//! request answered with the witness's size as `text/x.tlog.size`, an
//! oversized body refused, and its state kept across a restart.

mod common;

use std::io::{Read, Write};

use common::{free_port, keepwire, ok, spawn_logged, Agency};
use keepwire_records::witness::CosignatureVerifier;
use serde_json::Value;

/// POST `body` to `path`: status, headers (lower-cased), body.
fn post(addr: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

fn checkpoint(agency: &Agency) -> (String, u64, String) {
    let v: Value =
        serde_json::from_str(&ok(agency.records_output(&["checkpoint", "--json"]))).unwrap();
    (
        v["checkpoint"].as_str().unwrap().to_string(),
        v["tree_size"].as_u64().unwrap(),
        v["verifier_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_witness_cosigns_the_archive_over_http_and_keeps_its_state() {
    let mut agency = Agency::start();
    let (alice, conv) = agency.alice_and_bob();
    alice.send(&conv, "witnessed");
    agency.wait_captured(1);
    agency.stop();

    let dir = agency.tmp.path().join("witness");
    let wkey = ok(keepwire(
        &[
            "witness",
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--name",
            "witness.oig.example/1",
        ],
        &[],
    ))
    .trim()
    .to_string();
    let verifier = CosignatureVerifier::new(&wkey).unwrap();
    let (note, size, log_key) = checkpoint(&agency);
    let addr = format!("127.0.0.1:{}", free_port());
    let log = agency.tmp.path().join("witness.log");
    let start = || {
        spawn_logged(
            &[
                "witness",
                "serve",
                "--dir",
                dir.to_str().unwrap(),
                "--log",
                &log_key,
                "--listen",
                &addr,
            ],
            &log,
            "keepwire witness",
        )
    };
    let mut served = start();

    // First contact: old 0, no proof. The answer is a cosignature of
    // exactly the checkpoint's body, by the witness's key.
    let (status, _, body) = post(
        &addr,
        "/add-checkpoint",
        format!("old 0\n\n{note}").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let sig = signed_note::Signature::from_bytes(body.trim_end().as_bytes()).unwrap();
    assert_eq!(sig.name(), "witness.oig.example/1");
    let text = note.split_once("\n\n").unwrap().0.to_string() + "\n";
    assert!(verifier.time_of(text.as_bytes(), sig.signature()).is_some());

    // Again from 0: the witness is at `size` and says so, as the spec asks.
    let (status, head, body) = post(
        &addr,
        "/add-checkpoint",
        format!("old 0\n\n{note}").as_bytes(),
    );
    assert_eq!(status, 409);
    assert!(head.contains("content-type: text/x.tlog.size"), "{head}");
    assert_eq!(body, format!("{size}\n"));

    // The log grows (a view, covered by a checkpoint); with the proof from
    // `size` the new checkpoint is cosigned.
    let first = agency.records(false)[0]["id"].as_i64().unwrap().to_string();
    ok(agency.records_output(&["show", &first]));
    let (note2, size2, _) = checkpoint(&agency);
    assert!(size2 > size);
    let proof: Value = serde_json::from_str(&ok(agency.records_output(&[
        "consistency",
        &size.to_string(),
        &size2.to_string(),
    ])))
    .unwrap();
    let mut req = format!("old {size}\n");
    for h in proof["consistency_path"].as_array().unwrap() {
        req.push_str(h.as_str().unwrap());
        req.push('\n');
    }
    req.push('\n');
    req.push_str(&note2);
    let (status, _, body) = post(&addr, "/add-checkpoint", req.as_bytes());
    assert_eq!(status, 200, "{body}");
    // An oversized body is refused before it is read.
    let (status, _, _) = post(&addr, "/add-checkpoint", &vec![b'a'; 64 * 1024]);
    assert_eq!(status, 413);

    // Restarted, it remembers what it cosigned.
    served.kill().unwrap();
    served.wait().unwrap();
    let mut served = start();
    let (status, _, body) = post(
        &addr,
        "/add-checkpoint",
        format!("old 0\n\n{note}").as_bytes(),
    );
    assert_eq!((status, body), (409, format!("{size2}\n")));
    // A second witness process on the same directory refuses to start.
    let out = keepwire(
        &[
            "witness",
            "serve",
            "--dir",
            dir.to_str().unwrap(),
            "--log",
            &log_key,
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!out.status.success());
    served.kill().unwrap();
    served.wait().unwrap();
}
