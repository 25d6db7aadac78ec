//! The witness protocol against the specs' own example and against real
//! logs: an honest history is cosigned step by step; a fork signed with
//! the log's own (stolen) key is not.

use super::*;
use crate::keys::FileKeys;
use crate::Archive;

/// The example cosignature line of C2SP tlog-cosignature (its key is not
/// published, so its layout is what can be checked): key ID, then the
/// big-endian timestamp the spec's example message shows (`time
/// 1679315147`), then a 64-byte Ed25519 signature.
#[test]
fn the_specs_example_cosignature_has_the_layout_this_module_writes() {
    let line = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
    let sig = signed_note::Signature::from_bytes(line.as_bytes()).unwrap();
    assert_eq!(sig.name(), "witness.example.com/w1");
    let bytes = sig.signature();
    assert_eq!(bytes.len(), 8 + 64);
    assert_eq!(
        u64::from_be_bytes(bytes[..8].try_into().unwrap()),
        1_679_315_147
    );
    // And the message for that time and the example's checkpoint body.
    let body =
        b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    assert_eq!(
        cosignature_message(body, 1_679_315_147),
        [b"cosignature/v1\ntime 1679315147\n".as_slice(), body].concat()
    );
    // Ours: the same layout, and it verifies.
    let ours = Cosigner::new("witness.example.com/w1", &[3; 32]).unwrap();
    let line = ours.cosign(body, 1_679_315_147);
    let parsed = signed_note::Signature::from_bytes(line.trim_end().as_bytes()).unwrap();
    assert_eq!(parsed.signature().len(), 72);
    let verifier = CosignatureVerifier::new(&ours.verifier_key()).unwrap();
    assert_eq!(parsed.id(), signed_note::Verifier::key_id(&verifier));
    assert_eq!(
        verifier.time_of(body, parsed.signature()),
        Some(1_679_315_147)
    );
    // Another body or another time does not verify.
    assert_eq!(
        verifier.time_of(b"example.com/x\n1\nAA==\n", parsed.signature()),
        None
    );
    let mut moved = parsed.signature().to_vec();
    moved[7] ^= 1;
    assert_eq!(verifier.time_of(body, &moved), None);
    // Verifier keys are checked: a wrong ID or key type is refused.
    let vkey = ours.verifier_key();
    let (name_id, key) = vkey.rsplit_once('+').unwrap();
    let wrong_id = format!("witness.example.com/w1+00000000+{key}");
    assert!(CosignatureVerifier::new(&wrong_id).is_err());
    let _ = name_id;
    let log_key = signed_note::generate_key(&mut rand::rngs::OsRng, "some.log").1;
    assert!(
        CosignatureVerifier::new(&log_key).is_err(),
        "a log key (type 0x01) is no cosigner key"
    );
}

/// A log: an archive with `n` actions and its checkpoint signer.
struct Log {
    _dir: tempfile::TempDir,
    archive: Archive,
    notary: crate::checkpoint::Notary,
}

fn log(keys: &FileKeys, actions: &[&str]) -> Log {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), None).unwrap();
    for (i, a) in actions.iter().enumerate() {
        archive
            .log_action("officer", a, "record", i as u64)
            .unwrap();
    }
    let notary = crate::checkpoint::Notary::new(keys, dir.path()).unwrap();
    Log {
        _dir: dir,
        archive,
        notary,
    }
}

impl Log {
    fn grow(&mut self, actions: &[&str]) {
        for a in actions {
            self.archive.log_action("officer", a, "record", 9).unwrap();
        }
    }

    /// The add-checkpoint request from `old` to the current size.
    fn request(&self, old: u64) -> String {
        let (size, note) = self.archive.issue_checkpoint(&self.notary, 1).unwrap();
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            self.archive.prove_consistency(old, size).unwrap()
        };
        let mut body = format!("old {old}\n");
        for h in proof {
            body.push_str(&keepwire_protocol::b64::encode(&h.0));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&note);
        body
    }
}

