//! Decoded pixels, held as Pillow's image modes hold them: what the decoders (`decode`,
//! `dicom`) produce and the preprocessing consumes.

use super::resample::Image8;

/// Pixels as Pillow's mode would hold them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Pixels {
    /// 8-bit grayscale (`L`) or bilevel (`1`, as 0/255).
    Gray(Vec<u8>),
    /// 8-bit grayscale with alpha (`LA`).
    GrayAlpha(Vec<u8>),
    /// 8-bit RGB (also palette images, expanded).
    Rgb(Vec<u8>),
    /// 8-bit RGBA.
    Rgba(Vec<u8>),
    /// 16-bit grayscale (`I;16`).
    Gray16(Vec<u16>),
}

/// A decoded image.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// The samples.
    pub pixels: Pixels,
    /// Pillow resizes this image with NEAREST (its mode is `P` or `1`).
    pub nearest: bool,
}

impl Decoded {
    /// The 8-bit interleaved image (16-bit data is clamped to 255, as Pillow's
    /// `convert("RGB")` does).
    pub fn to_image8(&self) -> Image8 {
        let (channels, data) = match &self.pixels {
            Pixels::Gray(d) => (1, d.clone()),
            Pixels::GrayAlpha(d) => (2, d.clone()),
            Pixels::Rgb(d) => (3, d.clone()),
            Pixels::Rgba(d) => (4, d.clone()),
            Pixels::Gray16(d) => (1, d.iter().map(|&v| v.min(255) as u8).collect()),
        };
        Image8 {
            width: self.width,
            height: self.height,
            channels,
            data,
        }
    }
}
