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
