//! Bfloat16 linear layers for `--precision bf16`: weights and activations rounded to bf16 (8
//! significant bits, the `f32` exponent range), products summed in `f32`.
//!
//! Written by hand because neither `gemm` nor candle's CPU backend has a product on
//! AVX512_BF16. There `vdpbf16ps` (`bf16/avx512.rs`) multiplies 16 pairs of bf16 inputs by 16
//! pairs of weights and adds both products of each pair to one `f32` lane: 32 multiply-adds
//! per instruction against 16 for an `f32` FMA. Elsewhere a loop of `f32` fused multiply-adds
//! computes the same numbers, slower than the `f32` engine: the product of two bf16 values is
//! exact in `f32`, and the instruction adds a pair's two products to the sum one after the
//! other (odd input first), rounding each time, which is what two FMAs do.
//!
//! The instruction reads denormal inputs as zero and flushes denormal results; here every
//! value below [`TINY`] in magnitude is rounded to zero, so that every product is a normal
//! float and both paths give the same sums.

use crate::engine::cpu::ops::elementwise::Norm;
use crate::engine::cpu::ops::elementwise::{dispatch, gelu_serial};
use crate::engine::cpu::ops::matmul::Epilogue;
use crate::engine::cpu::ops::panels::{convert_rows, for_each_block, for_rows, padded, SharedOut};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Output columns per packed weight panel (one 512-bit register of `f32` sums).
const NR: usize = 16;
/// Inputs per lane and instruction: the input dimension is padded to pairs.
const KU: usize = 2;
/// Rows per tile of the emulation (two AVX2 registers of sums each).
const EMULATED_ROWS: usize = 4;

/// Magnitudes below this (2^-63) become zero, so that a product of two values is never a
/// denormal float.
pub const TINY: f32 = 1.0842022e-19;

/// `v` rounded to the nearest bf16 (ties to even), as its bits; NaN stays NaN; values below
/// [`TINY`] in magnitude become zero.
#[inline(always)]
pub fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    let magnitude = bits & 0x7fff_ffff;
    if magnitude > 0x7f80_0000 {
        ((bits >> 16) | 0x40) as u16
    } else if magnitude < TINY.to_bits() {
        0
    } else {
        ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
    }
}

/// The `f32` value of bf16 bits.
#[inline(always)]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[inline(always)]
fn to_bf16_row_impl(row: &[f32], dst: &mut [u16]) {
    for (d, &v) in dst.iter_mut().zip(row) {
        *d = to_bf16(v);
    }
}

dispatch!(
    /// A row of floats rounded to bf16 ([`to_bf16`]), vectorised.
    pub fn to_bf16_row(row: &[f32], dst: &mut [u16]) => to_bf16_row_impl
);

/// A `[out, in]` weight rounded to bf16 and packed in panels of [`NR`] channels: panel `p`,
/// input pair `g`, channel `c`, input `t` at `((p * pairs + g) * NR + c) * 2 + t`.
pub struct Bf16Weight {
    packed: Vec<u16>,
    in_dim: usize,
    out_dim: usize,
}

impl Bf16Weight {
    /// Rounds and packs a row-major `[out_dim, in_dim]` weight.
    pub fn convert(weight: &[f32], out_dim: usize, in_dim: usize) -> Bf16Weight {
        assert_eq!(weight.len(), out_dim * in_dim, "weight shape");
        let (kp, np) = (padded(in_dim, KU), padded(out_dim, NR));
        let pairs = kp / KU;
        let mut packed = vec![0u16; np * kp];
        for (c, channel) in weight.chunks_exact(in_dim).enumerate() {
            let (p, cc) = (c / NR, c % NR);
            for (i, &v) in channel.iter().enumerate() {
                packed[((p * pairs + i / KU) * NR + cc) * KU + i % KU] = to_bf16(v);
            }
        }
        Bf16Weight {
            packed,
            in_dim,
            out_dim,
        }
    }

