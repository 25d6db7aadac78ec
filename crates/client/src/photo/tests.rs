use super::*;

/// A JPEG photo of `w`×`h` taken "on its side" (EXIF orientation 6: turn
/// 90° clockwise to view) with a GPS latitude in its EXIF, as a phone
/// makes one.
pub(crate) fn photo_with_gps(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut jpeg = Vec::new();
    DynamicImage::ImageRgb8(img)
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut jpeg, 90,
        ))
        .unwrap();
    // A little-endian TIFF: IFD0 (orientation, the GPS IFD's offset),
    // then the GPS IFD (latitude reference and latitude).
    let mut tiff: Vec<u8> = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
    let entry = |t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: [u8; 4]| {
        t.extend(tag.to_le_bytes());
        t.extend(kind.to_le_bytes());
        t.extend(count.to_le_bytes());
        t.extend(value);
    };
    tiff.extend(2u16.to_le_bytes());
    entry(&mut tiff, 0x0112, 3, 1, [6, 0, 0, 0]);
    entry(&mut tiff, 0x8825, 4, 1, 38u32.to_le_bytes());
    tiff.extend(0u32.to_le_bytes());
    assert_eq!(tiff.len(), 38);
    tiff.extend(2u16.to_le_bytes());
    entry(&mut tiff, 0x0001, 2, 2, *b"N\0\0\0");
    entry(&mut tiff, 0x0002, 5, 3, 68u32.to_le_bytes());
    tiff.extend(0u32.to_le_bytes());
    assert_eq!(tiff.len(), 68);
    for (n, d) in [(38u32, 1u32), (53, 1), (2300, 100)] {
        tiff.extend(n.to_le_bytes());
        tiff.extend(d.to_le_bytes());
    }
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xff, 0xe1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(&app1);
    out.extend(&jpeg[2..]);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The latitude 38°53'23" as it sits in the EXIF above.
const LATITUDE: [u8; 8] = [38, 0, 0, 0, 1, 0, 0, 0];

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).unwrap();
    (img.width(), img.height())
}

#[test]
fn a_photo_goes_as_its_pixels_only_upright_with_a_thumbnail() {
    let photo = photo_with_gps(640, 480);
    assert!(contains(&photo, b"Exif") && contains(&photo, &LATITUDE));
    let p = prepare(&photo, "image/jpeg", false).unwrap();
    let cleaned = p.cleaned.expect("a cleaned photo");
    assert!(!contains(&cleaned, b"Exif"), "no EXIF block is left");
    assert!(!contains(&cleaned, &LATITUDE), "the location is gone");
    assert_eq!(
        dimensions(&cleaned),
        (480, 640),
        "turned upright, as its orientation said (the EXIF that said so is gone)"
    );
    let thumb = p.thumbnail.expect("a thumbnail");
    assert!(!contains(&thumb, &LATITUDE));
    assert_eq!(
        dimensions(&thumb),
        (240, 320),
        "upright, its longest side 320"
    );
}

#[test]
fn an_agency_that_keeps_location_sends_the_photo_as_taken() {
    let photo = photo_with_gps(640, 480);
    let p = prepare(&photo, "image/jpeg", true).unwrap();
    assert!(
        p.cleaned.is_none(),
        "the file goes as it is, location included"
    );
    assert_eq!(dimensions(&p.thumbnail.unwrap()), (240, 320));
}

#[test]
fn png_and_webp_photos_are_cleaned_in_their_own_format() {
    let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        50,
        20,
        image::Rgba([1, 2, 3, 200]),
    ));
    for (format, media_type) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
        let p = prepare(&bytes, media_type, false).unwrap();
        let cleaned = p.cleaned.unwrap();
        assert_eq!(image::guess_format(&cleaned).unwrap(), format);
        let back = image::load_from_memory(&cleaned).unwrap().to_rgba8();
        assert_eq!(
            back.get_pixel(7, 7).0,
            [1, 2, 3, 200],
            "lossless: the same pixels"
        );
        assert_eq!(
            dimensions(&p.thumbnail.unwrap()),
            (50, 20),
            "never enlarged"
        );
    }
}

#[test]
fn what_cannot_be_cleaned_is_refused_unless_the_policy_keeps_metadata() {
    let heic = b"\0\0\0\x18ftypheic\0\0\0\0";
    assert!(matches!(
        prepare(heic, "image/heic", false),
        Err(PhotoError::Unsupported("HEIC"))
    ));
    let kept = prepare(heic, "image/heic", true).unwrap();
    assert!(kept.cleaned.is_none() && kept.thumbnail.is_none());

    // JPEG's first bytes, then no photo at all.
    let mut damaged = b"\xff\xd8\xff\xe0 not a photograph".to_vec();
    damaged.extend([0x5a; 4096]);
    let refused = prepare(&damaged, "image/jpeg", false).unwrap_err();
    assert!(
        refused.to_string().contains("cannot be removed"),
        "{refused}"
    );
    assert!(prepare(&damaged, "image/jpeg", true)
        .unwrap()
        .cleaned
        .is_none());

    let huge = vec![0u8; (MAX_PHOTO_BYTES + 1) as usize];
    assert!(matches!(
        prepare(&huge, "image/jpeg", false),
        Err(PhotoError::TooLarge(_))
    ));
}

#[test]
fn other_files_are_not_photos() {
    assert!(!is_photo("application/pdf") && !is_photo("image/gif"));
    let p = prepare(b"%PDF-1.7", "application/pdf", false).unwrap();
    assert!(p.cleaned.is_none() && p.thumbnail.is_none());
}
