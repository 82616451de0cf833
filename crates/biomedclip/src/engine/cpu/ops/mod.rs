//! The CPU engine's kernels: matrix products (OpenBLAS when linked, else the `gemm` crate,
//! and on AVX-512 a packed-weight kernel of our own), the fused elementwise loops compiled
//! once per instruction set and chosen at run time, the tiling the packed kernels share, and
//! forward passes run side by side.

#[cfg(openblas)]
pub(crate) mod blas;
pub(crate) mod elementwise;
pub(crate) mod matmul;
#[cfg(target_arch = "x86_64")]
pub(crate) mod packed;
pub(crate) mod panels;
pub(crate) mod passes;
#[cfg(test)]
pub(crate) mod test_support;
