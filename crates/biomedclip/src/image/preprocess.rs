//! Image -> normalised pixel tensor, as open_clip 2.23.0's eval transform does it
//! (`src/open_clip/transform.py` `image_transform`): `Resize(size, BICUBIC)` of the short
//! side -> `CenterCrop(size)` -> `convert("RGB")` -> `ToTensor()` -> `Normalize(mean, std)`.
//!
//! torchvision's `Resize` on a PIL image computes the long side as
//! `int(size * long / short)` (`transforms/functional.py` `_compute_resized_output_size`) and
//! calls Pillow's `Image.resize`, which premultiplies alpha for `RGBA`/`LA` and uses NEAREST
//! for palette and bilevel images (`PIL/Image.py` `Image.resize`); CMYK is resized in CMYK
//! and converted to RGB after the crop. `CenterCrop` offsets are
//! `int(round((H - size) / 2))`, Python rounding halves to even.

use std::path::Path;

use super::decode::decode_frame;
use super::input::{split_frame, ImageInput};
use super::limits::Limits;
use super::pixels::{cmyk_to_rgb, Decoded, Pixels};
use super::render::{to_gray8, HighBitDepth, Rendering, WindowFunction};
use super::resample::{resize_crop8, Crop, Filter, Image16, Image8};
use crate::checkpoint::config::PreprocessCfg;
use crate::error::{Error, Result};

/// The reference preprocessing, configured from `preprocess_cfg`.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    filter: Filter,
    rendering: Rendering,
    limits: Limits,
}

/// Python's `round` on a non-negative half-integer grid: half to even.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    };
    r as usize
}

