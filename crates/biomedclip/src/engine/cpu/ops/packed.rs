//! `f32` linear layers with weights packed once at load, on AVX-512: the transformer blocks'
//! products without any per-call packing.
//!
//! Written by hand because a BLAS call packs both operands on every call (OpenBLAS: 5% of the
//! image tower's time at batch 8 and 11% of the text tower's on Zen 4), while a layer's weights
//! never change. Here each weight is packed at load into panels of 16 output channels, one
//! 512-bit register per input, and one broadcast per row and input serves two panels: tiles of
//! 12 rows by 32 channels keep 24 sums in registers. The rows of a tile are first interleaved
//! (input by input, the tile's 12 values side by side), so that the kernel reads them as one
//! stream instead of twelve. Sums run over the inputs in order, starting at the bias; the
//! residual is added after. Where the CPU has no AVX-512 the float weights stay as they are and
//! the BLAS path runs instead.

use std::arch::x86_64::*;
use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use crate::engine::cpu::ops::matmul::Epilogue;
use crate::engine::cpu::ops::panels::{
    self, for_each_prepared_block, for_rows, padded, store16, SharedOut,
};

/// Output channels per panel (one register of sums).
const NR: usize = 16;
/// Panels per tile.
const WIDE: usize = 2;
/// Rows per tile.
const ROWS: usize = 12;

/// Whether this CPU runs the packed kernel (and `BIOMEDCLIP_F32_KERNEL` does not ask for BLAS,
/// for testing that both agree); decided once per process.
pub fn available() -> bool {
    static CHOSEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::env::var("BIOMEDCLIP_F32_KERNEL").map_or(true, |v| v != "blas")
    })
}

/// A `[out, in]` weight packed in panels of [`NR`] channels: panel `p`, input `i`, channel `c`
/// at `(p * in + i) * NR + c` (channels past `out` are zero).
pub struct PackedWeight {
    packed: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

impl PackedWeight {
    /// Packs a row-major `[out_dim, in_dim]` weight.
    pub fn pack(weight: &[f32], out_dim: usize, in_dim: usize) -> PackedWeight {
        assert_eq!(weight.len(), out_dim * in_dim, "weight shape");
        let mut packed = vec![0f32; padded(out_dim, NR) * in_dim];
        packed
            .par_chunks_mut(in_dim * NR)
            .zip(weight.par_chunks(in_dim * NR))
            .for_each(|(panel, channels)| {
                // Input by input, so that the panel is written in order (16 rows read side by
                // side): several times faster than channel by channel.
                let width = channels.len() / in_dim;
                for (i, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    for (c, d) in dst[..width].iter_mut().enumerate() {
                        *d = channels[c * in_dim + i];
                    }
                }
            });
        PackedWeight {
            packed,
            in_dim,
            out_dim,
        }
    }

    /// The weight back in row-major `[out_dim, in_dim]` order.
    pub fn unpacked(&self) -> Vec<f32> {
        let (k, n) = (self.in_dim, self.out_dim);
        let mut w = vec![0f32; n * k];
        for (c, channel) in w.chunks_exact_mut(k).enumerate() {
            let panel = &self.packed[(c / NR) * k * NR..][..k * NR];
            for (i, v) in channel.iter_mut().enumerate() {
                *v = panel[i * NR + c % NR];
            }
        }
        w
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
        let (k, n) = (self.in_dim, self.out_dim);
        assert!(x.len() >= rows * k && out.len() >= rows * n, "buffer sizes");
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "bias width");
        }
        // Tasks: blocks of rows whose inputs (512 KB: half of a Zen 4 core's L2) stay in L2
        // while the panels pass, times groups of panels. Against 192 KB: the same for
        // captions, prompts 10-15% faster, images 1-2%.
        let row_block = ((512 * 1024 / (4 * k)) / ROWS * ROWS).clamp(ROWS, 240);
        let dst = SharedOut(out.as_mut_ptr());
        let interleaved = |rows: Range<usize>| {
            // Taken, not borrowed: a product started meanwhile on this thread (work stealing)
            // finds it empty and allocates its own.
            let mut tiles = TILE_INPUTS.take();
            interleave(&x[rows.start * k..rows.end * k], k, &mut tiles);
            ReturnOnDrop(tiles)
        };
        let panels = padded(n, NR) / NR;
        for_each_prepared_block(
            rows,
            row_block,
            panels,
            interleaved,
            |tiles, rows, panels| {
                let mut p = panels.start;
                while p < panels.end {
                    let count = if p + WIDE <= panels.end { WIDE } else { 1 };
                    let c0 = p * NR;
                    let tile = Tile {
                        a: &tiles.0[..rows.len() * k],
                        row_len: k,
                        b: &self.packed[p * k * NR..(p + count) * k * NR],
                        bias: bias.map(|b| &b[c0..(c0 + count * NR).min(n)]),
                        // SAFETY: the offset lies inside `out`.
                        out: unsafe { dst.at(rows.start * n + c0) },
                        out_stride: n,
                        width: (n - c0).min(count * NR),
                        epilogue,
                    };
                    // SAFETY: the CPU has AVX-512F (`available`, checked when packing); tasks
                    // cover disjoint (row, column) ranges of `out`, which outlives the loop.
                    unsafe { panel_store(&tile) };
                    p += count;
                }
            },
        );
    }
}

