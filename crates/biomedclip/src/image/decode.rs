//! Image bytes -> pixels in the layout Pillow would hold them in.
//!
//! Pillow keeps each file in a "mode" that decides how it is resized: `L` and `RGB` directly,
//! `LA`/`RGBA` with premultiplied alpha, `P` (palette) and `1` (bilevel) with NEAREST, and
//! 16-bit grayscale as `I;16`. PNG is decoded with the `png` crate so that the palette, bit
//! depth and transparency chunk are seen as Pillow sees them (`PngImagePlugin._MODES`: a
//! `tRNS` chunk never changes the mode). JPEG is decoded by libjpeg-turbo (`jpeg.rs`).
//! Other formats go through the `image` crate. Every decoder reads the image's size from its
//! header first and refuses it if it exceeds the [`Limits`].

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat};

#[cfg(feature = "dicom")]
use super::dicom::decode_dicom;
use super::jpeg::decode_jpeg;
use super::limits::Limits;
use super::palette;
pub use super::pixels::{Decoded, Pixels};
use super::render::Window;
use crate::error::{Error, Result};

/// Offset of the `DICM` magic after the 128-byte preamble of a DICOM Part 10 file.
pub(crate) const DICOM_MAGIC_AT: usize = 128;

/// Whether `bytes` start like a DICOM Part 10 file (preamble then `DICM`).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(DICOM_MAGIC_AT..DICOM_MAGIC_AT + 4) == Some(b"DICM")
}

/// Decodes an image file's bytes within the default [`Limits`]; `path` is used for messages
/// only.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Decoded> {
    decode_frame(bytes, path, None, None, &Limits::default())
}

/// Decodes an image file's bytes, taking `frame` (default: the middle one) of a DICOM file
/// and rendering DICOM grayscale through `window` (default: the file's own). Images with
/// more pixels than `limits` allow are refused from their header, before decoding.
pub fn decode_frame(
    bytes: &[u8],
    path: &Path,
    frame: Option<u32>,
    window: Option<Window>,
    limits: &Limits,
) -> Result<Decoded> {
    let fail = |reason: String| Error::Image {
        path: path.into(),
        reason,
    };
    if is_dicom(bytes) {
        #[cfg(feature = "dicom")]
        return decode_dicom(bytes, path, frame, window, limits);
        #[cfg(not(feature = "dicom"))]
        return Err(fail(format!(
            "DICOM files need the library's `dicom` feature, which this build lacks \
             (window {window:?} and limits {limits:?} not applied)"
        )));
    }
    if let Some(n) = frame {
        return Err(fail(format!(
            "#frame={n} was asked for, but frames can only be chosen in DICOM files"
        )));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        fail("unrecognised image format (supported: DICOM, JPEG, PNG, GIF, BMP, TIFF, WebP)".into())
    })?;
    match format {
        ImageFormat::Png => decode_png(bytes, limits).map_err(fail),
        ImageFormat::Jpeg => decode_jpeg(bytes, limits).map_err(fail),
        ImageFormat::Tiff => match palette::decode_palette_tiff(bytes, limits) {
            Some(decoded) => decoded.map_err(fail),
            None => decode_other(bytes, format, limits).map_err(fail),
        },
        ImageFormat::Gif | ImageFormat::Bmp | ImageFormat::WebP => {
            decode_other(bytes, format, limits).map_err(fail)
        }
        other => Err(fail(format!(
            "{other:?} is not supported (supported: JPEG, PNG, GIF, BMP, TIFF, WebP)"
        ))),
    }
}

/// GIF, BMP, TIFF and WebP through the `image` crate.
fn decode_other(
    bytes: &[u8],
    format: ImageFormat,
    limits: &Limits,
) -> std::result::Result<Decoded, String> {
    let reader = || image::ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader().into_dimensions().map_err(|e| e.to_string())?;
    limits.check_pixels(width.into(), height.into())?;
    let img = reader().decode().map_err(|e| e.to_string())?;
    // GIF frames are palette images in Pillow, and so are most BMPs of 8 bits or fewer.
    let nearest = match format {
        ImageFormat::Gif => true,
        ImageFormat::Bmp => palette::bmp_is_nearest(bytes),
        _ => false,
    };
    Ok(from_dynamic(img, nearest))
}

