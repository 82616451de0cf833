//! What the handlers share: the configuration, the metrics, the request slots, and, once
//! loaded and probed, the model with its engine thread.

use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use biomedclip::BiomedClip;
use lru::LruCache;
use tokio::sync::Semaphore;

use crate::batcher::Batcher;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The loaded model and the queue to its engine thread.
#[derive(Debug)]
pub struct Ready {
    /// Tokenizer, preprocessing and dimensions (the towers are run by the engine thread).
    pub model: Arc<BiomedClip>,
    /// The engine's queue.
    pub batcher: Batcher,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Limits and options.
    pub config: ServerConfig,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// One permit per request in flight.
    pub slots: Arc<Semaphore>,
    /// Set once the model is loaded and a probe inference succeeded.
    pub ready: OnceLock<Ready>,
    /// Set when a shutdown signal arrived.
    pub stopping: AtomicBool,
    /// Text embeddings of label prompts, by prompt.
    pub label_cache: Mutex<LruCache<String, Arc<Vec<f32>>>>,
}

impl AppState {
    /// A server state waiting for its model.
    pub fn new(config: ServerConfig) -> Self {
        let capacity = NonZeroUsize::new(config.label_cache.max(1)).expect("at least 1");
        AppState {
            slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            metrics: Arc::new(Metrics::default()),
            ready: OnceLock::new(),
            stopping: AtomicBool::new(false),
            label_cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The model, or 503 while it loads.
    pub fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or(ApiError::Loading)
    }
}
