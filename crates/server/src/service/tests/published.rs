//! The chain of checkpoints the server publishes: each one must extend the
//! last, and the last may come again only as itself — carrying the
//! cosignatures its witnesses gave since, keeping its link to the one
//! before.

use super::*;
use keepwire_protocol::CheckpointProof;
use tlog_tiles::tlog::{node_hash, record_hash, Hash};

/// The signed note of a checkpoint of `size` leaves with root `root`,
/// signed by `signer`, plus `extra` signature lines.
fn note(signer: &signed_note::StandardSigner, size: u64, root: Hash, extra: &str) -> String {
    let text = tlog_tiles::checkpoint::Checkpoint::new("keepwire.archive/test", size, root, "")
        .unwrap()
        .to_bytes();
    let mut n = signed_note::Note::new(&text, &[]).unwrap();
    n.add_sigs(&[signer]).unwrap();
    String::from_utf8(n.to_bytes()).unwrap() + extra
}

#[test]
fn the_last_checkpoint_comes_again_only_as_itself_with_its_cosignatures() {
    let mut w = World::new();
    let mut records = w.device(RECORDS_USER, "records");
    let (skey, vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, "keepwire.archive/test");
    let signer = signed_note::StandardSigner::new(&skey).unwrap();
    let (a, b) = (record_hash(b"a"), record_hash(b"b"));
    let publish = |w: &mut World, records: &mut Dev, note: String, link: CheckpointProof| {
        w.call(
            records,
            Request::PublishCheckpoint {
                checkpoint: note,
                verifier_key: vkey.clone(),
                link,
            },
        )
    };
    publish(
        &mut w,
        &mut records,
        note(&signer, 1, a, ""),
        CheckpointProof::default(),
    )
    .unwrap();
    let link = CheckpointProof {
        from_size: Some(1),
        consistency_path: vec![b.0.to_vec()],
    };
    let two = note(&signer, 2, node_hash(a, b), "");
    publish(&mut w, &mut records, two.clone(), link.clone()).unwrap();

    // Again, with a witness's cosignature and no link: kept, with the
    // link it had.
    let cosigned = format!("{two}\u{2014} witness.example/1 AAAAAAAAAAAAAAAA\n");
    publish(
        &mut w,
        &mut records,
        cosigned.clone(),
        CheckpointProof::default(),
    )
    .unwrap();
    let ServerBody::Checkpoints { chain, .. } = w
        .call(&mut records, Request::Checkpoints { since_size: 1 })
        .unwrap()
    else {
        panic!("no chain")
    };
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].checkpoint, cosigned);
    assert_eq!(chain[0].link, link);
    assert_eq!(w.core.stats().checkpoint_cosignatures, 1);

    // The same size with another root is a fork: refused, nothing kept.
    let forked = note(&signer, 2, node_hash(a, record_hash(b"B")), "");
    refused(
        publish(&mut w, &mut records, forked, CheckpointProof::default()),
        ErrorCode::BadFrame,
        "a fork of the last checkpoint",
    );
    assert_eq!(w.core.checkpoint(), Some(cosigned));
}
