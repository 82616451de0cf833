//! What an operator sets when starting the server.

use std::sync::Arc;
use std::time::Duration;

use biomedclip::image::MAX_IMAGE_PIXELS;

use crate::routes::search::ServedCollection;

/// The server's limits and options (the `biomedclip serve` flags).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model as named in `/info` and in OpenAI responses' `model`.
    pub model_name: String,
    /// Images per engine call.
    pub max_batch_images: usize,
    /// Tokens per engine call.
    pub max_batch_tokens: usize,
    /// Requests in flight at once (queued or computing); one more is answered 429.
    pub max_concurrent_requests: usize,
    /// Inputs (images + texts, or labels) one request may carry; more is answered 413.
    pub max_client_batch: usize,
    /// Bytes one request body may have; more is answered 413.
    pub payload_limit: usize,
    /// Pixels one image may have (from its header, before decoding); more is answered 422.
    pub max_image_pixels: u64,
    /// The key clients must send as `Authorization: Bearer <key>`; `None`: no key needed.
    pub api_key: Option<String>,
    /// Longest a request may take, from arrival to answer; longer is answered 503.
    pub request_timeout: Duration,
    /// Label prompts whose text embeddings `/classify` keeps (least recently used out).
    pub label_cache: usize,
    /// Collections `/search` searches (`--collection NAME=DIR`), opened and checked against
    /// the model.
    pub collections: Vec<Arc<ServedCollection>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_name: biomedclip::DEFAULT_MODEL.to_string(),
            max_batch_images: 32,
            max_batch_tokens: 16_384,
            max_concurrent_requests: 512,
            max_client_batch: 64,
            payload_limit: 32 * 1024 * 1024,
            max_image_pixels: MAX_IMAGE_PIXELS,
            api_key: None,
            request_timeout: Duration::from_secs(60),
            label_cache: 4096,
            collections: Vec::new(),
        }
    }
}