    /// `out[rows, out_dim] (epilogue) x[rows, in_dim] . W^T + bias`, like
    /// [`crate::engine::cpu::nn::linear::Linear::forward`].
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        self.product(x, rows, None, bias, out, epilogue);
    }

    /// [`Bf16Weight::forward`] of `LayerNorm(x)`: each row is normalised and rounded in one
    /// step.
    pub fn forward_normed(
        &self,
        x: &[f32],
        rows: usize,
        norm: &Norm,
        bias: Option<&[f32]>,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        self.product(x, rows, Some(norm), bias, out, epilogue);
    }

    fn product(
        &self,
        x: &[f32],
        rows: usize,
        norm: Option<&Norm>,
        bias: Option<&[f32]>,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        let (k, n) = (self.in_dim, self.out_dim);
        assert!(x.len() >= rows * k && out.len() >= rows * n, "buffer sizes");
        if let Some(nm) = norm {
            assert_eq!(nm.gamma.len(), k, "norm width");
        }
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias width");
        }
        let kp = padded(k, KU);
        let (acts, _) = convert_rows(x, rows, k, kp, norm, to_bf16_row);
        // Tasks: blocks of rows whose bf16 inputs stay in L2, times groups of panels.
        let row_block = ((160 * 1024 / (2 * kp)) / MAX_ROWS * MAX_ROWS).clamp(MAX_ROWS, 252);
        let dst = SharedOut(out.as_mut_ptr());
        let kernel = Kernel::detect();
        for_each_block(rows, row_block, padded(n, NR) / NR, |rows, panels| {
            // SAFETY: tasks cover disjoint (row, column) ranges of `out`, which outlives the
            // loop.
            unsafe { self.block_store(kernel, &acts, rows, panels, bias, &dst, epilogue) };
        });
    }

    /// Rows `rows` of the bf16 inputs `acts` against panels `panels`, stored into `dst`
    /// (`[rows, out_dim]`) by `epilogue`.
    ///
    /// # Safety
    /// `dst` must hold `[rows, out_dim]` floats and no other thread may touch this block.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block_store(
        &self,
        kernel: Kernel,
        acts: &[u16],
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        bias: Option<&[f32]>,
        dst: &SharedOut,
        epilogue: Epilogue,
    ) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
        // the target features it is compiled for, which the caller has detected).
        unsafe {
            let (kp, n) = (padded(self.in_dim, KU), self.out_dim);
            let mut p = panels.start;
            while p < panels.end {
                // Two whole panels at once where the kernel takes them, else one.
                let count = match kernel {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Native if p + avx512::WIDE <= panels.end => avx512::WIDE,
                    _ => 1,
                };
                let c0 = p * NR;
                let width = (n - c0).min(count * NR);
                let tile = Tile {
                    a: &acts[rows.start * kp..rows.end * kp],
                    row_len: kp,
                    b: self.panels(p..p + count),
                    bias: bias.map(|b| &b[c0..c0 + width]),
                    out: dst.at(rows.start * n + c0),
                    out_stride: n,
                    width,
                    epilogue,
                };
                kernel.panel_store(&tile);
                p += count;
            }
        }
    }

    /// The packed weights of panels `panels`.
    fn panels(&self, panels: std::ops::Range<usize>) -> &[u16] {
        let len = padded(self.in_dim, KU) * NR;
        &self.packed[panels.start * len..panels.end * len]
    }
}

/// A tile of the bf16 kernels: bf16 input rows of `row_len = padded(in_dim, KU)`.
type Tile<'a> = crate::engine::cpu::ops::panels::Tile<'a, u16>;

/// Most rows of a tile on any kernel.
const MAX_ROWS: usize = 12;

const _: () = assert!(MAX_ROWS == 12, "for_rows! covers 1 to 12 rows");
/// The bf16 product kernel chosen for this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// `f32` FMAs, compiled for whatever the CPU has (AVX2 and FMA where detected).
    Emulated,
    /// `vdpbf16ps`.
    #[cfg(target_arch = "x86_64")]
    Native,
}

