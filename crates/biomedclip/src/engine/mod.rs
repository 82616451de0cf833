//! Token ids and pixels -> embeddings: the two implementations of the towers behind one
//! trait. The hand-written CPU engine ([`cpu`]) is the CPU path at every precision; the
//! candle towers ([`candle`]) are the device path (CUDA, Metal), and run on the CPU in tests
//! to check them against the engine.

pub(crate) mod candle;
pub(crate) mod cpu;

use crate::error::Result;
use crate::precision::Precision;

/// Images encoded per forward pass.
pub const IMAGE_BATCH: usize = 8;

/// The image and text towers of one implementation, loaded from one checkpoint.
pub(crate) trait Towers: Send + Sync {
    /// L2-normalised embeddings of up to [`IMAGE_BATCH`] preprocessed images (each
    /// `3 * size * size` CHW floats, checked by the caller).
    fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>>;

    /// L2-normalised embeddings of token id sequences (each `[CLS] ... [SEP]`, checked by
    /// the caller against the position table), in input order.
    fn encode_token_ids(&self, ids: &[Vec<u32>], pad: u32) -> Result<Vec<Vec<f32>>>;

    /// Moves the image tower's transformer layers to `precision` (from `f32`).
    fn reduce(&mut self, precision: Precision) -> Result<()>;
}

/// `x / max(||x||, 1e-12)`, as `F.normalize`.
pub(crate) fn normalized(x: &[f32]) -> Vec<f32> {
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    x.iter().map(|v| v / norm).collect()
}
