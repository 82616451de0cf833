//! The image tower: timm `VisionTransformer` (`vit_base_patch16_224`) inside open_clip's `TimmModel`.
//!
//! Mirrors timm `models/vision_transformer.py` (pre-norm blocks, fused qkv, class token,
//! learned absolute positions, final norm, token pooling) and open_clip 2.23.0
//! `src/open_clip/timm_model.py` (`head.proj`, a bias-free Linear to the joint space).
//! Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021.

use candle_core::{Module, Tensor};

use crate::checkpoint::config::VisionDims;
use crate::checkpoint::names;
use crate::checkpoint::weights::Weights;
use crate::engine::candle::layers::{attention, gelu, LayerNorm, Linear};
use crate::error::Result;

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn load(w: &Weights, p: &names::vision::Block, d: &VisionDims) -> Result<Self> {
        let c = d.width;
        Ok(Block {
            norm1: LayerNorm::load(w, &p.norm1(), c, d.eps)?,
            qkv: Linear::load(w, &p.qkv(), c, 3 * c, true)?,
            proj: Linear::load(w, &p.proj(), c, c, true)?,
            norm2: LayerNorm::load(w, &p.norm2(), c, d.eps)?,
            fc1: Linear::load(w, &p.fc1(), c, d.mlp_width, true)?,
            fc2: Linear::load(w, &p.fc2(), d.mlp_width, c, true)?,
            heads: d.heads,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let h = self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x)?)?
            .reshape((b, n, 3, h, c / h))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let a = attention(&q, &k, &v, None)?
            .transpose(1, 2)?
            .reshape((b, n, c))?;
        let x = (x + self.proj.forward(&a)?)?;
        let m = self
            .fc2
            .forward(&gelu(&self.fc1.forward(&self.norm2.forward(&x)?)?)?)?;
        x + m
    }
}

/// The ViT trunk plus open_clip's projection head.
pub struct VisionTower {
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Option<Linear>,
    dims: VisionDims,
}

impl VisionTower {
    /// Loads `visual.trunk.*` and `visual.head.proj.*`.
    pub fn load(w: &Weights, dims: &VisionDims, embed_dim: usize) -> Result<Self> {
        let (c, p) = (dims.width, dims.patch);
        let grid = dims.image_size / p;
        let patch_weight = w
            .get(&names::weight(names::vision::PATCH_EMBED), &[c, 3, p, p])?
            .reshape((c, 3 * p * p))?
            .t()?
            .contiguous()?;
        let patch_bias = w.get(&names::bias(names::vision::PATCH_EMBED), &[c])?;
        let cls_token = w.get(names::vision::CLS_TOKEN, &[1, 1, c])?;
        let pos_embed = w.get(names::vision::POS_EMBED, &[1, grid * grid + 1, c])?;
        let blocks = (0..dims.depth)
            .map(|i| Block::load(w, &names::vision::block(i), dims))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::load(w, names::vision::NORM, c, dims.eps)?;
        let head = match dims.proj {
            Some(bias) => Some(Linear::load(w, names::vision::HEAD, c, embed_dim, bias)?),
            None => None,
        };
        Ok(VisionTower {
            patch_weight,
            patch_bias,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
            dims: dims.clone(),
        })
    }

    /// `[batch, 3, H, W]` normalised pixels -> `[batch, embed_dim]` unnormalised features.
    pub fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, hgt, wid) = pixels.dims4()?;
        let p = self.dims.patch;
        let (gh, gw) = (hgt / p, wid / p);
        let c = self.dims.width;
        // The stride-p convolution as one matrix product over non-overlapping patches,
        // each flattened in (channel, row, column) order like the conv kernel.
        let patches = pixels
            .reshape((b, 3, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, 3 * p * p))?;
        let tokens = patches
            .matmul(&self.patch_weight)?
            .broadcast_add(&self.patch_bias)?
            .reshape((b, gh * gw, c))?;
        let cls = self.cls_token.broadcast_as((b, 1, c))?;
        let mut x = Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&self.pos_embed)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // LayerNorm is per token, so normalising the class token alone equals timm's
        // `norm(x)[:, 0]`.
        let cls = self.norm.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        match &self.head {
            Some(h) => h.forward(&cls),
            None => Ok(cls),
        }
    }
}
