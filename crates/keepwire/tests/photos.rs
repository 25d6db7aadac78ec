//! Photos through the real binary (issue 13): a phone's photo leaves the
//! device without its location and camera data, upright, with a
//! thumbnail made on the device and sent encrypted beside it — unless
//! the agency's policy keeps location (evidence photos). A photo that
//! cannot be cleaned is refused and nothing is sent.
//!
//! The fixture `photo-with-gps.jpg` is `photo_with_gps(480, 360)` of
//! `keepwire-client`'s photo tests: a 480×360 JPEG taken on its side
//! (EXIF orientation 6) with a GPS latitude of 38°53'23" in its EXIF.

mod common;

use common::Agency;

const PHOTO: &[u8] = include_bytes!("fixtures/photo-with-gps.jpg");

/// The latitude's first rational (38/1) as it sits in the fixture's EXIF.
const LATITUDE: [u8; 8] = [38, 0, 0, 0, 1, 0, 0, 0];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Width and height from a baseline JPEG's frame header.
fn jpeg_size(jpeg: &[u8]) -> (u16, u16) {
    let at = jpeg
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline JPEG frame");
    let h = u16::from_be_bytes([jpeg[at + 5], jpeg[at + 6]]);
    let w = u16::from_be_bytes([jpeg[at + 7], jpeg[at + 8]]);
    (w, h)
}

#[test]
fn photos_lose_their_location_unless_the_agency_keeps_it() {
    assert!(contains(PHOTO, b"Exif") && contains(PHOTO, &LATITUDE));
    let agency = Agency::start();
    let alice = agency.user("alice", "staff");
    let bob = agency.user("bob", "staff");
    alice.accept_notice();
    let conv = alice.create(&["bob"]);
    let dir = agency.tmp.path().join("photos");
    std::fs::create_dir_all(&dir).unwrap();
    let photo = dir.join("scene.jpg");
    std::fs::write(&photo, PHOTO).unwrap();

    // By default: the pixels only, upright, and a thumbnail.
    let sent = alice.json(&[
        "chat",
        "send",
        &conv,
        "the scene",
        "--file",
        photo.to_str().unwrap(),
        "--wait-captured",
        "60",
    ]);
    let seq_n = sent["seq"].as_u64().unwrap();
    let seq = seq_n.to_string();
    let m = bob.read(&conv).pop().unwrap();
    assert_eq!(m["files"][0]["name"], "scene.jpg", "{m}");
    assert_eq!(m["files"][1]["name"], "scene (thumbnail).jpg", "{m}");
    assert_eq!(m["files"][1]["thumbnail_of"], 0, "{m}");
    let saved = dir.join("saved.jpg");
    bob.ok(&[
        "chat",
        "save",
        &conv,
        &seq,
        "--out",
        saved.to_str().unwrap(),
    ]);
    let got = std::fs::read(&saved).unwrap();
    assert!(got.starts_with(b"\xff\xd8\xff"), "still a JPEG");
    assert!(!contains(&got, b"Exif"), "no EXIF reaches bob");
    assert!(!contains(&got, &LATITUDE), "nor the location");
    assert_eq!(jpeg_size(&got), (360, 480), "turned upright");
    let thumb = dir.join("thumb.jpg");
    bob.ok(&[
        "chat",
        "save",
        &conv,
        &seq,
        "--file",
        "1",
        "--out",
        thumb.to_str().unwrap(),
    ]);
    assert_eq!(
        jpeg_size(&std::fs::read(&thumb).unwrap()),
        (240, 320),
        "a thumbnail, upright, its longest side 320"
    );
    // The archive holds what the members got: both files, no location.
    let record = agency
        .records(false)
        .into_iter()
        .find(|r| r["seq"] == seq_n)
        .unwrap();
    assert_eq!(
        record["attachments"].as_array().unwrap().len(),
        2,
        "{record}"
    );

    // A photo that cannot be cleaned (HEIC: no decoder here) is refused,
    // and nothing is sent.
    let held = bob.read(&conv).len();
    let heic = dir.join("scene.heic");
    std::fs::write(&heic, b"\0\0\0\x18ftypheic\0\0\0\0 the rest of it").unwrap();
    let refused = alice.run(&["chat", "send", &conv, "--file", heic.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        common::stderr(&refused).contains("HEIC photos cannot be cleaned"),
        "{}",
        common::stderr(&refused)
    );
    assert_eq!(bob.read(&conv).len(), held, "nothing new reached bob");

    // An agency that keeps location: the photo goes as taken.
    agency.admin(&["policy", "--keep-photo-location", "true"]);
    let kept = alice.json(&[
        "chat",
        "send",
        &conv,
        "--file",
        photo.to_str().unwrap(),
        "--wait-captured",
        "60",
    ]);
    let kept_seq = kept["seq"].as_u64().unwrap().to_string();
    let m = bob.read(&conv).pop().unwrap();
    assert_eq!(m["files"][1]["thumbnail_of"], 0, "still a thumbnail: {m}");
    let original = dir.join("original.jpg");
    bob.ok(&[
        "chat",
        "save",
        &conv,
        &kept_seq,
        "--out",
        original.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&original).unwrap() == PHOTO,
        "byte for byte, location included"
    );
    let heic_kept = alice.json(&["chat", "send", &conv, "--file", heic.to_str().unwrap()]);
    assert!(heic_kept["seq"].is_u64(), "kept as it is: {heic_kept}");
}
