use super::{Epilogue, ACTIVATION_MAX, KU, MR, NR};
use crate::engine::cpu::ops::elementwise::gelu_impl;
use std::arch::x86_64::*;

/// [`super::quantize_row`] with the conversion to bytes in registers (the compiler keeps
/// Rust's saturating float-to-int casts scalar).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_row(row: &[f32], q: &mut [u8]) -> (f32, i32) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let (scale, zero) = super::row_range(row);
        let (inv, shift) = (1.0 / scale, zero as f32 + 0.5);
        let (vinv, vshift) = (_mm256_set1_ps(inv), _mm256_set1_ps(shift));
        let (floor, top) = (_mm256_setzero_ps(), _mm256_set1_ps(ACTIVATION_MAX as f32));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let convert = |p: *const f32| {
            let v = _mm256_fmadd_ps(_mm256_loadu_ps(p), vinv, vshift);
            _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, floor), top))
        };
        let full = row.len() / 32 * 32;
        for i in (0..full).step_by(32) {
            let p = row.as_ptr().add(i);
            let lo = _mm256_packs_epi32(convert(p), convert(p.add(8)));
            let hi = _mm256_packs_epi32(convert(p.add(16)), convert(p.add(24)));
            // packs/packus work per 128-bit lane; the permute restores the element order.
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi), order);
            _mm256_storeu_si256(q.as_mut_ptr().add(i) as *mut __m256i, bytes);
        }
        for (d, &v) in q[full..].iter_mut().zip(&row[full..]) {
            *d = super::level(v, inv, shift);
        }
        (scale, zero)
    }
}

/// `i32` sums of `R` rows of `a` (stride `kp`) against one packed panel `b`, two
/// registers of 8 channels per row.
#[inline(always)]
unsafe fn sums<const R: usize>(a: &[u8], kp: usize, b: &[i8]) -> [[__m256i; 2]; R] {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        debug_assert!(a.len() >= R * kp && b.len() == kp / KU * NR * KU);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for g in 0..kp / KU {
            let w0 = _mm256_loadu_si256(bp.add(g * NR * KU) as *const __m256i);
            let w1 = _mm256_loadu_si256(bp.add(g * NR * KU + 32) as *const __m256i);
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = (ap.add(i * kp + g * KU) as *const i32).read_unaligned();
                let x = _mm256_set1_epi32(x);
                let s0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones);
                let s1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones);
                acc[0] = _mm256_add_epi32(acc[0], s0);
                acc[1] = _mm256_add_epi32(acc[1], s1);
            }
        }
        acc
    }
}

/// `R` rows of `a` (stride `kp`) times one packed panel `b`, as plain integers.
#[target_feature(enable = "avx2")]
pub unsafe fn tile<const R: usize>(a: &[u8], kp: usize, b: &[i8]) -> [[i32; NR]; MR] {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let acc = sums::<R>(a, kp, b);
        let mut out = [[0i32; NR]; MR];
        for (o, acc) in out.iter_mut().zip(&acc) {
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, acc[0]);
            _mm256_storeu_si256(o.as_mut_ptr().add(8) as *mut __m256i, acc[1]);
        }
        out
    }
}

/// Where and how a tile of sums is dequantised: rows of `act_*`, the panel's 16
/// channels of the rest, `out` at the tile's first element.
pub struct Tile<'a> {
    pub act_scales: &'a [f32],
    pub act_zeros: &'a [i32],
    pub scales: &'a [f32],
    pub sums: &'a [i32],
    pub bias: Option<&'a [f32]>,
    pub out: *mut f32,
    pub out_stride: usize,
    pub epilogue: Epilogue,
}

impl<'a> Tile<'a> {
    /// The same tile restricted to its rows `r..r + m`.
    ///
    /// # Safety
    /// `r + m` must not pass the tile's rows (`out` is offset by `r` rows).
    #[inline(always)]
    pub unsafe fn rows(&self, r: usize, m: usize) -> Tile<'a> {
        // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
        // the target features it is compiled for, which the caller has detected).
        unsafe {
            Tile {
                act_scales: &self.act_scales[r..r + m],
                act_zeros: &self.act_zeros[r..r + m],
                out: self.out.add(r * self.out_stride),
                ..*self
            }
        }
    }
}

/// Every row of `t` (whole tiles of [`MR`], then the rest) against one packed panel `b`:
/// one call per panel, so that the tiles' set-up stays in registers.
///
/// # Safety
/// `a` must hold the tile's rows (stride `kp`) and `t.out` be valid for them.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn panel_store(a: &[u8], kp: usize, b: &[i8], t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let rows = t.act_scales.len();
        let mut r = 0;
        while r < rows {
            let m = (rows - r).min(MR);
            let tile = t.rows(r, m);
            for_rows!(avx2, m, tile_store(&a[r * kp..(r + m) * kp], kp, b, &tile));
            r += m;
        }
    }
}

/// [`tile`] with the dequantisation, bias and epilogue applied in registers.
///
/// # Safety
/// `t.out` must be valid for `R` rows of 16 floats at stride `t.out_stride`.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn tile_store<const R: usize>(a: &[u8], kp: usize, b: &[i8], t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let acc = sums::<R>(a, kp, b);
        let scales = [
            _mm256_loadu_ps(t.scales.as_ptr()),
            _mm256_loadu_ps(t.scales.as_ptr().add(8)),
        ];
        let sums = [
            _mm256_loadu_si256(t.sums.as_ptr() as *const __m256i),
            _mm256_loadu_si256(t.sums.as_ptr().add(8) as *const __m256i),
        ];
        let bias = match t.bias {
            Some(b) => [
                _mm256_loadu_ps(b.as_ptr()),
                _mm256_loadu_ps(b.as_ptr().add(8)),
            ],
            None => [_mm256_setzero_ps(); 2],
        };
        for (i, acc) in acc.iter().enumerate() {
            let out = t.out.add(i * t.out_stride);
            let za = _mm256_set1_epi32(t.act_zeros[i]);
            let sa = _mm256_set1_ps(t.act_scales[i]);
            // The row's 16 values are finished here, then written once: reading the destination
            // back for the GELU would wait for lines not yet in cache.
            let mut row = [0f32; NR];
            for h in 0..2 {
                let exact = _mm256_sub_epi32(acc[h], _mm256_mullo_epi32(za, sums[h]));
                let scale = _mm256_mul_ps(sa, scales[h]);
                let mut v = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(exact), bias[h]);
                if t.epilogue == Epilogue::Accumulate {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(out.add(8 * h)));
                }
                _mm256_storeu_ps(row.as_mut_ptr().add(8 * h), v);
            }
            if t.epilogue == Epilogue::Gelu {
                // Inlined here (AVX2 + FMA), this loop vectorises with no call per tile.
                gelu_impl(&mut row);
            }
            std::ptr::copy_nonoverlapping(row.as_ptr(), out, NR);
        }
    }
}
