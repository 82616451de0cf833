//! Pillow's `Image.resize` for 8-bit images, reproduced bit for bit.
//!
//! Written by hand because no Rust crate reproduces Pillow's arithmetic: a separable
//! convolution whose kernel support grows with the downscale factor (antialiasing), with
//! coefficients quantised to 22-bit fixed point and the result rounded and clamped to 8 bits
//! between the horizontal and the vertical pass (Pillow `src/libImaging/Resample.c`:
//! `precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`,
//! `ImagingResampleVertical_8bpc`). NEAREST (used by Pillow for palette and bilevel images)
//! follows `ImagingScaleAffine` in `src/libImaging/Geometry.c`.

use std::ops::Range;

/// A resampling filter as Pillow defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Filter {
    /// Keys cubic convolution with a = -0.5, support 2.
    Bicubic,
    /// Triangle filter, support 1.
    Bilinear,
    /// Nearest neighbour (Pillow's choice for modes `P` and `1`).
    Nearest,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
            Filter::Nearest => 0.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Nearest => 0.0,
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Kernel for one axis: for each output index of a window, the first input index, the
/// number of taps, and `ksize` normalised coefficients.
struct Kernel {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<f64>,
}

/// The same kernel with coefficients in 22-bit fixed point (`normalize_coeffs_8bpc`).
struct FixedKernel {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    coeffs: Vec<i32>,
}

impl Kernel {
    fn fixed(&self) -> FixedKernel {
        let one = (1u32 << PRECISION_BITS) as f64;
        let coeffs = self
            .weights
            .iter()
            .map(|&v| {
                if v < 0.0 {
                    (v * one - 0.5) as i32
                } else {
                    (v * one + 0.5) as i32
                }
            })
            .collect();
        FixedKernel {
            ksize: self.ksize,
            bounds: self.bounds.clone(),
            coeffs,
        }
    }

    /// The input indices the window's outputs read: `first..end`.
    fn input_span(bounds: &[(usize, usize)]) -> Range<usize> {
        let first = bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let end = bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(first);
        first..end
    }
}

/// Pillow's `precompute_coeffs` for the outputs in `window` of an `in_size` -> `out_size`
/// resize. Each output's taps depend on its index alone, so computing a window gives the
/// same numbers as computing the whole axis and cropping; an extreme aspect ratio (a
/// 1 x 1,000,000 image resized to 224 x 224,000,000 before the crop) then costs the crop,
/// not the resized image.
fn precompute(in_size: usize, out_size: usize, filter: Filter, window: Range<usize>) -> Kernel {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(window.len());
    let mut weights = vec![0f64; window.len() * ksize];
    let mut k = vec![0f64; ksize];
    for (i, xx) in window.enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let xmax = xmax.max(0) as usize;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(xmax) {
            weights[i * ksize + x] = if ww != 0.0 { kx / ww } else { *kx };
        }
        bounds.push((xmin as usize, xmax));
    }
    Kernel {
        ksize,
        bounds,
        weights,
    }
}

/// Pillow's `ROUND_UP` followed by the byte-wise clamp of the 16-bit resampler.
#[inline]
fn clip16(ss: f64) -> u16 {
    let v = if ss >= 0.0 {
        (ss + 0.5) as i32
    } else {
        (ss - 0.5) as i32
    };
    let clip = |b: i32| b.clamp(0, 255) as u16;
    clip(v % 256) | (clip(v >> 8) << 8)
}

/// The part of a resized image to compute: the `width` x `height` region whose top-left
/// corner is (`left`, `top`) in the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    /// First column.
    pub left: usize,
    /// First row.
    pub top: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Crop {
    /// The whole of a `width` x `height` image.
    pub fn all(width: usize, height: usize) -> Self {
        Crop {
            left: 0,
            top: 0,
            width,
            height,
        }
    }

    fn columns(&self) -> Range<usize> {
        self.left..self.left + self.width
    }

    fn rows(&self) -> Range<usize> {
        self.top..self.top + self.height
    }

    /// Whether the region lies inside a `width` x `height` image.
    fn fits(&self, width: usize, height: usize) -> bool {
        self.left
            .checked_add(self.width)
            .is_some_and(|r| r <= width)
            && self
                .top
                .checked_add(self.height)
                .is_some_and(|b| b <= height)
    }
}

