//! OpenBLAS, linked at build time when the system has it (see `build.rs`): the one CBLAS
//! entry point used for the large products, always on the calling thread (the engine spreads
//! blocks of a product over its own threads; OpenBLAS's threads would spin beside them).

use std::os::raw::c_int;
use std::sync::Once;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

extern "C" {
    fn cblas_sgemm(
        layout: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(n: c_int);
}

/// (transpose flag, leading dimension) of a view, if BLAS can address it.
pub fn operand(rs: isize, cs: isize) -> Option<(c_int, c_int)> {
    match (rs, cs) {
        (rs, 1) if rs >= 1 => Some((NO_TRANS, rs as c_int)),
        (1, cs) if cs >= 1 => Some((TRANS, cs as c_int)),
        _ => None,
    }
}

/// `c[m, n] = alpha * a . b + beta * c` (row-major, operands as [`operand`] describes them),
/// on the calling thread.
///
/// # Safety
/// The pointers must address the `m x k`, `k x n` and `m x n` blocks with those strides, and
/// `c` must not alias `a` or `b`.
pub unsafe fn sgemm_serial(
    (ta, tb): (c_int, c_int),
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, lda): (*const f32, c_int),
    (b, ldb): (*const f32, c_int),
    beta: f32,
    (c, ldc): (*mut f32, usize),
) {
    static ONE_THREAD: Once = Once::new();
    // SAFETY: a plain setter in OpenBLAS.
    ONE_THREAD.call_once(|| unsafe { openblas_set_num_threads(1) });
    // SAFETY: the caller upholds this function's contract (its `# Safety` notes): the
    // operands and the destination cover the sizes passed.
    unsafe {
        cblas_sgemm(
            ROW_MAJOR,
            ta,
            tb,
            m as c_int,
            n as c_int,
            k as c_int,
            alpha,
            a,
            lda,
            b,
            ldb,
            beta,
            c,
            ldc as c_int,
        );
    }
}
