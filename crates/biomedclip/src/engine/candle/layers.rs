//! Building blocks shared by both towers, loaded by key with shape checks.

use candle_core::{Module, Tensor, D};

use crate::checkpoint::names;
use crate::checkpoint::weights::Weights;
use crate::error::Result;

/// `y = x W^T + b`, PyTorch's `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` of shape `[out_dim, in_dim]` and, if `bias`, `{prefix}.bias`.
    pub fn load(
        w: &Weights,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.get(&names::weight(prefix), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.get(&names::bias(prefix), &[out_dim])?)
        } else {
            None
        };
        // Stored transposed once so that every forward multiplies by a contiguous [in, out] matrix.
        let weight_t = weight.t()?.contiguous()?;
        Ok(Linear { weight_t, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight_t)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().expect("rank >= 1") = self.weight_t.dim(1)?;
        y.reshape(out)
    }
}

/// PyTorch's `nn.LayerNorm` over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias` of shape `[dim]`.
    pub fn load(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        let weight = w.get(&names::weight(prefix), &[dim])?;
        let bias = w.get(&names::bias(prefix), &[dim])?;
        Ok(LayerNorm {
            inner: candle_nn::LayerNorm::new(weight, bias, eps),
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(&x.contiguous()?)
    }
}

/// Exact (erf) GELU, as `nn.GELU()` and Hugging Face's `gelu`.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.gelu_erf()
}

/// Scaled dot-product attention over `[batch, heads, len, head_dim]` tensors with an optional
/// additive mask broadcastable to `[batch, heads, len_q, len_k]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let head_dim = q.dim(D::Minus1)?;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(v)
}

/// L2-normalises the rows of a `[n, d]` matrix, as `F.normalize(x, dim=-1)` (eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f32::MAX)?;
    x.broadcast_div(&norm)
}
