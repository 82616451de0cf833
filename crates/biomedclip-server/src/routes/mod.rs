//! The HTTP routes, one module each; what they share (running inputs through the engine,
//! the embedding encodings) is here.

pub mod classify;
pub mod embed;
pub mod meta;
pub mod openai;
pub mod search;

use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::batcher::{EngineError, Work};
use crate::error::{from_library, ApiError};
use crate::images::{self, EncodedImage, Prepared};
use crate::state::{AppState, Ready};

/// How embeddings are written in answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// Arrays of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian `f32` values (4 bytes each), as OpenAI's API does.
    Base64,
}

/// One embedding: numbers, or base64 of little-endian `f32`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Embedding {
    /// The values.
    Float(Vec<f32>),
    /// Base64 of the little-endian `f32` values.
    Base64(String),
}

impl Embedding {
    /// `values` in `format`.
    pub fn new(values: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => Embedding::Float(values),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Embedding::Base64(images::BASE64.encode(bytes))
            }
        }
    }
}

/// The engine's failure as the answer to the request.
pub fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Stopped => ApiError::ShuttingDown,
        other => ApiError::Internal(other.to_string()),
    }
}

/// Tokenizes `texts` (422 naming the first that fails).
pub fn tokenize(ready: &Ready, texts: &[String], param: &str) -> Result<Vec<Vec<u32>>, ApiError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            ready
                .model
                .tokenizer()
                .encode(t)
                .map_err(|e| from_library(param, i, &e))
        })
        .collect()
}

/// Decodes and preprocesses a request's images, all checked before any is computed:
/// the pixels and, when asked, previews of what the model sees.
pub async fn prepare_images(
    state: &AppState,
    ready: &Ready,
    images: Vec<EncodedImage>,
    preview: bool,
    param: &'static str,
) -> Result<(Vec<Vec<f32>>, Vec<Option<String>>), ApiError> {
    if images.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let limits = biomedclip::image::Limits {
        max_pixels: state.config.max_image_pixels,
        max_bytes: state.config.payload_limit as u64,
    };
    let prepared =
        images::prepare(Arc::clone(&ready.model), images, limits, preview, param).await?;
    Ok(prepared
        .into_iter()
        .map(|Prepared { pixels, preview }| (pixels, preview))
        .unzip())
}

/// Image embeddings of preprocessed images.
pub async fn embed_pixels(ready: &Ready, pixels: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, ApiError> {
    ready
        .batcher
        .submit(Work::Images(pixels))
        .await
        .map_err(engine_error)
}

/// Text embeddings of token id sequences.
pub async fn embed_token_ids(ready: &Ready, ids: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, ApiError> {
    ready
        .batcher
        .submit(Work::Texts(ids))
        .await
        .map_err(engine_error)
}

/// 413 when a request carries more than `--max-client-batch` inputs.
pub fn check_count(state: &AppState, n: usize, what: &str) -> Result<(), ApiError> {
    let most = state.config.max_client_batch;
    if n > most {
        return Err(ApiError::TooLarge(format!(
            "{n} {what} in one request; the server takes at most {most} (--max-client-batch)"
        )));
    }
    Ok(())
}
