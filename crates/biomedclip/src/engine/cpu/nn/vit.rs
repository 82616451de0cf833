//! The image tower on the CPU engine: timm's ViT-B/16 with open_clip's head, the same model
//! as the candle tower ([`crate::engine::candle::vision`]).

use super::attention::{attention, first_token_attention, Segments};
use super::linear::linear;
use super::norm::norm;
use crate::checkpoint::config::VisionDims;
use crate::checkpoint::names;
use crate::checkpoint::weights::Weights;
use crate::engine::cpu::nn::linear::Linear;
use crate::engine::cpu::ops::elementwise::layer_norm;
use crate::engine::cpu::ops::elementwise::Norm;
use crate::engine::cpu::ops::matmul::Epilogue;
use crate::error::Result;
use crate::precision::Precision;

struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    /// The four linear layers, by name.
    fn linears(&mut self) -> [(&'static str, &mut Linear); 4] {
        [
            ("qkv", &mut self.qkv),
            ("proj", &mut self.proj),
            ("fc1", &mut self.fc1),
            ("fc2", &mut self.fc2),
        ]
    }
}

/// Layers that `--precision int8` runs in bf16 instead: the attention output projection.
///
/// Measured with `examples/int8_layers.rs` (docs/engine.md, "int8 error, layer by layer"):
/// with one kind of layer in int8 and the rest `f32`, the projections cost the most accuracy
/// of the four kinds (the input is the heads' weighted sums of values, whose per-token range is
/// set by a few large channels), yet they hold 1/12 of the block's arithmetic; in bf16 they
/// lift the worst cosine to `f32` from 0.99955 to 0.99972 (full-size) and from 0.99945 to
/// 0.99965 (tiny checkpoint) at no measurable cost in throughput.
const INT8_AS_BF16: &str = "*.proj";

/// The precision of block `block`'s layer `kind` when the tower runs at `precision`.
///
/// For the error analysis of `examples/int8_layers.rs`, two variables override it:
/// `BIOMEDCLIP_INT8_ONLY` (comma-separated `BLOCK.KIND` items, `*` for any part) leaves every
/// other layer in `f32`, and `BIOMEDCLIP_REDUCED_AS_BF16` replaces [`INT8_AS_BF16`] (empty:
/// every layer in int8).
fn layer_precision(precision: Precision, block: usize, kind: &str) -> Precision {
    if precision == Precision::F32 {
        return precision;
    }
    let listed = |list: &str| {
        list.split(',')
            .filter(|item| !item.trim().is_empty())
            .any(|item| {
                let (b, k) = item.trim().split_once('.').unwrap_or((item, "*"));
                (b == "*" || b.parse() == Ok(block)) && (k == "*" || k == kind)
            })
    };
    if let Ok(only) = std::env::var("BIOMEDCLIP_INT8_ONLY") {
        if !listed(&only) {
            return Precision::F32;
        }
    }
    let as_bf16 = std::env::var("BIOMEDCLIP_REDUCED_AS_BF16");
    if precision == Precision::Int8 && listed(as_bf16.as_deref().unwrap_or(INT8_AS_BF16)) {
        return Precision::Bf16;
    }
    precision
}

/// ViT trunk and projection head.
pub struct Vit {
    patch: Linear,
    cls_token: Vec<f32>,
    pos_embed: Vec<f32>,
    blocks: Vec<Block>,
    norm: Norm,
    head: Option<Linear>,
    dims: VisionDims,
}

