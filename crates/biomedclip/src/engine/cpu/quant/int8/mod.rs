//! Int8 linear layers for `--precision int8`: weights quantized once per output channel,
//! activations quantized per row (token) on the fly, products accumulated exactly in `i32`.
//!
//! Written by hand because neither `gemm` nor candle has an integer product. On x86-64 with
//! AVX-512 VNNI the inner loop is one `vpdpbusd` per row and 4 inputs (`int8/vnni.rs`); with
//! AVX2 it is `vpmaddubsw` (unsigned activation bytes times signed weight bytes, adjacent
//! pairs summed to `i16`) then `vpmaddwd` against ones (pairs of `i16` to `i32`): 32
//! multiply-adds per instruction pair against 8 for an `f32` FMA. A portable loop computes
//! the same integers elsewhere; every kernel gives the same outputs, bit for bit.
//!
//! Ranges: weights use `-127..=127`; activations use `0..=127` (asymmetric, with a zero point,
//! so skewed rows such as GELU outputs keep their resolution), so that a pair sum
//! `2 * 127 * 127 = 32258` never saturates `vpmaddubsw`'s `i16`: both paths give identical
//! integers. (Of the two ways to stay below `i16::MAX`, 8-bit activations with 7-bit weights
//! measured worse: on the full-size ViT-B/16 the worst image-embedding cosine to `f32` was
//! 0.99919 against 0.99958 for this split.) Dequantisation: `x ~ sa * (qa - za)`, `w ~ sw * qw`, so
//! `x . w ~ sa * sw * (qa . qw - za * sum(qw))`, with `sum(qw)` precomputed per channel.

use rayon::prelude::*;

use crate::engine::cpu::ops::elementwise::Norm;
use crate::engine::cpu::ops::elementwise::{gelu_serial, lanes, nearest};
use crate::engine::cpu::ops::matmul::Epilogue;
use crate::engine::cpu::ops::panels::{convert_rows, for_each_block, padded, SharedOut};

#[cfg(target_arch = "x86_64")]
mod vnni;

/// Largest weight magnitude after quantization.
pub const WEIGHT_MAX: i32 = 127;
/// Largest activation level (levels run from 0).
pub const ACTIVATION_MAX: i32 = 127;
const _: () = assert!(2 * WEIGHT_MAX * ACTIVATION_MAX <= i16::MAX as i32);

/// Output columns per packed weight panel (two AVX2 registers of `i32`).
const NR: usize = 16;
/// Rows per micro-kernel tile.
const MR: usize = 4;
/// Products of 4 consecutive inputs are summed per lane, so the input dimension is padded to 4.
const KU: usize = 4;

/// A `[out, in]` weight quantized to `i8` per output channel and packed in panels of
/// [`NR`] channels: panel `p`, input group `g` (4 inputs), channel `c`, input `t` at
/// `((p * groups + g) * NR + c) * 4 + t`.
pub struct Int8Weight {
    packed: Vec<i8>,
    /// Per-channel scale (padded channels: 0).
    scales: Vec<f32>,
    /// Per-channel sum of the quantized weights (for the activation zero point).
    sums: Vec<i32>,
    in_dim: usize,
    out_dim: usize,
}