#[test]
fn a_witness_cosigns_an_honest_history_and_refuses_a_fork_signed_with_the_stolen_key() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = FileKeys::open(&keys_dir.path().join("keys")).unwrap();
    let mut honest = log(&keys, &["a", "b", "c"]);
    let cosigner = Cosigner::new("witness.ig.example/1", &[5; 32]).unwrap();
    let verifier = CosignatureVerifier::new(&cosigner.verifier_key()).unwrap();
    let mut witness = Witness::new(
        cosigner,
        &[honest.notary.verifier_key.clone()],
        MemoryState::default(),
    )
    .unwrap();

    // First contact: old 0, no proof.
    let req = honest.request(0);
    let Answer::Cosigned(line) = witness.add_checkpoint(req.as_bytes(), 1000).unwrap() else {
        panic!("not cosigned")
    };
    // The cosignature verifies together with the log's own signature.
    let note = req.split_once("\n\n").unwrap().1;
    let cosigned = format!("{note}{line}");
    let n = Note::from_bytes(cosigned.as_bytes()).unwrap();
    let list = VerifierList::new(vec![
        Box::new(signed_note::StandardVerifier::new(&honest.notary.verifier_key).unwrap()),
        Box::new(verifier),
    ]);
    assert_eq!(n.verify(&list).unwrap().0.len(), 2);
    assert_eq!(witness.latest(honest.notary.origin()).unwrap(), Some(3));

    // The same request again: the witness is at 3 now, and says so.
    assert_eq!(
        witness.add_checkpoint(req.as_bytes(), 1001).unwrap(),
        Answer::Conflict(Some(3))
    );
    // Growth with a valid consistency proof is cosigned.
    honest.grow(&["d", "e"]);
    let req = honest.request(3);
    assert_eq!(
        witness
            .add_checkpoint(req.as_bytes(), 1002)
            .unwrap()
            .status(),
        200
    );
    assert_eq!(witness.latest(honest.notary.origin()).unwrap(), Some(5));
    // An old size beyond the checkpoint's is a bad request.
    let beyond = req.replacen("old 3\n", "old 9\n", 1);
    assert_eq!(
        witness
            .add_checkpoint(beyond.as_bytes(), 1003)
            .unwrap()
            .status(),
        400
    );

    // Someone with the stolen key rewrites the log (b replaced) and signs
    // it under the same name.
    let mut forged = log(&keys, &["a", "B", "c", "d", "e"]);
    assert_eq!(forged.notary.verifier_key, honest.notary.verifier_key);
    // The same size with another root: a conflict, never a cosignature.
    assert_eq!(
        witness
            .add_checkpoint(forged.request(5).as_bytes(), 1004)
            .unwrap(),
        Answer::Conflict(None)
    );
    // Grown past it, with the forged log's own consistency proof: the
    // proof does not reach what the witness cosigned.
    forged.grow(&["f"]);
    assert_eq!(
        witness
            .add_checkpoint(forged.request(5).as_bytes(), 1005)
            .unwrap(),
        Answer::Unprocessable
    );
    assert_eq!(witness.latest(honest.notary.origin()).unwrap(), Some(5));
    // The honest log goes on being cosigned.
    honest.grow(&["f"]);
    assert_eq!(
        witness
            .add_checkpoint(honest.request(5).as_bytes(), 1006)
            .unwrap()
            .status(),
        200
    );

    // A log the witness does not follow; a checkpoint in the log's name
    // signed by another key.
    let other_keys = FileKeys::open(&keys_dir.path().join("other")).unwrap();
    let stranger = log(&other_keys, &["x"]);
    assert_eq!(
        witness
            .add_checkpoint(stranger.request(0).as_bytes(), 1007)
            .unwrap(),
        Answer::UnknownLog
    );
    let impostor_key = signed_note::generate_key(&mut rand::rngs::OsRng, honest.notary.origin()).0;
    let signer = signed_note::StandardSigner::new(&impostor_key).unwrap();
    let text = Checkpoint::new(honest.notary.origin(), 7, Hash([1; 32]), "")
        .unwrap()
        .to_bytes();
    let mut note = Note::new(&text, &[]).unwrap();
    note.add_sigs(&[&signer]).unwrap();
    let body = format!("old 6\n\n{}", String::from_utf8(note.to_bytes()).unwrap());
    assert_eq!(
        witness.add_checkpoint(body.as_bytes(), 1008).unwrap(),
        Answer::Forbidden
    );

    // Malformed requests are refused precisely, and change nothing.
    for (what, body) in [
        ("no old line", "\n\nx".to_string()),
        ("leading zero", format!("old 06\n\n{note}", note = "x")),
        ("bad proof line", "old 6\nnot-base64!\n\nx".to_string()),
        ("no blank line", "old 6\n".to_string()),
        ("not a note", "old 6\n\nhello".to_string()),
        (
            "too large",
            "old 6\n".to_string() + &"A".repeat(MAX_REQUEST),
        ),
    ] {
        let a = witness.add_checkpoint(body.as_bytes(), 1009).unwrap();
        assert_eq!(a.status(), 400, "{what}: {a:?}");
    }
    assert_eq!(witness.latest(honest.notary.origin()).unwrap(), Some(6));
}