impl Kernel {
    /// The kernels this CPU runs, fastest last.
    fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut kernels = vec![Kernel::Emulated];
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            kernels.push(Kernel::Native);
        }
        kernels
    }

    /// The fastest kernel, or the emulation when `BIOMEDCLIP_BF16_KERNEL=emulated` (for
    /// testing that they agree); decided once per process.
    fn detect() -> Kernel {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let emulated = std::env::var("BIOMEDCLIP_BF16_KERNEL").is_ok_and(|v| v == "emulated");
            match Kernel::available().last() {
                Some(&k) if !emulated => k,
                _ => Kernel::Emulated,
            }
        })
    }

    /// Every row of `t` against its panels (the emulation takes one), stored by `t.epilogue`.
    ///
    /// # Safety
    /// `t.out` must be valid for the tile's rows and `t.width` columns, and no other thread
    /// may touch them meanwhile.
    unsafe fn panel_store(self, t: &Tile) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
        // the target features it is compiled for, which the caller has detected).
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Kernel::Native if t.width.is_multiple_of(NR) => avx512::panel_store(t),
                _ => emulated_panel_store(t),
            }
        }
    }
}

/// Whether bf16 products run on the CPU's own instructions (AVX512_BF16) rather than emulated.
pub fn native() -> bool {
    Kernel::detect() != Kernel::Emulated
}

/// [`Kernel::Emulated`] over a whole tile.
///
/// # Safety
/// As [`Kernel::panel_store`].
unsafe fn emulated_panel_store(t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return fma_panel_store(t);
        }
        panel_store_impl(t)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_panel_store(t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe { panel_store_impl(t) }
}

#[inline(always)]
unsafe fn panel_store_impl(t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let rows = t.rows();
        let mut r = 0;
        while r < rows {
            let m = (rows - r).min(EMULATED_ROWS);
            for_rows!(m, emulated_tile_store, [], (t, r));
            r += m;
        }
    }
}

