//! The blob store's contract ([`BlobStore`]), on both backends.

use std::collections::VecDeque;

use keepwire_protocol::attachment::BlobId;
use sha2::{Digest, Sha256};

use super::{entry, plain, postgres, seqs, sqlite};
use crate::store::blobs::{BlobRow, CHUNK_BYTES};
use crate::store::*;

contract!(
    an_upload_is_appended_in_order_resumed_and_completed_only_when_it_hashes_right,
    a_blob_lives_as_long_as_the_entry_that_carries_it,
);

fn id(n: u8) -> BlobId {
    BlobId::from_bytes([n; 16])
}

fn row(n: u8, conv: &str, data: &[u8]) -> BlobRow {
    BlobRow {
        id: id(n),
        user: "alice".into(),
        device: "d1".into(),
        conv: conv.into(),
        size: data.len() as u64,
        cipher_sha256: hex::encode(Sha256::digest(data)),
        received: 0,
        complete: false,
        created_ms: 1_000,
        seq: None,
    }
}

/// Upload `data` whole, in chunks, and complete it.
fn upload(store: &dyn ServerStore, n: u8, conv: &str, data: &[u8]) {
    store.blob_create(&row(n, conv, data)).unwrap();
    let mut at = 0;
    for chunk in data.chunks(CHUNK_BYTES) {
        at = store.blob_append(&id(n), at, chunk).unwrap();
    }
    store.blob_finish(&id(n)).unwrap();
}

fn an_upload_is_appended_in_order_resumed_and_completed_only_when_it_hashes_right(
    store: &mut dyn ServerStore,
) {
    // Two and a half chunks, so that reads cross chunk boundaries.
    let data: Vec<u8> = (0..CHUNK_BYTES * 5 / 2).map(|i| (i % 253) as u8).collect();
    let b = id(1);
    store.blob_create(&row(1, "c", &data)).unwrap();
    assert!(
        store.blob_create(&row(1, "c", &data)).is_err(),
        "an id is taken once"
    );
    let first = &data[..CHUNK_BYTES];
    assert_eq!(store.blob_append(&b, 0, first).unwrap(), CHUNK_BYTES as u64);
    // A frame sent again, one that skips ahead, or one too large: refused,
    // nothing written twice.
    assert!(store.blob_append(&b, 0, first).is_err());
    assert!(store.blob_append(&b, CHUNK_BYTES as u64 + 1, b"x").is_err());
    assert!(store
        .blob_append(&b, CHUNK_BYTES as u64, &vec![0; CHUNK_BYTES + 1])
        .is_err());
    // An upload that broke off resumes from what was received.
    let row_now = store.blob(&b).unwrap().unwrap();
    assert_eq!(
        (row_now.received, row_now.complete),
        (CHUNK_BYTES as u64, false)
    );
    assert!(store.blob_finish(&b).is_err(), "not all there yet");
    let mut at = row_now.received;
    for chunk in data[at as usize..].chunks(CHUNK_BYTES / 2) {
        at = store.blob_append(&b, at, chunk).unwrap();
    }
    assert!(
        store.blob_append(&b, at, b"x").is_err(),
        "never past its size"
    );
    // Reads give exactly the bytes asked for, across chunks.
    for (from, len) in [
        (0, 10),
        (CHUNK_BYTES - 3, 7),
        (CHUNK_BYTES * 2 + 1, CHUNK_BYTES),
    ] {
        let end = (from + len).min(data.len());
        assert_eq!(
            store.blob_read(&b, from as u64, len).unwrap(),
            &data[from..end],
            "{from}+{len}"
        );
    }
    assert!(store
        .blob_read(&b, data.len() as u64, 10)
        .unwrap()
        .is_empty());
    let done = store.blob_finish(&b).unwrap();
    assert!(done.complete && done.received == data.len() as u64);
    assert!(store.blob(&b).unwrap().unwrap().complete);
    assert!(
        store.blob_append(&b, 0, b"x").is_err(),
        "a complete blob is closed"
    );
    assert_eq!(store.blob_usage("alice").unwrap(), data.len() as u64);

    // Bytes that do not hash to what was declared: discarded, named.
    let mut lying = row(2, "c", b"what was declared");
    lying.size = 5;
    store.blob_create(&lying).unwrap();
    store.blob_append(&id(2), 0, b"other").unwrap();
    let e = store.blob_finish(&id(2)).unwrap_err().to_string();
    assert!(e.contains("does not hash"), "{e}");
    assert_eq!(store.blob(&id(2)).unwrap(), None);
    assert!(store.blob_read(&id(2), 0, 5).unwrap().is_empty());

    store.blob_delete(&b).unwrap();
    store.blob_delete(&b).unwrap();
    assert_eq!(store.blob(&b).unwrap(), None);
    assert!(store.blob_read(&b, 0, 10).unwrap().is_empty());
    assert_eq!(store.blob_usage("alice").unwrap(), 0);
}

fn a_blob_lives_as_long_as_the_entry_that_carries_it(store: &mut dyn ServerStore) {
    let (e1, e2) = (entry("c", 1), entry("c", 2));
    store.append_batch(&[plain(&e1, true)]).unwrap();
    upload(store, 1, "c", b"the photo");
    upload(store, 2, "other", b"another conversation's");
    store.blob_create(&row(3, "c", b"never finished")).unwrap();

    // A message may carry only complete, unbound blobs of its own
    // conversation; otherwise its whole group commit fails.
    for bad in [id(2), id(3), id(9)] {
        let carried = [bad.clone()];
        let append = Append {
            blobs: &carried,
            ..plain(&e2, false)
        };
        assert!(store.append_batch(&[append]).is_err(), "{bad}");
        assert_eq!(seqs(store, "c"), [1], "nothing of it landed");
    }
    let carried = [id(1)];
    store
        .append_batch(&[Append {
            blobs: &carried,
            ..plain(&e2, false)
        }])
        .unwrap();
    assert_eq!(store.blob(&id(1)).unwrap().unwrap().seq, Some(2));
    let e3 = entry("c", 3);
    assert!(
        store
            .append_batch(&[Append {
                blobs: &carried,
                ..plain(&e3, false)
            }])
            .is_err(),
        "a blob is carried by one message"
    );

    // Unbound blobs go after the agency's time; a bound one stays while
    // its entry is in the relay.
    let mut to_collect = store.blobs_to_collect(1_001, 10).unwrap();
    to_collect.sort();
    assert_eq!(to_collect, [id(2), id(3)]);
    assert!(
        store.blobs_to_collect(1_000, 10).unwrap().is_empty(),
        "not yet"
    );
    assert_eq!(
        store.blobs_to_collect(1_001, 1).unwrap().len(),
        1,
        "bounded"
    );

    // The entry leaves the relay: its blob may go.
    let mut garbage: VecDeque<Collectable> = [Collectable {
        conv: "c".into(),
        delivered_upto: 2,
        records_acked: 2,
        expired_before_ms: 0,
    }]
    .into();
    store.append_collecting(&[], &mut garbage, 100).unwrap();
    assert!(seqs(store, "c").is_empty());
    assert!(store.blobs_to_collect(0, 10).unwrap().contains(&id(1)));
}
