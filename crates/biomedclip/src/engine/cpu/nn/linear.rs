//! `nn.Linear` on the CPU: one weight in one of four forms (as stored, packed for the
//! AVX-512 kernel, int8, bf16), and the epilogues fused into its product.

use crate::checkpoint::floats::Floats;
use crate::checkpoint::names;
use crate::checkpoint::weights::Weights;
use crate::engine::cpu::ops::elementwise::{add_rows, bias_gelu, gelu, layer_norm, Norm};
use crate::engine::cpu::ops::matmul::{matmul, Epilogue, Mat};
#[cfg(target_arch = "x86_64")]
use crate::engine::cpu::ops::packed::{self, PackedWeight};
use crate::engine::cpu::quant::bf16::Bf16Weight;
use crate::engine::cpu::quant::int8::Int8Weight;
use crate::error::Result;
use crate::precision::Precision;

/// Loads the linear layer `module` (`{module}.weight` `[out_dim, in_dim]`, and
/// `{module}.bias` `[out_dim]` when `bias`), its weight in place in the mapped checkpoint.
pub(crate) fn linear(
    w: &Weights,
    module: &str,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
) -> Result<Linear> {
    Ok(Linear::new(
        w.get_floats(&names::weight(module), &[out_dim, in_dim])?,
        if bias {
            Some(w.get_vec(&names::bias(module), &[out_dim])?)
        } else {
            None
        },
        in_dim,
        out_dim,
    ))
}

/// A linear layer's weight, in the form its products read.
pub(crate) enum LinearWeight {
    /// `[out_dim, in_dim]` row-major as PyTorch stores it, usually in place in the mapped
    /// checkpoint; products through BLAS or `gemm`.
    F32(Floats),
    /// Packed once for the AVX-512 `f32` kernel ([`packed`]).
    #[cfg(target_arch = "x86_64")]
    Packed(PackedWeight),
    /// Int8 per output channel.
    Int8(Int8Weight),
    /// Bfloat16.
    Bf16(Bf16Weight),
}

/// `nn.Linear`: `x W^T + b`.
pub(crate) struct Linear {
    /// The weight.
    pub weight: LinearWeight,
    /// `[out_dim]`.
    pub bias: Option<Vec<f32>>,
    /// Input features.
    pub in_dim: usize,
    /// Output features.
    pub out_dim: usize,
}

impl Linear {
    /// A float layer from a `[out_dim, in_dim]` weight and an optional `[out_dim]` bias.
    pub fn new(
        weight: impl Into<Floats>,
        bias: Option<Vec<f32>>,
        in_dim: usize,
        out_dim: usize,
    ) -> Self {
        let weight = weight.into();
        debug_assert_eq!(weight.len(), in_dim * out_dim);
        Linear {
            weight: LinearWeight::F32(weight),
            bias,
            in_dim,
            out_dim,
        }
    }

    /// The `[out_dim, in_dim]` float weight and the bias, for layers that are fused or
    /// folded at load, before any packing or reduction.
    ///
    /// # Panics
    /// If the weight was already packed or reduced (a loading-order bug).
    pub fn into_float_parts(self) -> (Floats, Option<Vec<f32>>) {
        match self.weight {
            LinearWeight::F32(w) => (w, self.bias),
            _ => panic!("the float weight of a packed or reduced layer"),
        }
    }

    /// Replaces the weight by its `precision` form ([`Int8Weight`], [`Bf16Weight`]); later
    /// products run in that precision. `f32`, or a layer already reduced: no change.
    pub fn reduce(&mut self, precision: Precision) {
        let (n, k) = (self.out_dim, self.in_dim);
        let convert = |w: &[f32]| match precision {
            Precision::Int8 => Some(LinearWeight::Int8(Int8Weight::quantize(w, n, k))),
            Precision::Bf16 => Some(LinearWeight::Bf16(Bf16Weight::convert(w, n, k))),
            _ => None,
        };
        let reduced = match &self.weight {
            LinearWeight::F32(w) => convert(w),
            #[cfg(target_arch = "x86_64")]
            LinearWeight::Packed(p) => convert(&p.unpacked()),
            LinearWeight::Int8(_) | LinearWeight::Bf16(_) => None,
        };
        if let Some(reduced) = reduced {
            self.weight = reduced;
        }
    }

    /// Packs the float weight for the AVX-512 kernel ([`packed`]) where the CPU runs it;
    /// elsewhere the weight stays as it is, for the BLAS path.
    pub fn pack(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let LinearWeight::F32(w) = &self.weight {
            if packed::available() {
                self.weight =
                    LinearWeight::Packed(PackedWeight::pack(w, self.out_dim, self.in_dim));
            }
        }
    }

    /// Applies the layer to `LayerNorm(x)` for `rows` rows of `x`. The float path writes the
    /// normalised rows into `normed` first; the reduced paths convert each normalised row
    /// directly and leave `normed` as it was.
    pub fn forward_normed(
        &self,
        x: &[f32],
        norm: &Norm,
        normed: &mut [f32],
        rows: usize,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        let k = self.in_dim;
        let bias = self.bias.as_deref();
        match &self.weight {
            LinearWeight::Int8(q) => return q.forward_normed(x, rows, norm, bias, out, epilogue),
            LinearWeight::Bf16(q) => return q.forward_normed(x, rows, norm, bias, out, epilogue),
            _ => {}
        }
        let normed = &mut normed[..rows * k];
        layer_norm(&x[..rows * k], normed, &norm.gamma, &norm.beta, norm.eps);
        self.forward(normed, rows, out, epilogue)
    }

    /// Applies the layer to `rows` rows of `x` (`[rows, in_dim]`) into `out` (`[rows, out_dim]`).
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], epilogue: Epilogue) {
        let bias = self.bias.as_deref();
        let weight = match &self.weight {
            LinearWeight::F32(w) => w,
            #[cfg(target_arch = "x86_64")]
            LinearWeight::Packed(p) => return p.forward(x, rows, bias, out, epilogue),
            LinearWeight::Int8(q) => return q.forward(x, rows, bias, out, epilogue),
            LinearWeight::Bf16(q) => return q.forward(x, rows, bias, out, epilogue),
        };
        let (k, n) = (self.in_dim, self.out_dim);
        debug_assert!(x.len() >= rows * k && out.len() >= rows * n);
        let out = &mut out[..rows * n];
        let accumulate = match (epilogue, &self.bias) {
            // The bias is added in the GELU pass (one pass over the output fewer).
            (Epilogue::Gelu, _) => false,
            (Epilogue::Accumulate, Some(b)) => {
                add_rows(out, b);
                true
            }
            (Epilogue::Accumulate, None) => true,
            (_, Some(b)) => {
                for row in out.chunks_exact_mut(n) {
                    row.copy_from_slice(b);
                }
                true
            }
            (_, None) => false,
        };
        // SAFETY: the slices cover rows x k, k x n (the weight read transposed) and rows x n.
        unsafe {
            matmul(
                rows,
                n,
                k,
                out.as_mut_ptr(),
                n,
                accumulate,
                Mat::rows(x, k),
                Mat::transposed(weight, k),
                1.0,
                true,
            );
        }
        if epilogue == Epilogue::Gelu {
            match &self.bias {
                Some(b) => bias_gelu(out, b),
                None => gelu(out),
            }
        }
    }
}
