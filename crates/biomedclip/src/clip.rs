//! The joint model: both towers, the tokenizer, the preprocessing and `logit_scale`, loaded
//! from one model source. Mirrors open_clip 2.23.0 `CustomTextCLIP` (`src/open_clip/model.py`):
//! `encode_image`/`encode_text` with `normalize=True`.

use std::sync::Arc;

use rayon::prelude::*;

use crate::checkpoint::config::{BertJsonConfig, ModelDims, OpenClipConfig};
use crate::checkpoint::names;
use crate::checkpoint::source::{ModelFiles, ModelSource};
use crate::checkpoint::weights::Weights;
use crate::device::Device;
use crate::engine::{self, Towers, IMAGE_BATCH};
use crate::error::{Error, Result};
use crate::image::input::ImageInput;
use crate::image::limits::Limits;
use crate::image::preprocess::Preprocessor;
use crate::image::render::Rendering;
use crate::precision::Precision;
use crate::scores::{ranking, zero_shot_probabilities};
use crate::text::tokenize::TextTokenizer;

/// The model card's prompt template: the text put before each label.
pub const DEFAULT_TEMPLATE: &str = "this is a photo of ";

/// One label's share of an image in zero-shot classification.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    /// The label as given.
    pub label: String,
    /// `softmax(logit_scale * image . text)` over the labels.
    pub probability: f32,
}

/// BiomedCLIP: image and text encoders into one normalised embedding space.
///
/// ```
/// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-model");
/// use biomedclip::{BiomedClip, Device, ImageInput, ModelSource};
///
/// let model = BiomedClip::load(&ModelSource::Local(dir), &Device::Cpu)?;
/// let texts = model.encode_texts(&["chest X-ray", "brain MRI"])?;
/// assert_eq!(texts[1].len(), model.embed_dim());
///
/// // An image already in memory: 2 x 1 pixels, interleaved RGB.
/// let pixels = [255, 0, 0, 0, 0, 255];
/// let images = model.encode_images(&[ImageInput::rgb8(2, 1, &pixels)]);
/// let image = images[0].as_ref().unwrap();
/// let probabilities = model.probabilities(image, &texts);
/// assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
/// # Ok::<(), biomedclip::Error>(())
/// ```
pub struct BiomedClip {
    towers: Box<dyn Towers>,
    tokenizer: TextTokenizer,
    preprocessor: Preprocessor,
    logit_scale: f32,
    dims: ModelDims,
    device: Device,
    precision: Precision,
}

impl std::fmt::Debug for BiomedClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiomedClip")
            .field("dims", &self.dims)
            .field("device", &self.device)
            .field("precision", &self.precision)
            .field("logit_scale", &self.logit_scale)
            .finish_non_exhaustive()
    }
}