/// The resize and crop of one image: which input rows and columns each pass reads.
struct Plan {
    /// Horizontal taps for the crop's columns, or `None` where the width is unchanged.
    horizontal: Option<Kernel>,
    /// Vertical taps for the crop's rows, or `None` where the height is unchanged.
    vertical: Option<Kernel>,
    /// Input rows read by the vertical pass (the crop's rows without one).
    rows: Range<usize>,
}

impl Plan {
    fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize, crop: Crop, f: Filter) -> Self {
        assert!(
            crop.fits(out_w, out_h),
            "crop {crop:?} outside {out_w}x{out_h}"
        );
        let horizontal = (out_w != in_w).then(|| precompute(in_w, out_w, f, crop.columns()));
        let vertical = (out_h != in_h).then(|| precompute(in_h, out_h, f, crop.rows()));
        let rows = match &vertical {
            Some(k) => Kernel::input_span(&k.bounds),
            None => crop.rows(),
        };
        Plan {
            horizontal,
            vertical,
            rows,
        }
    }
}

/// A grayscale 16-bit image (Pillow mode `I;16`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image16 {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Row-major samples.
    pub data: Vec<u16>,
}

impl Image16 {
    /// Resizes to `out_w` x `out_h` as Pillow does for `I;16` (`ImagingResample*_16bpc`:
    /// floating-point coefficients, each pass rounded and clamped to 16 bits) and returns
    /// the `crop` of the result, computing that region only.
    pub fn resize_crop(&self, out_w: usize, out_h: usize, filter: Filter, crop: Crop) -> Image16 {
        if filter == Filter::Nearest {
            let data = nearest(self.width, self.height, 1, &self.data, out_w, out_h, crop);
            return Image16 {
                width: crop.width,
                height: crop.height,
                data,
            };
        }
        let w = self.width;
        let plan = Plan::new(w, self.height, out_w, out_h, crop, filter);
        // Horizontal pass over the rows the vertical pass reads, for the crop's columns.
        let rows = plan.rows.clone();
        let mut tmp = Vec::with_capacity(rows.len() * crop.width);
        for y in rows.clone() {
            let row = &self.data[y * w..(y + 1) * w];
            match &plan.horizontal {
                Some(k) => tmp.extend(k.bounds.iter().enumerate().map(|(i, &(xmin, n))| {
                    let ks = &k.weights[i * k.ksize..i * k.ksize + n];
                    clip16(
                        ks.iter()
                            .enumerate()
                            .map(|(x, kx)| row[xmin + x] as f64 * kx)
                            .sum(),
                    )
                })),
                None => tmp.extend_from_slice(&row[crop.columns()]),
            }
        }
        let data = match &plan.vertical {
            None => tmp,
            Some(k) => {
                let cw = crop.width;
                let mut out = Vec::with_capacity(cw * crop.height);
                for (i, &(ymin, n)) in k.bounds.iter().enumerate() {
                    let ks = &k.weights[i * k.ksize..i * k.ksize + n];
                    let base = ymin - rows.start;
                    out.extend((0..cw).map(|x| {
                        clip16(
                            ks.iter()
                                .enumerate()
                                .map(|(y, ky)| tmp[(base + y) * cw + x] as f64 * ky)
                                .sum(),
                        )
                    }));
                }
                out
            }
        };
        Image16 {
            width: crop.width,
            height: crop.height,
            data,
        }
    }

    /// Resizes to `out_w` x `out_h` as Pillow does for `I;16`.
    pub fn resize(&self, out_w: usize, out_h: usize, filter: Filter) -> Image16 {
        self.resize_crop(out_w, out_h, filter, Crop::all(out_w, out_h))
    }
}

