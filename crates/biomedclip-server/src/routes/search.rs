//! Collections (`serve --collection NAME=DIR`): `GET /collections` lists them, `POST /search`
//! finds the rows nearest to a text, an image or an embedding, and
//! `GET /collections/{name}/items/{id}/image` shows a row's image as the model saw it. The
//! item route takes a row number, never a path: it can only show files the collection holds.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use biomedclip::image::decode::decode_frame;
use biomedclip_collection::ann::MAX_EF;
use biomedclip_collection::{Store, Target};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{embed_pixels, embed_token_ids, prepare_images, tokenize};
use crate::error::{ApiError, ErrorBody};
use crate::images::{self, EncodedImage};
use crate::state::AppState;

/// Most results one search may ask for.
pub const MAX_TOP_K: usize = 1000;

/// A collection the server searches.
#[derive(Debug)]
pub struct ServedCollection {
    /// Its name in requests.
    pub name: String,
    /// The opened collection: a folder or a table in PostgreSQL.
    pub store: Store,
}

/// One collection, as `GET /collections` describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionInfo {
    /// Its name in requests.
    pub name: String,
    /// Rows (embedded images).
    pub rows: usize,
    /// Embedding dimensions.
    pub dim: usize,
    /// Storage type: `f32` or `f16`.
    pub dtype: String,
    /// Where it lives: `folder` or `postgres`.
    pub store: &'static str,
    /// The model that embedded it.
    pub model: String,
    /// Whether captions were embedded (`"target": "captions"`).
    pub captions: bool,
    /// Metadata columns, usable in `where`.
    pub columns: Vec<String>,
    /// Whether approximate search (`"ann": true`) is available.
    pub ann: bool,
    /// Inputs that could not be embedded.
    pub failed: usize,
}

/// The collections served.
#[utoipa::path(get, path = "/collections", responses(
    (status = 200, body = [CollectionInfo]),
    (status = 401, body = ErrorBody),
    (status = 503, body = ErrorBody, description = "A collection's database cannot be reached"),
))]
pub async fn list(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<CollectionInfo>>, ApiError> {
    // A database collection is counted live, off the async workers.
    let list = tokio::task::spawn_blocking(move || {
        state
            .config
            .collections
            .iter()
            .map(|c| {
                let m = c.store.manifest();
                let summary = c.store.summary()?;
                Ok(CollectionInfo {
                    name: c.name.clone(),
                    rows: summary.rows,
                    dim: m.dim,
                    dtype: m.dtype.to_string(),
                    store: match c.store {
                        Store::Folder { .. } => "folder",
                        Store::Postgres(_) => "postgres",
                    },
                    model: m.model.to_string(),
                    captions: m.captions,
                    columns: c.store.columns(),
                    ann: summary.ann,
                    failed: summary.failed,
                })
            })
            .collect::<biomedclip_collection::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("listing failed: {e}")))?
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(list))
}

fn default_top_k() -> usize {
    10
}

/// A search: exactly one of `text`, `image` and `embedding`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The collection's name.
    pub collection: String,
    /// A text query.
    #[serde(default)]
    pub text: Option<String>,
    /// An image query: base64 or a data URI (PNG, JPEG, DICOM, ...).
    #[serde(default)]
    pub image: Option<String>,
    /// An embedding as the query (the collection's dimensions; L2-normalised for cosine
    /// scores).
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
    /// Results (default 10, at most 1000).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// A metadata filter, e.g. `modality = 'CT' and study_date >= '2020'`.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// Approximate search through the collection's HNSW index instead of exact.
    #[serde(default)]
    pub ann: bool,
    /// HNSW search breadth (with `ann`).
    #[serde(default)]
    pub ef: Option<usize>,
    /// Score against the captions' embeddings instead of the images'.
    #[serde(default)]
    pub captions: bool,
}

/// One result.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// 1 for the best.
    pub rank: usize,
    /// The row (for `/collections/{name}/items/{id}/image`).
    pub id: u64,
    /// The image file.
    pub path: Option<String>,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The row's metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The results, best first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// The collection searched.
    pub collection: String,
    /// `exact` or `ann`.
    pub method: &'static str,
    /// Results, best first.
    pub results: Vec<SearchHit>,
    /// BiomedCLIP is a research model.
    pub notice: &'static str,
}

