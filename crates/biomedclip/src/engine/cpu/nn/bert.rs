//! The text tower on the CPU engine: PubMedBERT (transformers `BertModel`) with open_clip's
//! pooling and projection; the same model as the candle tower.

use super::attention::{attention, Segments};
use super::first_token::FirstTokenAttention;
use super::linear::linear;
use super::norm::norm;
use crate::checkpoint::config::{TextDims, TextPooling, TextProjection};
use crate::checkpoint::floats::Floats;
use crate::checkpoint::names;
use crate::checkpoint::weights::{first_non_finite, Weights};
use crate::engine::cpu::nn::linear::Linear;
use crate::engine::cpu::ops::elementwise::Norm;
use crate::engine::cpu::ops::elementwise::{gelu, layer_norm_inplace};
use crate::engine::cpu::ops::matmul::Epilogue;
use crate::error::{Error, Result};

/// A layer's query, key and value products.
enum SelfAttention {
    /// Fused into one `[3 * hidden, hidden]` product over every token.
    Fused(Linear),
    /// The last layer under `[CLS]` pooling: the first token's outputs only.
    FirstToken(FirstTokenAttention),
}

struct Layer {
    attention: SelfAttention,
    attn_out: Linear,
    attn_norm: Norm,
    intermediate: Linear,
    output: Linear,
    out_norm: Norm,
}

enum Projection {
    Mlp(Linear, Linear),
    Linear(Linear),
}

/// BERT encoder, pooling and projection.
pub struct Bert {
    word_embeddings: Floats,
    position_embeddings: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    projection: Projection,
    dims: TextDims,
}

