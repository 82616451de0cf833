//! The joint model: both towers, the tokenizer, the preprocessing and `logit_scale`, loaded
//! from one model source. Mirrors open_clip 2.23.0 `CustomTextCLIP` (`src/open_clip/model.py`):
//! `encode_image`/`encode_text` with `normalize=True`.

use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::config::{BertJsonConfig, ModelDims, OpenClipConfig};
use crate::cpu::attention::Segments;
use crate::cpu::{kernels, passes};
use crate::error::{Error, Result};
use crate::hub::{ModelFiles, ModelSource};
use crate::layers::l2_normalize;
use crate::preprocess::Preprocessor;
use crate::render::Rendering;
use crate::text::TextTower;
use crate::tokenize::TextTokenizer;
use crate::vision::VisionTower;
use crate::weights::Weights;

/// The error for a reduced precision asked of the candle engine.
fn needs_cpu_engine(precision: Precision) -> Error {
    Error::InvalidInput(format!(
        "{} precision needs the CPU engine (a CPU device and the default backend)",
        precision.name()
    ))
}

/// `x / max(||x||, 1e-12)`, as `F.normalize`.
fn normalized(x: &[f32]) -> Vec<f32> {
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    x.iter().map(|v| v / norm).collect()
}

/// Images encoded per forward pass.
pub const IMAGE_BATCH: usize = 8;
/// Texts encoded per forward pass of the candle text tower (padded to the longest of them).
pub const TEXT_BATCH: usize = 32;
/// Tokens per forward pass of the CPU engine's text tower, whose sequences are packed one
/// after the other without padding (passes are balanced, so one may exceed this by less than
/// a sequence). About 50 captions; larger passes measured slower (their activations outgrow
/// the cache). With at least half this many tokens per worker thread, the passes run side by
/// side, one per worker ([`crate::cpu::passes`]).
pub const TEXT_TOKENS: usize = 2048;

/// Splits `items` into at most `parts` consecutive runs of about equal total size (each
/// item joins the run in which its middle falls); no run is empty.
fn balanced_chunks(items: &[usize], size: impl Fn(usize) -> usize, parts: usize) -> Vec<&[usize]> {
    let total: usize = items.iter().map(|&i| size(i)).sum();
    let (parts, total) = (parts.max(1), total.max(1));
    let mut chunks = Vec::with_capacity(parts);
    let (mut start, mut before, mut current) = (0, 0, 0);
    for (pos, &i) in items.iter().enumerate() {
        let s = size(i);
        let run = ((2 * before + s) * parts / (2 * total)).min(parts - 1);
        if run != current && pos > start {
            chunks.push(&items[start..pos]);
            start = pos;
        }
        current = run;
        before += s;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// Which implementation runs the towers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The CPU engine on a CPU device, candle elsewhere.
    #[default]
    Auto,
    /// candle's generic tensor ops (any device candle supports).
    Candle,
}

/// Arithmetic of the towers' transformer layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `f32` throughout: the reference's numbers.
    #[default]
    F32,
    /// The image transformer's linear layers in int8 ([`crate::cpu::int8`]): weights per output
    /// channel, activations per token, `i32` sums; attention, norms, the patch embedding and
    /// the head stay `f32`. The text tower stays `f32`: it is already fast (texts are short and
    /// unpadded), and in int8 its embeddings drift further (worst cosine 0.9989 against 0.9996
    /// for images on the full-size random-weight checkpoint).
    Int8,
    /// The image transformer's linear layers in bfloat16 ([`crate::cpu::bf16`]): weights and
    /// activations rounded to 8 significant bits, products summed in `f32`. Fast on CPUs with
    /// AVX512_BF16 (Intel Cooper Lake and later, AMD Zen 4 and later); elsewhere the same
    /// numbers are computed more slowly than `f32` ([`Precision::accelerated`]). Closer to
    /// `f32` than int8, slower than it. The text tower stays `f32`, as for int8.
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
            Precision::Bf16 => crate::cpu::bf16::native(),
        }
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

