//! `biomedclip eval zero-shot | retrieval | linear-probe`: metrics on labelled data, defined
//! as LAION's CLIP_benchmark defines them. Arguments in `args`, the three tasks in `tasks`,
//! the text summary in `summary`.

mod args;
mod summary;
mod tasks;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use biomedclip::eval::cache::{
    encode_images_cached, encode_texts_cached, CacheStats, EmbeddingCache,
};
use biomedclip::BiomedClip;
use serde_json::json;

use crate::options::{Common, ImageOptions};
use crate::progress::progress_bar;
use crate::terminal::printable;

pub use args::{command, parse};

/// The model card's template with `{c}` for the class name: the library's prompt prefix
/// followed by the class.
fn default_template() -> String {
    format!("{}{{c}}", biomedclip::DEFAULT_TEMPLATE)
}

/// What to evaluate.
pub enum Task {
    /// Zero-shot classification of labelled images.
    ZeroShot {
        /// Folder of class folders or `path,label` CSV.
        data: PathBuf,
        /// Prompt templates, each with `{c}`.
        templates: Vec<String>,
    },
    /// Image-text retrieval over an `image,caption` CSV.
    Retrieval {
        /// The pairs.
        pairs: PathBuf,
        /// Recall cut-offs.
        ks: Vec<usize>,
    },
    /// Logistic regression on frozen image embeddings.
    LinearProbe {
        /// Training data.
        train: PathBuf,
        /// Test data.
        test: PathBuf,
        /// Validation data (else split from train).
        val: Option<PathBuf>,
        /// Share of each training class held out for validation.
        val_fraction: f64,
        /// Samples per class drawn from train (the validation split from the rest).
        k_shot: Option<usize>,
        /// Seed of the sampling.
        seed: u64,
    },
}

/// `eval` options.
pub struct Eval {
    common: Common,
    images: ImageOptions,
    task: Task,
    classes: Option<PathBuf>,
    json: bool,
    out: Option<PathBuf>,
    cache: Option<PathBuf>,
}

/// Loaded model, its cache, and the failures met so far.
pub(super) struct Session {
    model: BiomedClip,
    cache: Option<EmbeddingCache>,
    failed: Vec<(String, String)>,
    stats: CacheStats,
}

impl Session {
    /// Embeddings of `paths`; failures are reported and recorded, leaving `None`.
    pub(super) fn images(&mut self, paths: &[PathBuf]) -> Vec<Option<Vec<f32>>> {
        let bar = progress_bar(paths.len(), "images");
        let (results, stats) = encode_images_cached(&self.model, self.cache.as_ref(), paths, |n| {
            bar.inc(n as u64)
        });
        bar.finish_and_clear();
        self.stats.hits += stats.hits;
        self.stats.encoded += stats.encoded;
        paths
            .iter()
            .zip(results)
            .map(|(p, r)| match r {
                Ok(e) => Some(e),
                Err(e) => {
                    eprintln!("error: {}", printable(&e.to_string()));
                    self.failed.push((p.display().to_string(), e.to_string()));
                    None
                }
            })
            .collect()
    }

    /// Records a directory entry that could not be read.
    pub(super) fn unreadable(&mut self, path: &std::path::Path, reason: &str) {
        let path = path.display().to_string();
        eprintln!(
            "error: {}: {}; skipped",
            printable(&path),
            printable(reason)
        );
        self.failed.push((path, reason.to_string()));
    }

    pub(super) fn texts(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let (e, stats) = encode_texts_cached(&self.model, self.cache.as_ref(), texts)?;
        self.stats.hits += stats.hits;
        self.stats.encoded += stats.encoded;
        Ok(e)
    }
}

/// Runs the evaluation and prints the results.
pub fn run(args: Eval) -> Result<ExitCode> {
    let (files, mut model) = args.common.load_model_and_files()?;
    args.images.apply(&mut model);
    let cache = match &args.cache {
        Some(root) => Some(
            EmbeddingCache::open(root, &files, &model)
                .with_context(|| format!("cannot open the embedding cache {}", root.display()))?,
        ),
        None => None,
    };
    let mut session = Session {
        model,
        cache,
        failed: Vec::new(),
        stats: CacheStats::default(),
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let glob = args.images.glob.as_deref();
    let mut result = match &args.task {
        Task::ZeroShot { data, templates } => {
            tasks::zero_shot(&mut session, data, templates, &args, glob)?
        }
        Task::Retrieval { pairs, ks } => tasks::retrieval(&mut session, pairs, ks)?,
        Task::LinearProbe { .. } => tasks::probe(&mut session, &args, glob)?,
    };
    result["model"] = json!(args.common.model.to_string());
    result["precision"] = json!(args.common.precision.name());
    result["failed"] = json!(session
        .failed
        .iter()
        .map(|(p, e)| json!({"path": p, "error": e}))
        .collect::<Vec<_>>());
    result["cache"] = json!({
        "hits": session.stats.hits,
        "encoded": session.stats.encoded,
        "dir": session.cache.as_ref().map(|c| c.dir().display().to_string()),
    });
    if let Some(dir) = &args.out {
        let path = dir.join("metrics.json");
        std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        summary::print_summary(&result);
    }
    if !session.failed.is_empty() {
        eprintln!(
            "{} image(s) could not be read and were left out of the metrics",
            session.failed.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
