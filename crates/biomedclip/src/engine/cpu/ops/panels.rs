//! What the packed-weight products (int8 and bf16 in [`crate::engine::cpu::quant`], and on
//! x86-64 `super::packed`) share: the rows of activations converted once per product (after a
//! LayerNorm when asked), the product cut into tasks, blocks of rows times groups of packed
//! weight panels, spread over the threads, and the AVX-512 kernels' final store.

use std::ops::Range;

use rayon::prelude::*;

use crate::engine::cpu::ops::elementwise::layer_norm_serial;
use crate::engine::cpu::ops::elementwise::Norm;
use crate::engine::cpu::ops::matmul::{threads, Epilogue};
use crate::engine::cpu::ops::passes::in_serial_pass;

/// The destination of a parallel product or loop, shared by its tasks; each task writes
/// disjoint elements.
pub(crate) struct SharedOut(pub *mut f32);
// SAFETY: every task writes its own (row, column) range only, so no element is written by
// two threads or read while another writes it.
unsafe impl Sync for SharedOut {}
// SAFETY: as for `Sync`: the pointer is only used for disjoint writes.
unsafe impl Send for SharedOut {}

impl SharedOut {
    /// The destination's element `offset`.
    ///
    /// # Safety
    /// `offset` must lie inside the destination.
    pub(crate) unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
        // the target features it is compiled for, which the caller has detected).
        unsafe { self.0.add(offset) }
    }
}

/// `n` rounded up to a multiple of `to`.
pub(crate) fn padded(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Converts `rows` rows of `k` floats (each normalised first when `norm` is given) into rows
/// of `kp >= k` elements, padding left at `T::default()`: `convert(row, dst)` fills the first
/// `k` elements of `dst` and returns the row's parameters (a scale, a zero point, or nothing).
pub(crate) fn convert_rows<T, P>(
    x: &[f32],
    rows: usize,
    k: usize,
    kp: usize,
    norm: Option<&Norm>,
    convert: impl Fn(&[f32], &mut [T]) -> P + Sync,
) -> (Vec<T>, Vec<P>)
where
    T: Copy + Default + Send + Sync,
    P: Copy + Default + Send,
{
    let mut data = vec![T::default(); rows * kp];
    let mut params = vec![P::default(); rows];
    let scratch = || vec![0f32; if norm.is_some() { k } else { 0 }];
    let one = |normed: &mut Vec<f32>, ((dst, row), param): ((&mut [T], &[f32]), &mut P)| {
        *param = match norm {
            Some(n) => {
                layer_norm_serial(row, normed, &n.gamma, &n.beta, n.eps);
                convert(normed, &mut dst[..k])
            }
            None => convert(row, &mut dst[..k]),
        }
    };
    if in_serial_pass() {
        let mut normed = scratch();
        data.chunks_mut(kp)
            .zip(x[..rows * k].chunks(k))
            .zip(params.iter_mut())
            .for_each(|item| one(&mut normed, item));
    } else {
        data.par_chunks_mut(kp)
            .zip(x[..rows * k].par_chunks(k))
            .zip(params.par_iter_mut())
            .with_min_len(16)
            .for_each_init(scratch, one);
    }
    (data, params)
}

/// Calls `task(rows, panels)` over blocks of `row_block` rows times groups of weight panels,
/// cut so that every thread gets several tasks; in parallel unless inside a serial pass.
pub(crate) fn for_each_block(
    rows: usize,
    row_block: usize,
    panels: usize,
    task: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let row_blocks = rows.div_ceil(row_block);
    let panel_block = panel_block(row_blocks, panels);
    let panel_blocks = panels.div_ceil(panel_block);
    let run = |i: usize| {
        let (rb, pb) = (i / panel_blocks, i % panel_blocks);
        task(block(rb, row_block, rows), block(pb, panel_block, panels));
    };
    let tasks = 0..row_blocks * panel_blocks;
    if in_serial_pass() {
        tasks.for_each(run);
    } else {
        tasks.into_par_iter().for_each(run);
    }
}

/// Like [`for_each_block`], with `prepare(rows)` run once per block of rows (by one thread)
/// before that block's tasks, which all read what it made: `task(&prepared, rows, panels)`.
pub(crate) fn for_each_prepared_block<C: Sync>(
    rows: usize,
    row_block: usize,
    panels: usize,
    prepare: impl Fn(Range<usize>) -> C + Sync,
    task: impl Fn(&C, Range<usize>, Range<usize>) + Sync,
) {
    let row_blocks = rows.div_ceil(row_block);
    let panel_block = panel_block(row_blocks, panels);
    let panel_blocks = panels.div_ceil(panel_block);
    let run = |rb: usize| {
        let rows = block(rb, row_block, rows);
        let prepared = prepare(rows.clone());
        let groups = 0..panel_blocks;
        let one = |pb: usize| task(&prepared, rows.clone(), block(pb, panel_block, panels));
        if in_serial_pass() {
            groups.for_each(one);
        } else {
            groups.into_par_iter().for_each(one);
        }
    };
    if in_serial_pass() {
        (0..row_blocks).for_each(run);
    } else {
        (0..row_blocks).into_par_iter().for_each(run);
    }
}

/// Panels per task: all of them when there are enough blocks of rows to keep every thread
/// busy (always inside a serial pass), fewer otherwise.
fn panel_block(row_blocks: usize, panels: usize) -> usize {
    let wanted = if in_serial_pass() { 1 } else { 8 * threads() };
    if row_blocks >= wanted {
        panels
    } else {
        panels.div_ceil(wanted.div_ceil(row_blocks)).max(1)
    }
}

/// Block `i` of `size` items out of `len`.
fn block(i: usize, size: usize, len: usize) -> Range<usize> {
    i * size..((i + 1) * size).min(len)
}

/// Rows of one task against one or more consecutive packed weight panels, and where their
/// sums go: what the packed `f32` (`T = f32`) and bf16 (`T = u16`) kernels take.
pub(crate) struct Tile<'a, T> {
    /// The rows' inputs, `row_len` elements per row, in the kernel's own layout.
    pub a: &'a [T],
    /// Elements per row of `a` (the inputs, padded as the kernel needs).
    pub row_len: usize,
    /// The packed panels, one after the other.
    pub b: &'a [T],
    /// The tile's `width` biases.
    pub bias: Option<&'a [f32]>,
    /// The tile's first output.
    pub out: *mut f32,
    pub out_stride: usize,
    /// Real channels in the panels (the last panel of a layer may be partial).
    pub width: usize,
    pub epilogue: Epilogue,
}

