//! The routes about the server rather than the model's work: health, info, metrics, the
//! OpenAPI document with its page, and the web page.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The model card's notice, shown wherever results are.
pub const NOTICE: &str = "BiomedCLIP is a research model: for research only, not for clinical \
use or any decision about a patient's care.";

/// Whether the server can answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `loading` or `stopping`.
    pub status: &'static str,
}

/// 200 once the model is loaded and a probe inference succeeded; 503 before, and once a
/// shutdown began.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Loading or stopping", body = Health),
))]
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (status, word) = if state.stopping.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if state.ready.get().is_some() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    };
    (status, Json(Health { status: word })).into_response()
}

/// The server's limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    /// Images per engine call.
    pub max_batch_images: usize,
    /// Tokens per engine call.
    pub max_batch_tokens: usize,
    /// Requests in flight at once; more are answered 429.
    pub max_concurrent_requests: usize,
    /// Inputs per request; more are answered 413.
    pub max_client_batch: usize,
    /// Bytes per request body; more are answered 413.
    pub payload_limit: usize,
    /// Pixels per image; more are answered 422.
    pub max_image_pixels: u64,
    /// Seconds a request may take; longer is answered 503.
    pub request_timeout_seconds: f64,
}

/// The model and the server.
#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    /// Where the model came from.
    pub model: String,
    /// The server's version.
    pub version: &'static str,
    /// Embedding dimensions.
    pub embed_dim: usize,
    /// Image side the model sees, in pixels.
    pub image_size: usize,
    /// Text tokens per text, `[CLS]` and `[SEP]` included.
    pub context_length: usize,
    /// The image tower's arithmetic (`f32`, `int8`, `bf16`).
    pub precision: String,
    /// Where the towers run.
    pub device: String,
    /// The temperature applied to cosine similarities.
    pub logit_scale: f32,
    /// The server's limits.
    pub limits: Limits,
    /// The model card's notice.
    pub notice: &'static str,
}

/// The model (source, dimensions, precision), the server's version and its limits.
#[utoipa::path(get, path = "/info", responses(
    (status = 200, description = "The model and limits", body = Info),
    (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    (status = 503, description = "The model is loading", body = ErrorBody),
), security((), ("api_key" = [])))]
pub async fn info(State(state): State<Arc<AppState>>) -> Result<Json<Info>, ApiError> {
    let model = &state.ready()?.model;
    let c = &state.config;
    Ok(Json(Info {
        model: c.model_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        embed_dim: model.embed_dim(),
        image_size: model.preprocessor().size(),
        context_length: model.tokenizer().context_length(),
        precision: model.precision().to_string(),
        device: model.device().to_string(),
        logit_scale: model.logit_scale(),
        limits: Limits {
            max_batch_images: c.max_batch_images,
            max_batch_tokens: c.max_batch_tokens,
            max_concurrent_requests: c.max_concurrent_requests,
            max_client_batch: c.max_client_batch,
            payload_limit: c.payload_limit,
            max_image_pixels: c.max_image_pixels,
            request_timeout_seconds: c.request_timeout.as_secs_f64(),
        },
        notice: NOTICE,
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus metrics, OpenMetrics text format", body = String,
     content_type = "application/openmetrics-text"),
))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document, generated from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "biomedclip",
        description = "BiomedCLIP image and text embeddings, OpenAI-compatible embeddings, \
                       zero-shot classification and search over collections. BiomedCLIP is a research model: for research \
                       only, not for clinical use."
    ),
    paths(
        crate::routes::embed::embed,
        crate::routes::openai::embeddings,
        crate::routes::classify::classify,
        crate::routes::search::search,
        crate::routes::search::list,
        crate::routes::search::item_image,
        health,
        info,
        metrics
    ),
    modifiers(&ApiKeyScheme)
)]
#[derive(Debug)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /docs`: the OpenAPI document as a page (rendered in the browser from
/// `/openapi.json`; nothing loaded from elsewhere).
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("../../page/docs.html"))
}

/// `GET /`: the page for people: drop images, enter labels, read the ranking.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("../../page/index.html"))
}
