//! BiomedCLIP in Rust: the ViT-B/16 image encoder and PubMedBERT text encoder of
//! Zhang et al., "A Multimodal Biomedical Foundation Model Trained from Fifteen Million
//! Image-Text Pairs" (NEJM AI, 2024), giving the numbers of the open_clip 2.23.0 reference.
//!
//! The pipeline, one module a stage:
//! model source ([`hub`]) -> files -> config ([`config`]) + weights ([`weights`]) -> towers
//! ([`vision`], [`text`]) -> [`BiomedClip`]; image bytes -> pixels ([`decode`],
//! [`resample`], [`preprocess`]); text -> ids ([`clean`], [`tokenize`]); embeddings ->
//! probabilities ([`scores`]).
//!
//! ```no_run
//! use biomedclip::{BiomedClip, ModelSource};
//! let model = BiomedClip::load(&ModelSource::default(), &candle_core::Device::Cpu)?;
//! let labels = ["this is a photo of chest X-ray", "this is a photo of brain MRI"];
//! let texts = model.encode_texts(&labels)?;
//! let image = model.encode_image_files(&["xray.png"]).remove(0)?;
//! let probs = model.probabilities(&image, &texts);
//! # Ok::<(), biomedclip::Error>(())
//! ```

pub mod cache;
pub mod clean;
pub mod config;
pub mod convert;
pub mod cpu;
pub mod decode;
pub mod dicom;
pub mod error;
pub mod eval;
pub mod floats;
pub mod hub;
pub mod input;
pub mod layers;
pub mod model;
pub mod preprocess;
pub mod render;
pub mod resample;
pub mod scores;
pub mod text;
pub mod tokenize;
pub mod vision;
pub mod weights;

pub use candle_core::Device;
pub use error::{Error, Result};
pub use hub::{ModelFiles, ModelSource, DEFAULT_REPO};
pub use model::{Backend, BiomedClip, Precision};