/// Rows `r..r + R` of `t`: sums started at the bias, each input pair's products added odd
/// first by FMAs (exact products, one rounding each: what `vdpbf16ps` does), then stored.
#[inline(always)]
unsafe fn emulated_tile_store<const R: usize>(t: &Tile, r: usize) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        debug_assert!(t.width <= NR, "one panel");
        let kp = t.row_len;
        let mut acc = [[0f32; NR]; R];
        if let Some(b) = t.bias {
            for row in acc.iter_mut() {
                row[..t.width].copy_from_slice(b);
            }
        }
        let a = &t.a[r * kp..(r + R) * kp];
        for (g, w) in t.b.chunks_exact(NR * KU).enumerate() {
            let (mut even, mut odd) = ([0f32; NR], [0f32; NR]);
            for (c, pair) in w.chunks_exact(KU).enumerate() {
                (even[c], odd[c]) = (from_bf16(pair[0]), from_bf16(pair[1]));
            }
            for (i, sums) in acc.iter_mut().enumerate() {
                let (x0, x1) = (
                    from_bf16(a[i * kp + g * KU]),
                    from_bf16(a[i * kp + g * KU + 1]),
                );
                for c in 0..NR {
                    sums[c] = x1.mul_add(odd[c], sums[c]);
                    sums[c] = x0.mul_add(even[c], sums[c]);
                }
            }
        }
        for (i, vals) in acc.iter_mut().enumerate() {
            let vals = &mut vals[..t.width];
            let out = std::slice::from_raw_parts_mut(t.out.add((r + i) * t.out_stride), t.width);
            match t.epilogue {
                Epilogue::Overwrite => out.copy_from_slice(vals),
                Epilogue::Accumulate => {
                    for (o, v) in out.iter_mut().zip(vals.iter()) {
                        *o += v;
                    }
                }
                Epilogue::Gelu => {
                    gelu_serial(vals);
                    out.copy_from_slice(vals);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::ops::test_support::{epilogue_cases, lcg, max_abs_diff, reference};

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and the next bf16 (1 + 2^-7): ties go to the even 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), to_bf16(1.0));
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        // Just past halfway rounds up.
        assert_eq!(
            from_bf16(to_bf16(1.0 + 1.0 / 256.0 + 1e-6)),
            1.0 + 1.0 / 128.0
        );
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(1e-20)), 0.0);
        assert_ne!(to_bf16(-2e-19), 0, "above TINY: kept");
        let mut seed = 1;
        for _ in 0..10_000 {
            let v = lcg(&mut seed) * 100.0;
            let back = from_bf16(to_bf16(v));
            assert!((back - v).abs() <= v.abs() / 256.0, "{v} -> {back}");
        }
        let row: Vec<f32> = (0..77).map(|_| lcg(&mut seed) * 3.0).collect();
        let mut vectorised = vec![0u16; row.len()];
        to_bf16_row(&row, &mut vectorised);
        let scalar: Vec<u16> = row.iter().map(|&v| to_bf16(v)).collect();
        assert_eq!(vectorised, scalar);
    }

    #[test]
    fn bf16_product_is_close_to_f32_for_every_epilogue() {
        // Odd sizes exercise the padded input pair, a partial panel and a partial tile.
        let (rows, k, n) = (37, 75, 41);
        let mut seed = 7;
        let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 3.0 + 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.2).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let q = Bf16Weight::convert(&w, n, k);
        let want = reference(&x, &w, &bias, rows, k, n);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let residual: Vec<f32> = (0..rows * n).map(|_| lcg(&mut seed)).collect();
        for (epilogue, mut out, expected) in epilogue_cases(&want, &residual) {
            q.forward(&x, rows, Some(&bias), &mut out, epilogue);
            let err = max_abs_diff(&out, &expected);
            // Rounding both operands to 8 significant bits: about 2^-8 of the terms' size,
            // mostly cancelling over 75 terms.
            assert!(err < 0.01 * scale, "max error {err} against scale {scale}");
            assert!(err > 0.0, "bf16 rounding left no trace");
        }
    }

    #[test]
    fn every_kernel_gives_the_same_outputs() {
        let (rows, k, n) = (29, 132, 80);
        let mut seed = 5;
        let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 2.0 - 0.3).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.1).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let residual: Vec<f32> = (0..rows * n).map(|_| lcg(&mut seed)).collect();
        let q = Bf16Weight::convert(&w, n, k);
        let kp = padded(k, KU);
        let (acts, _) = convert_rows(&x, rows, k, kp, None, to_bf16_row);
        let kernels = Kernel::available();
        eprintln!("bf16 kernels on this CPU: {kernels:?}");
        for epilogue in [Epilogue::Overwrite, Epilogue::Accumulate, Epilogue::Gelu] {
            let outputs: Vec<Vec<f32>> = kernels
                .iter()
                .map(|&kernel| {
                    let mut out = residual.clone();
                    let dst = SharedOut(out.as_mut_ptr());
                    // SAFETY: `out` holds rows x n floats; one block at a time.
                    unsafe {
                        // An odd number of panels: pairs of panels, then a single one.
                        q.block_store(
                            kernel,
                            &acts,
                            0..rows,
                            0..n / NR,
                            Some(&bias),
                            &dst,
                            epilogue,
                        )
                    };
                    out
                })
                .collect();
            for (kernel, out) in kernels.iter().zip(&outputs) {
                assert!(out != &residual, "{kernel:?} wrote nothing");
                assert_eq!(out, &outputs[0], "{kernel:?} against the emulation");
            }
        }
    }

    #[test]
    fn normalising_while_rounding_equals_normalising_first() {
        let (rows, k, n) = (21, 40, 19);
        let mut seed = 11;
        let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 5.0 + 2.0).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.3).collect();
        let norm = Norm {
            gamma: (0..k).map(|_| 1.0 + lcg(&mut seed) * 0.5).collect(),
            beta: (0..k).map(|_| lcg(&mut seed) * 0.1).collect(),
            eps: 1e-6,
        };
        let q = Bf16Weight::convert(&w, n, k);
        let mut normed = vec![0f32; rows * k];
        crate::engine::cpu::ops::elementwise::layer_norm(
            &x,
            &mut normed,
            &norm.gamma,
            &norm.beta,
            norm.eps,
        );
        let mut first = vec![0f32; rows * n];
        q.forward(&normed, rows, None, &mut first, Epilogue::Gelu);
        let mut fused = vec![0f32; rows * n];
        q.forward_normed(&x, rows, &norm, None, &mut fused, Epilogue::Gelu);
        assert_eq!(first, fused);
    }
}