impl Int8Weight {
    /// Quantizes a row-major `[out_dim, in_dim]` weight (channels in parallel).
    pub fn quantize(weight: &[f32], out_dim: usize, in_dim: usize) -> Int8Weight {
        assert_eq!(weight.len(), out_dim * in_dim, "weight shape");
        let (kp, np) = (padded(in_dim, KU), padded(out_dim, NR));
        let groups = kp / KU;
        let channels: Vec<(f32, i32, Vec<i8>)> = weight
            .par_chunks_exact(in_dim)
            .map(quantize_channel)
            .collect();
        let mut packed = vec![0i8; np * kp];
        let mut scales = vec![0f32; np];
        let mut sums = vec![0i32; np];
        for (c, (scale, sum, q)) in channels.into_iter().enumerate() {
            (scales[c], sums[c]) = (scale, sum);
            let (p, cc) = (c / NR, c % NR);
            for (g, group) in q.chunks(KU).enumerate() {
                let at = ((p * groups + g) * NR + cc) * KU;
                packed[at..at + group.len()].copy_from_slice(group);
            }
        }
        Int8Weight {
            packed,
            scales,
            sums,
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
        self.quantized_product(x, rows, None, bias, out, epilogue);
    }

    /// [`Int8Weight::forward`] of `LayerNorm(x)`: each row is normalised and quantized in one
    /// step, without writing the normalised floats out and reading them back.
    pub fn forward_normed(
        &self,
        x: &[f32],
        rows: usize,
        norm: &Norm,
        bias: Option<&[f32]>,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        self.quantized_product(x, rows, Some(norm), bias, out, epilogue);
    }

    /// Quantizes the rows of `x` (normalised first when `norm` is given), multiplies them by
    /// this weight and dequantises the sums into `out` by `epilogue`.
    fn quantized_product(
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
        let kp = padded(k, KU);
        let acts = QuantizedRows::new(&x[..rows * k], rows, k, kp, norm);
        // Tasks: blocks of rows whose activation bytes stay in L2, times groups of panels.
        let row_block = ((160 * 1024 / kp) / MR * MR).clamp(MR, 256);
        let dst = SharedOut(out.as_mut_ptr());
        let kernel = Kernel::detect();
        for_each_block(rows, row_block, padded(n, NR) / NR, |rows, panels| {
            for p in panels {
                // SAFETY: tasks cover disjoint (row, column) ranges of `out`, which outlives
                // the loop.
                unsafe { kernel.panel_store(&acts, rows.clone(), self, p, bias, &dst, epilogue) };
            }
        });
    }

    /// The packed weights of panel `p`.
    fn panel(&self, p: usize) -> &[i8] {
        let len = padded(self.in_dim, KU) * NR;
        &self.packed[p * len..(p + 1) * len]
    }

    /// Dequantises a tile of `i32` sums into `out` rows `r..`, columns of panel `p`.
    ///
    /// # Safety
    /// `dst` must address `[rows, out_dim]` floats that no other thread touches in this tile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn store(
        &self,
        acc: &[[i32; NR]],
        acts: &QuantizedRows,
        r: usize,
        p: usize,
        bias: Option<&[f32]>,
        dst: &SharedOut,
        epilogue: Epilogue,
    ) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
        // the target features it is compiled for, which the caller has detected).
        unsafe {
            let n = self.out_dim;
            let c0 = p * NR;
            let width = (n - c0).min(NR);
            for (i, sums) in acc.iter().enumerate() {
                let row = r + i;
                let (sa, za) = (acts.scales[row], acts.zero_points[row]);
                let mut vals = [0f32; NR];
                for (j, v) in vals.iter_mut().enumerate().take(width) {
                    let c = c0 + j;
                    let exact = sums[j] - za * self.sums[c];
                    // Fused, as the vector kernels do, so that every path gives the same bits.
                    *v = (sa * self.scales[c]).mul_add(exact as f32, bias.map_or(0.0, |b| b[c]));
                }
                let out = std::slice::from_raw_parts_mut(dst.0.add(row * n + c0), width);
                match epilogue {
                    Epilogue::Overwrite => out.copy_from_slice(&vals[..width]),
                    Epilogue::Accumulate => {
                        for (o, v) in out.iter_mut().zip(&vals) {
                            *o += v;
                        }
                    }
                    Epilogue::Gelu => {
                        gelu_serial(&mut vals[..width]);
                        out.copy_from_slice(&vals[..width]);
                    }
                }
            }
        }
    }
}

