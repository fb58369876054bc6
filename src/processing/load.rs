//! Image loading with decode limits and one-sentence errors.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageError, ImageReader, Limits};

use super::error::ProcessingError;

/// Largest accepted image side in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Largest accepted decoder allocation in bytes (1 GiB).
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

fn too_large(what: &str, reason: impl std::fmt::Display) -> ProcessingError {
    ProcessingError::ImageTooLarge {
        what: what.to_string(),
        max_side: MAX_IMAGE_SIDE,
        max_mib: MAX_DECODE_BYTES >> 20,
        reason: reason.to_string(),
    }
}

/// Loads an image file; the format is recognised from the content, whatever the extension.
///
/// Errors: the file cannot be read, is not a decodable image, has no pixels, or is larger than
/// [`MAX_IMAGE_SIDE`] on a side or [`MAX_DECODE_BYTES`] decoded.
pub fn load_image(path: &Path) -> Result<DynamicImage, ProcessingError> {
    let unreadable = |source| ProcessingError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.len() > MAX_DECODE_BYTES {
        return Err(too_large(
            &path.display().to_string(),
            format!("the file is {} MiB", meta.len() >> 20),
        ));
    }
    let bytes = std::fs::read(path).map_err(unreadable)?;
    decode(&bytes, &path.display().to_string())
}

/// Decodes an image held in memory (e.g. an embedded demo image), with the same checks as
/// [`load_image`].
pub fn load_image_bytes(bytes: &[u8]) -> Result<DynamicImage, ProcessingError> {
    decode(bytes, "the image data")
}

fn open_reader(bytes: &[u8]) -> Option<ImageReader<Cursor<&[u8]>>> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    reader.format().is_some().then_some(reader)
}

fn decode(bytes: &[u8], what: &str) -> Result<DynamicImage, ProcessingError> {
    let not_an_image = |reason: String| ProcessingError::NotAnImage {
        what: what.to_string(),
        reason,
    };
    if bytes.is_empty() {
        return Err(not_an_image("the data is empty".into()));
    }
    let Some(mut reader) = open_reader(bytes) else {
        return Err(not_an_image(
            "the data is not in a known image format".into(),
        ));
    };
    reader.limits(limits());
    let result = reader.decode();
    let empty = |width, height| ProcessingError::EmptyImage {
        what: what.to_string(),
        width,
        height,
    };
    match result {
        Ok(img) if img.width() == 0 || img.height() == 0 => Err(empty(img.width(), img.height())),
        Ok(img) => Ok(img),
        Err(ImageError::Limits(e)) => Err(too_large(what, e)),
        Err(e) => {
            // A decoder may refuse a 0-pixel or huge image outright; say so when the header tells.
            let dims = open_reader(bytes)
                .and_then(|r| r.into_dimensions().ok())
                .or_else(|| header_dimensions(bytes));
            if let Some((w, h)) = dims {
                if w == 0 || h == 0 {
                    return Err(empty(w, h));
                }
                if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
                    return Err(too_large(what, format!("the image is {w}x{h} pixels")));
                }
            }
            Err(not_an_image(e.to_string()))
        }
    }
}

/// Width and height from a PNG, BMP or GIF header, for decoders that refuse to report them.
fn header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let le = |at: usize| Some(i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let le16 = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.get(12..16) == Some(b"IHDR") {
        return Some((be(16)?, be(20)?));
    }
    if bytes.starts_with(b"BM") {
        return Some((le(18)?.unsigned_abs(), le(22)?.unsigned_abs()));
    }
    if bytes.starts_with(b"GIF8") {
        return Some((u32::from(le16(6)?), u32::from(le16(8)?)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_an_image() {
        let err = load_image_bytes(b"hello, this is text").unwrap_err();
        assert!(matches!(err, ProcessingError::NotAnImage { .. }), "{err}");
        let err = load_image_bytes(&[]).unwrap_err();
        assert!(matches!(err, ProcessingError::NotAnImage { .. }), "{err}");
    }

    #[test]
    fn png_round_trip() {
        let img = image::RgbImage::from_pixel(5, 3, image::Rgb([1, 2, 3]));
        let mut buf = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        let back = load_image_bytes(&buf).unwrap();
        assert_eq!((back.width(), back.height()), (5, 3));
    }
}
