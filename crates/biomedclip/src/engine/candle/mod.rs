//! The candle towers: the same model written with candle's tensor ops, the device path for
//! GPUs (features `cuda`, `metal`). `f32` only. On the CPU they serve the tests, which check
//! them against the CPU engine.

pub(crate) mod layers;
pub(crate) mod text;
pub(crate) mod vision;

use candle_core::Tensor;

use super::Towers;
use crate::checkpoint::config::ModelDims;
use crate::checkpoint::weights::Weights;
use crate::error::{Error, Result};
use crate::precision::Precision;
use layers::l2_normalize;
use text::TextTower;
use vision::VisionTower;

/// Texts encoded per forward pass (padded to the longest of them).
pub const TEXT_BATCH: usize = 32;

/// The error for a reduced precision asked of the candle towers.
pub(crate) fn needs_cpu_engine(precision: Precision) -> Error {
    Error::InvalidInput(format!(
        "{precision} precision needs the CPU engine (--device cpu), not the candle towers, which run f32"
    ))
}

/// Both candle towers on one device.
pub(crate) struct CandleTowers {
    vision: VisionTower,
    text: TextTower,
    device: candle_core::Device,
    image_size: usize,
}

impl CandleTowers {
    /// Loads both towers onto the weights' device.
    pub(crate) fn load(weights: &Weights, dims: &ModelDims) -> Result<Self> {
        Ok(CandleTowers {
            vision: VisionTower::load(weights, &dims.vision, dims.embed_dim)?,
            text: TextTower::load(weights, &dims.text, dims.embed_dim)?,
            device: weights.device().clone(),
            image_size: dims.vision.image_size,
        })
    }
}

impl Towers for CandleTowers {
    fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.image_size;
        let x = Tensor::from_vec(images.concat(), (images.len(), 3, s, s), &self.device)?;
        Ok(l2_normalize(&self.vision.forward(&x)?)?.to_vec2::<f32>()?)
    }

    fn encode_token_ids(&self, ids: &[Vec<u32>], pad: u32) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(TEXT_BATCH) {
            let len = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(1);
            let mut flat = Vec::with_capacity(chunk.len() * len);
            for &i in chunk {
                flat.extend_from_slice(&ids[i]);
                flat.extend(std::iter::repeat_n(pad, len - ids[i].len()));
            }
            // The reference's mask: every id that is not [PAD].
            let mask: Vec<u32> = flat.iter().map(|&t| (t != pad) as u32).collect();
            let ids_t = Tensor::from_vec(flat, (chunk.len(), len), &self.device)?;
            let mask_t = Tensor::from_vec(mask, (chunk.len(), len), &self.device)?;
            let emb = l2_normalize(&self.text.forward(&ids_t, &mask_t)?)?.to_vec2::<f32>()?;
            for (&i, e) in chunk.iter().zip(emb) {
                out[i] = e;
            }
        }
        Ok(out)
    }

    fn reduce(&mut self, precision: Precision) -> Result<()> {
        Err(needs_cpu_engine(precision))
    }
}
