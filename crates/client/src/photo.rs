//! Photos before they leave the device.
//!
//! A phone's photo carries more than its picture: EXIF says where it was
//! taken (GPS), when, and with which device; XMP and IPTC blocks can say
//! it again. Sent to a conversation, that reaches every member and the
//! archive. So unless the agency's policy keeps it (evidence photos may
//! need where they were taken: [`keepwire_protocol::Policy`]'s
//! `keep_photo_metadata`), a photo is sent as its pixels only: decoded,
//! turned upright as its EXIF orientation said, and encoded again with
//! nothing else. Re-encoding rather than cutting known blocks out is the
//! choice that cannot miss one (a maker note, a second XMP packet, a
//! location in a PNG text chunk).
//!
//! Every photo also gets a thumbnail, made here and sent encrypted as a
//! second attachment pointing at the first (`thumbnail_of`): the server
//! holds ciphertext only and renders nothing.
//!
//! What cannot be decoded here (HEIC, which no pure-Rust decoder reads;
//! a damaged file that claims to be a photo) is refused rather than sent
//! with its location, unless the policy keeps metadata.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_EDGE: u32 = 320;

/// The largest photo file cleaned here: it is decoded whole, and no
/// camera makes larger ones.
pub const MAX_PHOTO_BYTES: u64 = 64 << 20;

/// The most memory decoding one photo may take (a 100-megapixel image in
/// RGBA is 400 MB): beyond it the photo is refused, not the device
/// brought down.
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// The JPEG quality a cleaned photo is encoded at: visually the same as
/// a phone camera's own output.
const PHOTO_QUALITY: u8 = 92;

const THUMBNAIL_QUALITY: u8 = 75;

#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error(
        "{0} photos cannot be cleaned of their location data on this device, and the agency's \
         policy does not keep it; send it as JPEG or PNG"
    )]
    Unsupported(&'static str),
    #[error(
        "the photo is {} MiB; photos of at most {} MiB are cleaned of their location data \
         before sending",
        .0 >> 20,
        MAX_PHOTO_BYTES >> 20
    )]
    TooLarge(u64),
    #[error("the photo could not be read ({0}), so its location data cannot be removed")]
    Unreadable(String),
}

/// A photo made ready to send.
#[derive(Debug)]
pub struct Prepared {
    /// The photo to send in place of the file: its pixels only. None when
    /// the file goes as it is (the policy keeps metadata).
    pub cleaned: Option<Vec<u8>>,
    /// A small JPEG of it, upright; None where it cannot be decoded here
    /// and goes as it is.
    pub thumbnail: Option<Vec<u8>>,
}

/// Whether files of `media_type` (as found in their first bytes) are
/// photos this module prepares.
pub fn is_photo(media_type: &str) -> bool {
    matches!(
        media_type,
        "image/jpeg" | "image/png" | "image/webp" | "image/heic"
    )
}

/// Make a photo of `media_type` ready to send: cleaned of its metadata
/// unless `keep_metadata`, with a thumbnail.
pub fn prepare(
    bytes: &[u8],
    media_type: &str,
    keep_metadata: bool,
) -> Result<Prepared, PhotoError> {
    let format = match media_type {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/webp" => ImageFormat::WebP,
        "image/heic" if keep_metadata => {
            return Ok(Prepared {
                cleaned: None,
                thumbnail: None,
            })
        }
        "image/heic" => return Err(PhotoError::Unsupported("HEIC")),
        _ => {
            return Ok(Prepared {
                cleaned: None,
                thumbnail: None,
            })
        }
    };
    if bytes.len() as u64 > MAX_PHOTO_BYTES && !keep_metadata {
        return Err(PhotoError::TooLarge(bytes.len() as u64));
    }
    let upright = match decode_upright(bytes, format) {
        Ok(img) => img,
        // Kept as it is, a photo that cannot be decoded still goes
        // (without a thumbnail): nothing is removed from it anyway.
        Err(_) if keep_metadata => {
            return Ok(Prepared {
                cleaned: None,
                thumbnail: None,
            })
        }
        Err(e) => return Err(e),
    };
    // `thumbnail` would enlarge a small picture to the edge.
    let small = if upright.width().max(upright.height()) > THUMBNAIL_EDGE {
        upright.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE)
    } else {
        upright.clone()
    };
    let thumbnail = encode_jpeg(&small, THUMBNAIL_QUALITY)?;
    let cleaned = if keep_metadata {
        None
    } else {
        Some(encode_as(&upright, format)?)
    };
    Ok(Prepared {
        cleaned,
        thumbnail: Some(thumbnail),
    })
}

fn unreadable(e: image::ImageError) -> PhotoError {
    PhotoError::Unreadable(e.to_string())
}

/// The photo's pixels, turned as its EXIF orientation says.
fn decode_upright(bytes: &[u8], format: ImageFormat) -> Result<DynamicImage, PhotoError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let orientation = decoder.orientation().map_err(unreadable)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn encode_jpeg(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, PhotoError> {
    let mut out = Vec::new();
    // JPEG has no alpha: what is transparent becomes what its colour is.
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    rgb.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut out, quality,
    ))
    .map_err(unreadable)?;
    Ok(out)
}

/// The pixels in the photo's own format, and nothing else.
fn encode_as(img: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, PhotoError> {
    match format {
        ImageFormat::Jpeg => encode_jpeg(img, PHOTO_QUALITY),
        ImageFormat::Png => {
            let mut out = Vec::new();
            img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
                .map_err(unreadable)?;
            Ok(out)
        }
        _ => {
            // WebP: the encoder here is lossless and takes 8-bit RGBA.
            let mut out = Vec::new();
            DynamicImage::ImageRgba8(img.to_rgba8())
                .write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
                .map_err(unreadable)?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests;
