//! A record's files in the store, on both backends: stored with the
//! record in its one transaction, read back a chunk at a time, described
//! in the record's row and leaf, and gone with the record's content.

use super::*;
use crate::AttachmentMeta;

contract!(a_record_keeps_its_files_until_its_content_is_destroyed);

fn a_record_keeps_its_files_until_its_content_is_destroyed(store: &mut Store) {
    let key = SigningKey::from_bytes(&[5; 32]);
    let dir = tempfile::tempdir().unwrap();
    // Two files: one of two and a half chunks, one empty.
    let big: Vec<u8> = (0..ATTACHMENT_CHUNK * 5 / 2)
        .map(|i| (i % 199) as u8)
        .collect();
    let hashes = ["b".repeat(64), "c".repeat(64)];
    let mut m = meta("c", 1, RecordKind::Application);
    m.attachments = [&big[..], b""]
        .iter()
        .zip(&hashes)
        .map(|(b, h)| AttachmentMeta {
            size: b.len() as u64,
            sha256: "a".repeat(64),
            cipher_size: b.len() as u64,
            cipher_sha256: h.clone(),
            scan: Some("clean".into()),
        })
        .collect();
    let r = receipt("c", 1, &key);
    // Never a record without its files.
    let refused = store.insert_records(&[sealed(&m, &r, true)]).unwrap_err();
    assert!(refused.to_string().contains("is not stored"), "{refused}");
    assert_eq!(store.log_size().unwrap(), 0, "nothing of it was kept");
    // Stored first (the spooled copy is consumed), then the record links
    // them; storing them again changes nothing.
    for (bytes, h) in [&big[..], b""].iter().zip(&hashes) {
        for _ in 0..2 {
            let spooled = dir.path().join("spooled");
            std::fs::write(&spooled, bytes).unwrap();
            store.put_file(h, &spooled, 7).unwrap();
            assert!(!spooled.exists(), "the spooled copy is the store's now");
        }
    }
    let lying = dir.path().join("lying");
    std::fs::write(&lying, b"x").unwrap();
    assert!(
        store.put_file("../../etc/passwd", &lying, 7).is_err(),
        "a file is named by its hash only"
    );
    assert_eq!(store.insert_records(&[sealed(&m, &r, true)]).unwrap(), 1);
    // Again (redelivered after a crash): nothing stored twice.
    assert_eq!(store.insert_records(&[sealed(&m, &r, true)]).unwrap(), 0);

    let row = store.records(Which::All, false).unwrap().remove(0);
    assert_eq!(
        parse_attachments(row.attachments.as_deref()).unwrap(),
        m.attachments,
        "the row says what the leaf says"
    );
    let leaf = store.leaf(row.leaf.unwrap()).unwrap().unwrap().2;
    assert!(
        String::from_utf8(leaf).unwrap().contains(&"b".repeat(64)),
        "the leaf commits to each file's hash"
    );
    let mut read = Vec::new();
    while read.len() < big.len() {
        let part = store
            .attachment_read(row.id, 0, read.len() as u64, ATTACHMENT_CHUNK)
            .unwrap();
        assert!(!part.is_empty() && part.len() <= ATTACHMENT_CHUNK);
        read.extend_from_slice(&part);
    }
    assert!(read == big, "the file reads back as stored");
    assert_eq!(
        store
            .attachment_read(row.id, 0, ATTACHMENT_CHUNK as u64 - 2, 5)
            .unwrap(),
        big[ATTACHMENT_CHUNK - 2..ATTACHMENT_CHUNK + 3],
        "across a chunk's end"
    );
    assert!(store.attachment_read(row.id, 1, 0, 10).unwrap().is_empty());
    assert!(store.attachment_read(row.id, 2, 0, 10).unwrap().is_empty());

    // A record without files keeps none, and says none.
    let plain = meta("c", 2, RecordKind::Application);
    let r2 = receipt("c", 2, &key);
    store.insert_records(&[sealed(&plain, &r2, true)]).unwrap();
    let rows = store.records(Which::All, false).unwrap();
    assert_eq!(rows[1].attachments, None);

    // Destroyed: the bytes go with the content; the leaf keeps the hashes.
    store
        .destroy(row.id, &|conv, seq, leaf| Leaf::Tombstone {
            conv: conv.into(),
            seq,
            record_leaf: leaf,
            authority: "GRS 5.2 item 020".into(),
            by: "officer".into(),
            at_ms: 9,
        })
        .unwrap();
    assert!(store.attachment_read(row.id, 0, 0, 10).unwrap().is_empty());
    // The bytes are gone from the store too: a record naming them again
    // is refused.
    let r3 = receipt("c", 3, &key);
    let mut again = m.clone();
    again.seq = 3;
    assert!(store.insert_records(&[sealed(&again, &r3, true)]).is_err());
    let row = store.records(Which::One(row.id), false).unwrap().remove(0);
    assert_eq!(
        parse_attachments(row.attachments.as_deref()).unwrap(),
        m.attachments
    );
}
