//! Thumbnails: which of the spec's sizes answers a request, and rendering one from an image's
//! bytes. Only the sizes the spec recommends are ever generated (32x32 and 96x96 cropped,
//! 320x240, 640x480 and 800x600 scaled), so what a client can make the server store per media
//! is bounded; a request larger than them all is answered with the original, which the spec
//! allows (never smaller than asked). Images are never upscaled: when the original is no
//! larger than the chosen size, the original is the answer. Decoding is bounded in dimensions
//! and memory, so a decompression bomb fails instead of exhausting the server.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

/// How a thumbnail fits its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The exact size, the image's middle cut to its aspect ratio.
    Crop,
    /// Within the size, the image's aspect ratio kept.
    Scale,
}

impl Method {
    /// The query parameter's value (`scale` when absent, as Synapse does).
    pub fn parse(value: Option<&str>) -> Option<Method> {
        match value {
            None | Some("scale") => Some(Method::Scale),
            Some("crop") => Some(Method::Crop),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// One of the sizes thumbnails are generated at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
    pub method: Method,
}

/// The spec's recommended sizes, smallest first within each method.
const SIZES: [Size; 5] = [
    Size { width: 32, height: 32, method: Method::Crop },
    Size { width: 96, height: 96, method: Method::Crop },
    Size { width: 320, height: 240, method: Method::Scale },
    Size { width: 640, height: 480, method: Method::Scale },
    Size { width: 800, height: 600, method: Method::Scale },
];

/// The smallest generated size at least as large as asked: of the asked method first, then (for
/// a crop larger than the crop sizes) a scaled one. `None`: the original answers.
pub fn choose(width: u32, height: u32, method: Method) -> Option<Size> {
    let fits = |s: &&Size| s.width >= width && s.height >= height;
    SIZES
        .iter()
        .filter(|s| s.method == method)
        .find(fits)
        .or_else(|| SIZES.iter().filter(|s| s.method == Method::Scale).find(fits))
        .copied()
}

/// Image types thumbnails are made of, by their declared content type.
pub fn format_of(content_type: &str) -> Option<ImageFormat> {
    match content_type {
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Whether an image is animated (an animated thumbnail request is answered with the original
/// of these): an animated PNG or WebP by its header; any GIF (a still GIF is rare, and telling
/// would mean decoding its frames).
pub fn is_animated(bytes: &[u8], format: ImageFormat) -> bool {
    match format {
        ImageFormat::Gif => true,
        ImageFormat::Png => {
            image::codecs::png::PngDecoder::new(Cursor::new(bytes)).and_then(|d| d.is_apng()).unwrap_or(false)
        }
        ImageFormat::WebP => {
            image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).is_ok_and(|d| d.has_animation())
        }
        _ => false,
    }
}

/// Largest width or height decoded.
const MAX_DIMENSION: u32 = 12_000;
/// Most pixels decoded (a 48-megapixel photo fits).
const MAX_PIXELS: u64 = 50_000_000;
/// Most memory one decode may allocate.
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// Why no thumbnail could be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the image could not be decoded: {0}")]
    Decode(String),
    #[error("the image has too many pixels to thumbnail")]
    TooLarge,
    #[error("the thumbnail could not be encoded: {0}")]
    Encode(String),
}

/// A rendered thumbnail.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Renders `bytes` (of `format`) at `size`; `None` when the image is no larger than that (the
/// original answers: never upscaled). JPEG stays JPEG; everything else becomes PNG, which keeps
/// transparency. CPU-bound: run it off the async threads.
pub fn render(bytes: &[u8], format: ImageFormat, size: Size) -> Result<Option<Rendered>, RenderError> {
    // Its size from its header first: a small file can claim a huge image.
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| RenderError::Decode(e.to_string()))?;
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(RenderError::TooLarge);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| RenderError::Decode(e.to_string()))?;
    let Some(thumbnail) = resize(&image, size) else { return Ok(None) };
    let (width, height) = (thumbnail.width(), thumbnail.height());
    let mut out = Cursor::new(Vec::new());
    let content_type = match format {
        ImageFormat::Jpeg => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
            thumbnail
                .to_rgb8()
                .write_with_encoder(encoder)
                .map_err(|e| RenderError::Encode(e.to_string()))?;
            "image/jpeg"
        }
        _ => {
            thumbnail.write_to(&mut out, ImageFormat::Png).map_err(|e| RenderError::Encode(e.to_string()))?;
            "image/png"
        }
    };
    Ok(Some(Rendered { bytes: out.into_inner(), content_type, width, height }))
}

