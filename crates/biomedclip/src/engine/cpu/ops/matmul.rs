//! Float matrix products: OpenBLAS when linked, else the `gemm` crate (runtime-dispatched
//! AVX-512/AVX2/SSE kernels), on strided views so that attention reads each head in place.
//!
//! Written by hand because candle's CPU ops materialise every intermediate (bias adds,
//! transposes for attention heads, a separate GELU pass): here biases and residuals are
//! accumulated into the product's destination.

use gemm::Parallelism;
#[cfg(openblas)]
use rayon::prelude::*;

#[cfg(openblas)]
use super::blas;
use super::passes::in_serial_pass;

/// Threads used by the matrix products and the parallel loops.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

fn parallelism(work: usize) -> Parallelism {
    let t = threads();
    // Small products are faster on one thread than split.
    if t > 1 && work >= 1 << 18 {
        Parallelism::Rayon(t)
    } else {
        Parallelism::None
    }
}

/// A matrix view: element (r, c) at `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    /// Row-major `[rows, cols]` slice.
    pub fn rows(data: &[f32], cols: usize) -> Mat {
        Mat {
            ptr: data.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[rows, cols]` slice (e.g. an `nn.Linear` weight).
    pub fn transposed(data: &[f32], cols: usize) -> Mat {
        Mat {
            ptr: data.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }

    /// A strided view; the caller guarantees every addressed element lies in one allocation.
    ///
    /// # Safety
    /// `ptr` offset by `r * rs + c * cs` must be valid for every (r, c) the product reads.
    pub unsafe fn strided(ptr: *const f32, rs: usize, cs: usize) -> Mat {
        Mat {
            ptr,
            rs: rs as isize,
            cs: cs as isize,
        }
    }
}

/// `dst[m, n] (row stride dst_rs) = accumulate * dst + scale * lhs[m, k] . rhs[k, n]`.
///
/// Large parallel products use OpenBLAS when it was linked; everything else the `gemm` crate.
///
/// # Safety
/// The views must be valid for the given sizes and `dst` must not alias `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    parallel: bool,
) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes, and
    // the target features it is compiled for, which the caller has detected).
    unsafe {
        // Inside a serial pass, OpenBLAS still takes the products meant for it, on this thread.
        #[cfg(openblas)]
        let large = parallel && m * n * k >= 1 << 18;
        let parallel = parallel && !in_serial_pass();
        #[cfg(openblas)]
        if large {
            if let (Some((ta, lda)), Some((tb, ldb))) =
                (blas::operand(lhs.rs, lhs.cs), blas::operand(rhs.rs, rhs.cs))
            {
                let beta = if accumulate { 1.0 } else { 0.0 };
                // One single-threaded OpenBLAS call per block, the blocks spread over our threads:
                // OpenBLAS never runs threads of its own, and nothing process-wide changes while
                // products run. Each call packs all of the operand it does not split, so the
                // smaller one is the one shared: blocks of columns when there are fewer rows than
                // columns (batch 1, prompts: 6-9% faster than blocks of rows), else of rows.
                // Addresses, so that the blocks can be handed to other threads.
                let (a, b, c) = (lhs.ptr as usize, rhs.ptr as usize, dst as usize);
                let part = |(r0, rows): (usize, usize), (c0, cols): (usize, usize)| {
                    // The block lies inside the views the caller vouched for (the enclosing
                    // `unsafe`), and blocks write disjoint parts of `dst`.
                    blas::sgemm_serial(
                        (ta, tb),
                        (rows, cols, k),
                        scale,
                        ((a as *const f32).offset(r0 as isize * lhs.rs), lda),
                        ((b as *const f32).offset(c0 as isize * rhs.cs), ldb),
                        beta,
                        ((c as *mut f32).add(r0 * dst_rs + c0), dst_rs),
                    )
                };
                let t = if parallel { threads() } else { 1 };
                if t == 1 {
                    part((0, m), (0, n));
                } else if m >= n && m >= 16 * t {
                    let per = m.div_ceil(t).div_ceil(8) * 8;
                    (0..m.div_ceil(per))
                        .into_par_iter()
                        .for_each(|i| part((i * per, per.min(m - i * per)), (0, n)));
                } else {
                    let per = n.div_ceil(t).div_ceil(16) * 16;
                    (0..n.div_ceil(per))
                        .into_par_iter()
                        .for_each(|i| part((0, m), (i * per, per.min(n - i * per))));
                }
                return;
            }
        }
        let par = if parallel {
            parallelism(m * n * k)
        } else {
            Parallelism::None
        };
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// What to do with the destination's previous contents.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = x W^T + b`.
    Overwrite,
    /// `out = out + x W^T + b` (residual connection).
    Accumulate,
    /// `out = gelu(x W^T + b)`.
    Gelu,
}
