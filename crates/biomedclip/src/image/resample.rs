//! Pillow's `Image.resize` for 8-bit images, reproduced bit for bit.
//!
//! Written by hand because no Rust crate reproduces Pillow's arithmetic: a separable
//! convolution whose kernel support grows with the downscale factor (antialiasing), with
//! coefficients quantised to 22-bit fixed point and the result rounded and clamped to 8 bits
//! between the horizontal and the vertical pass (Pillow `src/libImaging/Resample.c`:
//! `precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`,
//! `ImagingResampleVertical_8bpc`). NEAREST (used by Pillow for palette and bilevel images)
//! follows `ImagingScaleAffine` in `src/libImaging/Geometry.c`.

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

/// Kernel for one axis: for each output index, the first input index, the number of taps,
/// and `ksize` normalised coefficients.
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
}

fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Kernel {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0f64; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
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
            weights[xx * ksize + x] = if ww != 0.0 { kx / ww } else { *kx };
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
    /// Resizes as Pillow does for `I;16` (`ImagingResample*_16bpc`): floating-point
    /// coefficients, each pass rounded and clamped to 16 bits.
    pub fn resize(&self, out_w: usize, out_h: usize, filter: Filter) -> Image16 {
        if (out_w, out_h) == (self.width, self.height) {
            return self.clone();
        }
        if filter == Filter::Nearest {
            let img = nearest(self.width, self.height, 1, &self.data, out_w, out_h);
            return Image16 {
                width: out_w,
                height: out_h,
                data: img,
            };
        }
        let (w, h) = (self.width, self.height);
        let mut cur = self.data.clone();
        let mut cur_w = w;
        if out_w != w {
            let k = precompute(w, out_w, filter);
            let mut out = vec![0u16; out_w * h];
            for y in 0..h {
                for xx in 0..out_w {
                    let (xmin, n) = k.bounds[xx];
                    let ks = &k.weights[xx * k.ksize..xx * k.ksize + n];
                    let ss: f64 = ks
                        .iter()
                        .enumerate()
                        .map(|(x, kx)| cur[y * w + xmin + x] as f64 * kx)
                        .sum();
                    out[y * out_w + xx] = clip16(ss);
                }
            }
            cur = out;
            cur_w = out_w;
        }
        if out_h != h {
            let k = precompute(h, out_h, filter);
            let mut out = vec![0u16; cur_w * out_h];
            for yy in 0..out_h {
                let (ymin, n) = k.bounds[yy];
                let ks = &k.weights[yy * k.ksize..yy * k.ksize + n];
                for x in 0..cur_w {
                    let ss: f64 = ks
                        .iter()
                        .enumerate()
                        .map(|(y, ky)| cur[(ymin + y) * cur_w + x] as f64 * ky)
                        .sum();
                    out[yy * cur_w + x] = clip16(ss);
                }
            }
            cur = out;
        }
        Image16 {
            width: out_w,
            height: out_h,
            data: cur,
        }
    }

    /// Crops the `w` x `h` region whose top-left corner is (`left`, `top`).
    pub fn crop(&self, left: usize, top: usize, w: usize, h: usize) -> Image16 {
        let mut data = Vec::with_capacity(w * h);
        for y in top..top + h {
            data.extend_from_slice(&self.data[y * self.width + left..y * self.width + left + w]);
        }
        Image16 {
            width: w,
            height: h,
            data,
        }
    }
}

/// NEAREST as Pillow's `ImagingScaleAffine`: the source coordinate steps by accumulation
/// from the first pixel centre.
fn nearest<T: Copy>(
    in_w: usize,
    in_h: usize,
    c: usize,
    data: &[T],
    out_w: usize,
    out_h: usize,
) -> Vec<T> {
    let index = |in_size: usize, out_size: usize| -> Vec<usize> {
        let step = in_size as f64 / out_size as f64;
        let mut pos = step * 0.5;
        (0..out_size)
            .map(|_| {
                let i = (pos.max(0.0) as usize).min(in_size - 1);
                pos += step;
                i
            })
            .collect()
    };
    let xs = index(in_w, out_w);
    let ys = index(in_h, out_h);
    let mut out = Vec::with_capacity(out_w * out_h * c);
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
    /// Resizes to `out_w` x `out_h` exactly as Pillow's `Image.resize(size, filter)` does.
    pub fn resize(&self, out_w: usize, out_h: usize, filter: Filter) -> Image8 {
        if out_w == self.width && out_h == self.height {
            return self.clone();
        }
        if filter == Filter::Nearest {
            return self.resize_nearest(out_w, out_h);
        }
        let c = self.channels;
        let need_h = out_w != self.width;
        let need_v = out_h != self.height;
        let kh = precompute(self.width, out_w, filter).fixed();
        let kv = precompute(self.height, out_h, filter).fixed();
        // Only the input rows the vertical pass reads go through the horizontal pass.
        let (first, last) = if need_v {
            let (b0, _) = kv.bounds[0];
            let (bl, nl) = kv.bounds[out_h - 1];
            (b0, bl + nl)
        } else {
            (0, self.height)
        };
        let mut tmp = Image8 {
            width: self.width,
            height: self.height,
            channels: c,
            data: Vec::new(),
        };
        let src: &Image8 = if need_h {
            let rows = last - first;
            let mut out = vec![0u8; out_w * rows * c];
            for y in 0..rows {
                let row =
                    &self.data[(y + first) * self.width * c..(y + first + 1) * self.width * c];
                let orow = &mut out[y * out_w * c..(y + 1) * out_w * c];
                for xx in 0..out_w {
                    let (xmin, n) = kh.bounds[xx];
                    let k = &kh.coeffs[xx * kh.ksize..xx * kh.ksize + n];
                    for ch in 0..c {
                        let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                        for (x, kx) in k.iter().enumerate() {
                            ss += row[(xmin + x) * c + ch] as i32 * kx;
                        }
                        orow[xx * c + ch] = clip8(ss);
                    }
                }
            }
            tmp.width = out_w;
            tmp.height = rows;
            tmp.data = out;
            &tmp
        } else {
            self
        };
        if !need_v {
            return src.clone();
        }
        // Without a horizontal pass the source keeps all rows, so bounds stay absolute.
        let offset = if need_h { first } else { 0 };
        let w = src.width;
        let mut out = vec![0u8; w * out_h * c];
        for yy in 0..out_h {
            let (ymin, n) = kv.bounds[yy];
            let k = &kv.coeffs[yy * kv.ksize..yy * kv.ksize + n];
            let orow = &mut out[yy * w * c..(yy + 1) * w * c];
            for (i, o) in orow.iter_mut().enumerate() {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (y, ky) in k.iter().enumerate() {
                    ss += src.data[(ymin - offset + y) * w * c + i] as i32 * ky;
                }
                *o = clip8(ss);
            }
        }
        Image8 {
            width: w,
            height: out_h,
            channels: c,
            data: out,
        }
    }

    fn resize_nearest(&self, out_w: usize, out_h: usize) -> Image8 {
        let data = nearest(
            self.width,
            self.height,
            self.channels,
            &self.data,
            out_w,
            out_h,
        );
        Image8 {
            width: out_w,
            height: out_h,
            channels: self.channels,
            data,
        }
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

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        let k = precompute(640, 224, Filter::Bicubic).fixed();
        for (i, &(_, n)) in k.bounds.iter().enumerate() {
            let s: i32 = k.coeffs[i * k.ksize..i * k.ksize + n].iter().sum();
            assert!(
                (s - (1 << PRECISION_BITS)).abs() <= n as i32,
                "row {i}: {s}"
            );
        }
    }
}