#[test]
fn the_state_advances_only_from_what_was_read() {
    let mut s = MemoryState::default();
    assert!(s.advance("log", 0, 3, Hash([1; 32])).unwrap());
    // A second request checked against size 0 does not roll it back.
    assert!(!s.advance("log", 0, 2, Hash([2; 32])).unwrap());
    assert_eq!(s.latest("log").unwrap(), Some((3, Hash([1; 32]))));
}

#[test]
fn the_file_state_survives_a_restart_and_never_half_advances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("witness.json");
    let mut s = FileState::open(&path).unwrap();
    assert!(s.advance("log", 0, 3, Hash([1; 32])).unwrap());
    assert!(s.advance("log", 3, 5, Hash([2; 32])).unwrap());
    drop(s);
    let mut s = FileState::open(&path).unwrap();
    assert_eq!(s.latest("log").unwrap(), Some((5, Hash([2; 32]))));
    assert!(!s.advance("log", 3, 9, Hash([3; 32])).unwrap());
    // A write that cannot be made durable does not advance it.
    std::fs::remove_dir_all(dir.path()).unwrap();
    assert!(s.advance("log", 5, 7, Hash([4; 32])).is_err());
    assert_eq!(s.latest("log").unwrap(), Some((5, Hash([2; 32]))));
    // A damaged file is an error, not an empty state.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("witness.json");
    std::fs::write(&path, b"{not json").unwrap();
    assert!(FileState::open(&path).is_err());
}

/// Submit the log's latest checkpoint to `witness` the way the records
/// service does: from the size it believes the witness is at, learning
/// the witness's size from a 409 and asking again once. The reply as the
/// log reads it, and the cosigned note when there is one.
fn submit(
    log: &Log,
    witness: &mut Witness<MemoryState>,
    verifier: &CosignatureVerifier,
    believed: u64,
) -> (quorum::Reply, Option<String>) {
    let (size, note) = log.archive.issue_checkpoint(&log.notary, 1).unwrap();
    let mut old = believed;
    for _ in 0..2 {
        let body = match log.archive.witness_request(old, size, &note) {
            Ok(b) => b,
            Err(e) => return (quorum::Reply::Disagrees(e.to_string()), None),
        };
        let a = witness.add_checkpoint(&body, 2000).unwrap();
        match quorum::read_reply(a.status(), a.body().as_bytes()) {
            quorum::Reply::Latest(n) => old = n,
            quorum::Reply::Cosigned(line) => {
                let cosigned = log.archive.add_cosignature(size, &line, verifier).unwrap();
                return (quorum::Reply::Cosigned(line), Some(cosigned));
            }
            other => return (other, None),
        }
    }
    panic!("the witness kept naming another size")
}

