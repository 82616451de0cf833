//! The library's error type: every failure names the file, key or input it concerns.

use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong between a model source and an embedding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A model directory lacks a required file.
    #[error("model directory {dir} has no {what} (looked for {candidates})")]
    MissingModelFile {
        /// The directory searched.
        dir: PathBuf,
        /// What was being looked for, in words.
        what: &'static str,
        /// The file names that would have been accepted.
        candidates: String,
    },

    /// The model could not be fetched from the Hugging Face Hub and is not cached.
    #[error(
        "cannot fetch {file} of {repo} from the Hugging Face Hub ({reason}) and it is not in the \
         local cache; download the model once where the Hub is reachable, or pass a local \
         directory laid out like the Hub repository with --model /path/to/dir"
    )]
    Hub {
        /// Repository id, e.g. `microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`.
        repo: String,
        /// The file that was requested.
        file: String,
        /// Why the download failed.
        reason: String,
    },

    /// `open_clip_config.json` (or a tower `config.json`) is malformed.
    #[error("invalid config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A weights file could not be parsed.
    #[error("cannot load weights from {path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A tensor the architecture needs is absent from the checkpoint.
    #[error("tensor `{key}` is missing from {path}")]
    MissingTensor {
        /// The state-dict key.
        key: String,
        /// The weights file.
        path: PathBuf,
    },

    /// A tensor has a shape the architecture does not accept.
    #[error("tensor `{key}` in {path} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The state-dict key.
        key: String,
        /// The weights file.
        path: PathBuf,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape stored in the checkpoint.
        found: Vec<usize>,
    },

    /// The tokenizer files could not be loaded.
    #[error("cannot load tokenizer from {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A text could not be tokenized.
    #[error("cannot tokenize text {text:?}: {reason}")]
    Tokenize {
        /// The text (possibly shortened).
        text: String,
        /// What went wrong.
        reason: String,
    },

    /// An image could not be decoded.
    #[error("cannot decode image {path}: {reason}")]
    Image {
        /// The image file (or a description of in-memory input).
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A caller passed arguments the library cannot honour.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A tensor operation failed (a bug or an exhausted resource, not bad input).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    /// The forward pass of a batch failed, and with it every image of the batch.
    #[error("the batch this image was encoded in failed: {source}")]
    Batch {
        /// The batch's error, shared by its images.
        #[source]
        source: Arc<Error>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source: error,
        }
    }
}