impl Vit {
    /// Loads `visual.trunk.*` and `visual.head.proj.*`, the transformer blocks' linear layers
    /// at `precision` (see [`Vit::reduce`]).
    pub fn load(
        w: &Weights,
        d: &VisionDims,
        embed_dim: usize,
        precision: Precision,
    ) -> Result<Self> {
        let (c, p) = (d.width, d.patch);
        let grid = d.image_size / p;
        let patch = Linear::new(
            w.get_floats(&names::weight(names::vision::PATCH_EMBED), &[c, 3, p, p])?,
            Some(w.get_vec(&names::bias(names::vision::PATCH_EMBED), &[c])?),
            3 * p * p,
            c,
        );
        let blocks = (0..d.depth)
            .map(|i| {
                let b = names::vision::block(i);
                Ok(Block {
                    norm1: norm(w, &b.norm1(), c, d.eps)?,
                    qkv: linear(w, &b.qkv(), c, 3 * c, true)?,
                    proj: linear(w, &b.proj(), c, c, true)?,
                    norm2: norm(w, &b.norm2(), c, d.eps)?,
                    fc1: linear(w, &b.fc1(), c, d.mlp_width, true)?,
                    fc2: linear(w, &b.fc2(), d.mlp_width, c, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut blocks = blocks;
        for (i, b) in blocks.iter_mut().enumerate() {
            for (kind, l) in b.linears() {
                match layer_precision(precision, i, kind) {
                    Precision::F32 => l.pack(),
                    reduced => l.reduce(reduced),
                }
            }
        }
        Ok(Vit {
            patch,
            cls_token: w.get_vec(names::vision::CLS_TOKEN, &[1, 1, c])?,
            pos_embed: w.get_vec(names::vision::POS_EMBED, &[1, grid * grid + 1, c])?,
            blocks,
            norm: norm(w, names::vision::NORM, c, d.eps)?,
            head: match d.proj {
                Some(bias) => Some(linear(w, names::vision::HEAD, c, embed_dim, bias)?),
                None => None,
            },
            dims: d.clone(),
        })
    }

    /// Moves the transformer blocks' linear layers to `precision` ([`crate::engine::cpu::quant::int8`],
    /// [`crate::engine::cpu::quant::bf16`]); the patch embedding and the projection head stay `f32` (about 1% of
    /// the work).
    pub fn reduce(&mut self, precision: Precision) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (kind, l) in b.linears() {
                l.reduce(layer_precision(precision, i, kind));
            }
        }
    }

    /// Output width (the joint embedding dimension, or the trunk width without a head).
    pub fn out_dim(&self) -> usize {
        self.head.as_ref().map_or(self.dims.width, |h| h.out_dim)
    }

    /// `batch` images of `3 * size * size` CHW floats -> `[batch, out_dim]` features.
    pub fn forward(&self, pixels: &[f32], batch: usize) -> Vec<f32> {
        let d = &self.dims;
        let (c, p, s) = (d.width, d.patch, d.image_size);
        let g = s / p;
        let n = g * g + 1;
        let rows = batch * n;
        // im2col: each patch flattened in (channel, row, column) order like the conv kernel.
        let pp = 3 * p * p;
        let mut patches = vec![0f32; batch * g * g * pp];
        for b in 0..batch {
            let img = &pixels[b * 3 * s * s..(b + 1) * 3 * s * s];
            for gy in 0..g {
                for gx in 0..g {
                    let dst = &mut patches[((b * g + gy) * g + gx) * pp..][..pp];
                    for ch in 0..3 {
                        for ky in 0..p {
                            let src = &img[ch * s * s + (gy * p + ky) * s + gx * p..][..p];
                            dst[ch * p * p + ky * p..][..p].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        let mut tokens = vec![0f32; batch * g * g * c];
        self.patch
            .forward(&patches, batch * g * g, &mut tokens, Epilogue::Overwrite);
        drop(patches);
        let mut x = vec![0f32; rows * c];
        for b in 0..batch {
            let xb = &mut x[b * n * c..(b + 1) * n * c];
            xb[..c].copy_from_slice(&self.cls_token);
            xb[c..].copy_from_slice(&tokens[b * g * g * c..(b + 1) * g * g * c]);
            for (v, pe) in xb.iter_mut().zip(&self.pos_embed) {
                *v += pe;
            }
        }
        drop(tokens);
        let mut h = vec![0f32; rows * c];
        let mut qkv = vec![0f32; rows * 3 * c];
        let mut mlp = vec![0f32; rows * d.mlp_width];
        let seqs = Segments::uniform(batch, n);
        let Some((last, body)) = self.blocks.split_last() else {
            unreachable!("a ViT has at least one block")
        };
        for blk in body {
            let (n1, n2) = (&blk.norm1, &blk.norm2);
            blk.qkv
                .forward_normed(&x, n1, &mut h, rows, &mut qkv, Epilogue::Overwrite);
            attention(&qkv, &seqs, d.heads, c, &[], &mut h);
            blk.proj.forward(&h, rows, &mut x, Epilogue::Accumulate);
            blk.fc1
                .forward_normed(&x, n2, &mut h, rows, &mut mlp, Epilogue::Gelu);
            blk.fc2.forward(&mlp, rows, &mut x, Epilogue::Accumulate);
        }
        // Only the class tokens of the last block are read (the final norm is per token and
        // the head takes token 0), so past the keys and values of every token the last block
        // runs on `batch` rows: about 7% of the tower's work saved at 197 tokens.
        last.qkv
            .forward_normed(&x, &last.norm1, &mut h, rows, &mut qkv, Epilogue::Overwrite);
        let mut cls = seqs.first_rows(&x, c);
        drop(x);
        first_token_attention(&qkv, &seqs, d.heads, c, &[], &mut h);
        last.proj.forward(&h, batch, &mut cls, Epilogue::Accumulate);
        last.fc1
            .forward_normed(&cls, &last.norm2, &mut h, batch, &mut mlp, Epilogue::Gelu);
        last.fc2
            .forward(&mlp, batch, &mut cls, Epilogue::Accumulate);
        let mut normed = vec![0f32; batch * c];
        layer_norm(
            &cls,
            &mut normed,
            &self.norm.gamma,
            &self.norm.beta,
            self.norm.eps,
        );
        match &self.head {
            Some(head) => {
                let mut out = vec![0f32; batch * head.out_dim];
                head.forward(&normed, batch, &mut out, Epilogue::Overwrite);
                out
            }
            None => normed,
        }
    }
}
