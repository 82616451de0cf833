//! Evaluation as papers report it: zero-shot classification, image-text retrieval and
//! linear probes, with CLIP_benchmark's metric definitions.

pub mod cache;
pub mod dataset;
pub mod heatmap;
pub mod metrics;
pub mod probe;

pub use dataset::{CaptionPairs, Classes, LabelledImages};
pub use metrics::{class_embeddings, ClassificationReport, RetrievalReport};
pub use probe::{linear_probe, ProbeReport};
