//! Self-attention of each sequence's first token alone, for a last layer whose other outputs
//! are never read (the text tower's `[CLS]` pooling), with the key and value products folded
//! through the attention instead of run for every token.
//!
//! For one head, with `x_j` the layer's input rows, `q` the first token's query and
//! `p = softmax(scale * q . k_j)`:
//! - `q . k_j = q . (W_k x_j + b_k) = (W_k^T q) . x_j + q . b_k`, whose last term is the
//!   same for every key and so changes nothing after softmax: one product of `W_k^T` with the
//!   query instead of `W_k` with every token;
//! - `sum_j p_j v_j = W_v (sum_j p_j x_j) + b_v` (the `p_j` sum to 1): one product of `W_v`
//!   with the weighted mean of the inputs instead of `W_v` with every token.
//!
//! The same sums in another order (rounding differs by ulps). For a sequence of `n` tokens of
//! width `w`, the keys and values cost `2 w^2 / n` per token instead of `2 w^2`: with the
//! query, 2% of the text tower's work on captions of 40 tokens.

use rayon::prelude::*;

use super::attention::Segments;
use crate::checkpoint::floats::Floats;
use crate::engine::cpu::nn::linear::Linear;
use crate::engine::cpu::ops::elementwise::softmax_rows;
use crate::engine::cpu::ops::matmul::{matmul, Epilogue, Mat};
use crate::engine::cpu::ops::passes::in_serial_pass;

/// The query, key and value layers of one attention, the key and value kept row-major for
/// their folded products (the key's bias drops out: see the module's notes).
pub struct FirstTokenAttention {
    query: Linear,
    /// `[width, width]`, row-major: row `c` is output channel `c`'s weights.
    key: Floats,
    /// `[width, width]`, row-major, like `key`.
    value: Floats,
    value_bias: Vec<f32>,
    heads: usize,
    width: usize,
}

impl FirstTokenAttention {
    /// From the three `[width, width]` layers (each with its bias) and the head count; the
    /// query is packed for the CPU's kernel where it has one.
    pub fn new(mut query: Linear, key: Linear, value: Linear, heads: usize) -> Self {
        let width = query.in_dim;
        for l in [&query, &key, &value] {
            assert!(
                l.in_dim == width && l.out_dim == width && l.bias.is_some(),
                "square attention layers with biases"
            );
        }
        assert!(width.is_multiple_of(heads), "heads divide the width");
        query.pack();
        let (value, value_bias) = value.into_float_parts();
        FirstTokenAttention {
            query,
            key: key.into_float_parts().0,
            value,
            value_bias: value_bias.unwrap_or_default(),
            heads,
            width,
        }
    }