fn served(state: &AppState, name: &str) -> Result<Arc<ServedCollection>, ApiError> {
    state
        .config
        .collections
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = state
                .config
                .collections
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            ApiError::NotFound(format!(
                "no collection {name:?}; this server has: {}",
                if names.is_empty() {
                    "none (start it with --collection NAME=DIR)".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
}

/// Searches a collection.
#[utoipa::path(post, path = "/search", request_body = SearchRequest, responses(
    (status = 200, body = SearchResponse),
    (status = 404, body = ErrorBody, description = "No such collection"),
    (status = 422, body = ErrorBody, description = "A bad query, filter or top_k, named"),
))]
pub async fn search(
    State(state): State<Arc<AppState>>,
    Json(request): Json<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let served = served(&state, &request.collection)?;
    let manifest = served.store.manifest();
    if request.top_k == 0 || request.top_k > MAX_TOP_K {
        return Err(ApiError::invalid(
            "top_k",
            None,
            format!("top_k is {}; it must be 1 to {MAX_TOP_K}", request.top_k),
        ));
    }
    let given = [
        request.text.is_some(),
        request.image.is_some(),
        request.embedding.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::invalid(
            "text",
            None,
            "give exactly one query: text, image or embedding",
        ));
    }
    if request.captions && !manifest.captions {
        return Err(ApiError::invalid(
            "captions",
            None,
            format!("collection {:?} has no captions", served.name),
        ));
    }
    if request.ann {
        if let Some(e) = served.store.ann_error() {
            return Err(ApiError::invalid(
                "ann",
                None,
                format!("collection {:?}: {e}", served.name),
            ));
        }
    }
    if request.ann && request.captions {
        return Err(ApiError::invalid(
            "ann",
            None,
            "the HNSW index covers the images only",
        ));
    }
    if request.ef.is_some_and(|ef| ef == 0 || ef > MAX_EF) {
        return Err(ApiError::invalid(
            "ef",
            None,
            format!("ef must be 1 to {MAX_EF}"),
        ));
    }
    // Parsed here (a bad filter is refused before any inference); evaluated with the search
    // on the blocking pool (or by the database).
    let filter = request
        .filter
        .as_deref()
        .map(|expr| {
            served
                .store
                .parse_filter(expr)
                .map_err(|e| ApiError::invalid("where", None, e.to_string()))
        })
        .transpose()?;
    let query = if let Some(e) = request.embedding {
        if e.len() != manifest.dim || e.iter().any(|v| !v.is_finite()) {
            return Err(ApiError::invalid(
                "embedding",
                None,
                format!(
                    "embedding must be {} finite numbers, got {}",
                    manifest.dim,
                    e.len()
                ),
            ));
        }
        e
    } else {
        let ready = state.ready()?;
        if let Some(text) = &request.text {
            let ids = tokenize(ready, std::slice::from_ref(text), "text")?;
            embed_token_ids(ready, ids).await?.remove(0)
        } else {
            let data = images::decode_base64(request.image.as_deref().unwrap_or(""), "image", 0)?;
            let image = EncodedImage {
                name: "image".into(),
                data,
            };
            let (pixels, _) = prepare_images(&state, ready, vec![image], false, "image").await?;
            embed_pixels(ready, pixels).await?.remove(0)
        }
    };
    let top_k = request.top_k;
    let (ann, ef) = (request.ann, request.ef);
    let target = if request.captions {
        Target::Captions
    } else {
        Target::Images
    };
    let searched = Arc::clone(&served);
    let hits = tokio::task::spawn_blocking(move || {
        searched
            .store
            .search(&[query], top_k, target, filter.as_ref(), ann.then_some(ef))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the search failed: {e}")))?
    .map_err(|e| match e {
        biomedclip_collection::Error::Database { .. } => ApiError::Unavailable(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    })?;
    Ok(Json(SearchResponse {
        collection: served.name.clone(),
        method: if ann { "ann" } else { "exact" },
        results: hits
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(rank, h)| SearchHit {
                rank: rank + 1,
                id: h.id,
                path: h.path,
                score: h.score,
                metadata: h.metadata,
            })
            .collect(),
        notice: "BiomedCLIP is a research model: not for clinical use.",
    }))
}

/// A row's image as the model saw it (rendered, resized, cropped; PNG). Only rows of the
/// collection can be shown: the file is the one its metadata names.
#[utoipa::path(get, path = "/collections/{name}/items/{id}/image", params(
    ("name" = String, Path, description = "The collection"),
    ("id" = usize, Path, description = "The row, as search results give it"),
), responses(
    (status = 200, content_type = "image/png", description = "The image as the model saw it"),
    (status = 404, body = ErrorBody, description = "No such collection or row, or the file is gone"),
    (status = 422, body = ErrorBody, description = "The file can no longer be decoded"),
))]
pub async fn item_image(
    State(state): State<Arc<AppState>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let served = served(&state, &name)?;
    let row: u64 = id.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "item {id:?}: items are named by their id in search results (a number)"
        ))
    })?;
    let looked_up = Arc::clone(&served);
    let path = tokio::task::spawn_blocking(move || looked_up.store.image_path(row))
        .await
        .map_err(|e| ApiError::Internal(format!("the lookup failed: {e}")))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("collection {name:?} has no row {row}")))?;
    let model = Arc::clone(&state.ready()?.model);
    let limits = biomedclip::image::Limits {
        max_pixels: state.config.max_image_pixels,
        ..*model.preprocessor().limits()
    };
    let png = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let file = FsPath::new(&path);
        let bytes = limits.read_file(file).map_err(|e| match e {
            biomedclip::Error::Io { .. } => ApiError::NotFound(format!("row {row}: {e}")),
            other => ApiError::invalid("id", None, format!("row {row}: {other}")),
        })?;
        let pre = model.preprocessor();
        let rgb = decode_frame(&bytes, file, None, pre.rendering().window, &limits)
            .and_then(|d| pre.model_view(&d, file))
            .map_err(|e| ApiError::invalid("id", None, format!("row {row}: {e}")))?;
        Ok(images::png_bytes(rgb.width, rgb.height, &rgb.data))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("rendering failed: {e}")))??;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        png,
    )
        .into_response())
}
