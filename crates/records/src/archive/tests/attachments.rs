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
    let files = [dir.path().join("0"), dir.path().join("1")];
    std::fs::write(&files[0], &big).unwrap();
    std::fs::write(&files[1], b"").unwrap();
    let mut m = meta("c", 1, RecordKind::Application);
    m.attachments = [&big[..], b""]
        .iter()
        .map(|b| AttachmentMeta {
            size: b.len() as u64,
            sha256: "a".repeat(64),
            cipher_size: b.len() as u64,
            cipher_sha256: "b".repeat(64),
            scan: Some("clean".into()),
        })
        .collect();
    let r = receipt("c", 1, &key);
    let mut record = sealed(&m, &r, true);
    record.files = &files;
    assert_eq!(store.insert_records(&[record]).unwrap(), 1);
    // Again (redelivered after a crash): nothing stored twice.
    let mut again = sealed(&m, &r, true);
    again.files = &files;
    assert_eq!(store.insert_records(&[again]).unwrap(), 0);

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
    let row = store.records(Which::One(row.id), false).unwrap().remove(0);
    assert_eq!(
        parse_attachments(row.attachments.as_deref()).unwrap(),
        m.attachments
    );
}
