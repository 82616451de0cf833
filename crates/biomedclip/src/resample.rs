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

/// Fixed-point kernel for one axis: for each output index, the first input index, the
/// number of taps, and `ksize` coefficients.
struct Kernel {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    coeffs: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Kernel {
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut coeffs = vec![0i32; out_size * ksize];
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
            let v = if ww != 0.0 { kx / ww } else { *kx };
            let scaled = v * (1u32 << PRECISION_BITS) as f64;
            coeffs[xx * ksize + x] = if v < 0.0 {
                (scaled - 0.5) as i32
            } else {
                (scaled + 0.5) as i32
            };
        }
        bounds.push((xmin as usize, xmax));
    }
    Kernel {
        ksize,
        bounds,
        coeffs,
    }
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
        let kh = precompute(self.width, out_w, filter);
        let kv = precompute(self.height, out_h, filter);
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
                let row = &self.data[(y + first) * self.width * c..(y + first + 1) * self.width * c];
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
        let c = self.channels;
        // Pillow steps the source coordinate by accumulation from the first pixel centre.
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
        let xs = index(self.width, out_w);
        let ys = index(self.height, out_h);
        let mut data = Vec::with_capacity(out_w * out_h * c);
        for &y in &ys {
            let row = &self.data[y * self.width * c..(y + 1) * self.width * c];
            for &x in &xs {
                data.extend_from_slice(&row[x * c..(x + 1) * c]);
            }
        }
        Image8 {
            width: out_w,
            height: out_h,
            channels: c,
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
        let k = precompute(640, 224, Filter::Bicubic);
        for (i, &(_, n)) in k.bounds.iter().enumerate() {
            let s: i32 = k.coeffs[i * k.ksize..i * k.ksize + n].iter().sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= n as i32, "row {i}: {s}");
        }
    }
}
