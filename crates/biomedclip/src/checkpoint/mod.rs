//! Model source -> files -> config + weights: where a checkpoint comes from (a local
//! directory or the Hugging Face Hub), its configs and the dimensions its tensors imply,
//! every tensor key in one place, and the weights reader (safetensors or PyTorch's zip +
//! pickle, memory-mapped, `f32` tensors used in place).

pub mod config;
pub mod convert;
pub mod floats;
#[cfg(feature = "hub")]
mod hub;
pub mod names;
pub mod pickle_guard;
pub mod source;
pub mod weights;

pub use floats::Floats;
pub use source::{ModelFiles, ModelSource, DEFAULT_MODEL, DEFAULT_REPO};
pub use weights::Weights;