/// NEAREST as Pillow's `ImagingScaleAffine`: the source coordinate steps by accumulation
/// from the first pixel centre. Only the `crop` of the `out_w` x `out_h` result is built.
fn nearest<T: Copy>(
    in_w: usize,
    in_h: usize,
    c: usize,
    data: &[T],
    out_w: usize,
    out_h: usize,
    crop: Crop,
) -> Vec<T> {
    // The accumulation is replayed from the first output so that the crop's indices carry
    // the same rounding as Pillow's full-size loop; past `REPLAY` outputs (a strip resized to
    // hundreds of millions of rows) the position is computed directly instead, which can
    // differ from the accumulated one only in the last bits, so as not to spend seconds.
    const REPLAY: usize = 1 << 20;
    let index = |in_size: usize, out_size: usize, window: Range<usize>| -> Vec<usize> {
        let step = in_size as f64 / out_size as f64;
        let clamp = |pos: f64| (pos.max(0.0) as usize).min(in_size - 1);
        if window.end > REPLAY {
            return window
                .map(|i| clamp(step * 0.5 + i as f64 * step))
                .collect();
        }
        let mut pos = step * 0.5;
        let mut out = Vec::with_capacity(window.len());
        for i in 0..window.end {
            if i >= window.start {
                out.push(clamp(pos));
            }
            pos += step;
        }
        out
    };
    let xs = index(in_w, out_w, crop.columns());
    let ys = index(in_h, out_h, crop.rows());
    let mut out = Vec::with_capacity(crop.width * crop.height * c);
    for &y in &ys {
        let row = &data[y * in_w * c..(y + 1) * in_w * c];
        for &x in &xs {
            out.extend_from_slice(&row[x * c..(x + 1) * c]);
        }
    }
    out
}

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// An interleaved 8-bit image: `data.len() == width * height * channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Samples per pixel.
    pub channels: usize,
    /// Row-major interleaved samples.
    pub data: Vec<u8>,
}

impl Image8 {
    /// Resizes to `out_w` x `out_h` exactly as Pillow's `Image.resize(size, filter)` does and
    /// returns the `crop` of the result, computing that region only.
    pub fn resize_crop(&self, out_w: usize, out_h: usize, filter: Filter, crop: Crop) -> Image8 {
        resize_crop8(
            (self.width, self.height, self.channels),
            &self.data,
            (out_w, out_h),
            filter,
            crop,
        )
    }

    /// Resizes to `out_w` x `out_h` exactly as Pillow's `Image.resize(size, filter)` does.
    pub fn resize(&self, out_w: usize, out_h: usize, filter: Filter) -> Image8 {
        self.resize_crop(out_w, out_h, filter, Crop::all(out_w, out_h))
    }