thread_local! {
    /// The buffer of interleaved rows, kept from one block to the next.
    static TILE_INPUTS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// A block's interleaved rows, given back to [`TILE_INPUTS`] when the block is done.
struct ReturnOnDrop(Vec<f32>);

impl Drop for ReturnOnDrop {
    fn drop(&mut self) {
        TILE_INPUTS.set(std::mem::take(&mut self.0));
    }
}

/// Copies `rows` (`k` inputs each) into the first `rows.len()` elements of `dst` (grown when
/// shorter) tile by tile, the kernel's order: tile `q` (rows
/// `q * ROWS..`, `m` of them: [`ROWS`] but for the last) at `q * ROWS * k`, its row `j`'s
/// input `i` at `i * m + j`. Interleaved, inputs 16 x 4 rows at a time: against reading the
/// rows in place (12 streams per tile), 3-6% more multiply-adds per second on the text
/// tower's shapes; against a plain copy loop, a third of the time.
fn interleave(rows: &[f32], k: usize, dst: &mut Vec<f32>) {
    // Grown, never cleared: every element is written below.
    if dst.len() < rows.len() {
        dst.resize(rows.len(), 0.0);
    }
    let dst = &mut dst[..rows.len()];
    for (tile, out) in rows.chunks(ROWS * k).zip(dst.chunks_mut(ROWS * k)) {
        let m = tile.len() / k;
        let mut done = 0;
        for g in (0..m - m % 4).step_by(4) {
            // SAFETY: the CPU has AVX-512F (the packed kernel runs only then); sizes are
            // checked by `interleave_four_rows`.
            done = unsafe { interleave_four_rows(tile, k, m, g, out) };
        }
        for i in 0..k {
            let first = if i < done { m - m % 4 } else { 0 };
            for j in first..m {
                out[i * m + j] = tile[j * k + i];
            }
        }
    }
}

/// Rows `g..g + 4` of a tile of `m` rows in [`interleave`]'s order, 16 inputs at a time (each
/// 4 x 4 block transposed in registers); returns how many inputs it wrote (a multiple of 16).
#[target_feature(enable = "avx512f")]
unsafe fn interleave_four_rows(
    tile: &[f32],
    k: usize,
    m: usize,
    g: usize,
    out: &mut [f32],
) -> usize {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        assert!(
            g + 4 <= m && tile.len() == m * k && out.len() == m * k,
            "tile sizes"
        );
        let whole = k / 16 * 16;
        let (src, dst) = (tile.as_ptr(), out.as_mut_ptr());
        for i0 in (0..whole).step_by(16) {
            let r: [__m512; 4] =
                std::array::from_fn(|j| _mm512_loadu_ps(src.add((g + j) * k + i0)));
            // Within each 128-bit lane l: rows x inputs i0 + 4l.. -> inputs x rows.
            let t0 = _mm512_castps_pd(_mm512_unpacklo_ps(r[0], r[1]));
            let t1 = _mm512_castps_pd(_mm512_unpackhi_ps(r[0], r[1]));
            let t2 = _mm512_castps_pd(_mm512_unpacklo_ps(r[2], r[3]));
            let t3 = _mm512_castps_pd(_mm512_unpackhi_ps(r[2], r[3]));
            let columns = [
                _mm512_unpacklo_pd(t0, t2),
                _mm512_unpackhi_pd(t0, t2),
                _mm512_unpacklo_pd(t1, t3),
                _mm512_unpackhi_pd(t1, t3),
            ];
            for (q, v) in columns.into_iter().enumerate() {
                // Lane l of `v` holds input i0 + 4l + q of the four rows.
                let v = _mm512_castpd_ps(v);
                let at = |l: usize| dst.add((i0 + 4 * l + q) * m + g);
                _mm_storeu_ps(at(0), _mm512_extractf32x4_ps::<0>(v));
                _mm_storeu_ps(at(1), _mm512_extractf32x4_ps::<1>(v));
                _mm_storeu_ps(at(2), _mm512_extractf32x4_ps::<2>(v));
                _mm_storeu_ps(at(3), _mm512_extractf32x4_ps::<3>(v));
            }
        }
        whole
    }
}

/// A tile of the `f32` kernel: inputs interleaved by [`interleave`], `row_len == k`.
type Tile<'a> = panels::Tile<'a, f32>;

