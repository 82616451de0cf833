//! BiomedCLIP in Rust: the ViT-B/16 image encoder and PubMedBERT text encoder of
//! Zhang et al., "A Multimodal Biomedical Foundation Model Trained from Fifteen Million
//! Image-Text Pairs" (NEJM AI, 2024), giving the numbers of the open_clip 2.23.0 reference.
//! BiomedCLIP is a research model, not for clinical use.
//!
//! The pipeline, one module a stage, dependencies pointing one way:
//! - model source -> files -> config + weights: [`checkpoint`];
//! - image bytes -> pixels -> the tower's input: [`image`];
//! - text -> token ids: [`text`];
//! - token ids and pixels -> embeddings: the towers (a CPU engine, and candle for GPUs),
//!   behind [`BiomedClip`];
//! - embeddings -> probabilities and rankings: [`scores`], and with the `eval` feature the
//!   CLIP_benchmark metrics in [`eval`].
//!
//! ```
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-model");
//! # let xray = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/ihc.jpg");
//! use biomedclip::{BiomedClip, Device, ImageInput, ModelSource, DEFAULT_TEMPLATE};
//!
//! // `ModelSource::default()` is the Hugging Face model, downloaded once.
//! let model = BiomedClip::load(&ModelSource::Local(dir), &Device::Cpu)?;
//! let labels = ["chest X-ray", "brain MRI"];
//! let results = model.classify(&[ImageInput::path(&xray)], &labels, DEFAULT_TEMPLATE)?;
//! for score in results[0].as_ref().unwrap() {
//!     println!("{}: {:.3}", score.label, score.probability);
//! }
//! # Ok::<(), biomedclip::Error>(())
//! ```
//!
//! Cargo features: `hub` (downloads through hf-hub), `dicom` (DICOM through dicom-rs) and
//! `eval` (evaluation and the embedding cache), on by default; `cuda` and `metal` build the
//! candle towers for that GPU ([`Device`]).

pub mod checkpoint;
mod clip;
mod device;
pub(crate) mod engine;
pub mod error;
#[cfg(feature = "eval")]
pub mod eval;
pub mod image;
mod precision;
pub mod scores;
pub mod text;

pub use checkpoint::{ModelFiles, ModelSource, DEFAULT_MODEL, DEFAULT_REPO};
pub use clip::{BiomedClip, LabelScore, DEFAULT_TEMPLATE};
pub use device::Device;
pub use engine::IMAGE_BATCH;
pub use error::{Error, Result};
pub use image::{ImageInput, Rendering, Window};
pub use precision::Precision;

/// The CPU engine's text pass size, for benchmarks that size their inputs by it.
#[doc(hidden)]
pub const TEXT_TOKENS: usize = engine::cpu::TEXT_TOKENS;