enum Towers {
    Cpu(Box<crate::cpu::vit::Vit>, Box<crate::cpu::bert::Bert>),
    Candle(Box<VisionTower>, Box<TextTower>),
}

/// BiomedCLIP: image and text encoders into one normalised embedding space.
pub struct BiomedClip {
    towers: Towers,
    tokenizer: TextTokenizer,
    preprocessor: Preprocessor,
    logit_scale: f32,
    dims: ModelDims,
    device: Device,
    precision: Precision,
}

impl BiomedClip {
    /// Resolves `source` (downloading into the Hugging Face cache if needed) and loads it.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        Self::from_files(&source.resolve()?, device)
    }

    /// Loads a model from resolved files.
    pub fn from_files(files: &ModelFiles, device: &Device) -> Result<Self> {
        Self::from_files_with(files, device, Backend::Auto)
    }

    /// Loads a model from resolved files with a chosen backend.
    pub fn from_files_with(files: &ModelFiles, device: &Device, backend: Backend) -> Result<Self> {
        Self::build(files, device, backend, Precision::F32)
    }

    /// Loads a model from resolved files at `precision` (CPU engine): the same model as
    /// [`Self::from_files`] followed by [`Self::set_precision`], but a reduced image tower is
    /// built straight from the checkpoint's weights, never laid out in `f32` first (less
    /// memory and time at start-up).
    pub fn from_files_at(
        files: &ModelFiles,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        Self::build(files, device, Backend::Auto, precision)
    }

    fn build(
        files: &ModelFiles,
        device: &Device,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self> {
        let cpu_engine = backend == Backend::Auto && device.is_cpu();
        if precision != Precision::F32 && !cpu_engine {
            return Err(needs_cpu_engine(precision));
        }
        let cfg = OpenClipConfig::from_file(&files.config)?;
        let bert = files
            .text_config
            .as_deref()
            .map(BertJsonConfig::from_file)
            .transpose()?;
        let weights = Weights::open(&files.weights, device)?;
        let dims = ModelDims::infer(&cfg, &files.config, bert.as_ref(), &weights)?;
        let towers = if cpu_engine {
            let (vit, bert) = rayon::join(
                || crate::cpu::vit::Vit::load(&weights, &dims.vision, dims.embed_dim, precision),
                || crate::cpu::bert::Bert::load(&weights, &dims.text, dims.embed_dim),
            );
            Towers::Cpu(Box::new(vit?), Box::new(bert?))
        } else {
            Towers::Candle(
                Box::new(VisionTower::load(&weights, &dims.vision, dims.embed_dim)?),
                Box::new(TextTower::load(&weights, &dims.text, dims.embed_dim)?),
            )
        };
        let logit_scale = weights.get_scalar("logit_scale")?.exp();
        let context = cfg
            .model_cfg
            .text_cfg
            .context_length
            .min(dims.text.max_positions);
        let tokenizer = if files
            .tokenizer
            .file_name()
            .is_some_and(|n| n == "vocab.txt")
        {
            TextTokenizer::from_vocab(&files.tokenizer, context)?
        } else {
            TextTokenizer::from_tokenizer_json(&files.tokenizer, context)?
        };
        if let Some(pad) = bert.as_ref().and_then(|b| b.pad_token_id) {
            if pad != tokenizer.pad_id() {
                return Err(Error::Config {
                    path: files.text_config.clone().unwrap_or_default(),
                    reason: format!(
                        "pad_token_id {pad} differs from the tokenizer's [PAD] id {}",
                        tokenizer.pad_id()
                    ),
                });
            }
        }
        let preprocessor = Preprocessor::new(&cfg.preprocess_cfg, dims.vision.image_size);
        Ok(BiomedClip {
            towers,
            tokenizer,
            preprocessor,
            logit_scale,
            dims,
            device: device.clone(),
            precision,
        })
    }

    /// Tower sizes as read from the checkpoint.
    pub fn dims(&self) -> &ModelDims {
        &self.dims
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The image preprocessing.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Sets how DICOM and 16-bit images are brought to 8 bits (default: the file's window,
    /// else the full range; [`Rendering::reference`] for the reference's behaviour).
    pub fn set_rendering(&mut self, rendering: Rendering) {
        self.preprocessor.set_rendering(rendering);
    }

    /// The towers' arithmetic.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Switches the towers to `precision`. Int8 and bf16 need the CPU engine; once reduced,
    /// changing the precision again needs a fresh load (the float weights are released).
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision == self.precision {
            return Ok(());
        }
        if self.precision != Precision::F32 {
            return Err(Error::InvalidInput(format!(
                "a {} model cannot change to {}; load it again",
                self.precision.name(),
                precision.name()
            )));
        }
        match &mut self.towers {
            Towers::Cpu(vit, _) => vit.reduce(precision),
            Towers::Candle(..) => return Err(needs_cpu_engine(precision)),
        }
        self.precision = precision;
        Ok(())
    }

    /// `exp(logit_scale)`: the temperature applied to cosine similarities.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// Dimension of the joint embedding space.
    pub fn embed_dim(&self) -> usize {
        self.dims.embed_dim
    }

    /// Encodes preprocessed images (each `3 * size * size` CHW floats) into L2-normalised
    /// embeddings, [`IMAGE_BATCH`] at a time; the CPU engine splits each batch into one pass
    /// per worker thread, run side by side ([`crate::cpu::passes`]).
    pub fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let s = self.preprocessor.size();
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            for (i, img) in chunk.iter().enumerate() {
                if img.len() != 3 * s * s {
                    return Err(Error::InvalidInput(format!(
                        "image {i} has {} values, expected 3 x {s} x {s}",
                        img.len()
                    )));
                }
            }
            match &self.towers {
                Towers::Cpu(vit, _) => {
                    let workers = kernels::threads();
                    let feats = if workers > 1 && chunk.len() >= workers {
                        // One pass per worker, side by side (see `cpu::passes`).
                        let parts: Vec<&[Vec<f32>]> =
                            chunk.chunks(chunk.len().div_ceil(workers)).collect();
                        passes::parallel_passes(&parts, |part| {
                            vit.forward(&part.concat(), part.len())
                        })
                        .concat()
                    } else {
                        vit.forward(&chunk.concat(), chunk.len())
                    };
                    out.extend(feats.chunks_exact(vit.out_dim()).map(normalized));
                }
                Towers::Candle(vision, _) => {
                    let x = Tensor::from_vec(chunk.concat(), (chunk.len(), 3, s, s), &self.device)?;
                    let emb = l2_normalize(&vision.forward(&x)?)?;
                    out.extend(emb.to_vec2::<f32>()?);
                }
            }
        }
        Ok(out)
    }

    /// Reads, decodes, preprocesses and encodes image files. Each file gets its own result,
    /// so one unreadable image does not stop the others.
    pub fn encode_image_files<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Vec<f32>>> {
        self.encode_image_files_with_progress(paths, |_| {})
    }

    /// [`Self::encode_image_files`], calling `progress(n)` after each batch of `n` files.
    pub fn encode_image_files_with_progress<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
        mut progress: impl FnMut(usize),
    ) -> Vec<Result<Vec<f32>>> {
        let mut results: Vec<Result<Vec<f32>>> = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(IMAGE_BATCH) {
            let pixels: Vec<Result<Vec<f32>>> = chunk
                .par_iter()
                .map(|p| self.preprocessor.process_file(p.as_ref()))
                .collect();
            let ok: Vec<Vec<f32>> = pixels
                .iter()
                .filter_map(|r| r.as_ref().ok().cloned())
                .collect();
            let mut embedded = match self.encode_pixels(&ok) {
                Ok(e) => e.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
                Err(e) => {
                    let msg = e.to_string();
                    ok.iter()
                        .map(|_| Err(Error::InvalidInput(msg.clone())))
                        .collect::<Vec<_>>()
                        .into_iter()
                }
            };
            for r in pixels {
                results.push(match r {
                    Ok(_) => embedded.next().expect("one embedding per decoded image"),
                    Err(e) => Err(e),
                });
            }
            progress(chunk.len());
        }
        results
    }

    /// Encodes token id sequences (each `[CLS] ... [SEP]`) into L2-normalised embeddings.
    /// The CPU engine packs about [`TEXT_TOKENS`] tokens per pass without padding, in passes
    /// of about equal size (side by side on the worker threads for large inputs); candle
    /// groups sequences by length and pads each batch to its longest.
    pub fn encode_token_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let max = self.dims.text.max_positions;
        if let Some((i, s)) = ids
            .iter()
            .enumerate()
            .find(|(_, s)| s.is_empty() || s.len() > max)
        {
            return Err(Error::InvalidInput(format!(
                "token sequence {i} has {} ids, expected 1 to {max}",
                s.len()
            )));
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        let pad = self.tokenizer.pad_id();
        match &self.towers {
            Towers::Cpu(_, bert) => {
                let total: usize = ids.iter().map(Vec::len).sum();
                let workers = kernels::threads();
                // Enough tokens for a full pass per worker: passes side by side (see
                // `cpu::passes`); fewer: one pass at a time, its products split across threads.
                let side_by_side = workers > 1 && total >= workers * TEXT_TOKENS / 2;
                let mut count = total.div_ceil(TEXT_TOKENS);
                if side_by_side {
                    count = count.next_multiple_of(workers);
                }
                let chunks = balanced_chunks(&order, |i| ids[i].len(), count);
                let pass = |chunk: &&[usize]| {
                    let seqs = Segments::from_lens(chunk.iter().map(|&i| ids[i].len()));
                    let flat: Vec<u32> =
                        chunk.iter().flat_map(|&i| ids[i].iter().copied()).collect();
                    bert.forward(&flat, &seqs, pad)
                };
                let feats = if side_by_side {
                    passes::parallel_passes(&chunks, pass)
                } else {
                    chunks.iter().map(pass).collect()
                };
                for (chunk, feats) in chunks.iter().zip(feats) {
                    for (&i, e) in chunk.iter().zip(feats.chunks_exact(self.dims.embed_dim)) {
                        out[i] = normalized(e);
                    }
                }
            }
            Towers::Candle(_, text) => {
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
                    let emb = l2_normalize(&text.forward(&ids_t, &mask_t)?)?.to_vec2::<f32>()?;
                    for (&i, e) in chunk.iter().zip(emb) {
                        out[i] = e;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Tokenizes and encodes texts into L2-normalised embeddings.
    pub fn encode_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let ids = texts
            .iter()
            .map(|t| self.tokenizer.encode(t.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        self.encode_token_ids(&ids)
    }

    /// Zero-shot probabilities: `softmax(logit_scale * image . text)` over the texts.
    pub fn probabilities(&self, image: &[f32], texts: &[Vec<f32>]) -> Vec<f32> {
        crate::scores::zero_shot_probabilities(image, texts, self.logit_scale)
    }
}

#[cfg(test)]
mod tests {
    use super::balanced_chunks;

    #[test]
    fn balanced_chunks_split_evenly_and_keep_every_item() {
        let sizes = [3, 4, 2, 9, 1, 1, 5, 5];
        let items: Vec<usize> = (0..sizes.len()).collect();
        let size = |i: usize| sizes[i];
        // Total 30; middles at 1.5, 5, 8, 13.5, 18.5, 19.5, 22.5, 27.5.
        assert_eq!(balanced_chunks(&items, size, 1), [&items[..]]);
        assert_eq!(
            balanced_chunks(&items, size, 2),
            [&[0, 1, 2, 3][..], &[4, 5, 6, 7]]
        );
        assert_eq!(
            balanced_chunks(&items, size, 3),
            [&[0, 1, 2][..], &[3, 4, 5], &[6, 7]]
        );
        // More parts than items: one item per run, none empty.
        assert_eq!(balanced_chunks(&items[..2], size, 8), [&[0][..], &[1]]);
        // One item far larger than the rest leaves fewer, but never empty, runs.
        let big = |i: usize| [100, 1, 1][i];
        assert_eq!(balanced_chunks(&[0, 1, 2], big, 4), [&[0][..], &[1, 2]]);
        assert!(balanced_chunks(&[], size, 2).is_empty());
    }
}
