//! `POST /classify`: zero-shot classification as `biomedclip classify --json` answers it.
//! Label prompts' text embeddings are kept in an LRU cache, so a label set sent again costs
//! no text inference.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use biomedclip::eval::metrics::class_embeddings;
use biomedclip::scores::{ranking, zero_shot_probabilities};
use biomedclip::DEFAULT_TEMPLATE;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{check_count, embed_pixels, embed_token_ids, prepare_images};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Payload;
use crate::images;
use crate::state::{AppState, Ready};

/// Images and the labels to rank for each.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// Encoded images (base64 or data URIs); in a multipart form, file parts named `images`.
    #[serde(default)]
    pub images: Vec<String>,
    /// Candidate labels: non-empty and distinct (in a form, one per line).
    pub labels: Vec<String>,
    /// Text put before each label (default `"this is a photo of "`, the model card's).
    #[serde(default)]
    pub template: Option<String>,
    /// Several templates, ensembled as CLIP_benchmark does (mean of the normalised prompt
    /// embeddings); not with `template`.
    #[serde(default)]
    pub templates: Option<Vec<String>>,
    /// Only the K most probable labels per image.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Also answer each image as the model saw it (a PNG data URI).
    #[serde(default)]
    pub preview: bool,
}

/// One label's probability.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelProbability {
    /// The label as given.
    pub label: String,
    /// `softmax(logit_scale * image . text)` over the labels.
    pub probability: f32,
}

/// One image's labels, most probable first (the CLI's `--json` shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageScores {
    /// `images[i]` for JSON images, the file name for uploads.
    pub image: String,
    /// Labels ranked by probability.
    pub scores: Vec<LabelProbability>,
    /// The image as the model saw it, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

fn check_labels(labels: &[String]) -> Result<(), ApiError> {
    if labels.is_empty() {
        return Err(ApiError::invalid(
            "labels",
            None,
            "labels: no labels to rank",
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() {
            return Err(ApiError::invalid(
                "labels",
                Some(i),
                format!("labels[{i}] is empty"),
            ));
        }
        if labels[..i].contains(label) {
            return Err(ApiError::invalid(
                "labels",
                Some(i),
                format!("labels[{i}]: {label:?} is given more than once"),
            ));
        }
    }
    Ok(())
}

/// The text embeddings of `prompts`, from the cache where present; the rest computed in
/// one engine call and cached.
async fn prompt_embeddings(
    state: &AppState,
    ready: &Ready,
    prompts: &[String],
    templates: usize,
) -> Result<Vec<Arc<Vec<f32>>>, ApiError> {
    let mut found: Vec<Option<Arc<Vec<f32>>>> = {
        let mut cache = state.label_cache.lock().expect("label cache lock");
        prompts.iter().map(|p| cache.get(p).cloned()).collect()
    };
    let missing: Vec<usize> = (0..prompts.len()).filter(|&i| found[i].is_none()).collect();
    let metrics = &state.metrics;
    metrics
        .label_cache_hits
        .inc_by((prompts.len() - missing.len()) as u64);
    metrics.label_cache_misses.inc_by(missing.len() as u64);
    if !missing.is_empty() {
        let texts: Vec<String> = missing.iter().map(|&i| prompts[i].clone()).collect();
        // Errors name the label (prompts are label-major, `templates` per label).
        let ids = texts
            .iter()
            .zip(&missing)
            .map(|(t, &i)| {
                ready.model.tokenizer().encode(t).map_err(|e| {
                    let label = i / templates;
                    ApiError::invalid("labels", Some(label), format!("labels[{label}]: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let embeddings = embed_token_ids(ready, ids).await?;
        let mut cache = state.label_cache.lock().expect("label cache lock");
        for (&i, e) in missing.iter().zip(embeddings) {
            let e = Arc::new(e);
            cache.put(prompts[i].clone(), Arc::clone(&e));
            found[i] = Some(e);
        }
    }
    Ok(found.into_iter().map(|e| e.expect("filled")).collect())
}

/// Ranks the labels for each image by zero-shot probability.
#[utoipa::path(
    post,
    path = "/classify",
    request_body(content = ClassifyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Per image, the labels ranked", body = Vec<ImageScores>),
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
pub async fn classify(
    State(state): State<Arc<AppState>>,
    payload: Payload<ClassifyRequest>,
) -> Result<Json<Vec<ImageScores>>, ApiError> {
    let ready = state.ready()?;
    let Payload { body, uploads } = payload;
    check_labels(&body.labels)?;
    let templates = match (body.template, body.templates) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "templates",
                None,
                "give `template` or `templates`, not both",
            ))
        }
        (Some(t), None) => vec![t],
        (None, Some(t)) if t.is_empty() => {
            return Err(ApiError::invalid(
                "templates",
                None,
                "templates: the list is empty",
            ))
        }
        (None, Some(t)) => t,
        (None, None) => vec![DEFAULT_TEMPLATE.to_string()],
    };
    let n_images = body.images.len() + uploads.len();
    if n_images == 0 {
        return Err(ApiError::invalid(
            "images",
            None,
            "images: no images to classify",
        ));
    }
    check_count(&state, n_images, "images")?;
    check_count(&state, body.labels.len() * templates.len(), "label prompts")?;
    let encoded = images::collect(&body.images, uploads, "images")?;
    let names: Vec<String> = encoded.iter().map(|e| e.name.clone()).collect();
    let (pixels, previews) = prepare_images(&state, ready, encoded, body.preview, "images").await?;

    let prompts: Vec<String> = body
        .labels
        .iter()
        .flat_map(|l| templates.iter().map(move |t| format!("{t}{l}")))
        .collect();
    let (texts, images) = tokio::join!(
        prompt_embeddings(&state, ready, &prompts, templates.len()),
        embed_pixels(ready, pixels)
    );
    let texts = texts?;
    let classes: Vec<Vec<f32>> = if templates.len() == 1 {
        texts.iter().map(|e| e.as_ref().clone()).collect()
    } else {
        let per_class: Vec<Vec<Vec<f32>>> = texts
            .chunks(templates.len())
            .map(|c| c.iter().map(|e| e.as_ref().clone()).collect())
            .collect();
        class_embeddings(&per_class)
    };
    let logit_scale = ready.model.logit_scale();
    let top_k = body.top_k.unwrap_or(body.labels.len());
    Ok(Json(
        images?
            .iter()
            .zip(names)
            .zip(previews)
            .map(|((image, name), preview)| {
                let probs = zero_shot_probabilities(image, &classes, logit_scale);
                ImageScores {
                    image: name,
                    scores: ranking(&probs)
                        .into_iter()
                        .take(top_k)
                        .map(|i| LabelProbability {
                            label: body.labels[i].clone(),
                            probability: probs[i],
                        })
                        .collect(),
                    preview,
                }
            })
            .collect(),
    ))
}