/// One output channel's weights: (scale, sum of levels, levels in `-WEIGHT_MAX..=WEIGHT_MAX`).
fn quantize_channel(row: &[f32]) -> (f32, i32, Vec<i8>) {
    let max = lanes(row, 0.0, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 {
        max / WEIGHT_MAX as f32
    } else {
        1.0
    };
    let inv = 1.0 / scale;
    let q: Vec<i8> = row
        .iter()
        .map(|&v| nearest((v * inv).clamp(-WEIGHT_MAX as f32, WEIGHT_MAX as f32)) as i8)
        .collect();
    (scale, q.iter().map(|&v| v as i32).sum(), q)
}

/// Rows of activations quantized to `u8` with a per-row scale and zero point.
struct QuantizedRows {
    /// `[rows, padded in]`, padding zero.
    data: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    stride: usize,
}

impl QuantizedRows {
    /// The bytes of rows `r..r + m`.
    fn rows(&self, r: usize, m: usize) -> &[u8] {
        &self.data[r * self.stride..(r + m) * self.stride]
    }

    /// Quantizes `rows` rows of `k` floats (after a LayerNorm when `norm` is given) into
    /// rows of `kp` bytes.
    fn new(x: &[f32], rows: usize, k: usize, kp: usize, norm: Option<&Norm>) -> QuantizedRows {
        let (data, params) = convert_rows(x, rows, k, kp, norm, quantize_row);
        let (scales, zero_points) = params.into_iter().unzip();
        QuantizedRows {
            data,
            scales,
            zero_points,
            stride: kp,
        }
    }
}

/// Asymmetric quantization of one row to `0..=ACTIVATION_MAX`: returns (scale, zero point).
fn quantize_row(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected.
        return unsafe { avx2::quantize_row(row, q) };
    }
    let (scale, zero) = row_range(row);
    let (inv, shift) = (1.0 / scale, zero as f32 + 0.5);
    for (d, &v) in q.iter_mut().zip(row) {
        *d = level(v, inv, shift);
    }
    (scale, zero)
}

/// The scale and zero point of a row; the range always holds 0 so that 0 is a level.
#[inline(always)]
fn row_range(row: &[f32]) -> (f32, i32) {
    let lo = lanes(row, 0.0, f32::min);
    let hi = lanes(row, 0.0, f32::max);
    let levels = ACTIVATION_MAX as f32;
    let scale = if hi > lo { (hi - lo) / levels } else { 1.0 };
    (scale, (-lo / scale).round().clamp(0.0, levels) as i32)
}

/// One value's level: values are >= -0.5 after the shift (zero point + 0.5), so truncating
/// rounds to nearest, halves up. Fused like the AVX2 path, so both give the same bytes.
#[inline(always)]
fn level(v: f32, inv: f32, shift: f32) -> u8 {
    v.mul_add(inv, shift).clamp(0.0, ACTIVATION_MAX as f32) as u8
}

/// Calls `$module::$kernel::<R>(args)` with the const `R` equal to the row count `$m`
/// (1..=MR), so that each tile height gets its own fully unrolled kernel.
#[cfg(target_arch = "x86_64")]
macro_rules! for_rows {
    ($module:ident, $m:expr, $kernel:ident($($arg:expr),*)) => {
        match $m {
            4 => $crate::engine::cpu::quant::int8::$module::$kernel::<4>($($arg),*),
            3 => $crate::engine::cpu::quant::int8::$module::$kernel::<3>($($arg),*),
            2 => $crate::engine::cpu::quant::int8::$module::$kernel::<2>($($arg),*),
            _ => $crate::engine::cpu::quant::int8::$module::$kernel::<1>($($arg),*),
        }
    };
}
const _: () = assert!(MR == 4, "for_rows! covers 1 to 4 rows");

