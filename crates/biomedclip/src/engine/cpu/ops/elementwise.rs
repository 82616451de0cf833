//! Fused, vectorised elementwise kernels: bias adds, GELU, LayerNorm and softmax, each
//! compiled once per instruction set (AVX-512, AVX2+FMA, portable) by [`dispatch`] and
//! chosen at run time. `exp`/`erf` are polynomial approximations the compiler vectorises.

use rayon::prelude::*;

use super::matmul::threads;
use super::passes::in_serial_pass;

macro_rules! dispatch {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) => $imp:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                    // SAFETY: the features were just detected (AVX-512F implies AVX2 and FMA).
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the features were just detected.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// LayerNorm parameters.
pub(crate) struct Norm {
    /// Scale.
    pub gamma: Vec<f32>,
    /// Shift.
    pub beta: Vec<f32>,
    /// Epsilon.
    pub eps: f32,
}

#[inline(always)]
fn add_rows_impl(out: &mut [f32], row: &[f32]) {
    for r in out.chunks_exact_mut(row.len()) {
        for (o, b) in r.iter_mut().zip(row) {
            *o += b;
        }
    }
}

dispatch!(
    /// Adds `row` to every row of `out`.
    pub fn add_rows(out: &mut [f32], row: &[f32]) => add_rows_impl
);