    /// Crops the `w` x `h` region whose top-left corner is (`left`, `top`).
    pub fn crop(&self, left: usize, top: usize, w: usize, h: usize) -> Image8 {
        let c = self.channels;
        let mut data = Vec::with_capacity(w * h * c);
        for y in top..top + h {
            let start = (y * self.width + left) * c;
            data.extend_from_slice(&self.data[start..start + w * c]);
        }
        Image8 {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }
}

/// [`Image8::resize_crop`] on borrowed samples (`width`, `height`, `channels`), so that a
/// decoded image is resized without a copy.
pub fn resize_crop8(
    (width, height, c): (usize, usize, usize),
    data: &[u8],
    (out_w, out_h): (usize, usize),
    filter: Filter,
    crop: Crop,
) -> Image8 {
    {
        if filter == Filter::Nearest {
            let data = nearest(width, height, c, data, out_w, out_h, crop);
            return Image8 {
                width: crop.width,
                height: crop.height,
                channels: c,
                data,
            };
        }
        let plan = Plan::new(width, height, out_w, out_h, crop, filter);
        let horizontal = plan.horizontal.as_ref().map(Kernel::fixed);
        let vertical = plan.vertical.as_ref().map(Kernel::fixed);
        // Horizontal pass over the rows the vertical pass reads, for the crop's columns.
        let line = width * c;
        let rows = plan.rows.clone();
        let cw = crop.width * c;
        let mut tmp = vec![0u8; rows.len() * cw];
        for (y, out) in rows.clone().zip(tmp.chunks_exact_mut(cw)) {
            let row = &data[y * line..(y + 1) * line];
            let Some(k) = &horizontal else {
                out.copy_from_slice(&row[crop.left * c..crop.left * c + cw]);
                continue;
            };
            for (i, &(xmin, n)) in k.bounds.iter().enumerate() {
                let ks = &k.coeffs[i * k.ksize..i * k.ksize + n];
                for ch in 0..c {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (x, kx) in ks.iter().enumerate() {
                        ss += row[(xmin + x) * c + ch] as i32 * kx;
                    }
                    out[i * c + ch] = clip8(ss);
                }
            }
        }
        let data = match &vertical {
            None => tmp,
            Some(k) => {
                let mut out = vec![0u8; cw * crop.height];
                for (i, (&(ymin, n), orow)) in
                    k.bounds.iter().zip(out.chunks_exact_mut(cw)).enumerate()
                {
                    let ks = &k.coeffs[i * k.ksize..i * k.ksize + n];
                    let base = ymin - rows.start;
                    for (x, o) in orow.iter_mut().enumerate() {
                        let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                        for (y, ky) in ks.iter().enumerate() {
                            ss += tmp[(base + y) * cw + x] as i32 * ky;
                        }
                        *o = clip8(ss);
                    }
                }
                out
            }
        };
        Image8 {
            width: crop.width,
            height: crop.height,
            channels: c,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let img = Image8 {
            width: 37,
            height: 23,
            channels: 3,
            data: vec![200; 37 * 23 * 3],
        };
        for f in [Filter::Bicubic, Filter::Bilinear, Filter::Nearest] {
            let out = img.resize(11, 50, f);
            assert_eq!((out.width, out.height), (11, 50));
            assert!(out.data.iter().all(|&v| v == 200), "{f:?}");
        }
    }

    /// A deterministic, uneven test image.
    fn pattern(width: usize, height: usize, channels: usize) -> Image8 {
        let data = (0..width * height * channels)
            .map(|i| ((i * 7919) % 251) as u8)
            .collect();
        Image8 {
            width,
            height,
            channels,
            data,
        }
    }

    #[test]
    fn a_cropped_resize_equals_the_crop_of_the_full_resize() {
        let cases = [
            (40, 31, 17, 9),   // both axes down
            (13, 50, 40, 120), // both up
            (25, 25, 25, 60),  // height only
            (25, 40, 11, 40),  // width only
            (1, 90, 224, 300), // one column, stretched
        ];
        for (w, h, ow, oh) in cases {
            for f in [Filter::Bicubic, Filter::Bilinear, Filter::Nearest] {
                let img = pattern(w, h, 3);
                let full = img.resize(ow, oh, f);
                let crop = Crop {
                    left: ow / 3,
                    top: oh / 4,
                    width: ow / 2,
                    height: oh / 2,
                };
                let part = img.resize_crop(ow, oh, f, crop);
                assert_eq!(
                    part,
                    full.crop(crop.left, crop.top, crop.width, crop.height),
                    "{w}x{h} -> {ow}x{oh} {f:?}"
                );

                let img16 = Image16 {
                    width: w,
                    height: h,
                    data: img
                        .data
                        .iter()
                        .step_by(3)
                        .map(|&v| v as u16 * 257)
                        .collect(),
                };
                let full16 = img16.resize(ow, oh, f);
                let part16 = img16.resize_crop(ow, oh, f, crop);
                let expected: Vec<u16> = (crop.top..crop.top + crop.height)
                    .flat_map(|y| {
                        let start = y * ow + crop.left;
                        full16.data[start..start + crop.width].to_vec()
                    })
                    .collect();
                assert_eq!(part16.data, expected, "16-bit {w}x{h} -> {ow}x{oh} {f:?}");
            }
        }
    }

    #[test]
    fn an_extreme_aspect_ratio_costs_only_the_crop() {
        // 1 x 1,000,000 resized to 224 x 224,000,000 would need 50 GB; the crop needs 50 KB.
        let img = pattern(1, 1_000_000, 1);
        let crop = Crop {
            left: 0,
            top: 111_999_888,
            width: 224,
            height: 224,
        };
        let out = img.resize_crop(224, 224_000_000, Filter::Bicubic, crop);
        assert_eq!(
            (out.width, out.height, out.data.len()),
            (224, 224, 224 * 224)
        );
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        let k = precompute(640, 224, Filter::Bicubic, 0..224).fixed();
        for (i, &(_, n)) in k.bounds.iter().enumerate() {
            let s: i32 = k.coeffs[i * k.ksize..i * k.ksize + n].iter().sum();
            assert!(
                (s - (1 << PRECISION_BITS)).abs() <= n as i32,
                "row {i}: {s}"
            );
        }
    }
}