/// The integer product kernel chosen for this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Kernel {
    /// The kernels this CPU runs, fastest last.
    fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                kernels.push(Kernel::Avx2);
            }
            if vnni::available() {
                kernels.push(Kernel::Vnni);
            }
        }
        kernels
    }

    /// The fastest kernel this CPU runs, or the one `BIOMEDCLIP_INT8_KERNEL` names
    /// (`portable`, `avx2`; for testing that they agree), decided once per process.
    fn detect() -> Kernel {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let available = Kernel::available();
            let named = std::env::var("BIOMEDCLIP_INT8_KERNEL").ok();
            available
                .iter()
                .rev()
                .find(|k| named.as_deref().is_none_or(|n| k.name() == n))
                .or(available.last())
                .copied()
                .unwrap_or(Kernel::Portable)
        })
    }

    /// The kernel's name in `BIOMEDCLIP_INT8_KERNEL`.
    fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => "vnni",
        }
    }

    /// `i32` sums of rows `r..r + m` (m <= MR) against panel `p`.
    fn tile(
        self,
        acts: &QuantizedRows,
        r: usize,
        m: usize,
        w: &Int8Weight,
        p: usize,
    ) -> [[i32; NR]; MR] {
        let (kp, a, b) = (acts.stride, acts.rows(r, m), w.panel(p));
        match self {
            Kernel::Portable => tile_portable(a, kp, m, b),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 was detected; `a` holds m rows of kp bytes and `b` one panel.
            Kernel::Avx2 => unsafe { for_rows!(avx2, m, tile(a, kp, b)) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX-512 VNNI.
            Kernel::Vnni => unsafe { for_rows!(vnni, m, tile(a, kp, b)) },
        }
    }

    /// Rows `rows` against panel `p`, dequantised into `dst` by `epilogue`.
    ///
    /// # Safety
    /// As [`Int8Weight::store`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel_store(
        self,
        acts: &QuantizedRows,
        rows: std::ops::Range<usize>,
        w: &Int8Weight,
        p: usize,
        bias: Option<&[f32]>,
        dst: &SharedOut,
        epilogue: Epilogue,
    ) {
        // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
        // the target features it is compiled for, which the caller has detected).
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if self != Kernel::Portable {
                let c0 = p * NR;
                if c0 + NR <= w.out_dim {
                    let (r, m) = (rows.start, rows.len());
                    let tile = avx2::Tile {
                        act_scales: &acts.scales[rows.clone()],
                        act_zeros: &acts.zero_points[rows],
                        scales: &w.scales[c0..c0 + NR],
                        sums: &w.sums[c0..c0 + NR],
                        bias: bias.map(|b| &b[c0..c0 + NR]),
                        out: dst.0.add(r * w.out_dim + c0),
                        out_stride: w.out_dim,
                        epilogue,
                    };
                    let (a, b) = (acts.rows(r, m), w.panel(p));
                    match self {
                        Kernel::Vnni => vnni::panel_store(a, acts.stride, b, &tile),
                        _ => avx2::panel_store(a, acts.stride, b, &tile),
                    }
                    return;
                }
            }
            let mut r = rows.start;
            while r < rows.end {
                let m = (rows.end - r).min(MR);
                let acc = self.tile(acts, r, m, w, p);
                w.store(&acc[..m], acts, r, p, bias, dst, epilogue);
                r += m;
            }
        }
    }
}

