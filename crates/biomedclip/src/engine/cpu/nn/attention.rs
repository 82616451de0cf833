//! Multi-head self-attention over packed sequences: the tokens of every sequence lie one after
//! the other in one `[tokens, 3 * width]` buffer of fused queries, keys and values, with no
//! padding between them, and each sequence attends to its own tokens only.

use std::ops::Range;

use rayon::prelude::*;

use crate::engine::cpu::ops::elementwise::softmax_rows;
use crate::engine::cpu::ops::matmul::{matmul, Mat};
use crate::engine::cpu::ops::panels::SharedOut;
use crate::engine::cpu::ops::passes::in_serial_pass;

/// Where each sequence's tokens lie in a packed buffer: sequence `b` is tokens
/// `starts[b]..starts[b + 1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segments {
    starts: Vec<usize>,
}

impl Segments {
    /// `count` sequences of `len` tokens each (a padded batch).
    pub fn uniform(count: usize, len: usize) -> Segments {
        Segments {
            starts: (0..=count).map(|b| b * len).collect(),
        }
    }

    /// Sequences of the given lengths, in order.
    pub fn from_lens(lens: impl IntoIterator<Item = usize>) -> Segments {
        let mut starts = vec![0];
        for len in lens {
            starts.push(starts[starts.len() - 1] + len);
        }
        Segments { starts }
    }

    /// Number of sequences.
    pub fn count(&self) -> usize {
        self.starts.len() - 1
    }

    /// Tokens in all.
    pub fn tokens(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    /// Tokens of sequence `b`.
    pub fn range(&self, b: usize) -> Range<usize> {
        self.starts[b]..self.starts[b + 1]
    }

    /// Length of the longest sequence.
    pub fn max_len(&self) -> usize {
        self.starts
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }

    /// Index of each sequence's first token.
    pub fn firsts(&self) -> impl Iterator<Item = usize> + '_ {
        self.starts[..self.count()].iter().copied()
    }

    /// Each sequence's first row of `x` (`width` values per token), one after the other:
    /// `[count, width]`.
    pub fn first_rows(&self, x: &[f32], width: usize) -> Vec<f32> {
        self.firsts()
            .flat_map(|r| &x[r * width..(r + 1) * width])
            .copied()
            .collect()
    }
}

/// Where attention finds each head in a fused `[tokens, 3 * width]` buffer laid out
/// `(q|k|v, head, head_dim)`, and each sequence's additive key mask.
struct Heads<'a> {
    seqs: &'a Segments,
    width: usize,
    /// Width of one head.
    dim: usize,
    /// `1 / sqrt(dim)`.
    scale: f32,
    /// Empty, or one additive mask value per token.
    mask: &'a [f32],
}

impl<'a> Heads<'a> {
    fn new(qkv: &[f32], seqs: &'a Segments, heads: usize, width: usize, mask: &'a [f32]) -> Self {
        assert!(qkv.len() >= seqs.tokens() * 3 * width, "qkv buffer size");
        assert!(mask.is_empty() || mask.len() >= seqs.tokens(), "mask size");
        let dim = width / heads;
        Heads {
            seqs,
            width,
            dim,
            scale: 1.0 / (dim as f32).sqrt(),
            mask,
        }
    }

    /// Distance between consecutive tokens in the buffer.
    fn row(&self) -> usize {
        3 * self.width
    }

    /// Offset of head `h`'s query for the first token of sequence `b`; its key is `width`
    /// further on, its value `2 * width`.
    fn base(&self, b: usize, h: usize) -> usize {
        self.seqs.range(b).start * self.row() + h * self.dim
    }

    /// The key mask of sequence `b` (empty: none).
    fn mask(&self, b: usize) -> &'a [f32] {
        if self.mask.is_empty() {
            &[]
        } else {
            &self.mask[self.seqs.range(b)]
        }
    }
}

