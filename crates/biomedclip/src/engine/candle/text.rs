//! The text tower: Hugging Face `BertModel` (PubMedBERT) inside open_clip's `HFTextEncoder`.
//!
//! Mirrors transformers 4.35.2 `models/bert/modeling_bert.py` (post-norm layers, absolute
//! positions, token type 0, additive attention mask) and open_clip 2.23.0
//! `src/open_clip/hf_model.py` (`ClsLastHiddenStatePooler`, the bias-free `mlp` projection).
//! Devlin et al., "BERT", NAACL 2019; Gu et al., "Domain-Specific Language Model Pretraining
//! for Biomedical NLP", 2021.

use candle_core::{DType, Module, Tensor, D};

use crate::checkpoint::config::{TextDims, TextPooling, TextProjection};
use crate::checkpoint::names;
use crate::checkpoint::weights::Weights;
use crate::engine::candle::layers::{attention, gelu, LayerNorm, Linear};
use crate::error::Result;

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    fn load(w: &Weights, p: &names::text::Layer, d: &TextDims) -> Result<Self> {
        let h = d.hidden;
        Ok(Layer {
            query: Linear::load(w, &p.attention("query"), h, h, true)?,
            key: Linear::load(w, &p.attention("key"), h, h, true)?,
            value: Linear::load(w, &p.attention("value"), h, h, true)?,
            attn_out: Linear::load(w, &p.attention_output(), h, h, true)?,
            attn_norm: LayerNorm::load(w, &p.attention_norm(), h, d.eps)?,
            intermediate: Linear::load(w, &p.intermediate(), h, d.intermediate, true)?,
            output: Linear::load(w, &p.output(), d.intermediate, h, true)?,
            out_norm: LayerNorm::load(w, &p.output_norm(), h, d.eps)?,
            heads: d.heads,
        })
    }

    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        x.reshape((b, n, self.heads, c / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        let a = attention(&q, &k, &v, Some(mask))?
            .transpose(1, 2)?
            .reshape((b, n, c))?;
        let x = self.attn_norm.forward(&(self.attn_out.forward(&a)? + x)?)?;
        let f = self
            .output
            .forward(&gelu(&self.intermediate.forward(&x)?)?)?;
        self.out_norm.forward(&(f + x)?)
    }
}

enum Projection {
    Mlp(Linear, Linear),
    Linear(Linear),
}

/// BERT encoder, pooling and projection to the joint space.
pub struct TextTower {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    projection: Projection,
    dims: TextDims,
}

impl TextTower {
    /// Loads `text.transformer.*` and `text.proj.*`.
    pub fn load(w: &Weights, d: &TextDims, embed_dim: usize) -> Result<Self> {
        let h = d.hidden;
        let word_embeddings = w.get(&names::weight(names::text::WORD_EMBEDDINGS), &[d.vocab, h])?;
        let position_embeddings = w.get(
            &names::weight(names::text::POSITION_EMBEDDINGS),
            &[d.max_positions, h],
        )?;
        let tt_shape = w.shape_of(&names::weight(names::text::TOKEN_TYPE_EMBEDDINGS), 2)?;
        let token_type = w
            .get(
                &names::weight(names::text::TOKEN_TYPE_EMBEDDINGS),
                &[tt_shape[0], h],
            )?
            .get(0)?;
        let embed_norm = LayerNorm::load(w, names::text::EMBEDDINGS_NORM, h, d.eps)?;
        let layers = (0..d.layers)
            .map(|i| Layer::load(w, &names::text::layer(i), d))
            .collect::<Result<Vec<_>>>()?;
        let projection = match d.projection {
            TextProjection::Mlp => {
                let mid = (h + embed_dim) / 2;
                Projection::Mlp(
                    Linear::load(w, names::text::PROJ_MLP[0], h, mid, false)?,
                    Linear::load(w, names::text::PROJ_MLP[1], mid, embed_dim, false)?,
                )
            }
            TextProjection::Linear => {
                Projection::Linear(Linear::load(w, names::text::PROJ, h, embed_dim, false)?)
            }
        };
        Ok(TextTower {
            word_embeddings,
            position_embeddings,
            token_type,
            embed_norm,
            layers,
            projection,
            dims: d.clone(),
        })
    }

    /// `ids` `[batch, len]` (u32) and `mask` `[batch, len]` (1 for tokens, 0 for padding)
    /// -> `[batch, embed_dim]` unnormalised features.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let h = self.dims.hidden;
        let words = self
            .word_embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, n, h))?;
        let pos = self.position_embeddings.narrow(0, 0, n)?;
        let x = words.broadcast_add(&pos)?.broadcast_add(&self.token_type)?;
        let mut x = self.embed_norm.forward(&x)?;
        let maskf = mask.to_dtype(DType::F32)?;
        // transformers' extended mask: (1 - mask) * finfo(float32).min, added to the scores.
        let additive = ((maskf.affine(-1.0, 1.0))? * f32::MIN as f64)?.reshape((b, 1, 1, n))?;
        for layer in &self.layers {
            x = layer.forward(&x, &additive)?;
        }
        let pooled = match self.dims.pooling {
            TextPooling::ClsLastHiddenState => x.narrow(1, 0, 1)?.squeeze(1)?,
            TextPooling::Mean => {
                let m = maskf.unsqueeze(D::Minus1)?;
                x.broadcast_mul(&m)?.sum(1)?.broadcast_div(&m.sum(1)?)?
            }
        };
        match &self.projection {
            Projection::Mlp(a, b2) => b2.forward(&gelu(&a.forward(&pooled)?)?),
            Projection::Linear(l) => l.forward(&pooled),
        }
    }
}