fn tile_portable(a: &[u8], kp: usize, m: usize, b: &[i8]) -> [[i32; NR]; MR] {
    let mut acc = [[0i32; NR]; MR];
    for (i, row) in a.chunks_exact(kp).take(m).enumerate() {
        for (group, wg) in row.chunks_exact(KU).zip(b.chunks_exact(NR * KU)) {
            for (c, wc) in wg.chunks_exact(KU).enumerate() {
                acc[i][c] += group
                    .iter()
                    .zip(wc)
                    .map(|(&x, &w)| x as i32 * w as i32)
                    .sum::<i32>();
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::ops::test_support::{epilogue_cases, lcg, max_abs_diff, reference};

    #[test]
    fn int8_product_is_close_and_kernels_agree() {
        // Odd sizes exercise the padded inputs, channels and rows.
        let (rows, k, n) = (37, 75, 41);
        let mut seed = 7;
        let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 3.0 + 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.2).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let q = Int8Weight::quantize(&w, n, k);
        let want = reference(&x, &w, &bias, rows, k, n);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let residual: Vec<f32> = (0..rows * n).map(|_| lcg(&mut seed)).collect();
        for (epilogue, mut out, expected) in epilogue_cases(&want, &residual) {
            q.forward(&x, rows, Some(&bias), &mut out, epilogue);
            let err = max_abs_diff(&out, &expected);
            assert!(err < 0.02 * scale, "max error {err} against scale {scale}");
        }

        let acts = QuantizedRows::new(&x, rows, k, padded(k, KU), None);
        for kernel in Kernel::available() {
            for p in 0..padded(n, NR) / NR {
                for r in (0..rows).step_by(MR) {
                    let m = (rows - r).min(MR);
                    let portable = Kernel::Portable.tile(&acts, r, m, &q, p);
                    let sums = kernel.tile(&acts, r, m, &q, p);
                    assert_eq!(
                        portable[..m],
                        sums[..m],
                        "{kernel:?}: panel {p}, rows {r}.."
                    );
                }
            }
        }
    }

    #[test]
    fn every_kernel_gives_the_same_outputs() {
        // Rows past a tile of every kernel, a partial last panel, every epilogue.
        let (rows, k, n) = (29, 132, 40);
        let mut seed = 5;
        let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 2.0 - 0.3).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.1).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let residual: Vec<f32> = (0..rows * n).map(|_| lcg(&mut seed)).collect();
        let q = Int8Weight::quantize(&w, n, k);
        let acts = QuantizedRows::new(&x, rows, k, padded(k, KU), None);
        let kernels = Kernel::available();
        eprintln!("int8 kernels on this CPU: {kernels:?}");
        for epilogue in [Epilogue::Overwrite, Epilogue::Accumulate, Epilogue::Gelu] {
            let outputs: Vec<Vec<f32>> = kernels
                .iter()
                .map(|kernel| {
                    let mut out = residual.clone();
                    let dst = SharedOut(out.as_mut_ptr());
                    for p in 0..padded(n, NR) / NR {
                        // SAFETY: `out` holds rows x n floats; one panel at a time.
                        unsafe {
                            kernel.panel_store(&acts, 0..rows, &q, p, Some(&bias), &dst, epilogue)
                        };
                    }
                    out
                })
                .collect();
            for (kernel, out) in kernels.iter().zip(&outputs) {
                assert!(out != &residual, "{kernel:?} wrote nothing");
                assert_eq!(out, &outputs[0], "{kernel:?} against the portable loop");
            }
        }
    }

    #[test]
    fn normalising_while_quantizing_equals_normalising_first() {
        let (rows, k, n) = (21, 40, 19);
        let mut seed = 11;
        let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 5.0 + 2.0).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.3).collect();
        let norm = Norm {
            gamma: (0..k).map(|_| 1.0 + lcg(&mut seed) * 0.5).collect(),
            beta: (0..k).map(|_| lcg(&mut seed) * 0.1).collect(),
            eps: 1e-6,
        };
        let q = Int8Weight::quantize(&w, n, k);
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

    #[test]
    fn row_quantization_is_the_same_on_every_path() {
        let mut seed = 3;
        for len in [1, 31, 32, 75, 768] {
            let row: Vec<f32> = (0..len).map(|_| lcg(&mut seed) * 4.0 + 1.0).collect();
            let (scale, zero) = row_range(&row);
            let portable: Vec<u8> = row
                .iter()
                .map(|&v| level(v, 1.0 / scale, zero as f32 + 0.5))
                .collect();
            let mut q = vec![0u8; len];
            assert_eq!(quantize_row(&row, &mut q), (scale, zero));
            assert_eq!(q, portable, "length {len}");
            for (&v, &l) in row.iter().zip(&q) {
                let back = scale * (l as i32 - zero) as f32;
                assert!((back - v).abs() <= 0.5001 * scale, "{v} -> {l} -> {back}");
            }
        }
    }

    #[test]
    fn extreme_levels_do_not_saturate() {
        // Every activation and weight at its largest level: the pair sums are at their largest.
        let k = 64;
        let x = vec![1.0f32; k];
        let w: Vec<f32> = (0..NR * k)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let q = Int8Weight::quantize(&w, NR, k);
        let acts = QuantizedRows::new(&x, 1, k, k, None);
        assert_eq!(acts.data[0], ACTIVATION_MAX as u8);
        let all_positive = Int8Weight::quantize(&vec![1.0f32; NR * k], NR, k);
        let got = Kernel::detect().tile(&acts, 0, 1, &all_positive, 0);
        assert_eq!(got[0], [ACTIVATION_MAX * WEIGHT_MAX * k as i32; NR]);
        let got = Kernel::detect().tile(&acts, 0, 1, &q, 0);
        assert_eq!(got[0], Kernel::Portable.tile(&acts, 0, 1, &q, 0)[0]);
    }
}
