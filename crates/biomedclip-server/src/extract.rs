//! Request bodies: JSON, or a multipart form whose file parts are images (the page and
//! `curl -F images=@scan.dcm` send these). Every rejection becomes an [`ApiError`] with a
//! JSON body: syntax 400, wrong fields 422, over the payload limit 413.

use axum::extract::multipart::{Multipart, MultipartError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// An image sent as a file part of a multipart form.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The part's file name (or its field name when it has none).
    pub name: String,
    /// The file's bytes.
    pub data: Vec<u8>,
}

/// A request body of type `T`, plus the images uploaded as multipart file parts.
#[derive(Debug)]
pub struct Payload<T> {
    /// The fields.
    pub body: T,
    /// File parts, in the order sent.
    pub uploads: Vec<Upload>,
}

/// Form fields that are lists (repeated, or one value per line for `labels`).
const LIST_FIELDS: &[&str] = &["images", "texts", "labels", "templates", "input"];

/// Form fields that are numbers or booleans; every other field stays text.
const SCALAR_FIELDS: &[&str] = &["top_k", "preview", "normalize", "dimensions"];

impl<S, T> FromRequest<S> for Payload<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let multipart = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        if multipart {
            let form = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
            from_form(form).await
        } else {
            let axum::Json(body) = axum::Json::<T>::from_request(req, state)
                .await
                .map_err(json_rejection)?;
            Ok(Payload {
                body,
                uploads: Vec::new(),
            })
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::body_too_large(e.body_text()),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid {
            message: e.body_text(),
            param: None,
            index: None,
        },
        _ => ApiError::BadRequest(e.body_text()),
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::body_too_large(e.body_text())
    } else {
        ApiError::BadRequest(format!("malformed multipart form: {}", e.body_text()))
    }
}

/// File parts become uploads; text parts become the JSON fields `T` is read from (list
/// fields collect every part of their name, `labels` also splits lines; `top_k`,
/// `preview`, `normalize` and `dimensions` take a number or boolean, other fields text).
async fn from_form<T: DeserializeOwned>(mut form: Multipart) -> Result<Payload<T>, ApiError> {
    let mut fields = Map::new();
    let mut uploads = Vec::new();
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if let Some(file) = field.file_name().map(str::to_string) {
            let data = field.bytes().await.map_err(multipart_error)?;
            uploads.push(Upload {
                name: if file.is_empty() { name } else { file },
                data: data.to_vec(),
            });
            continue;
        }
        let text = field.text().await.map_err(multipart_error)?;
        if LIST_FIELDS.contains(&name.as_str()) {
            let list = fields
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(list) = list else {
                unreachable!("list fields are arrays")
            };
            if name == "labels" {
                list.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(|l| Value::String(l.to_string())),
                );
            } else {
                list.push(Value::String(text));
            }
        } else {
            let value = match serde_json::from_str::<Value>(text.trim()) {
                Ok(v @ (Value::Number(_) | Value::Bool(_)))
                    if SCALAR_FIELDS.contains(&name.as_str()) =>
                {
                    v
                }
                _ => Value::String(text),
            };
            fields.insert(name, value);
        }
    }
    let body = serde_json::from_value(Value::Object(fields)).map_err(|e| ApiError::Invalid {
        message: format!("form fields: {e}"),
        param: None,
        index: None,
    })?;
    Ok(Payload { body, uploads })
}