/// Every row of `t`, [`ROWS`] at a time, then the rest.
///
/// # Safety
/// The CPU must have AVX-512F; `t.out` must be valid for the tile's rows and `t.width`
/// columns, which no other thread touches meanwhile.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn panel_store(t: &Tile) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let rows = t.rows();
        let two = t.b.len() == WIDE * t.row_len * NR;
        let mut r = 0;
        while r < rows {
            let m = (rows - r).min(ROWS);
            if two {
                for_rows!(m, tile_store, [WIDE], (t, r));
            } else {
                for_rows!(m, tile_store, [1], (t, r));
            }
            r += m;
        }
    }
}
const _: () = assert!(ROWS <= 12, "for_rows! covers 1 to 12 rows");

/// Rows `r..r + R` of `t` against its `P` panels: sums started at the bias, one FMA per row,
/// panel and input, then the epilogue in registers; lanes past `t.width` are not written.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn tile_store<const R: usize, const P: usize>(t: &Tile, r: usize) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        let k = t.row_len;
        let panel = k * NR;
        debug_assert!(t.a.len() >= (r + R) * k && t.b.len() == P * panel);
        let masks: [__mmask16; P] = std::array::from_fn(|j| {
            let lanes = t.width.saturating_sub(j * NR).min(NR);
            ((1u32 << lanes) - 1) as __mmask16
        });
        let mut init = [_mm512_setzero_ps(); P];
        if let Some(b) = t.bias {
            for (j, v) in init.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(masks[j], b.as_ptr().add(j * NR));
            }
        }
        let mut acc = [init; R];
        let (ap, bp) = (t.a.as_ptr().add(r * k), t.b.as_ptr());
        for i in 0..k {
            let w: [__m512; P] =
                std::array::from_fn(|j| _mm512_loadu_ps(bp.add(j * panel + i * NR)));
            for (row, sums) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ap.add(i * R + row));
                for (s, &w) in sums.iter_mut().zip(&w) {
                    *s = _mm512_fmadd_ps(x, w, *s);
                }
            }
        }
        for (row, sums) in acc.iter().enumerate() {
            for (j, &v) in sums.iter().enumerate() {
                let out = t.out.add((r + row) * t.out_stride + j * NR);
                store16(out, v, t.epilogue, masks[j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::ops::test_support::{epilogue_cases, lcg, max_abs_diff, reference};

    #[test]
    fn packed_product_matches_f64_for_every_epilogue() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F: the packed kernel is not used on this CPU");
            return;
        }
        // Rows past a tile, panels in pairs, a whole single panel and a partial one.
        for (rows, k, n) in [(29, 75, 56), (13, 64, 16), (1, 5, 3)] {
            let mut seed = 7;
            let x: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 3.0).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.2).collect();
            let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let packed = PackedWeight::pack(&w, n, k);
            assert_eq!(packed.unpacked(), w);
            let want = reference(&x, &w, &bias, rows, k, n);
            let residual: Vec<f32> = (0..rows * n).map(|_| lcg(&mut seed)).collect();
            for (epilogue, mut out, expected) in epilogue_cases(&want, &residual) {
                packed.forward(&x, rows, Some(&bias), &mut out, epilogue);
                let err = max_abs_diff(&out, &expected);
                assert!(err < 1e-5, "{rows}x{k}x{n}: max error {err}");
            }
        }
    }

    #[test]
    fn interleaving_puts_each_tiles_rows_side_by_side() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        // A whole tile and a partial one of 7 rows (one group of four, three left); 37
        // inputs: two blocks of 16 and five left.
        for (rows, k) in [(19, 37), (12, 64), (3, 16)] {
            let x: Vec<f32> = (0..rows * k).map(|v| v as f32).collect();
            let mut dst = vec![-1.0; 5];
            interleave(&x, k, &mut dst);
            assert_eq!(dst.len(), rows * k);
            for r in 0..rows {
                let (q, j) = (r / ROWS, r % ROWS);
                let m = (rows - q * ROWS).min(ROWS);
                for i in 0..k {
                    assert_eq!(
                        dst[q * ROWS * k + i * m + j],
                        x[r * k + i],
                        "row {r} input {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn partial_panels_write_only_their_columns() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        // The output is a window of a wider buffer: columns past n must keep their values.
        let (rows, k, n) = (3, 8, 20);
        let w = vec![0.5f32; n * k];
        let x = vec![1.0f32; rows * k];
        let packed = PackedWeight::pack(&w, n, k);
        let mut out = vec![-7.0f32; rows * n + 40];
        packed.forward(&x, rows, None, &mut out, Epilogue::Overwrite);
        assert!(out[..rows * n].iter().all(|&v| v == 4.0));
        assert!(out[rows * n..].iter().all(|&v| v == -7.0));
    }
}
