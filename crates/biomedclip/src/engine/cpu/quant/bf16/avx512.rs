//! The bf16 product on AVX512_BF16 (Intel since Cooper Lake, AMD since Zen 4): `vdpbf16ps`
//! multiplies 16 pairs of bf16 inputs by 16 pairs of weights and adds both products of each
//! pair into one of 16 `f32` lanes. One pair of a packed panel (16 channels times 2 inputs,
//! see [`super::Bf16Weight`]) is one 512-bit register; each row broadcasts its pair.

use std::arch::x86_64::*;

use super::{Tile, KU, NR};
use crate::engine::cpu::ops::panels::{for_rows, store16};

/// Panels per tile where the row's panels allow: each row's broadcast input pair then serves
/// two panels, which on Zen 4 runs 1.3x faster than one panel of 12 rows at a time (three
/// panels of 8 rows or four of 6 measured the same as two).
pub const WIDE: usize = 2;
/// Rows per tile: 12 rows times 2 panels keep 24 sums in registers, with room for the two
/// panels' weights and the broadcast input.
const ROWS: usize = 12;

/// Whether this CPU has the instructions.
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512bf16")
}

/// Every row of `t` ([`ROWS`] at a time, then the rest) against its 1 or [`WIDE`] full panels.
///
/// # Safety
/// The CPU must have the instructions ([`available`]); `t.out` must be valid for the tile's
/// rows and `t.width` columns, a multiple of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub unsafe fn panel_store(t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        debug_assert!(t.width == NR || t.width == WIDE * NR);
        let rows = t.rows();
        let mut r = 0;
        while r < rows {
            let m = (rows - r).min(ROWS);
            if t.width == NR {
                for_rows!(m, tile_store, [1], (t, r));
            } else {
                for_rows!(m, tile_store, [WIDE], (t, r));
            }
            r += m;
        }
    }
}
const _: () = assert!(ROWS <= super::MAX_ROWS);

/// Rows `r..r + R` of `t` against its `P` panels: sums started at the bias, one `vdpbf16ps`
/// per row, panel and input pair, then the epilogue in registers.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
#[inline]
unsafe fn tile_store<const R: usize, const P: usize>(t: &Tile, r: usize) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let kp = t.row_len;
        let panel = kp * NR;
        debug_assert!(t.a.len() >= (r + R) * kp && t.b.len() == P * panel);
        let mut init = [_mm512_setzero_ps(); P];
        if let Some(b) = t.bias {
            for (j, v) in init.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b.as_ptr().add(j * NR));
            }
        }
        let mut acc = [init; R];
        let (ap, bp) = (t.a.as_ptr().add(r * kp), t.b.as_ptr());
        for g in 0..kp / KU {
            let w: [__m512bh; P] = std::array::from_fn(|j| {
                std::mem::transmute(_mm512_loadu_si512(bp.add(j * panel + g * NR * KU).cast()))
            });
            for (i, sums) in acc.iter_mut().enumerate() {
                let pair = (ap.add(i * kp + g * KU) as *const i32).read_unaligned();
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for (s, &w) in sums.iter_mut().zip(&w) {
                    *s = _mm512_dpbf16_ps(*s, x, w);
                }
            }
        }
        for (i, sums) in acc.iter().enumerate() {
            for (j, &v) in sums.iter().enumerate() {
                store16(
                    t.out.add((r + i) * t.out_stride + j * NR),
                    v,
                    t.epilogue,
                    !0,
                );
            }
        }
    }
}
