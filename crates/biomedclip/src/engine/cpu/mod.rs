//! The CPU engine: both towers on plain `f32` buffers with fused kernels ([`ops`]), reusing
//! activation buffers across layers; the image tower's linear layers optionally in int8 or
//! bf16 ([`quant`]). Same weights and model as the candle towers ([`super::candle`]), equal
//! within the parity tests' tolerances (texts are packed, the last text layer folded).

pub(crate) mod nn;
pub(crate) mod ops;
pub(crate) mod quant;

use super::{normalized, Towers};
use crate::checkpoint::config::ModelDims;
use crate::checkpoint::weights::Weights;
use crate::error::Result;
use crate::precision::Precision;
use nn::attention::Segments;
use nn::bert::Bert;
use nn::vit::Vit;
use ops::matmul::threads;
use ops::passes::parallel_passes;

/// Tokens per forward pass of the text tower, whose sequences are packed one after the
/// other without padding (passes are balanced, so one may exceed this by less than a
/// sequence). About 50 captions; larger passes measured slower (their activations outgrow
/// the cache). With at least half this many tokens per worker thread, the passes run side by
/// side, one per worker ([`ops::passes`]).
pub const TEXT_TOKENS: usize = 2048;

/// Splits `items` into at most `parts` consecutive runs of about equal total size (each
/// item joins the run in which its middle falls); no run is empty.
fn balanced_chunks(items: &[usize], size: impl Fn(usize) -> usize, parts: usize) -> Vec<&[usize]> {
    let total: usize = items.iter().map(|&i| size(i)).sum();
    let (parts, total) = (parts.max(1), total.max(1));
    let mut chunks = Vec::with_capacity(parts);
    let (mut start, mut before, mut current) = (0, 0, 0);
    for (pos, &i) in items.iter().enumerate() {
        let s = size(i);
        let run = ((2 * before + s) * parts / (2 * total)).min(parts - 1);
        if run != current && pos > start {
            chunks.push(&items[start..pos]);
            start = pos;
        }
        current = run;
        before += s;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// The CPU engine's two towers.
pub(crate) struct CpuTowers {
    vit: Vit,
    bert: Bert,
    embed_dim: usize,
}

impl CpuTowers {
    /// Loads both towers side by side, the image tower's transformer layers at `precision`
    /// (built straight from the checkpoint, never laid out in `f32` first).
    pub(crate) fn load(weights: &Weights, dims: &ModelDims, precision: Precision) -> Result<Self> {
        let (vit, bert) = rayon::join(
            || Vit::load(weights, &dims.vision, dims.embed_dim, precision),
            || Bert::load(weights, &dims.text, dims.embed_dim),
        );
        Ok(CpuTowers {
            vit: vit?,
            bert: bert?,
            embed_dim: dims.embed_dim,
        })
    }
}

impl Towers for CpuTowers {
    /// Splits the batch into one pass per worker thread, run side by side
    /// ([`ops::passes`]), when it has at least one image per worker.
    fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let workers = threads();
        let vit = &self.vit;
        let feats = if workers > 1 && images.len() >= workers {
            let parts: Vec<&[Vec<f32>]> = images.chunks(images.len().div_ceil(workers)).collect();
            parallel_passes(&parts, |part| vit.forward(&part.concat(), part.len())).concat()
        } else {
            vit.forward(&images.concat(), images.len())
        };
        Ok(feats.chunks_exact(vit.out_dim()).map(normalized).collect())
    }

    /// Packs about [`TEXT_TOKENS`] tokens per pass without padding, in passes of about
    /// equal size (side by side on the worker threads for large inputs).
    fn encode_token_ids(&self, ids: &[Vec<u32>], pad: u32) -> Result<Vec<Vec<f32>>> {
        self.bert.check_rows(ids.iter().flatten().copied())?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        let total: usize = ids.iter().map(Vec::len).sum();
        let workers = threads();
        // Enough tokens for a full pass per worker: passes side by side (see `ops::passes`);
        // fewer: one pass at a time, its products split across threads.
        let side_by_side = workers > 1 && total >= workers * TEXT_TOKENS / 2;
        let mut count = total.div_ceil(TEXT_TOKENS);
        if side_by_side {
            count = count.next_multiple_of(workers);
        }
        let chunks = balanced_chunks(&order, |i| ids[i].len(), count);
        let pass = |chunk: &&[usize]| {
            let seqs = Segments::from_lens(chunk.iter().map(|&i| ids[i].len()));
            let flat: Vec<u32> = chunk.iter().flat_map(|&i| ids[i].iter().copied()).collect();
            self.bert.forward(&flat, &seqs, pad)
        };
        let feats = if side_by_side {
            parallel_passes(&chunks, pass)
        } else {
            chunks.iter().map(pass).collect()
        };
        for (chunk, feats) in chunks.iter().zip(feats) {
            for (&i, e) in chunk.iter().zip(feats.chunks_exact(self.embed_dim)) {
                out[i] = normalized(e);
            }
        }
        Ok(out)
    }

    fn reduce(&mut self, precision: Precision) -> Result<()> {
        self.vit.reduce(precision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::balanced_chunks;

    #[test]
    fn balanced_chunks_split_evenly_and_keep_every_item() {
        let sizes = [3, 4, 2, 9, 1, 1, 5, 5];
        let items: Vec<usize> = (0..sizes.len()).collect();
        let size = |i: usize| sizes[i];
        // Total 30; middles at 1.5, 5, 8, 13.5, 18.5, 19.5, 22.5, 27.5.
        assert_eq!(balanced_chunks(&items, size, 1), [&items[..]]);
        assert_eq!(
            balanced_chunks(&items, size, 2),
            [&[0, 1, 2, 3][..], &[4, 5, 6, 7]]
        );
        assert_eq!(
            balanced_chunks(&items, size, 3),
            [&[0, 1, 2][..], &[3, 4, 5], &[6, 7]]
        );
        // More parts than items: one item per run, none empty.
        assert_eq!(balanced_chunks(&items[..2], size, 8), [&[0][..], &[1]]);
        // One item far larger than the rest leaves fewer, but never empty, runs.
        let big = |i: usize| [100, 1, 1][i];
        assert_eq!(balanced_chunks(&[0, 1, 2], big, 4), [&[0][..], &[1, 2]]);
        assert!(balanced_chunks(&[], size, 2).is_empty());
    }
}