/// Short side to `size`, long side `int(size * long / short)`.
pub fn resized_dims(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

fn muldiv255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Pillow's `RGBA -> RGBa` (and `LA -> La`): colour channels times alpha / 255.
fn premultiply(img: &mut Image8) {
    let c = img.channels;
    for px in img.data.chunks_exact_mut(c) {
        let a = px[c - 1];
        for v in &mut px[..c - 1] {
            *v = muldiv255(*v, a);
        }
    }
}

/// Pillow's `RGBa -> RGBA`: colour channels times 255 / alpha, clamped.
fn unpremultiply(img: &mut Image8) {
    let c = img.channels;
    for px in img.data.chunks_exact_mut(c) {
        let a = px[c - 1] as u32;
        if a == 0 || a == 255 {
            continue;
        }
        for v in &mut px[..c - 1] {
            *v = ((255 * *v as u32) / a).min(255) as u8;
        }
    }
}

impl Preprocessor {
    /// A preprocessor producing `size` x `size` inputs.
    pub fn new(cfg: &PreprocessCfg, size: usize) -> Self {
        let filter = match cfg.interpolation.as_str() {
            "bilinear" => Filter::Bilinear,
            _ => Filter::Bicubic,
        };
        Preprocessor {
            size,
            mean: cfg.mean,
            std: cfg.std,
            filter,
            rendering: Rendering::default(),
            limits: Limits::default(),
        }
    }

    /// How DICOM and 16-bit images are brought to 8 bits.
    pub fn rendering(&self) -> &Rendering {
        &self.rendering
    }

    /// Sets how DICOM and 16-bit images are brought to 8 bits.
    pub fn set_rendering(&mut self, rendering: Rendering) {
        self.rendering = rendering;
    }

    /// What one input may cost (pixels, bytes read).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sets what one input may cost.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Side of the square output.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Resize and crop to the model's input, then convert to 8-bit RGB: the image the
    /// reference hands to `ToTensor`. Only the cropped region of the resized image is
    /// computed, so an extreme aspect ratio costs no more than a square image.
    pub fn to_rgb8(&self, img: &Decoded) -> Result<Image8> {
        if img.width == 0 || img.height == 0 {
            return Err(Error::InvalidInput("image has zero width or height".into()));
        }
        let s = self.size;
        let (w, h) = resized_dims(img.width, img.height, s);
        let filter = if img.nearest {
            Filter::Nearest
        } else {
            self.filter
        };
        let crop = Crop {
            left: round_half_even((w as f64 - s as f64) / 2.0),
            top: round_half_even((h as f64 - s as f64) / 2.0),
            width: s,
            height: s,
        };
        if let Pixels::Gray16(data) = &img.pixels {
            if self.rendering.high_bit_depth == HighBitDepth::FullRange {
                let values: Vec<f64> = data.iter().map(|&v| v as f64).collect();
                let gray = Decoded {
                    width: img.width,
                    height: img.height,
                    pixels: Pixels::Gray(to_gray8(
                        &values,
                        self.rendering.window,
                        WindowFunction::Linear,
                    )),
                    nearest: img.nearest,
                };
                return self.to_rgb8(&gray);
            }
            // Pillow resizes `I;16` in 16 bits; `convert("RGB")` then clamps at 255.
            let src = Image16 {
                width: img.width,
                height: img.height,
                data: data.clone(),
            };
            let cropped = src.resize_crop(w, h, filter, crop);
            let gray = Image8 {
                width: s,
                height: s,
                channels: 1,
                data: cropped.data.iter().map(|&v| v.min(255) as u8).collect(),
            };
            return Ok(to_rgb(&gray));
        }
        let (channels, data) = match &img.pixels {
            Pixels::Gray(d) => (1, d),
            Pixels::GrayAlpha(d) => (2, d),
            Pixels::Rgb(d) => (3, d),
            Pixels::Rgba(d) => (4, d),
            Pixels::Cmyk(d) => (4, d),
            Pixels::Gray16(_) => unreachable!("16-bit images are resized above"),
        };
        let shape = (img.width, img.height, channels);
        let has_alpha = matches!(img.pixels, Pixels::GrayAlpha(_) | Pixels::Rgba(_));
        let cropped = if has_alpha && filter != Filter::Nearest && (w, h) != (img.width, img.height)
        {
            // Pillow resizes `RGBA`/`LA` premultiplied (per pixel, so before or after the
            // crop gives the same numbers).
            let mut src = img.to_image8();
            premultiply(&mut src);
            let mut r = resize_crop8(shape, &src.data, (w, h), filter, crop);
            unpremultiply(&mut r);
            r
        } else {
            resize_crop8(shape, data, (w, h), filter, crop)
        };
        if let Pixels::Cmyk(_) = img.pixels {
            // Pillow resizes CMYK as it is and converts to RGB after the crop.
            return Ok(Image8 {
                width: cropped.width,
                height: cropped.height,
                channels: 3,
                data: cmyk_to_rgb(&cropped.data),
            });
        }
        Ok(to_rgb(&cropped))
    }

    /// Normalises an `size` x `size` RGB image into CHW floats: `(v / 255 - mean) / std`.
    pub fn normalize(&self, rgb: &Image8) -> Vec<f32> {
        let n = rgb.width * rgb.height;
        let mut out = vec![0f32; 3 * n];
        for (i, px) in rgb.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * n + i] = (px[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// Decodes and preprocesses a decoded image into `3 * size * size` CHW floats; `name`
    /// is used for messages only.
    pub fn process_decoded(&self, decoded: &Decoded, name: &Path) -> Result<Vec<f32>> {
        Ok(self.normalize(&self.model_view(decoded, name)?))
    }

    /// The `size` x `size` 8-bit RGB image the model sees (rendered, resized, cropped),
    /// before [`Self::normalize`]; an empty image is refused, naming `name`.
    pub fn model_view(&self, decoded: &Decoded, name: &Path) -> Result<Image8> {
        if decoded.width == 0 || decoded.height == 0 {
            return Err(Error::Image {
                path: name.into(),
                reason: "image has zero width or height".into(),
            });
        }
        self.to_rgb8(decoded)
    }

    /// Decodes and preprocesses an image file's bytes into `3 * size * size` CHW floats,
    /// taking `frame` of a DICOM file (default: the middle one).
    pub fn process_bytes(&self, bytes: &[u8], path: &Path, frame: Option<u32>) -> Result<Vec<f32>> {
        let decoded = decode_frame(bytes, path, frame, self.rendering.window, &self.limits)?;
        self.process_decoded(&decoded, path)
    }

    /// Reads, decodes and preprocesses an image file; `file.dcm#frame=N` takes frame `N`
    /// (from 0) of a multi-frame DICOM file.
    pub fn process_file(&self, path: &Path) -> Result<Vec<f32>> {
        let (file, frame) = split_frame(path)?;
        let bytes = self.limits.read_file(&file)?;
        self.process_bytes(&bytes, path, frame)
    }

    /// Decodes (where needed) and preprocesses any [`ImageInput`].
    pub fn process(&self, image: &ImageInput<'_>) -> Result<Vec<f32>> {
        match *image {
            ImageInput::Path(path) => self.process_file(path),
            ImageInput::Bytes { name, data } => self.process_bytes(data, Path::new(name), None),
            ImageInput::Rgb8 {
                width,
                height,
                data,
            } => {
                let name = image.name();
                self.limits
                    .check_pixels(width as u64, height as u64)
                    .map_err(|reason| Error::Image {
                        path: name.clone(),
                        reason,
                    })?;
                if Some(data.len()) != width.checked_mul(height).and_then(|n| n.checked_mul(3)) {
                    return Err(Error::Image {
                        path: name,
                        reason: format!(
                            "{} bytes for {width} x {height} RGB pixels (expected {})",
                            data.len(),
                            width.saturating_mul(height).saturating_mul(3)
                        ),
                    });
                }
                let decoded = Decoded {
                    width,
                    height,
                    pixels: Pixels::Rgb(data.to_vec()),
                    nearest: false,
                };
                self.process_decoded(&decoded, &name)
            }
        }
    }
}

/// Pillow's `convert("RGB")` from `L`, `LA`, `RGB` or `RGBA`: replicate gray, drop alpha.
fn to_rgb(img: &Image8) -> Image8 {
    let data = match img.channels {
        1 => img.data.iter().flat_map(|&v| [v, v, v]).collect(),
        2 => img
            .data
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        3 => img.data.clone(),
        _ => img
            .data
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
    };
    Image8 {
        width: img.width,
        height: img.height,
        channels: 3,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_truncates_the_long_side() {
        assert_eq!(resized_dims(640, 480, 224), (298, 224));
        assert_eq!(resized_dims(100, 1000, 224), (224, 2240));
        assert_eq!(resized_dims(225, 1000, 224), (224, 995));
    }

    #[test]
    fn crop_offsets_round_half_to_even() {
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(round_half_even(0.0), 0);
        assert_eq!(round_half_even(37.0), 37);
    }
}