impl Bert {
    /// Loads `text.transformer.*` and `text.proj.*`; query, key and value are fused into one
    /// `[3 * hidden, hidden]` product, but in the last layer under `[CLS]` pooling, which
    /// computes the first token's outputs only ([`FirstTokenAttention`]).
    pub fn load(w: &Weights, d: &TextDims, embed_dim: usize) -> Result<Self> {
        let h = d.hidden;
        let tt_shape = w.shape_of(&names::weight(names::text::TOKEN_TYPE_EMBEDDINGS), 2)?;
        let token_type = w.get_vec(
            &names::weight(names::text::TOKEN_TYPE_EMBEDDINGS),
            &[tt_shape[0], h],
        )?[..h]
            .to_vec();
        let layers = (0..d.layers)
            .map(|i| {
                let p = names::text::layer(i);
                let [query, key, value] =
                    ["query", "key", "value"].map(|n| linear(w, &p.attention(n), h, h, true));
                let (query, key, value) = (query?, key?, value?);
                let first_token_only =
                    d.pooling == TextPooling::ClsLastHiddenState && i + 1 == d.layers;
                let attention = if first_token_only {
                    SelfAttention::FirstToken(FirstTokenAttention::new(query, key, value, d.heads))
                } else {
                    let mut weight = Vec::with_capacity(3 * h * h);
                    let mut bias = Vec::with_capacity(3 * h);
                    for part in [query, key, value] {
                        let (w, b) = part.into_float_parts();
                        weight.extend_from_slice(&w);
                        bias.extend_from_slice(b.as_deref().unwrap_or(&[]));
                    }
                    let mut qkv = Linear::new(weight, Some(bias), h, 3 * h);
                    qkv.pack();
                    SelfAttention::Fused(qkv)
                };
                Ok(Layer {
                    attention,
                    attn_out: linear(w, &p.attention_output(), h, h, true)?,
                    attn_norm: norm(w, &p.attention_norm(), h, d.eps)?,
                    intermediate: linear(w, &p.intermediate(), h, d.intermediate, true)?,
                    output: linear(w, &p.output(), d.intermediate, h, true)?,
                    out_norm: norm(w, &p.output_norm(), h, d.eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut layers = layers;
        for l in &mut layers {
            for lin in [&mut l.attn_out, &mut l.intermediate, &mut l.output] {
                lin.pack();
            }
        }
        let projection = match d.projection {
            TextProjection::Mlp => {
                let mid = (h + embed_dim) / 2;
                Projection::Mlp(
                    linear(w, names::text::PROJ_MLP[0], h, mid, false)?,
                    linear(w, names::text::PROJ_MLP[1], mid, embed_dim, false)?,
                )
            }
            TextProjection::Linear => {
                Projection::Linear(linear(w, names::text::PROJ, h, embed_dim, false)?)
            }
        };
        Ok(Bert {
            // Read by rows, and only the rows of the tokens met: their values are checked
            // as they are gathered (`check_rows`), not all at load.
            word_embeddings: w
                .get_table(&names::weight(names::text::WORD_EMBEDDINGS), &[d.vocab, h])?,
            position_embeddings: w.get_vec(
                &names::weight(names::text::POSITION_EMBEDDINGS),
                &[d.max_positions, h],
            )?,
            token_type,
            embed_norm: norm(w, names::text::EMBEDDINGS_NORM, h, d.eps)?,
            layers,
            projection,
            dims: d.clone(),
        })
    }

    /// Text embeddings (before normalisation), `[seqs.count(), embed_dim]`, for the token
    /// ids of `seqs` packed one after the other without padding.
    pub fn forward(&self, ids: &[u32], seqs: &Segments, pad: u32) -> Vec<f32> {
        assert_eq!(ids.len(), seqs.tokens(), "ids and segments disagree");
        let mut x = self.embed(ids, seqs);
        let mask = key_mask(ids, pad);
        let mut scratch = Scratch::new(seqs.tokens(), &self.dims);
        for layer in &self.layers {
            match &layer.attention {
                SelfAttention::Fused(qkv) => {
                    layer.forward(qkv, &mut x, seqs, &mask, &mut scratch, &self.dims)
                }
                // Only the [CLS] outputs of the last layer are pooled: the rest is skipped.
                SelfAttention::FirstToken(first_token) => {
                    layer.forward_first_token(first_token, &mut x, seqs, &mask, &mut scratch);
                    break;
                }
            }
        }
        let pooled = self.pool(&x, ids, seqs, pad);
        self.projection.forward(&pooled, seqs.count())
    }

    /// Word + position + token type 0 embeddings, then LayerNorm: `[tokens, hidden]`.
    /// Refuses token ids whose word-embedding rows hold NaN or infinities (the table is not
    /// scanned at load: it is large and most of it is never read).
    pub(crate) fn check_rows(&self, ids: impl Iterator<Item = u32>) -> Result<()> {
        let h = self.dims.hidden;
        for id in ids {
            let row = self
                .word_embeddings
                .get(id as usize * h..(id as usize + 1) * h)
                .unwrap_or_default();
            if let Some(i) = first_non_finite(row) {
                return Err(Error::InvalidInput(format!(
                    "the checkpoint's `{}` holds {} in the row of token id {id} (column {i}); \
                     the checkpoint is damaged",
                    names::weight(names::text::WORD_EMBEDDINGS),
                    row[i]
                )));
            }
        }
        Ok(())
    }

    fn embed(&self, ids: &[u32], seqs: &Segments) -> Vec<f32> {
        let h = self.dims.hidden;
        let mut x = vec![0f32; seqs.tokens() * h];
        for b in 0..seqs.count() {
            for (pos, r) in seqs.range(b).enumerate() {
                let id = ids[r] as usize;
                let xr = &mut x[r * h..(r + 1) * h];
                let word = &self.word_embeddings[id * h..(id + 1) * h];
                let pos = &self.position_embeddings[pos * h..(pos + 1) * h];
                for (((v, w), p), t) in xr.iter_mut().zip(word).zip(pos).zip(&self.token_type) {
                    *v = w + p + t;
                }
            }
        }
        let en = &self.embed_norm;
        layer_norm_inplace(&mut x, &en.gamma, &en.beta, en.eps);
        x
    }

    /// The pooled output per sequence: its `[CLS]` row, or the mean of its non-`[PAD]` rows.
    fn pool(&self, x: &[f32], ids: &[u32], seqs: &Segments, pad: u32) -> Vec<f32> {
        let h = self.dims.hidden;
        let mut pooled = vec![0f32; seqs.count() * h];
        for b in 0..seqs.count() {
            let dst = &mut pooled[b * h..(b + 1) * h];
            let tokens = seqs.range(b);
            match self.dims.pooling {
                TextPooling::ClsLastHiddenState => {
                    dst.copy_from_slice(&x[tokens.start * h..(tokens.start + 1) * h])
                }
                TextPooling::Mean => {
                    let mut count = 0.0;
                    for r in tokens {
                        if ids[r] != pad {
                            count += 1.0;
                            for (o, v) in dst.iter_mut().zip(&x[r * h..(r + 1) * h]) {
                                *o += v;
                            }
                        }
                    }
                    dst.iter_mut().for_each(|v| *v /= count);
                }
            }
        }
        pooled
    }
}

/// transformers' extended mask: `finfo(float32).min` on padding keys; none (empty) when no
/// id is `[PAD]`, as sequences are packed, not padded.
fn key_mask(ids: &[u32], pad: u32) -> Vec<f32> {
    if ids.contains(&pad) {
        ids.iter()
            .map(|&t| if t == pad { f32::MIN } else { 0.0 })
            .collect()
    } else {
        Vec::new()
    }
}

/// Activation buffers reused by every layer of one pass.
struct Scratch {
    qkv: Vec<f32>,
    attended: Vec<f32>,
    mlp: Vec<f32>,
}

impl Scratch {
    fn new(rows: usize, d: &TextDims) -> Self {
        Scratch {
            qkv: vec![0f32; rows * 3 * d.hidden],
            attended: vec![0f32; rows * d.hidden],
            mlp: vec![0f32; rows * d.intermediate],
        }
    }
}

impl Layer {
    /// One post-norm layer over every token, in place:
    /// `x = LN(x + dense(attention(x)))`, then `x = LN(x + output(gelu(intermediate(x))))`.
    fn forward(
        &self,
        qkv: &Linear,
        x: &mut [f32],
        seqs: &Segments,
        mask: &[f32],
        s: &mut Scratch,
        d: &TextDims,
    ) {
        let rows = seqs.tokens();
        qkv.forward(x, rows, &mut s.qkv, Epilogue::Overwrite);
        attention(&s.qkv, seqs, d.heads, d.hidden, mask, &mut s.attended);
        self.attn_out
            .forward(&s.attended, rows, x, Epilogue::Accumulate);
        norm_inplace(x, &self.attn_norm);
        self.intermediate
            .forward(x, rows, &mut s.mlp, Epilogue::Gelu);
        self.output.forward(&s.mlp, rows, x, Epilogue::Accumulate);
        norm_inplace(x, &self.out_norm);
    }

    /// The same layer for each sequence's first token only (the last layer under `[CLS]`
    /// pooling), written back into those rows of `x`.
    fn forward_first_token(
        &self,
        attention: &FirstTokenAttention,
        x: &mut [f32],
        seqs: &Segments,
        mask: &[f32],
        s: &mut Scratch,
    ) {
        let batch = seqs.count();
        let h = x.len() / seqs.tokens();
        let mut cls = seqs.first_rows(x, h);
        attention.forward(x, &cls, seqs, mask, &mut s.attended);
        self.attn_out
            .forward(&s.attended, batch, &mut cls, Epilogue::Accumulate);
        norm_inplace(&mut cls, &self.attn_norm);
        self.intermediate
            .forward(&cls, batch, &mut s.mlp, Epilogue::Gelu);
        self.output
            .forward(&s.mlp, batch, &mut cls, Epilogue::Accumulate);
        norm_inplace(&mut cls, &self.out_norm);
        for (b, r) in seqs.firsts().enumerate() {
            x[r * h..(r + 1) * h].copy_from_slice(&cls[b * h..(b + 1) * h]);
        }
    }
}

fn norm_inplace(x: &mut [f32], n: &Norm) {
    layer_norm_inplace(x, &n.gamma, &n.beta, n.eps);
}

impl Projection {
    /// open_clip's text projection of `batch` pooled rows.
    fn forward(&self, pooled: &[f32], batch: usize) -> Vec<f32> {
        match self {
            Projection::Mlp(a, b) => {
                let mut mid = vec![0f32; batch * a.out_dim];
                a.forward(pooled, batch, &mut mid, Epilogue::Overwrite);
                gelu(&mut mid);
                let mut out = vec![0f32; batch * b.out_dim];
                b.forward(&mid, batch, &mut out, Epilogue::Overwrite);
                out
            }
            Projection::Linear(l) => {
                let mut out = vec![0f32; batch * l.out_dim];
                l.forward(pooled, batch, &mut out, Epilogue::Overwrite);
                out
            }
        }
    }
}