/// `1.5 * 2^23`: a float `x` with `|x| < 2^22` plus this has no fraction bits left, so the
/// addition rounds `x` to the nearest integer (ties to even) and the sum's low mantissa bits
/// hold that integer. Plain arithmetic, so loops using it vectorise, where `f32::round` is a
/// libm call per value and Rust's saturating float-to-int cast a compare and a conditional move
/// per lane.
const ROUND_SHIFT: f32 = 12_582_912.0;

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2^22` (see [`ROUND_SHIFT`]).
#[inline(always)]
pub(crate) fn nearest(x: f32) -> f32 {
    (x + ROUND_SHIFT) - ROUND_SHIFT
}

/// `2^n` for a whole `n` in `-126..=127`, built from the bits of `n + ROUND_SHIFT`.
#[inline(always)]
fn pow2_int(n: f32) -> f32 {
    let n = (n + ROUND_SHIFT).to_bits() as i32 - ROUND_SHIFT.to_bits() as i32;
    f32::from_bits(((n + 127) << 23) as u32)
}

/// `exp(x)` to about 2 ulp (Cephes' `expf`), 0 below -87.
// The coefficients are Cephes' as published.
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let xc = x.clamp(-87.0, 88.0);
    let fx = (xc * LOG2E + 0.5).floor();
    let r = xc - fx * 0.693_359_4 + fx * 2.121_944_4e-4;
    let z = r * r;
    let mut y = 1.987_569_1e-4f32;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 5.000_000_1e-1;
    let y = y * z + r + 1.0;
    let pow2 = pow2_int(fx);
    if x < -87.0 {
        0.0
    } else {
        y * pow2
    }
}

/// `erf(x)` as a rational approximation on [-4, 4] (the single-precision one used by Eigen and
/// XLA), accurate to a few ulp.
#[inline(always)]
pub fn erf_approx(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p - 2.101_024e-6;
    p = x2 * p - 5.692_506_4e-5;
    p = x2 * p - 7.349_906_3e-4;
    p = x2 * p - 2.954_600_1e-3;
    p = x2 * p - 1.609_603_3e-2;
    let p = x * p;
    let mut q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    q = x2 * q - 1.682_827e-3;
    q = x2 * q - 7.373_329_2e-3;
    q = x2 * q - 1.426_473_9e-2;
    p / q
}

/// Exact (erf) GELU of one value.
#[inline(always)]
fn gelu_value(y: f32) -> f32 {
    0.5 * y * (1.0 + erf_approx(y * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
pub(crate) fn gelu_impl(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_value(*v);
    }
}

dispatch!(
    /// Exact (erf) GELU in place.
    pub fn gelu_serial(x: &mut [f32]) => gelu_impl
);

/// Whether an elementwise loop over `len` values is worth splitting across the threads.
fn split_loop(len: usize) -> bool {
    len >= 1 << 16 && threads() > 1 && !in_serial_pass()
}

/// Exact (erf) GELU in place, in parallel for large buffers.
pub fn gelu(x: &mut [f32]) {
    if split_loop(x.len()) {
        x.par_chunks_mut(1 << 14).for_each(gelu_serial);
    } else {
        gelu_serial(x);
    }
}

#[inline(always)]
fn bias_gelu_impl(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = gelu_value(*v + b);
        }
    }
}

dispatch!(
    /// `gelu(x + bias)` in place, `bias` added to each row.
    pub fn bias_gelu_serial(x: &mut [f32], bias: &[f32]) => bias_gelu_impl
);

/// `gelu(x + bias)` in place over `[rows, bias.len()]`, in parallel for large buffers.
pub fn bias_gelu(x: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    if split_loop(x.len()) {
        let rows_per_task = ((1 << 14) / n).max(1) * n;
        x.par_chunks_mut(rows_per_task)
            .for_each(|chunk| bias_gelu_serial(chunk, bias));
    } else {
        bias_gelu_serial(x, bias);
    }
}

/// Rows whose LayerNorm statistics are summed side by side.
const NORM_ROWS: usize = 8;

/// Mean and `1 / sqrt(var + eps)` of each `n`-wide row of `x` (at most [`NORM_ROWS`] rows;
/// entries past them unused). Each row is summed in order, as it would be alone, so the result
/// does not depend on its neighbours; a whole group's rows are summed side by side, so that
/// their additions overlap instead of each waiting on the one before (about 8x faster).
#[inline(always)]
fn norm_stats(x: &[f32], n: usize, eps: f32) -> [(f32, f32); NORM_ROWS] {
    let rows = x.len() / n;
    debug_assert!(rows <= NORM_ROWS);
    let mut sums = [0f32; NORM_ROWS];
    let mut squares = [0f32; NORM_ROWS];
    let mut means = [0f32; NORM_ROWS];
    if rows == NORM_ROWS {
        let r: [&[f32]; NORM_ROWS] = std::array::from_fn(|j| &x[j * n..(j + 1) * n]);
        for i in 0..n {
            for (sum, row) in sums.iter_mut().zip(&r) {
                *sum += row[i];
            }
        }
        for (mean, sum) in means.iter_mut().zip(sums) {
            *mean = sum / n as f32;
        }
        for i in 0..n {
            for ((sq, row), mean) in squares.iter_mut().zip(&r).zip(means) {
                let d = row[i] - mean;
                *sq += d * d;
            }
        }
    } else {
        for (j, row) in x.chunks_exact(n).enumerate() {
            means[j] = row.iter().fold(0.0, |a, v| a + v) / n as f32;
            squares[j] = row
                .iter()
                .fold(0.0, |a, v| a + (v - means[j]) * (v - means[j]));
        }
    }
    std::array::from_fn(|j| (means[j], 1.0 / (squares[j] / n as f32 + eps).sqrt()))
}

#[inline(always)]
fn layer_norm_impl(x: &[f32], out: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = gamma.len();
    for (xg, og) in x.chunks(NORM_ROWS * n).zip(out.chunks_mut(NORM_ROWS * n)) {
        let stats = norm_stats(xg, n, eps);
        for ((xr, or), (mean, inv)) in xg.chunks_exact(n).zip(og.chunks_exact_mut(n)).zip(stats) {
            for (((o, v), g), b) in or.iter_mut().zip(xr).zip(gamma).zip(beta) {
                *o = (v - mean) * inv * g + b;
            }
        }
    }
}

#[inline(always)]
fn layer_norm_inplace_impl(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = gamma.len();
    for group in x.chunks_mut(NORM_ROWS * n) {
        let stats = norm_stats(group, n, eps);
        for (row, (mean, inv)) in group.chunks_exact_mut(n).zip(stats) {
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

dispatch!(
    /// LayerNorm of each `gamma.len()`-wide row of `x` into `out`.
    pub fn layer_norm_serial(x: &[f32], out: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => layer_norm_impl
);

dispatch!(
    /// LayerNorm of each `gamma.len()`-wide row of `x`, in place.
    pub fn layer_norm_inplace_serial(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => layer_norm_inplace_impl
);

/// Rows per task of a parallel LayerNorm: whole groups of [`NORM_ROWS`], about 4,096 values.
fn norm_task(n: usize) -> usize {
    (4096 / n).max(1).next_multiple_of(NORM_ROWS) * n
}

/// LayerNorm over rows, in parallel.
pub fn layer_norm(x: &[f32], out: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    if in_serial_pass() {
        return layer_norm_serial(x, out, gamma, beta, eps);
    }
    let rows_per_task = norm_task(gamma.len());
    x.par_chunks(rows_per_task)
        .zip(out.par_chunks_mut(rows_per_task))
        .for_each(|(x, o)| layer_norm_serial(x, o, gamma, beta, eps));
}

/// LayerNorm in place.
pub fn layer_norm_inplace(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    if in_serial_pass() {
        return layer_norm_inplace_serial(x, gamma, beta, eps);
    }
    x.par_chunks_mut(norm_task(gamma.len()))
        .for_each(|chunk| layer_norm_inplace_serial(chunk, gamma, beta, eps));
}

/// Reduces `x` with `f` in 8 independent lanes, so that the loop vectorises (a single running
/// value would chain every step on the previous one).
#[inline(always)]
pub(crate) fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = f(*a, *v);
        }
    }
    let tail = rest.iter().fold(init, |a, &v| f(a, v));
    acc.iter().fold(tail, |a, &v| f(a, v))
}

/// Rows of a softmax whose sums run side by side.
const SUM_ROWS: usize = 8;

#[inline(always)]
fn softmax_impl(s: &mut [f32], n: usize, mask: &[f32]) {
    for group in s.chunks_mut(SUM_ROWS * n) {
        for row in group.chunks_exact_mut(n) {
            if !mask.is_empty() {
                for (v, m) in row.iter_mut().zip(mask) {
                    *v += m;
                }
            }
            let max = lanes(row, f32::NEG_INFINITY, f32::max);
            for v in row.iter_mut() {
                *v = exp_approx(*v - max);
            }
        }
        // Each row is summed in order, not in lanes: one ulp here moved a near-tie in the
        // retrieval fixture's ranking away from the reference's. Summing the rows of a group
        // side by side keeps that order while their additions overlap instead of each waiting
        // on the one before.
        let mut sums = [0f32; SUM_ROWS];
        if group.len() == SUM_ROWS * n {
            let rows: [&[f32]; SUM_ROWS] = std::array::from_fn(|r| &group[r * n..(r + 1) * n]);
            for i in 0..n {
                for (sum, row) in sums.iter_mut().zip(&rows) {
                    *sum += row[i];
                }
            }
        } else {
            for (sum, row) in sums.iter_mut().zip(group.chunks_exact(n)) {
                *sum = row.iter().fold(0.0, |a, v| a + v);
            }
        }
        for (row, sum) in group.chunks_exact_mut(n).zip(sums) {
            let inv = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

dispatch!(
    /// Adds `mask` (empty: none) to each `n`-wide row of `s`, then applies softmax in place.
    pub fn softmax_rows(s: &mut [f32], n: usize, mask: &[f32]) => softmax_impl
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_exp_are_accurate() {
        let mut worst_erf = 0f64;
        let mut worst_exp = 0f64;
        for i in -5000..=5000 {
            let x = i as f32 / 1000.0;
            let e = erf_approx(x) as f64;
            worst_erf = worst_erf.max((e - libm_erf(x as f64)).abs());
            let y = (x * 17.0) as f64;
            let rel = ((exp_approx(y as f32) as f64) - y.exp()).abs() / y.exp();
            worst_exp = worst_exp.max(rel);
        }
        assert!(worst_erf < 5e-7, "erf error {worst_erf}");
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
        assert_eq!(exp_approx(-1e30), 0.0);
    }

    /// erf by its Taylor series / continued fraction in f64, for checking only.
    fn libm_erf(x: f64) -> f64 {
        // Abramowitz-Stegun 7.1.5 series converges for all x at f64 with enough terms.
        if x.abs() > 4.0 {
            return x.signum() * (1.0 - erfc_cf(x.abs()));
        }
        let mut sum = 0.0f64;
        let mut term = x;
        let mut n = 0.0f64;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn erfc_cf(x: f64) -> f64 {
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = k as f64 / 2.0 / (x + f);
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + f)
    }

    #[test]
    fn nearest_rounds_ties_to_even() {
        for i in -2600..=2600 {
            let x = i as f32 / 20.0;
            assert_eq!(nearest(x), x.round_ties_even(), "{x}");
        }
        assert_eq!(
            (nearest(2.5), nearest(-3.5), nearest(0.49)),
            (2.0, -4.0, 0.0)
        );
    }

    #[test]
    fn whole_powers_of_two_are_exact() {
        for n in -126..=127 {
            assert_eq!(pow2_int(n as f32), 2f32.powi(n), "2^{n}");
        }
    }

    #[test]
    fn softmax_sums_each_row_in_order() {
        // Against the plain in-order sum, bit for bit, for whole and partial groups of rows.
        let n = 37;
        for rows in [1, SUM_ROWS - 1, SUM_ROWS, 2 * SUM_ROWS + 3] {
            let mut s: Vec<f32> = (0..rows * n)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 97.0)
                .collect();
            let mut want = s.clone();
            for row in want.chunks_exact_mut(n) {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                row.iter_mut().for_each(|v| *v = exp_approx(*v - max));
                let inv = 1.0 / row.iter().fold(0.0, |a, v| a + v);
                row.iter_mut().for_each(|v| *v *= inv);
            }
            softmax_rows(&mut s, n, &[]);
            assert_eq!(s, want, "{rows} rows");
        }
    }

    #[test]
    fn layer_norm_sums_each_row_in_order() {
        // Against the plain in-order LayerNorm of each row alone, bit for bit, for whole and
        // partial groups, in place and not, serial and parallel.
        let n = 37;
        let gamma: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / 40.0).collect();
        let beta: Vec<f32> = (0..n).map(|i| (i as f32 - 18.0) / 25.0).collect();
        for rows in [1, NORM_ROWS - 1, NORM_ROWS, 2 * NORM_ROWS + 3, 300] {
            let x: Vec<f32> = (0..rows * n)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 97.0)
                .collect();
            let mut want = x.clone();
            for row in want.chunks_exact_mut(n) {
                let mean = row.iter().fold(0.0, |a, v| a + v) / n as f32;
                let var = row.iter().fold(0.0, |a, v| a + (v - mean) * (v - mean)) / n as f32;
                let inv = 1.0 / (var + 1e-6).sqrt();
                for ((v, g), b) in row.iter_mut().zip(&gamma).zip(&beta) {
                    *v = (*v - mean) * inv * g + b;
                }
            }
            let mut out = vec![0f32; x.len()];
            layer_norm_serial(&x, &mut out, &gamma, &beta, 1e-6);
            assert_eq!(out, want, "{rows} rows");
            layer_norm(&x, &mut out, &gamma, &beta, 1e-6);
            assert_eq!(out, want, "{rows} rows, parallel");
            let mut inplace = x.clone();
            layer_norm_inplace(&mut inplace, &gamma, &beta, 1e-6);
            assert_eq!(inplace, want, "{rows} rows, in place");
        }
    }
}
