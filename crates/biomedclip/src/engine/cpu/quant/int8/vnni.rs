//! The integer product on AVX-512 VNNI (Intel since Cascade Lake, AMD since Zen 4):
//! `vpdpbusd` multiplies 64 unsigned activation bytes by 64 signed weight bytes and adds each
//! group of four products into one of 16 `i32` lanes, exactly. One group of a packed panel
//! (16 channels times 4 inputs, see [`super::Int8Weight`]) is one 512-bit register, so each
//! row takes one instruction per 4 inputs where the AVX2 kernel takes six. The sums are the
//! same integers as on the other kernels (no pair is saturated to `i16` on any of them), and
//! the dequantisation does the same float operations, so the outputs are the same bits.

use std::arch::x86_64::*;

use super::avx2::Tile;
use super::{KU, MR, NR};
use crate::engine::cpu::ops::panels::store16;

/// Rows per tile: eight accumulators keep `vpdpbusd`'s latency hidden while the panel's
/// group is loaded once per eight rows.
pub const ROWS: usize = 8;

/// Whether this CPU has the instructions.
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// `i32` sums of `R` rows of `a` (stride `kp`) against one packed panel `b`.
#[inline(always)]
unsafe fn sums<const R: usize>(a: &[u8], kp: usize, b: &[i8]) -> [__m512i; R] {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        debug_assert!(a.len() >= R * kp && b.len() == kp / KU * NR * KU);
        let mut acc = [_mm512_setzero_si512(); R];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for g in 0..kp / KU {
            let w = _mm512_loadu_si512(bp.add(g * NR * KU).cast());
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = (ap.add(i * kp + g * KU) as *const i32).read_unaligned();
                *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(x), w);
            }
        }
        acc
    }
}

/// `R` rows (at most [`MR`]) of `a` (stride `kp`) times one packed panel `b`, as plain
/// integers.
///
/// # Safety
/// The CPU must have the instructions ([`available`]); `a` must hold `R` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn tile<const R: usize>(a: &[u8], kp: usize, b: &[i8]) -> [[i32; NR]; MR] {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let acc = sums::<R>(a, kp, b);
        let mut out = [[0i32; NR]; MR];
        for (o, acc) in out.iter_mut().zip(&acc) {
            _mm512_storeu_si512(o.as_mut_ptr().cast(), *acc);
        }
        out
    }
}

/// Every row of `t` ([`ROWS`] at a time, then the rest) against one packed panel `b`.
///
/// # Safety
/// The CPU must have the instructions ([`available`]); `a` must hold the tile's rows
/// (stride `kp`) and `t.out` be valid for them.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub unsafe fn panel_store(a: &[u8], kp: usize, b: &[i8], t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let rows = t.act_scales.len();
        let mut r = 0;
        while r < rows {
            let m = (rows - r).min(ROWS);
            let tile = t.rows(r, m);
            let a = &a[r * kp..(r + m) * kp];
            match m {
                8 => tile_store::<8>(a, kp, b, &tile),
                7 => tile_store::<7>(a, kp, b, &tile),
                6 => tile_store::<6>(a, kp, b, &tile),
                5 => tile_store::<5>(a, kp, b, &tile),
                4 => tile_store::<4>(a, kp, b, &tile),
                3 => tile_store::<3>(a, kp, b, &tile),
                2 => tile_store::<2>(a, kp, b, &tile),
                _ => tile_store::<1>(a, kp, b, &tile),
            }
            r += m;
        }
    }
}
const _: () = assert!(ROWS == 8, "panel_store covers 1 to 8 rows");

/// [`tile`] with the dequantisation, bias and epilogue applied in registers, the same float
/// operations in the same order as the AVX2 kernel's.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
#[inline]
unsafe fn tile_store<const R: usize>(a: &[u8], kp: usize, b: &[i8], t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let acc = sums::<R>(a, kp, b);
        let scales = _mm512_loadu_ps(t.scales.as_ptr());
        let sums = _mm512_loadu_si512(t.sums.as_ptr().cast());
        let bias = t
            .bias
            .map_or(_mm512_setzero_ps(), |b| _mm512_loadu_ps(b.as_ptr()));
        for (i, acc) in acc.iter().enumerate() {
            let out = t.out.add(i * t.out_stride);
            let za = _mm512_set1_epi32(t.act_zeros[i]);
            let exact = _mm512_sub_epi32(*acc, _mm512_mullo_epi32(za, sums));
            let scale = _mm512_mul_ps(_mm512_set1_ps(t.act_scales[i]), scales);
            let v = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(exact), bias);
            store16(out, v, t.epilogue, !0);
        }
    }
}