impl BiomedClip {
    /// Resolves `source` (downloading into the Hugging Face cache if needed) and loads it.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        Self::from_files(&source.resolve()?, device)
    }

    /// Loads a model from resolved files.
    pub fn from_files(files: &ModelFiles, device: &Device) -> Result<Self> {
        Self::build(files, *device, Precision::F32, None)
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
        Self::build(files, *device, precision, None)
    }

    /// The candle towers (the GPU path) run on the CPU, for tests that check them against
    /// the CPU engine where no GPU is.
    #[doc(hidden)]
    pub fn from_files_on_candle_cpu(files: &ModelFiles) -> Result<Self> {
        Self::build(
            files,
            Device::Cpu,
            Precision::F32,
            Some(candle_core::Device::Cpu),
        )
    }

    fn build(
        files: &ModelFiles,
        device: Device,
        precision: Precision,
        candle_cpu: Option<candle_core::Device>,
    ) -> Result<Self> {
        let candle_device = match (&candle_cpu, device) {
            (Some(d), _) => Some(d.clone()),
            (None, Device::Cpu) => None,
            (None, gpu) => Some(gpu.candle()?),
        };
        if precision != Precision::F32 && candle_device.is_some() {
            return Err(engine::candle::needs_cpu_engine(precision));
        }
        let cfg = OpenClipConfig::from_file(&files.config)?;
        let bert = files
            .text_config
            .as_deref()
            .map(BertJsonConfig::from_file)
            .transpose()?;
        let mut weights = Weights::open(&files.weights)?;
        let dims = ModelDims::infer(&cfg, &files.config, bert.as_ref(), &weights)?;
        let towers: Box<dyn Towers> = match candle_device {
            None => Box::new(engine::cpu::CpuTowers::load(&weights, &dims, precision)?),
            Some(d) => {
                weights.set_device(d);
                Box::new(engine::candle::CandleTowers::load(&weights, &dims)?)
            }
        };
        let logit_scale = weights.get_scalar(names::LOGIT_SCALE)?.exp();
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
        if tokenizer.max_id() as usize >= dims.text.vocab {
            return Err(Error::Tokenizer {
                path: files.tokenizer.clone(),
                reason: format!(
                    "token id {} is beyond the {} rows of the checkpoint's `{}`",
                    tokenizer.max_id(),
                    dims.text.vocab,
                    names::weight(names::text::WORD_EMBEDDINGS)
                ),
            });
        }
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
            device,
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

    /// Sets what one image input may cost (pixels, bytes read); inputs beyond it fail with
    /// an error naming them, before anything is allocated for them.
    pub fn set_limits(&mut self, limits: Limits) {
        self.preprocessor.set_limits(limits);
    }

    /// Where the towers run.
    pub fn device(&self) -> Device {
        self.device
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
                "a {} model cannot change to {precision}; load it again",
                self.precision
            )));
        }
        self.towers.reduce(precision)?;
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

    /// Encodes preprocessed images (each `3 * size * size` CHW floats, as
    /// [`Preprocessor`] makes them) into L2-normalised embeddings, [`IMAGE_BATCH`] at a time.
    pub fn encode_pixels(&self, images: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        let s = self.preprocessor.size();
        if let Some((i, img)) = images
            .iter()
            .enumerate()
            .find(|(_, img)| img.len() != 3 * s * s)
        {
            return Err(Error::InvalidInput(format!(
                "image {i} has {} values, expected 3 x {s} x {s}",
                img.len()
            )));
        }
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            out.extend(self.towers.encode_pixels(chunk)?);
        }
        Ok(out)
    }

    /// Decodes, preprocesses and encodes images: files (`scan.dcm#frame=N` takes frame `N`
    /// of a multi-frame DICOM file), encoded bytes, or decoded RGB buffers. Each image gets
    /// its own result, so one that cannot be read does not stop the others.
    pub fn encode_images(&self, images: &[ImageInput<'_>]) -> Vec<Result<Vec<f32>>> {
        self.encode_images_with_progress(images, |_| {})
    }

    /// [`Self::encode_images`], calling `progress(n)` after each batch of `n` images.
    pub fn encode_images_with_progress(
        &self,
        images: &[ImageInput<'_>],
        mut progress: impl FnMut(usize),
    ) -> Vec<Result<Vec<f32>>> {
        let mut results: Vec<Result<Vec<f32>>> = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            let mut pixels: Vec<Result<Vec<f32>>> = chunk
                .par_iter()
                .map(|image| self.preprocessor.process(image))
                .collect();
            let ok: Vec<Vec<f32>> = pixels
                .iter_mut()
                .filter_map(|r| r.as_mut().ok().map(std::mem::take))
                .collect();
            let mut embedded: Box<dyn Iterator<Item = Result<Vec<f32>>>> =
                match self.encode_pixels(&ok) {
                    Ok(e) => Box::new(e.into_iter().map(Ok)),
                    Err(e) => {
                        let e = Arc::new(e);
                        Box::new((0..ok.len()).map(move |_| {
                            Err(Error::Batch {
                                source: Arc::clone(&e),
                            })
                        }))
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

    /// Reads, decodes, preprocesses and encodes image files ([`Self::encode_images`] on
    /// paths).
    pub fn encode_image_files<P: AsRef<std::path::Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Vec<Result<Vec<f32>>> {
        self.encode_image_files_with_progress(paths, |_| {})
    }

    /// [`Self::encode_image_files`], calling `progress(n)` after each batch of `n` files.
    pub fn encode_image_files_with_progress<P: AsRef<std::path::Path> + Sync>(
        &self,
        paths: &[P],
        progress: impl FnMut(usize),
    ) -> Vec<Result<Vec<f32>>> {
        let inputs: Vec<ImageInput<'_>> = paths.iter().map(|p| ImageInput::path(p)).collect();
        self.encode_images_with_progress(&inputs, progress)
    }

    /// Encodes token id sequences (each `[CLS] ... [SEP]`) into L2-normalised embeddings.
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
        self.towers.encode_token_ids(ids, self.tokenizer.pad_id())
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
        zero_shot_probabilities(image, texts, self.logit_scale)
    }

    /// Zero-shot classification as the model card does it: each label becomes the prompt
    /// `template + label`, and each image gets the labels ranked by probability, highest
    /// first. Labels must be non-empty and distinct. Each image gets its own result.
    ///
    /// ```
    /// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-model");
    /// # let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/ihc.jpg");
    /// use biomedclip::{BiomedClip, Device, ImageInput, ModelSource, DEFAULT_TEMPLATE};
    ///
    /// let model = BiomedClip::load(&ModelSource::Local(dir), &Device::Cpu)?;
    /// let labels = ["chest X-ray", "brain MRI", "immunohistochemistry histopathology"];
    /// let results = model.classify(&[ImageInput::path(&image)], &labels, DEFAULT_TEMPLATE)?;
    /// let ranked = results[0].as_ref().unwrap();
    /// assert_eq!(ranked.len(), 3);
    /// assert!(ranked[0].probability >= ranked[1].probability);
    /// # Ok::<(), biomedclip::Error>(())
    /// ```
    pub fn classify<S: AsRef<str>>(
        &self,
        images: &[ImageInput<'_>],
        labels: &[S],
        template: &str,
    ) -> Result<Vec<Result<Vec<LabelScore>>>> {
        self.classify_with_progress(images, labels, template, |_| {})
    }

    /// [`Self::classify`], calling `progress(n)` after each batch of `n` images.
    pub fn classify_with_progress<S: AsRef<str>>(
        &self,
        images: &[ImageInput<'_>],
        labels: &[S],
        template: &str,
        progress: impl FnMut(usize),
    ) -> Result<Vec<Result<Vec<LabelScore>>>> {
        if labels.is_empty() {
            return Err(Error::InvalidInput("no labels to classify against".into()));
        }
        for (i, label) in labels.iter().enumerate() {
            let label = label.as_ref();
            if label.trim().is_empty() {
                return Err(Error::InvalidInput(format!("label {} is empty", i + 1)));
            }
            if labels[..i].iter().any(|l| l.as_ref() == label) {
                return Err(Error::InvalidInput(format!(
                    "label {label:?} is given more than once"
                )));
            }
        }
        let prompts: Vec<String> = labels
            .iter()
            .map(|l| format!("{template}{}", l.as_ref()))
            .collect();
        let texts = self.encode_texts(&prompts)?;
        Ok(self
            .encode_images_with_progress(images, progress)
            .into_iter()
            .map(|image| {
                let probs = self.probabilities(&image?, &texts);
                Ok(ranking(&probs)
                    .into_iter()
                    .map(|i| LabelScore {
                        label: labels[i].as_ref().to_string(),
                        probability: probs[i],
                    })
                    .collect())
            })
            .collect())
    }
}
