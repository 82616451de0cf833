//! `POST /v1/embeddings`: OpenAI's embeddings API, so that OpenAI clients work unchanged;
//! `modality: "image"` takes data-URI (or base64) images as infinity does. Any `model`
//! string is accepted, as text-embeddings-inference does: the server has one model.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    check_count, embed_pixels, embed_token_ids, prepare_images, tokenize, Embedding, EncodingFormat,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Payload;
use crate::images;
use crate::state::AppState;

/// What the inputs are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Texts (the default).
    #[default]
    Text,
    /// Images as data URIs or base64.
    Image,
}

/// OpenAI's embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenAiRequest {
    /// A string or a list of strings (texts, or images with `modality: "image"`).
    #[schema(value_type = Vec<String>)]
    pub input: Value,
    /// Any name; answered with the server's model name.
    #[serde(default)]
    pub model: Option<String>,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Not offered: refused unless it equals the model's dimensions.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted and ignored.
    #[serde(default)]
    pub user: Option<String>,
    /// `text` (default) or `image`.
    #[serde(default)]
    pub modality: Modality,
}

/// One embedding of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    pub object: &'static str,
    /// Position in `input`.
    pub index: usize,
    /// The values, or their base64.
    pub embedding: Embedding,
}

/// Tokens counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens of the texts, `[CLS]` and `[SEP]` included (0 for images).
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}

/// OpenAI's embeddings answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiResponse {
    /// Always `list`.
    pub object: &'static str,
    /// One per input, in order.
    pub data: Vec<OpenAiEmbedding>,
    /// The server's model.
    pub model: String,
    /// Tokens counted.
    pub usage: Usage,
}

/// `input` as a list of strings; token-id arrays are refused by name.
fn inputs(input: &Value) -> Result<Vec<String>, ApiError> {
    let refuse = |message: &str| Err(ApiError::invalid("input", None, message));
    match input {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(ApiError::invalid(
                    "input",
                    Some(i),
                    format!(
                        "input[{i}]: token ids are not accepted (this model has its own \
                         tokenizer); send the text"
                    ),
                )),
                _ => Err(ApiError::invalid(
                    "input",
                    Some(i),
                    format!("input[{i}]: expected a string"),
                )),
            })
            .collect(),
        _ => refuse("input: expected a string or a list of strings"),
    }
}

/// Embeds texts or images, answering as OpenAI's API does.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    request_body(content = OpenAiRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Embeddings in input order", body = OpenAiResponse),
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
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    payload: Payload<OpenAiRequest>,
) -> Result<Json<OpenAiResponse>, ApiError> {
    let ready = state.ready()?;
    if !payload.uploads.is_empty() {
        return Err(ApiError::invalid(
            "input",
            None,
            "file uploads are not part of this API: send images as data URIs in `input` with \
             `modality: \"image\"`, or upload them to /embed",
        ));
    }
    let body = payload.body;
    let dim = ready.model.embed_dim();
    if let Some(d) = body.dimensions.filter(|&d| d != dim) {
        return Err(ApiError::invalid(
            "dimensions",
            None,
            format!(
                "dimensions: {d} is not offered; this model's embeddings have {dim} dimensions \
                 (leave `dimensions` out)"
            ),
        ));
    }
    let inputs = inputs(&body.input)?;
    if inputs.is_empty() {
        return Err(ApiError::invalid("input", None, "input: the list is empty"));
    }
    check_count(&state, inputs.len(), "inputs")?;
    let (embeddings, tokens) = match body.modality {
        Modality::Text => {
            let ids = tokenize(ready, &inputs, "input")?;
            let tokens = ids.iter().map(Vec::len).sum();
            (embed_token_ids(ready, ids).await?, tokens)
        }
        Modality::Image => {
            let encoded = images::collect(&inputs, Vec::new(), "input")?;
            let (pixels, _) = prepare_images(&state, ready, encoded, false, "input").await?;
            (embed_pixels(ready, pixels).await?, 0)
        }
    };
    Ok(Json(OpenAiResponse {
        object: "list",
        data: embeddings
            .into_iter()
            .enumerate()
            .map(|(index, e)| OpenAiEmbedding {
                object: "embedding",
                index,
                embedding: Embedding::new(e, body.encoding_format),
            })
            .collect(),
        model: state.config.model_name.clone(),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}