    /// The attention's output (before its output layer) for the first token of each
    /// sequence: `x` is `[seqs.tokens(), width]`, `first` its first rows
    /// ([`Segments::first_rows`]), `mask` empty or one additive key mask value per token;
    /// writes `[seqs.count(), width]` into `out`.
    pub fn forward(
        &self,
        x: &[f32],
        first: &[f32],
        seqs: &Segments,
        mask: &[f32],
        out: &mut [f32],
    ) {
        let (w, heads) = (self.width, self.heads);
        let hd = w / heads;
        let count = seqs.count();
        assert!(x.len() >= seqs.tokens() * w, "input size");
        assert!(mask.is_empty() || mask.len() >= seqs.tokens(), "mask size");
        assert!(out.len() >= count * w, "output size");
        assert_eq!(first.len(), count * w, "first rows");
        let scale = 1.0 / (hd as f32).sqrt();
        let mut q = vec![0f32; count * w];
        self.query
            .forward(first, count, &mut q, Epilogue::Overwrite);
        // Per sequence and head: W_k^T q (`[count, heads, w]`).
        let mut folded = vec![0f32; count * heads * w];
        for h in 0..heads {
            // SAFETY: the views cover q's head-h columns ([count, hd], row stride w), the
            // key's head-h rows ([hd, w]) and the head-h rows of `folded` ([count, w], row
            // stride heads * w).
            unsafe {
                matmul(
                    count,
                    w,
                    hd,
                    folded.as_mut_ptr().add(h * w),
                    heads * w,
                    false,
                    Mat::strided(q.as_ptr().add(h * hd), w, 1),
                    Mat::rows(&self.key[h * hd * w..(h + 1) * hd * w], w),
                    1.0,
                    false,
                );
            }
        }
        // Per sequence: scores [heads, n], softmax, then the weighted means of its inputs
        // ([heads, w]) into `means`.
        let mut means = vec![0f32; count * heads * w];
        let max_len = seqs.max_len();
        let one = |scores: &mut Vec<f32>, (b, means): (usize, &mut [f32])| {
            let tokens = seqs.range(b);
            let n = tokens.len();
            let xs = &x[tokens.start * w..tokens.end * w];
            let scores = &mut scores[..heads * n];
            // SAFETY: `folded`'s rows of sequence b are [heads, w]; `xs` read transposed is
            // [w, n]; `scores` holds [heads, n]; `means` [heads, w].
            unsafe {
                matmul(
                    heads,
                    n,
                    w,
                    scores.as_mut_ptr(),
                    n,
                    false,
                    Mat::rows(&folded[b * heads * w..(b + 1) * heads * w], w),
                    Mat::transposed(xs, w),
                    scale,
                    false,
                );
            }
            let key_mask = if mask.is_empty() {
                &[][..]
            } else {
                &mask[tokens]
            };
            softmax_rows(scores, n, key_mask);
            // SAFETY: as above; `xs` is [n, w].
            unsafe {
                matmul(
                    heads,
                    w,
                    n,
                    means.as_mut_ptr(),
                    w,
                    false,
                    Mat::rows(scores, n),
                    Mat::rows(xs, w),
                    1.0,
                    false,
                );
            }
        };
        if in_serial_pass() {
            let mut scores = vec![0f32; heads * max_len];
            means
                .chunks_mut(heads * w)
                .enumerate()
                .for_each(|item| one(&mut scores, item));
        } else {
            means
                .par_chunks_mut(heads * w)
                .enumerate()
                .for_each_init(|| vec![0f32; heads * max_len], one);
        }
        // Head h's outputs: W_v (head h's rows) applied to each sequence's head-h mean, plus
        // the bias.
        let out = &mut out[..count * w];
        for row in out.chunks_exact_mut(w) {
            row.copy_from_slice(&self.value_bias);
        }
        for h in 0..heads {
            // SAFETY: `means`' head-h rows are [count, w] (row stride heads * w); the value's
            // head-h rows read transposed are [w, hd]; `out`'s head-h columns [count, hd].
            unsafe {
                matmul(
                    count,
                    hd,
                    w,
                    out.as_mut_ptr().add(h * hd),
                    w,
                    true,
                    Mat::strided(means.as_ptr().add(h * w), heads * w, 1),
                    Mat::transposed(&self.value[h * hd * w..(h + 1) * hd * w], w),
                    1.0,
                    false,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::nn::attention::first_token_attention;
    use crate::engine::cpu::ops::passes::parallel_passes;
    use crate::engine::cpu::ops::test_support::{lcg, reference};

    #[test]
    fn folded_attention_matches_the_fused_products() {
        let (heads, w) = (4, 32);
        let mut seed = 3;
        let mut values =
            |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| lcg(&mut seed) * scale).collect() };
        // Unequal lengths, packed; one token masked.
        let seqs = Segments::from_lens([5, 2, 7, 1, 12]);
        let x = values(seqs.tokens() * w, 2.0);
        let weights: Vec<Vec<f32>> = (0..3).map(|_| values(w * w, 0.3)).collect();
        let biases: Vec<Vec<f32>> = (0..3).map(|_| values(w, 0.5)).collect();
        let linear = |i: usize| Linear::new(weights[i].clone(), Some(biases[i].clone()), w, w);
        let folded = FirstTokenAttention::new(linear(0), linear(1), linear(2), heads);
        // The reference: query, key and value of every token (summed in f64), then the
        // first token's attention over them.
        let qkv_weight = weights.concat();
        let qkv_bias = biases.concat();
        let qkv = reference(&x, &qkv_weight, &qkv_bias, seqs.tokens(), w, 3 * w);
        for mask in [vec![], {
            let mut m = vec![0f32; seqs.tokens()];
            m[9] = f32::MIN;
            m
        }] {
            let mut want = vec![0f32; seqs.count() * w];
            first_token_attention(&qkv, &seqs, heads, w, &mask, &mut want);
            let first = seqs.first_rows(&x, w);
            let mut got = vec![0f32; seqs.count() * w];
            folded.forward(&x, &first, &seqs, &mask, &mut got);
            let serial = parallel_passes(&[()], |_| {
                let mut out = vec![0f32; seqs.count() * w];
                folded.forward(&x, &first, &seqs, &mask, &mut out);
                out
            });
            assert_eq!(serial[0], got, "the same inside a serial pass");
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                assert!((a - b).abs() < 1e-5, "output {i}: {a} vs {b}");
            }
        }
    }
}
