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
    /// 8-bit CMYK (`CMYK`), as Pillow holds it: Adobe JPEGs' inverted samples flipped back.
    Cmyk(Vec<u8>),
}

/// Pillow's `convert("RGB")` of `CMYK` (`cmyk2rgb` in `libImaging/Convert.c`):
/// `(255 - K) - C * (255 - K) / 255` with its rounded fixed-point division.
pub fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let nk = 255 - u32::from(p[3]);
            [0, 1, 2].map(|i| nk.saturating_sub(muldiv255(u32::from(p[i]), nk)) as u8)
        })
        .collect()
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
    /// The 8-bit interleaved image (16-bit data is clamped to 255 and CMYK converted to
    /// RGB, as Pillow's `convert("RGB")` does).
    pub fn to_image8(&self) -> Image8 {
        let (channels, data) = match &self.pixels {
            Pixels::Gray(d) => (1, d.clone()),
            Pixels::GrayAlpha(d) => (2, d.clone()),
            Pixels::Rgb(d) => (3, d.clone()),
            Pixels::Rgba(d) => (4, d.clone()),
            Pixels::Gray16(d) => (1, d.iter().map(|&v| v.min(255) as u8).collect()),
            Pixels::Cmyk(d) => (3, cmyk_to_rgb(d)),
        };
        Image8 {
            width: self.width,
            height: self.height,
            channels,
            data,
        }
    }
}