/// Multi-head self-attention reading queries, keys and values in place from a fused
/// `[tokens, 3 * width]` buffer laid out `(q|k|v, head, head_dim)` and writing
/// `[tokens, width]`. `mask` is empty or one additive key mask value per token.
pub fn attention(
    qkv: &[f32],
    seqs: &Segments,
    heads: usize,
    width: usize,
    mask: &[f32],
    out: &mut [f32],
) {
    let at = Heads::new(qkv, seqs, heads, width, mask);
    let (hd, row) = (at.dim, at.row());
    assert!(out.len() >= seqs.tokens() * width, "output size");
    let max_len = seqs.max_len();
    let out_ptr = SharedOut(out.as_mut_ptr());
    let out_ptr = &out_ptr;
    let head = |scores: &mut Vec<f32>, task: usize| {
        let (b, h) = (task / heads, task % heads);
        let tokens = seqs.range(b);
        let len = tokens.len();
        let scores = &mut scores[..len * len];
        let base = at.base(b, h);
        // SAFETY: all views stay inside `qkv` (asserted by `Heads::new`); each task writes
        // the columns h*hd..(h+1)*hd of its own sequence's rows only.
        unsafe {
            let q = Mat::strided(qkv.as_ptr().add(base), row, 1);
            let kt = Mat::strided(qkv.as_ptr().add(base + width), 1, row);
            matmul(
                len,
                len,
                hd,
                scores.as_mut_ptr(),
                len,
                false,
                q,
                kt,
                at.scale,
                false,
            );
            softmax_rows(scores, len, at.mask(b));
            let v = Mat::strided(qkv.as_ptr().add(base + 2 * width), row, 1);
            let dst = out_ptr.at(tokens.start * width + h * hd);
            matmul(
                len,
                hd,
                len,
                dst,
                width,
                false,
                Mat::rows(scores, len),
                v,
                1.0,
                false,
            );
        }
    };
    let tasks = 0..seqs.count() * heads;
    if in_serial_pass() {
        let mut scores = vec![0f32; max_len * max_len];
        tasks.for_each(|task| head(&mut scores, task));
    } else {
        tasks
            .into_par_iter()
            .for_each_init(|| vec![0f32; max_len * max_len], head);
    }
}