#[test]
fn cosignatures_gathered_by_the_log_make_a_quorum_a_fork_never_reaches() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = FileKeys::open(&keys_dir.path().join("keys")).unwrap();
    let mut honest = log(&keys, &["a", "b", "c"]);
    let mut witnesses: Vec<(Witness<MemoryState>, CosignatureVerifier, String)> = (1..=3)
        .map(|i| {
            let c = Cosigner::new(&format!("witness{i}.example/1"), &[i; 32]).unwrap();
            let vkey = c.verifier_key();
            let v = CosignatureVerifier::new(&vkey).unwrap();
            let w = Witness::new(
                c,
                &[honest.notary.verifier_key.clone()],
                MemoryState::default(),
            )
            .unwrap();
            (w, v, vkey)
        })
        .collect();
    let keys_given: Vec<String> = witnesses.iter().map(|w| w.2.clone()).collect();
    let two_of_three = quorum::Quorum::new(&keys_given, Some(2)).unwrap();
    assert_eq!(
        two_of_three.describe(),
        "2 of the 3 witnesses (witness1.example/1, witness2.example/1, witness3.example/1)"
    );

    // Nothing is witnessed until a quorum has cosigned.
    let (w, v, _) = &mut witnesses[0];
    let (reply, note) = submit(&honest, w, v, 0);
    assert!(matches!(reply, quorum::Reply::Cosigned(_)), "{reply:?}");
    let note = note.unwrap();
    assert_eq!(two_of_three.cosigners(&note), ["witness1.example/1"]);
    assert!(!two_of_three.met(&note));
    assert_eq!(honest.archive.witnessed(&two_of_three).unwrap(), None);
    let (w, v, _) = &mut witnesses[1];
    let (_, note) = submit(&honest, w, v, 0);
    let note = note.unwrap();
    assert!(two_of_three.met(&note));
    // The cosigned note is still the log's checkpoint: its own signature
    // verifies, and the archive keeps it.
    crate::checkpoint::open_note(&note, &honest.notary.verifier_key).unwrap();
    assert_eq!(
        honest.archive.witnessed(&two_of_three).unwrap(),
        Some((3, note.clone()))
    );
    // A cosignature submitted twice is kept once.
    let (w, v, _) = &mut witnesses[1];
    let (_, again) = submit(&honest, w, v, 3);
    assert_eq!(again.unwrap().matches('\u{2014}').count(), 3);

    // The log grows; a witness the log believes is at 0 names its size,
    // and is brought forward with a consistency proof.
    honest.grow(&["d"]);
    for (w, v, _) in &mut witnesses[..2] {
        let (reply, _) = submit(&honest, w, v, 0);
        assert!(matches!(reply, quorum::Reply::Cosigned(_)), "{reply:?}");
    }
    assert_eq!(
        honest.archive.witnessed(&two_of_three).unwrap().unwrap().0,
        4
    );

    // A line that is not this witness's cosignature of this checkpoint is
    // never kept.
    let (_, v1, _) = &witnesses[0];
    let stranger = Cosigner::new("witness1.example/1", &[9; 32]).unwrap();
    let forged_line = stranger.cosign(b"something else\n", 5);
    assert!(honest.archive.add_cosignature(4, &forged_line, v1).is_err());

    // The log rewritten with the stolen key: the witnesses that cosigned
    // the honest one refuse it, and the forged archive has no checkpoint
    // a quorum cosigned.
    let mut forged = log(&keys, &["a", "B", "c", "d"]);
    for (w, v, _) in &mut witnesses[..2] {
        let (reply, note) = submit(&forged, w, v, 0);
        assert!(matches!(reply, quorum::Reply::Disagrees(_)), "{reply:?}");
        assert!(note.is_none());
    }
    forged.grow(&["e"]);
    for (w, v, _) in &mut witnesses[..2] {
        let (reply, _) = submit(&forged, w, v, 4);
        assert!(matches!(reply, quorum::Reply::Disagrees(_)), "{reply:?}");
    }
    // Only the third witness, which never saw the honest log, cosigns it.
    let (w, v, _) = &mut witnesses[2];
    let (_, note) = submit(&forged, w, v, 0);
    assert_eq!(
        two_of_three.cosigners(&note.unwrap()),
        ["witness3.example/1"]
    );
    assert_eq!(forged.archive.witnessed(&two_of_three).unwrap(), None);

    // The honest log cut back: a witness that cosigned more is evidence.
    let (w, v, _) = &mut witnesses[0];
    let small = log(&keys, &["a"]);
    let (reply, _) = submit(&small, w, v, 0);
    match reply {
        quorum::Reply::Disagrees(why) => assert!(why.contains("cut back"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_quorum_is_given_sensibly_and_witnesses_are_read_from_key_at_url() {
    let keys: Vec<String> = (1..=2)
        .map(|i| {
            Cosigner::new(&format!("w{i}.example"), &[i; 32])
                .unwrap()
                .verifier_key()
        })
        .collect();
    assert_eq!(quorum::Quorum::new(&keys, None).unwrap().need(), 2);
    for (need, why) in [(Some(0), "means nothing"), (Some(3), "cannot be met")] {
        let e = quorum::Quorum::new(&keys, need).err().unwrap().to_string();
        assert!(e.contains(why), "{e}");
    }
    let twice = [keys[0].clone(), keys[0].clone()];
    assert!(quorum::Quorum::new(&twice, Some(1)).is_err());
    assert!(quorum::Quorum::new(&[], None).is_err());

    let peer: quorum::Peer = format!("{}@https://w1.example:8443/", keys[0])
        .parse()
        .unwrap();
    assert_eq!(peer.url, "https://w1.example:8443");
    assert_eq!(peer.key, keys[0]);
    for bad in [
        keys[0].clone(),
        format!("{}@ftp://x", keys[0]),
        "x@http://y".into(),
    ] {
        assert!(bad.parse::<quorum::Peer>().is_err(), "{bad}");
    }
    // Replies: each status as the log must take it.
    use quorum::{read_reply, Reply};
    assert_eq!(read_reply(409, b"7\n"), Reply::Latest(7));
    assert!(matches!(
        read_reply(409, b"a different root"),
        Reply::Disagrees(_)
    ));
    assert!(matches!(read_reply(422, b""), Reply::Disagrees(_)));
    assert!(matches!(read_reply(404, b""), Reply::Refused(_)));
    assert!(matches!(read_reply(503, b"busy"), Reply::Failed(_)));
    assert!(matches!(read_reply(200, b"no line"), Reply::Failed(_)));
}
