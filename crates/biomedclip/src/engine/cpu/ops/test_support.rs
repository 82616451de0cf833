//! What the product kernels' unit tests share: seeded random values, an `f64` reference
//! product, and the three epilogues' expected outputs.

use crate::engine::cpu::ops::elementwise::gelu_serial;
use crate::engine::cpu::ops::matmul::Epilogue;

/// The next value of a seeded generator, uniform in `[-1, 1)`.
pub fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// `x[rows, k] . w[n, k]^T + bias`, summed in `f64`.
pub fn reference(x: &[f32], w: &[f32], bias: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * n];
    for r in 0..rows {
        for c in 0..n {
            let dot: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                .sum();
            out[r * n + c] = (dot + bias[c] as f64) as f32;
        }
    }
    out
}

/// For each epilogue: (epilogue, the destination before the product, what it should hold
/// after), given the plain product `want` and the residual the accumulating case starts from.
pub fn epilogue_cases(want: &[f32], residual: &[f32]) -> [(Epilogue, Vec<f32>, Vec<f32>); 3] {
    let mut gelu_want = want.to_vec();
    gelu_serial(&mut gelu_want);
    [
        (Epilogue::Overwrite, vec![0f32; want.len()], want.to_vec()),
        (
            Epilogue::Accumulate,
            residual.to_vec(),
            want.iter().zip(residual).map(|(a, b)| a + b).collect(),
        ),
        (Epilogue::Gelu, vec![0f32; want.len()], gelu_want),
    ]
}

/// The largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}
