//! The text tower on the CPU engine (same model as [`crate::text`]).

use super::attention::{attention, Segments};
use super::first_token::FirstTokenAttention;
use super::kernels::{gelu, layer_norm_inplace, Epilogue, Linear};
use super::{linear, norm, Norm};
use crate::config::{TextDims, TextPooling, TextProjection};
use crate::error::Result;
use crate::floats::Floats;
use crate::weights::Weights;

/// A layer's query, key and value products.
enum SelfAttention {
    /// Fused into one `[3 * hidden, hidden]` product over every token.
    Fused(Linear),
    /// The last layer under [CLS] pooling: the first token's outputs only.
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
    /// `[3 * hidden, hidden]` product, but in the last layer under [CLS] pooling, which
    /// computes the first token's outputs only ([`FirstTokenAttention`]).
    pub fn load(w: &Weights, d: &TextDims, embed_dim: usize) -> Result<Self> {
        let t = "text.transformer";
        let h = d.hidden;
        let e = format!("{t}.embeddings");
        let tt_shape = w.shape_of(&format!("{e}.token_type_embeddings.weight"), 2)?;
        let token_type = w.get_vec(
            &format!("{e}.token_type_embeddings.weight"),
            &[tt_shape[0], h],
        )?[..h]
            .to_vec();
        let layers = (0..d.layers)
            .map(|i| {
                let p = format!("{t}.encoder.layer.{i}");
                let [query, key, value] = ["query", "key", "value"]
                    .map(|n| linear(w, &format!("{p}.attention.self.{n}"), h, h, true));
                let (query, key, value) = (query?, key?, value?);
                let first_token_only =
                    d.pooling == TextPooling::ClsLastHiddenState && i + 1 == d.layers;
                let attention = if first_token_only {
                    SelfAttention::FirstToken(FirstTokenAttention::new(query, key, value, d.heads))
                } else {
                    let mut weight = Vec::with_capacity(3 * h * h);
                    let mut bias = Vec::with_capacity(3 * h);
                    for part in [query, key, value] {
                        weight.extend_from_slice(&part.weight);
                        bias.extend_from_slice(part.bias.as_deref().unwrap_or(&[]));
                    }
                    let mut qkv = Linear::new(weight, Some(bias), h, 3 * h);
                    qkv.pack();
                    SelfAttention::Fused(qkv)
                };
                Ok(Layer {
                    attention,
                    attn_out: linear(w, &format!("{p}.attention.output.dense"), h, h, true)?,
                    attn_norm: norm(w, &format!("{p}.attention.output.LayerNorm"), h, d.eps)?,
                    intermediate: linear(
                        w,
                        &format!("{p}.intermediate.dense"),
                        h,
                        d.intermediate,
                        true,
                    )?,
                    output: linear(w, &format!("{p}.output.dense"), d.intermediate, h, true)?,
                    out_norm: norm(w, &format!("{p}.output.LayerNorm"), h, d.eps)?,
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
                    linear(w, "text.proj.0", h, mid, false)?,
                    linear(w, "text.proj.2", mid, embed_dim, false)?,
                )
            }
            TextProjection::Linear => {
                Projection::Linear(linear(w, "text.proj", h, embed_dim, false)?)
            }
        };
        Ok(Bert {
            word_embeddings: w.get_floats(&format!("{e}.word_embeddings.weight"), &[d.vocab, h])?,
            position_embeddings: w.get_vec(
                &format!("{e}.position_embeddings.weight"),
                &[d.max_positions, h],
            )?,
            token_type,
            embed_norm: norm(w, &format!("{e}.LayerNorm"), h, d.eps)?,
            layers,
            projection,
            dims: d.clone(),
        })
    }

    /// Token ids of `seqs.count()` sequences packed one after the other (`seqs` says where
    /// each lies; no padding needed) -> `[seqs.count(), embed_dim]` features. Ids equal to
    /// `pad` are masked as keys, as the reference's `input_ids != pad` mask does.
    pub fn forward(&self, ids: &[u32], seqs: &Segments, pad: u32) -> Vec<f32> {
        let d = &self.dims;
        let h = d.hidden;
        let rows = seqs.tokens();
        let batch = seqs.count();
        assert_eq!(ids.len(), rows, "ids and segments disagree");
        let mut x = vec![0f32; rows * h];
        for b in 0..batch {
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
        // transformers' extended mask: finfo(float32).min on padding keys; none needed when
        // no id is [PAD] (sequences are packed, not padded).
        let mask: Vec<f32> = if ids.contains(&pad) {
            ids.iter()
                .map(|&t| if t == pad { f32::MIN } else { 0.0 })
                .collect()
        } else {
            Vec::new()
        };
        let mut qkv = vec![0f32; rows * 3 * h];
        let mut a = vec![0f32; rows * h];
        let mut mlp = vec![0f32; rows * d.intermediate];
        for l in &self.layers {
            let qkv_layer = match &l.attention {
                SelfAttention::Fused(qkv) => qkv,
                SelfAttention::FirstToken(first_token) => {
                    // Only the [CLS] outputs of the last layer are pooled: the rest is skipped.
                    let mut cls = seqs.first_rows(&x, h);
                    first_token.forward(&x, &cls, seqs, &mask, &mut a);
                    l.attn_out
                        .forward(&a, batch, &mut cls, Epilogue::Accumulate);
                    layer_norm_inplace(
                        &mut cls,
                        &l.attn_norm.gamma,
                        &l.attn_norm.beta,
                        l.attn_norm.eps,
                    );
                    l.intermediate
                        .forward(&cls, batch, &mut mlp, Epilogue::Gelu);
                    l.output
                        .forward(&mlp, batch, &mut cls, Epilogue::Accumulate);
                    layer_norm_inplace(
                        &mut cls,
                        &l.out_norm.gamma,
                        &l.out_norm.beta,
                        l.out_norm.eps,
                    );
                    for (b, r) in seqs.firsts().enumerate() {
                        x[r * h..(r + 1) * h].copy_from_slice(&cls[b * h..(b + 1) * h]);
                    }
                    break;
                }
            };
            qkv_layer.forward(&x, rows, &mut qkv, Epilogue::Overwrite);
            attention(&qkv, seqs, d.heads, h, &mask, &mut a);
            // Post-norm: x = LN(x + dense(a)); then x = LN(x + output(gelu(intermediate(x)))).
            l.attn_out.forward(&a, rows, &mut x, Epilogue::Accumulate);
            layer_norm_inplace(
                &mut x,
                &l.attn_norm.gamma,
                &l.attn_norm.beta,
                l.attn_norm.eps,
            );
            l.intermediate.forward(&x, rows, &mut mlp, Epilogue::Gelu);
            l.output.forward(&mlp, rows, &mut x, Epilogue::Accumulate);
            layer_norm_inplace(&mut x, &l.out_norm.gamma, &l.out_norm.beta, l.out_norm.eps);
        }
        let mut pooled = vec![0f32; batch * h];
        for b in 0..batch {
            let dst = &mut pooled[b * h..(b + 1) * h];
            let tokens = seqs.range(b);
            match d.pooling {
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
        match &self.projection {
            Projection::Mlp(a, b2) => {
                let mut mid = vec![0f32; batch * a.out_dim];
                a.forward(&pooled, batch, &mut mid, Epilogue::Overwrite);
                gelu(&mut mid);
                let mut out = vec![0f32; batch * b2.out_dim];
                b2.forward(&mid, batch, &mut out, Epilogue::Overwrite);
                out
            }
            Projection::Linear(l) => {
                let mut out = vec![0f32; batch * l.out_dim];
                l.forward(&pooled, batch, &mut out, Epilogue::Overwrite);
                out
            }
        }
    }
}