fn from_dynamic(img: DynamicImage, palette: bool) -> Decoded {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let high_byte = |v: &[u16]| v.iter().map(|&s| (s >> 8) as u8).collect::<Vec<u8>>();
    let pixels = if palette {
        Pixels::Rgb(img.into_rgb8().into_raw())
    } else {
        match img {
            DynamicImage::ImageLuma8(b) => Pixels::Gray(b.into_raw()),
            DynamicImage::ImageLumaA8(b) => Pixels::GrayAlpha(b.into_raw()),
            DynamicImage::ImageRgb8(b) => Pixels::Rgb(b.into_raw()),
            DynamicImage::ImageRgba8(b) => Pixels::Rgba(b.into_raw()),
            DynamicImage::ImageLuma16(b) => Pixels::Gray16(b.into_raw()),
            DynamicImage::ImageLumaA16(b) => Pixels::GrayAlpha(high_byte(b.as_raw())),
            DynamicImage::ImageRgb16(b) => Pixels::Rgb(high_byte(b.as_raw())),
            DynamicImage::ImageRgba16(b) => Pixels::Rgba(high_byte(b.as_raw())),
            other if other.color().has_alpha() => Pixels::Rgba(other.into_rgba8().into_raw()),
            other => Pixels::Rgb(other.into_rgb8().into_raw()),
        }
    };
    Decoded {
        width,
        height,
        pixels,
        nearest: palette,
    }
}

fn decode_png(bytes: &[u8], limits: &Limits) -> std::result::Result<Decoded, String> {
    use png::{BitDepth, ColorType};
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (width, height) = reader.info().size();
    limits.check_pixels(width.into(), height.into())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let line = frame.line_size;
    let depth = frame.bit_depth as u8;
    let info = reader.info();

    // Samples of one row, unpacked from `depth` bits each (1, 2, 4 or 8).
    let unpack = |row: &[u8], count: usize| -> Vec<u8> {
        let per_byte = 8 / depth as usize;
        let mask = ((1u16 << depth) - 1) as u8;
        (0..count)
            .map(|i| {
                let byte = row[i / per_byte];
                let shift = 8 - depth as usize * (i % per_byte + 1);
                (byte >> shift) & mask
            })
            .collect()
    };
    let rows = || (0..height).map(|y| &buf[y * line..(y + 1) * line]);
    let be16 = |row: &[u8], count: usize| -> Vec<u16> {
        (0..count)
            .map(|i| u16::from_be_bytes([row[2 * i], row[2 * i + 1]]))
            .collect()
    };

    let (pixels, nearest) = match (frame.color_type, frame.bit_depth) {
        (ColorType::Indexed, _) => {
            let palette = info
                .palette
                .as_ref()
                .ok_or_else(|| "indexed PNG without a palette".to_string())?;
            let mut rgb = Vec::with_capacity(width * height * 3);
            for row in rows() {
                for idx in unpack(row, width) {
                    let i = idx as usize * 3;
                    // Pillow pads a short palette with black.
                    rgb.extend_from_slice(palette.get(i..i + 3).unwrap_or(&[0, 0, 0]));
                }
            }
            (Pixels::Rgb(rgb), true)
        }
        (ColorType::Grayscale, BitDepth::Sixteen) => {
            let mut v = Vec::with_capacity(width * height);
            for row in rows() {
                v.extend(be16(row, width));
            }
            (Pixels::Gray16(v), false)
        }
        (ColorType::Grayscale, _) => {
            // Pillow: mode `1` for 1-bit (resized with NEAREST), `L` for 2/4/8 bits scaled to 0..255.
            let scale = 255 / ((1u16 << depth) - 1) as u8;
            let mut v = Vec::with_capacity(width * height);
            for row in rows() {
                v.extend(unpack(row, width).into_iter().map(|s| s * scale));
            }
            (Pixels::Gray(v), depth == 1)
        }
        (ct, bd) => {
            let channels = match ct {
                ColorType::GrayscaleAlpha => 2,
                ColorType::Rgb => 3,
                ColorType::Rgba => 4,
                _ => return Err(format!("unsupported PNG colour type {ct:?}")),
            };
            let mut v = Vec::with_capacity(width * height * channels);
            for row in rows() {
                if bd == BitDepth::Sixteen {
                    // Pillow's `;16B` raw modes keep the high byte.
                    v.extend(
                        be16(row, width * channels)
                            .into_iter()
                            .map(|s| (s >> 8) as u8),
                    );
                } else {
                    v.extend_from_slice(&row[..width * channels]);
                }
            }
            let p = match channels {
                2 => Pixels::GrayAlpha(v),
                3 => Pixels::Rgb(v),
                _ => Pixels::Rgba(v),
            };
            (p, false)
        }
    };
    Ok(Decoded {
        width,
        height,
        pixels,
        nearest,
    })
}
