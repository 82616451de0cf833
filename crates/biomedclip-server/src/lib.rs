//! BiomedCLIP as an HTTP service (`biomedclip serve`): image and text embeddings, OpenAI's
//! embeddings API, zero-shot classification, search over collections made by `biomedclip
//! index build`, a web page, health, info, Prometheus metrics and an OpenAPI document.
//! BiomedCLIP is a research model, not for clinical use.
//!
//! The data flow, one module a stage:
//! - a request body (JSON or a multipart form) -> typed fields and uploads: [`extract`];
//! - base64 / data URIs / uploads -> decoded, preprocessed pixels, off the async runtime:
//!   [`images`];
//! - pixels and token ids -> embeddings, on the engine thread that coalesces concurrent
//!   requests into batches: [`batcher`];
//! - embeddings -> answers, one module a route: [`routes`];
//! - around them: API key, request slots, timeout and metrics ([`middleware`]), errors as
//!   JSON with the right status ([`error`]), the metrics registry ([`metrics`]).

pub mod batcher;
pub mod config;
pub mod error;
pub mod extract;
pub mod images;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod state;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use biomedclip::{BiomedClip, ImageInput};
use tower_http::catch_panic::CatchPanicLayer;

pub use batcher::{BatchLimits, Batcher, Encoder};
pub use config::ServerConfig;
pub use state::{AppState, Ready};

/// Every route, with its middleware.
pub fn router(state: Arc<AppState>) -> Router {
    let work = Router::new()
        .route("/embed", post(routes::embed::embed))
        .route("/v1/embeddings", post(routes::openai::embeddings))
        // infinity's path for the same API.
        .route("/embeddings", post(routes::openai::embeddings))
        .route("/classify", post(routes::classify::classify))
        .route("/search", post(routes::search::search))
        .route(
            "/collections/{name}/items/{id}/image",
            get(routes::search::item_image),
        )
        .route_layer(from_fn_with_state(
            Arc::clone(&state),
            middleware::take_slot,
        ));
    let keyed = work
        .route("/info", get(routes::meta::info))
        .route("/collections", get(routes::search::list))
        .route_layer(from_fn_with_state(
            Arc::clone(&state),
            middleware::require_key,
        ));
    Router::new()
        .route("/", get(routes::meta::page))
        .route("/docs", get(routes::meta::docs))
        .route("/openapi.json", get(routes::meta::openapi))
        .route("/health", get(routes::meta::health))
        .route("/metrics", get(routes::meta::metrics))
        .merge(keyed)
        .layer(DefaultBodyLimit::max(state.config.payload_limit))
        .layer(from_fn_with_state(
            Arc::clone(&state),
            middleware::refuse_oversized,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(from_fn_with_state(Arc::clone(&state), middleware::observe))
        .with_state(state)
}

/// Why the server stopped other than by a shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model could not be loaded, or its probe inference failed.
    #[error("cannot start the model: {0}")]
    Model(String),
    /// The listener failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves on `listener` until `shutdown` completes: then it stops accepting connections,
/// finishes every request in flight, stops the engine and returns. The model is loaded by
/// `load` on a thread of its own while the server already answers (`/health` 503 until the
/// model is loaded and a probe inference succeeded); if loading fails, the server stops and
/// says why.
pub async fn serve<L, S>(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    load: L,
    shutdown: S,
) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<BiomedClip, String> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let limits = BatchLimits {
        max_images: config.max_batch_images.max(1),
        max_tokens: config.max_batch_tokens.max(1),
    };
    let state = Arc::new(AppState::new(config));
    let engine: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::default();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    {
        let state = Arc::clone(&state);
        let engine = Arc::clone(&engine);
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("biomedclip-load".into())
            .spawn(move || {
                // A panic while loading must stop the server, not leave it loading forever.
                let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    start_model(load, limits, &state.metrics, &runtime)
                }))
                .unwrap_or_else(|panic| {
                    Err(format!(
                        "the model loader panicked: {}",
                        batcher::panic_message(panic.as_ref())
                    ))
                });
                match started {
                    Ok((ready, handle)) => {
                        // The handle first, so that a shutdown that sees the model ready
                        // also finds the engine thread to join.
                        *engine.lock().expect("engine lock") = Some(handle);
                        if state.ready.set(ready).is_err() {
                            let _ = failed_tx.send("the model was started twice".into());
                        }
                    }
                    Err(e) => {
                        let _ = failed_tx.send(e);
                    }
                }
            })?;
    }
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let stop = {
        let state = Arc::clone(&state);
        let failure = Arc::clone(&failure);
        async move {
            tokio::select! {
                () = shutdown => {}
                Ok(e) = failed_rx => *failure.lock().expect("failure lock") = Some(e),
            }
            state.stopping.store(true, Ordering::SeqCst);
        }
    };
    axum::serve(listener, router(Arc::clone(&state)))
        .with_graceful_shutdown(stop)
        .await?;
    if let Some(ready) = state.ready.get() {
        ready.batcher.close();
    }
    if let Some(handle) = engine.lock().expect("engine lock").take() {
        let _ = handle.join();
    }
    let failed = failure.lock().expect("failure lock").take();
    match failed {
        Some(e) => Err(ServeError::Model(e)),
        None => Ok(()),
    }
}

/// Loads the model, starts its engine thread and runs one text and one image through it.
fn start_model<L>(
    load: L,
    limits: BatchLimits,
    metrics: &Arc<metrics::Metrics>,
    runtime: &tokio::runtime::Handle,
) -> Result<(Ready, std::thread::JoinHandle<()>), String>
where
    L: FnOnce() -> Result<BiomedClip, String>,
{
    let model = Arc::new(load()?);
    let (batcher, handle) = Batcher::start(
        Arc::clone(&model) as Arc<dyn Encoder>,
        limits,
        Arc::clone(metrics),
    );
    let probe = || -> Result<(), String> {
        let ids = model
            .tokenizer()
            .encode("probe")
            .map_err(|e| e.to_string())?;
        let pixels = model
            .preprocessor()
            .process(&ImageInput::rgb8(2, 2, &[128; 12]))
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(async {
                batcher.submit(batcher::Work::Texts(vec![ids])).await?;
                batcher.submit(batcher::Work::Images(vec![pixels])).await
            })
            .map_err(|e| format!("probe inference: {e}"))?;
        Ok(())
    };
    if let Err(e) = probe() {
        batcher.close();
        let _ = handle.join();
        return Err(e);
    }
    Ok((Ready { model, batcher }, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn health_and_work_routes_answer_503_until_the_model_is_ready() {
        let app = router(Arc::new(AppState::new(ServerConfig::default())));
        let health = app
            .clone()
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
        let embed = app
            .clone()
            .oneshot(
                Request::post("/embed")
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"texts": ["a"]}"#))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(embed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(embed.headers()["retry-after"], "1");
        let page = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
    }
}
