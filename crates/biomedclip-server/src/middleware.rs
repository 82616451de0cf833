//! What wraps the handlers: the API key check, request slots (429 when all are taken), the
//! refusal of bodies declared larger than the limit, and around everything the request
//! timeout and the per-route metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, EXPECT};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::batcher::panic_message;
use crate::error::ApiError;
use crate::metrics::{RequestLabels, RouteLabel};
use crate::state::AppState;

/// Refuses requests without `Authorization: Bearer <key>` when the server has a key.
pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let sent = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(sent.trim().as_bytes(), key.as_bytes()) {
            drain(req, state.config.payload_limit).await;
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Takes a request slot for the route's whole run: 503 while loading or stopping, 429 when
/// every slot is taken (nothing of the request is read or queued).
pub async fn take_slot(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let refusal = if state.stopping.load(Ordering::SeqCst) {
        ApiError::ShuttingDown
    } else if state.ready.get().is_none() {
        ApiError::Loading
    } else {
        match Arc::clone(&state.slots).try_acquire_owned() {
            Ok(_slot) => return next.run(req).await,
            Err(_) => ApiError::Overloaded,
        }
    };
    drain(req, state.config.payload_limit).await;
    refusal.into_response()
}

/// How many times the payload limit a refused oversized body is still read (and discarded)
/// so that its client gets the 413; a larger one meets a closed connection instead.
const DRAIN_FACTOR: usize = 4;

/// Answers 413 to a request whose `Content-Length` is over the payload limit, before any
/// route reads it. The body is read and thrown away first (up to four times the limit,
/// within the request timeout), so that the client gets the answer.
pub async fn refuse_oversized(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.config.payload_limit;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {
            if length <= (limit.saturating_mul(DRAIN_FACTOR)) as u64 {
                drain(req, length as usize).await;
            }
            ApiError::body_too_large(format!("{length} bytes sent, at most {limit} accepted"))
                .into_response()
        }
        _ => next.run(req).await,
    }
}

/// Reads and discards a refused request's body (up to `limit` bytes, nothing kept): an
/// HTTP/1.1 client still sending it would otherwise meet a reset connection instead of the
/// answer. A client that sent `Expect: 100-continue` has sent nothing yet and waits for the
/// server's word: its body is left unread, since reading it would ask for the upload.
async fn drain(req: Request, limit: usize) {
    let waits = req
        .headers()
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits {
        return;
    }
    let mut body = req.into_body();
    let mut read = 0usize;
    while read <= limit {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// nginx's status for a request whose client closed the connection before the answer.
pub const CLIENT_CLOSED: u16 = 499;

/// Counts a request when it ends: with its answer's status, or, dropped before it had one
/// (the client went away), as [`CLIENT_CLOSED`].
struct Count {
    state: Arc<AppState>,
    route: String,
    started: Instant,
    status: u16,
}

impl Drop for Count {
    fn drop(&mut self) {
        let metrics = &self.state.metrics;
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: self.route.clone(),
                status: self.status,
            })
            .inc();
        metrics
            .request_duration
            .get_or_create(&RouteLabel {
                route: std::mem::take(&mut self.route),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Bounds the request's time and counts it by route and status.
pub async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let timeout = state.config.request_timeout;
    let mut count = Count {
        state: Arc::clone(&state),
        route,
        started: Instant::now(),
        status: CLIENT_CLOSED,
    };
    let response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(timeout).into_response(),
    };
    count.status = response.status().as_u16();
    response
}

/// A panic inside a handler: a 500 for that request, the server keeps serving.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(format!(
        "the request failed inside the server: {}",
        panic_message(panic.as_ref())
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn keys_compare_by_every_byte() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"secret"));
    }
}