impl<T> Tile<'_, T> {
    /// Rows in the tile.
    pub fn rows(&self) -> usize {
        self.a.len() / self.row_len
    }
}

/// `for_rows!(m, kernel, [G], (args))` calls `kernel::<R, G>(args)` with the const `R` equal to the row count `$m`
/// (1 to 12), so that each tile height gets its own fully unrolled kernel. Shared by the
/// bf16 and packed `f32` kernels, whose tiles have at most 12 rows.
macro_rules! for_rows {
    ($m:expr, $kernel:ident, [$($g:tt),*], ($($arg:expr),*)) => {
        match $m {
            12 => $kernel::<12, $($g),*>($($arg),*),
            11 => $kernel::<11, $($g),*>($($arg),*),
            10 => $kernel::<10, $($g),*>($($arg),*),
            9 => $kernel::<9, $($g),*>($($arg),*),
            8 => $kernel::<8, $($g),*>($($arg),*),
            7 => $kernel::<7, $($g),*>($($arg),*),
            6 => $kernel::<6, $($g),*>($($arg),*),
            5 => $kernel::<5, $($g),*>($($arg),*),
            4 => $kernel::<4, $($g),*>($($arg),*),
            3 => $kernel::<3, $($g),*>($($arg),*),
            2 => $kernel::<2, $($g),*>($($arg),*),
            _ => $kernel::<1, $($g),*>($($arg),*),
        }
    };
}
pub(crate) use for_rows;

/// Writes 16 finished sums `v` (bias included) to `out` by `epilogue`: as they are, added to
/// what `out` holds, or through GELU; lanes outside `mask` are neither read nor written. The
/// last step of every AVX-512 product kernel. A full mask takes plain loads and stores: masked
/// ones cost more on Zen 4 (1-2% of the packed `f32` kernel's time).
///
/// # Safety
/// The CPU must have AVX-512F; `out` must be valid for the lanes in `mask`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(crate) unsafe fn store16(
    out: *mut f32,
    v: std::arch::x86_64::__m512,
    epilogue: Epilogue,
    mask: std::arch::x86_64::__mmask16,
) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        use std::arch::x86_64::*;
        let full = mask == 0xFFFF;
        let v = match epilogue {
            Epilogue::Overwrite => v,
            Epilogue::Accumulate if full => _mm512_add_ps(v, _mm512_loadu_ps(out)),
            Epilogue::Accumulate => _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, out)),
            Epilogue::Gelu => {
                let mut vals = [0f32; 16];
                _mm512_storeu_ps(vals.as_mut_ptr(), v);
                crate::engine::cpu::ops::elementwise::gelu_impl(&mut vals);
                _mm512_loadu_ps(vals.as_ptr())
            }
        };
        if full {
            _mm512_storeu_ps(out, v);
        } else {
            _mm512_mask_storeu_ps(out, mask, v);
        }
    }
}
