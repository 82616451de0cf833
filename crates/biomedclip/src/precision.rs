//! The arithmetic of the towers' transformer layers.

use crate::error::{Error, Result};

/// Arithmetic of the towers' transformer layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Precision {
    /// `f32` throughout: the reference's numbers.
    #[default]
    F32,
    /// The image transformer's linear layers in int8: weights per output channel,
    /// activations per token, `i32` sums; attention, norms, the patch embedding and the head
    /// stay `f32`. The text tower stays `f32`: it is already fast (texts are short and
    /// unpadded), and in int8 its embeddings drift further (worst cosine 0.9989 against 0.9996
    /// for images on the full-size random-weight checkpoint).
    Int8,
    /// The image transformer's linear layers in bfloat16: weights and activations rounded to
    /// 8 significant bits, products summed in `f32`. Fast on CPUs with AVX512_BF16 (Intel
    /// Cooper Lake and later, AMD Zen 4 and later); elsewhere the same numbers are computed
    /// more slowly than `f32` ([`Precision::accelerated`]). Closer to `f32` than int8, slower
    /// than it. The text tower stays `f32`, as for int8.
    Bf16,
}

impl Precision {
    /// The name used on the command line and in cache keys.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }

    /// Whether this CPU runs the precision at full speed: `f32` and int8 everywhere, bf16
    /// where it has AVX512_BF16.
    pub fn accelerated(self) -> bool {
        match self {
            Precision::F32 | Precision::Int8 => true,
            Precision::Bf16 => crate::engine::cpu::quant::bf16::native(),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            "bf16" => Ok(Precision::Bf16),
            other => Err(Error::InvalidInput(format!(
                "unknown precision {other:?} (expected f32, int8 or bf16)"
            ))),
        }
    }
}
