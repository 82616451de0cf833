//! `POST /embed`: image and text embeddings in one request, in input order.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    check_count, embed_pixels, embed_token_ids, prepare_images, tokenize, Embedding, EncodingFormat,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Payload;
use crate::images;
use crate::state::AppState;

/// Images and texts to embed. Images are base64 or `data:` URIs of PNG, JPEG, DICOM, TIFF,
/// BMP, GIF or WebP files (or, in a multipart form, file parts named `images`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// Encoded images (base64 or data URIs).
    #[serde(default)]
    pub images: Vec<String>,
    /// Texts (cleaned and tokenized as open_clip does; longer texts are truncated to the
    /// context length, as the reference does).
    #[serde(default)]
    pub texts: Vec<String>,
    /// Must be `true` (the default): the towers give L2-normalised embeddings, as open_clip's
    /// `encode_image`/`encode_text(normalize=True)` do.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// `float` (default) or `base64` (little-endian `f32`).
    #[serde(default)]
    pub encoding_format: EncodingFormat,
}

/// The embeddings, in input order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedResponse {
    /// One per image: JSON images first, then uploaded files.
    pub images: Vec<Embedding>,
    /// One per text.
    pub texts: Vec<Embedding>,
    /// Dimensions of each embedding.
    pub dim: usize,
}

/// Embeds images and texts into the joint space (L2-normalised).
#[utoipa::path(
    post,
    path = "/embed",
    request_body(content = EmbedRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Embeddings in input order", body = EmbedResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body or input count over the limit", body = ErrorBody),
        (status = 422, description = "An input cannot be used (names its index)", body = ErrorBody),
        (status = 429, description = "Every request slot is taken", body = ErrorBody),
        (status = 500, description = "The engine failed on this request", body = ErrorBody),
        (status = 503, description = "Loading, shutting down or timed out", body = ErrorBody),
    ),
    security((), ("api_key" = [])),
)]
pub async fn embed(
    State(state): State<Arc<AppState>>,
    payload: Payload<EmbedRequest>,
) -> Result<Json<EmbedResponse>, ApiError> {
    let ready = state.ready()?;
    let Payload { body, uploads } = payload;
    if body.normalize == Some(false) {
        return Err(ApiError::invalid(
            "normalize",
            None,
            "normalize: false is not offered: the towers give L2-normalised embeddings, as \
             open_clip's encode_image/encode_text(normalize=True) do",
        ));
    }
    check_count(
        &state,
        body.images.len() + uploads.len() + body.texts.len(),
        "inputs",
    )?;
    let encoded = images::collect(&body.images, uploads, "images")?;
    let ids = tokenize(ready, &body.texts, "texts")?;
    let (pixels, _) = prepare_images(&state, ready, encoded, false, "images").await?;
    let (images, texts) = tokio::join!(embed_pixels(ready, pixels), embed_token_ids(ready, ids));
    let format = body.encoding_format;
    let wrap = |v: Vec<Vec<f32>>| v.into_iter().map(|e| Embedding::new(e, format)).collect();
    Ok(Json(EmbedResponse {
        images: wrap(images?),
        texts: wrap(texts?),
        dim: ready.model.embed_dim(),
    }))
}
