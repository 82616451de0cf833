//! `f32` linear layers with weights packed once at load, on AVX-512: the transformer blocks'
//! products without any per-call packing.
//!
//! Written by hand because a BLAS call packs both operands on every call (OpenBLAS: 5% of the
//! image tower's time at batch 8 and 11% of the text tower's on Zen 4), while a layer's weights
//! never change. Here each weight is packed at load into panels of 16 output channels, one
//! 512-bit register per input, and each row of activations is read in place, one broadcast per
//! input serving two panels: tiles of 12 rows by 32 channels keep 24 sums in registers. Sums run
//! over the inputs in order, starting at the bias; the residual is added after. Where the CPU has
//! no AVX-512 the float weights stay as they are and the BLAS path runs instead.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::kernels::Epilogue;
use super::panels::{for_each_block, padded, store16, SharedOut};

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
    /// [`super::kernels::Linear::forward`].
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
        for_each_block(rows, row_block, padded(n, NR) / NR, |rows, panels| {
            let mut p = panels.start;
            while p < panels.end {
                let count = if p + WIDE <= panels.end { WIDE } else { 1 };
                let c0 = p * NR;
                let tile = Tile {
                    a: &x[rows.start * k..rows.end * k],
                    k,
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
        });
    }
}

/// Rows of one task against one or two consecutive panels, and where their sums go.
struct Tile<'a> {
    /// The rows' inputs, `k` per row.
    a: &'a [f32],
    k: usize,
    /// The packed panels, one after the other.
    b: &'a [f32],
    /// The tile's `width` biases.
    bias: Option<&'a [f32]>,
    /// The tile's first output.
    out: *mut f32,
    out_stride: usize,
    /// Real channels in the panels (the last panel of a layer may be partial).
    width: usize,
    epilogue: Epilogue,
}

/// Every row of `t`, [`ROWS`] at a time, then the rest.
///
/// # Safety
/// The CPU must have AVX-512F; `t.out` must be valid for the tile's rows and `t.width`
/// columns, which no other thread touches meanwhile.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn panel_store(t: &Tile) {
    let rows = t.a.len() / t.k;
    let two = t.b.len() == WIDE * t.k * NR;
    let mut r = 0;
    while r < rows {
        let m = (rows - r).min(ROWS);
        macro_rules! rows {
            ($p:expr) => {
                match m {
                    12 => tile_store::<12, $p>(t, r),
                    11 => tile_store::<11, $p>(t, r),
                    10 => tile_store::<10, $p>(t, r),
                    9 => tile_store::<9, $p>(t, r),
                    8 => tile_store::<8, $p>(t, r),
                    7 => tile_store::<7, $p>(t, r),
                    6 => tile_store::<6, $p>(t, r),
                    5 => tile_store::<5, $p>(t, r),
                    4 => tile_store::<4, $p>(t, r),
                    3 => tile_store::<3, $p>(t, r),
                    2 => tile_store::<2, $p>(t, r),
                    _ => tile_store::<1, $p>(t, r),
                }
            };
        }
        if two {
            rows!(WIDE)
        } else {
            rows!(1)
        }
        r += m;
    }
}
const _: () = assert!(ROWS <= 12, "panel_store covers 1 to 12 rows");

/// Rows `r..r + R` of `t` against its `P` panels: sums started at the bias, one FMA per row,
/// panel and input, then the epilogue in registers; lanes past `t.width` are not written.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn tile_store<const R: usize, const P: usize>(t: &Tile, r: usize) {
    let k = t.k;
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
        let w: [__m512; P] = std::array::from_fn(|j| _mm512_loadu_ps(bp.add(j * panel + i * NR)));
        for (row, sums) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*ap.add(row * k + i));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{epilogue_cases, lcg, max_abs_diff, reference};

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
