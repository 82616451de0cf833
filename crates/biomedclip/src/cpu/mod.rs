//! The CPU engine: both towers on plain `f32` buffers with fused kernels ([`kernels`]),
//! reusing activation buffers across layers. Same weights and the same arithmetic as the
//! candle towers ([`crate::vision`], [`crate::text`]), which serve other devices.

pub mod attention;
pub mod bert;
pub mod bf16;
#[cfg(openblas)]
pub(crate) mod blas;
pub mod first_token;
pub mod int8;
pub mod kernels;
#[cfg(target_arch = "x86_64")]
pub mod packed;
mod panels;
pub mod passes;
#[cfg(test)]
mod test_support;
pub mod vit;

use crate::error::Result;
use crate::weights::Weights;
use kernels::Linear;

pub(crate) fn linear(
    w: &Weights,
    prefix: &str,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
) -> Result<Linear> {
    Ok(Linear::new(
        w.get_floats(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
        if bias {
            Some(w.get_vec(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        },
        in_dim,
        out_dim,
    ))
}

/// LayerNorm parameters.
pub struct Norm {
    /// Scale.
    pub gamma: Vec<f32>,
    /// Shift.
    pub beta: Vec<f32>,
    /// Epsilon.
    pub eps: f32,
}

pub(crate) fn norm(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<Norm> {
    Ok(Norm {
        gamma: w.get_vec(&format!("{prefix}.weight"), &[dim])?,
        beta: w.get_vec(&format!("{prefix}.bias"), &[dim])?,
        eps: eps as f32,
    })
}
