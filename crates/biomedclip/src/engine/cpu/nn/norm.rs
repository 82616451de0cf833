//! LayerNorm parameters as the CPU engine holds them, and their loader.

use crate::checkpoint::names;
use crate::checkpoint::weights::Weights;
use crate::engine::cpu::ops::elementwise::Norm;
use crate::error::Result;

/// Loads the LayerNorm `module` (`{module}.weight`, `{module}.bias`) of width `dim`.
pub(crate) fn norm(w: &Weights, module: &str, dim: usize, eps: f64) -> Result<Norm> {
    Ok(Norm {
        gamma: w.get_vec(&names::weight(module), &[dim])?,
        beta: w.get_vec(&names::bias(module), &[dim])?,
        eps: eps as f32,
    })
}