/// `image` at `size`, or `None` if that would not make it smaller.
fn resize(image: &DynamicImage, size: Size) -> Option<DynamicImage> {
    let (w, h) = (image.width().max(1) as f64, image.height().max(1) as f64);
    let (tw, th) = (size.width as f64, size.height as f64);
    match size.method {
        Method::Scale => {
            let factor = (tw / w).min(th / h);
            if factor >= 1.0 {
                return None;
            }
            let width = ((w * factor).round() as u32).max(1);
            let height = ((h * factor).round() as u32).max(1);
            Some(image.resize_exact(width, height, FilterType::Triangle))
        }
        Method::Crop => {
            // Scaled to cover the size, then its middle cut out: upscaling is never needed
            // unless the image is smaller than the size in some direction.
            let factor = (tw / w).max(th / h);
            if factor >= 1.0 {
                return None;
            }
            Some(image.resize_to_fill(size.width, size.height, FilterType::Triangle))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([x as u8, y as u8, 90, 255]));
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn requests_map_to_the_smallest_size_at_least_as_large() {
        let size = |w, h, m| choose(w, h, m).map(|s| (s.width, s.height, s.method));
        assert_eq!(size(10, 10, Method::Crop), Some((32, 32, Method::Crop)));
        assert_eq!(size(33, 20, Method::Crop), Some((96, 96, Method::Crop)));
        assert_eq!(size(200, 200, Method::Crop), Some((320, 240, Method::Scale)));
        assert_eq!(size(96, 96, Method::Scale), Some((320, 240, Method::Scale)));
        assert_eq!(size(641, 100, Method::Scale), Some((800, 600, Method::Scale)));
        assert_eq!(size(801, 10, Method::Scale), None, "larger than all: the original");
        assert_eq!(Method::parse(Some("zoom")), None);
    }

    #[test]
    fn images_are_scaled_and_cropped_but_never_upscaled() {
        let original = png(1000, 500);
        let scaled =
            render(&original, ImageFormat::Png, choose(320, 240, Method::Scale).unwrap()).unwrap().unwrap();
        assert_eq!((scaled.width, scaled.height), (320, 160));
        let decoded = image::load_from_memory(&scaled.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 160));
        let cropped =
            render(&original, ImageFormat::Png, choose(96, 96, Method::Crop).unwrap()).unwrap().unwrap();
        assert_eq!((cropped.width, cropped.height), (96, 96));
        let small = png(100, 50);
        assert!(
            render(&small, ImageFormat::Png, choose(640, 480, Method::Scale).unwrap()).unwrap().is_none()
        );
        assert!(matches!(
            render(b"not an image", ImageFormat::Png, choose(32, 32, Method::Crop).unwrap()),
            Err(RenderError::Decode(_))
        ));
    }

    /// CRC-32 (IEEE) as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// A tiny PNG whose (valid, checksummed) header claims `width`x`height` pixels.
    fn claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&width.to_be_bytes());
        bomb[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        bomb
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let size = choose(32, 32, Method::Crop).unwrap();
        // Within the pixel cap but wider than any side allowed: the decoder's limits refuse it.
        assert!(
            matches!(render(&claiming(20_000, 10), ImageFormat::Png, size), Err(RenderError::Decode(e)) if e.contains("limit"))
        );
        // Over the pixel cap: refused from the header alone.
        assert!(matches!(
            render(&claiming(10_000, 10_000), ImageFormat::Png, size),
            Err(RenderError::TooLarge)
        ));
    }

    #[test]
    fn only_animated_images_count_as_animated() {
        assert!(!is_animated(&png(4, 4), ImageFormat::Png));
        assert!(is_animated(b"GIF89a", ImageFormat::Gif));
        assert!(!is_animated(b"junk", ImageFormat::WebP));
    }
}
