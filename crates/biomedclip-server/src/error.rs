//! Every failure a request can meet, as the HTTP status a client expects and a JSON body in
//! OpenAI's error shape (`{"error": {"message", "type", "param", "index"}}`), so that OpenAI
//! clients surface the message as they would OpenAI's own.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong, in the words a client can act on.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The body is not the JSON (or multipart form) the route takes: 400.
    BadRequest(String),
    /// An input cannot be used: undecodable image, bad base64, a field out of range: 422.
    Invalid {
        /// The message, naming the field.
        message: String,
        /// The request field concerned (`images`, `input`, `labels`, ...).
        param: Option<String>,
        /// Which input of the list, from 0.
        index: Option<usize>,
    },
    /// The body or the number of inputs is over the server's limit: 413.
    TooLarge(String),
    /// Missing or wrong API key: 401.
    Unauthorized,
    /// No such collection or item: 404.
    NotFound(String),
    /// Every request slot is taken: 429, with `Retry-After`.
    Overloaded,
    /// The model is still loading: 503, with `Retry-After`.
    Loading,
    /// The server is shutting down: 503.
    ShuttingDown,
    /// The request did not finish within the server's request timeout: 503.
    Timeout(std::time::Duration),
    /// A backing service (a collection's database) cannot be reached or failed: 503.
    Unavailable(String),
    /// The engine failed or panicked on this request: 500.
    Internal(String),
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error, as OpenAI's API describes errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, naming the input.
    pub message: String,
    /// `invalid_request_error`, `payload_too_large`, `authentication_error`, `not_found`,
    /// `rate_limit_error`, `unavailable`, `timeout` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Which input of the field's list, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl ApiError {
    /// A 422 naming the field and, for lists, the input.
    pub fn invalid(param: &str, index: Option<usize>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            param: Some(param.to_string()),
            index,
        }
    }

    /// A 413 for a body over `--payload-limit`; `detail` says by how much.
    pub fn body_too_large(detail: impl std::fmt::Display) -> Self {
        ApiError::TooLarge(format!(
            "the request body is larger than the server's limit (--payload-limit): {detail}"
        ))
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Loading
            | ApiError::ShuttingDown
            | ApiError::Timeout(_)
            | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(&self) -> ErrorDetail {
        let detail = |message: String, kind| ErrorDetail {
            message,
            kind,
            param: None,
            index: None,
        };
        match self {
            ApiError::BadRequest(m) => detail(m.clone(), "invalid_request_error"),
            ApiError::Invalid {
                message,
                param,
                index,
            } => ErrorDetail {
                message: message.clone(),
                kind: "invalid_request_error",
                param: param.clone(),
                index: *index,
            },
            ApiError::TooLarge(m) => detail(m.clone(), "payload_too_large"),
            ApiError::Unauthorized => detail(
                "missing or wrong API key: send `Authorization: Bearer <key>`".into(),
                "authentication_error",
            ),
            ApiError::NotFound(m) => detail(m.clone(), "not_found"),
            ApiError::Unavailable(m) => detail(m.clone(), "unavailable"),
            ApiError::Overloaded => detail(
                "every request slot is taken (--max-concurrent-requests); retry later".into(),
                "rate_limit_error",
            ),
            ApiError::Loading => detail(
                "the model is still loading; retry later".into(),
                "unavailable",
            ),
            ApiError::ShuttingDown => detail("the server is shutting down".into(), "unavailable"),
            ApiError::Timeout(d) => detail(
                format!(
                    "the request did not finish within {:.3} s (--request-timeout)",
                    d.as_secs_f64()
                ),
                "timeout",
            ),
            ApiError::Internal(m) => detail(m.clone(), "server_error"),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.body().message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(ErrorBody { error: self.body() })).into_response();
        if matches!(self, ApiError::Overloaded | ApiError::Loading) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The library's error for input `index` of `param`: a 422 carrying its message.
pub fn from_library(param: &str, index: usize, e: &biomedclip::Error) -> ApiError {
    let message = e.to_string();
    let name = format!("{param}[{index}]");
    // Images are named `images[i]` (or by their file name) in the library's own message.
    let message = if message.contains(&name) {
        message
    } else {
        format!("{name}: {message}")
    };
    ApiError::invalid(param, Some(index), message)
}