/// Attention for the first token of each sequence only (the `[CLS]` query), reading keys and
/// values of all tokens from the fused `[tokens, 3 * width]` buffer; writes
/// `[sequences, width]`. Used for a last layer whose other outputs are never read.
pub fn first_token_attention(
    qkv: &[f32],
    seqs: &Segments,
    heads: usize,
    width: usize,
    mask: &[f32],
    out: &mut [f32],
) {
    let at = Heads::new(qkv, seqs, heads, width, mask);
    let (hd, row) = (at.dim, at.row());
    let count = seqs.count();
    assert!(out.len() >= count * width, "output size");
    let head = |(task, dst): (usize, &mut [f32])| {
        let (b, h) = (task / heads, task % heads);
        let len = seqs.range(b).len();
        let base = at.base(b, h);
        let q = &qkv[base..base + hd];
        let mut scores: Vec<f32> = (0..len)
            .map(|j| {
                let k = &qkv[base + j * row + width..][..hd];
                q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * at.scale
            })
            .collect();
        softmax_rows(&mut scores, len, at.mask(b));
        dst.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            let v = &qkv[base + j * row + 2 * width..][..hd];
            for (o, x) in dst.iter_mut().zip(v) {
                *o += p * x;
            }
        }
    };
    let out = &mut out[..count * width];
    if in_serial_pass() {
        out.chunks_mut(hd).enumerate().for_each(head);
    } else {
        out.par_chunks_mut(hd).enumerate().for_each(head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in about -1.6..1.6.
    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect()
    }

    /// Attention of one token `i` of the sequence at `tokens`, head `h`, in f64.
    fn naive(
        qkv: &[f32],
        tokens: Range<usize>,
        i: usize,
        h: usize,
        (heads, width): (usize, usize),
        masked: impl Fn(usize) -> bool,
    ) -> Vec<f64> {
        let hd = width / heads;
        let at = |t: usize, part: usize, d: usize| {
            qkv[(tokens.start + t) * 3 * width + part * width + h * hd + d] as f64
        };
        let n = tokens.len();
        let s: Vec<f64> = (0..n)
            .map(|j| {
                let dot: f64 = (0..hd).map(|d| at(i, 0, d) * at(j, 1, d)).sum();
                dot / (hd as f64).sqrt() + if masked(tokens.start + j) { -1e30 } else { 0.0 }
            })
            .collect();
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        (0..hd)
            .map(|d| (0..n).map(|j| e[j] / sum * at(j, 2, d)).sum())
            .collect()
    }

    #[test]
    fn packed_attention_matches_naive() {
        let (heads, width) = (2, 8);
        let hd = width / heads;
        // Sequences of unequal lengths, packed, one token masked.
        let seqs = Segments::from_lens([5, 2, 7, 1]);
        assert_eq!((seqs.count(), seqs.tokens(), seqs.max_len()), (4, 15, 7));
        let token_ids: Vec<f32> = (0..2 * seqs.tokens()).map(|v| v as f32).collect();
        assert_eq!(
            seqs.first_rows(&token_ids, 2),
            [0.0, 1.0, 10.0, 11.0, 14.0, 15.0, 28.0, 29.0]
        );
        let qkv = values(seqs.tokens() * 3 * width);
        let masked = |t: usize| t == 10;
        let mask: Vec<f32> = (0..seqs.tokens())
            .map(|t| if masked(t) { f32::MIN } else { 0.0 })
            .collect();
        let mut out = vec![0f32; seqs.tokens() * width];
        attention(&qkv, &seqs, heads, width, &mask, &mut out);
        let mut first = vec![0f32; seqs.count() * width];
        first_token_attention(&qkv, &seqs, heads, width, &mask, &mut first);
        for b in 0..seqs.count() {
            let tokens = seqs.range(b);
            for h in 0..heads {
                for i in 0..tokens.len() {
                    let want = naive(&qkv, tokens.clone(), i, h, (heads, width), masked);
                    for (d, w) in want.iter().enumerate() {
                        let got = out[(tokens.start + i) * width + h * hd + d] as f64;
                        assert!((w - got).abs() < 1e-5, "seq {b} token {i}: {w} vs {got}");
                        if i == 0 {
                            let got = first[b * width + h * hd + d] as f64;
                            assert!((w - got).abs() < 1e-5, "seq {b} first: {w} vs {got}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packing_equals_padding() {
        // Two sequences packed, and the same two padded to 6 tokens with masked padding,
        // give the same outputs on their real tokens.
        let (heads, width) = (2, 8);
        let lens = [6, 3];
        let packed_seqs = Segments::from_lens(lens);
        let padded_seqs = Segments::uniform(2, 6);
        let row = 3 * width;
        let padded_qkv = values(12 * row);
        let mut packed_qkv = padded_qkv[..6 * row].to_vec();
        packed_qkv.extend_from_slice(&padded_qkv[6 * row..9 * row]);
        let mask: Vec<f32> = (0..12)
            .map(|t| if t >= 9 { f32::MIN } else { 0.0 })
            .collect();
        let mut padded = vec![0f32; 12 * width];
        attention(&padded_qkv, &padded_seqs, heads, width, &mask, &mut padded);
        let mut packed = vec![0f32; 9 * width];
        attention(&packed_qkv, &packed_seqs, heads, width, &[], &mut packed);
        assert_eq!(packed[..6 * width], padded[..6 * width]);
        for (p, q) in packed[6 * width..]
            .iter()
            .zip(&padded[6 * width..9 * width])
        {
            assert!((p - q).abs() < 1e-6, "{p} vs {q}");
        }
    }
}
