//! Where a model comes from: a local directory laid out like the Hub repository, or
//! `hf-hub:<repo-id>` fetched with the `hf-hub` crate into the standard Hugging Face cache
//! (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) and reused from there without network.
//! `HF_HUB_OFFLINE=1` forbids network access altogether.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use crate::error::{Error, Result};

/// The official BiomedCLIP repository on the Hugging Face Hub.
pub const DEFAULT_REPO: &str = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224";

/// Prefix that marks a Hub repository id.
pub const HUB_PREFIX: &str = "hf-hub:";

/// The config file every model has.
pub const CONFIG_FILE: &str = "open_clip_config.json";
/// Weight files, in order of preference.
pub const WEIGHT_FILES: [&str; 2] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"];
/// Tokenizer files, in order of preference.
pub const TOKENIZER_FILES: [&str; 2] = ["tokenizer.json", "vocab.txt"];
/// Optional text-tower config (a Hugging Face `BertConfig`).
pub const TEXT_CONFIG_FILE: &str = "config.json";

/// A model source as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory holding `open_clip_config.json`, weights and tokenizer files.
    Local(PathBuf),
    /// A Hub repository id.
    Hub(String),
}

impl ModelSource {
    /// `hf-hub:<repo-id>` names a Hub repository; anything else is a local directory.
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix(HUB_PREFIX) {
            Some(repo) => ModelSource::Hub(repo.to_string()),
            None => ModelSource::Local(PathBuf::from(s)),
        }
    }
}

impl Default for ModelSource {
    fn default() -> Self {
        ModelSource::Hub(DEFAULT_REPO.to_string())
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Local(p) => write!(f, "{}", p.display()),
            ModelSource::Hub(r) => write!(f, "{HUB_PREFIX}{r}"),
        }
    }
}

/// The files of one model, resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// `open_clip_config.json`.
    pub config: PathBuf,
    /// `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`.
    pub weights: PathBuf,
    /// `tokenizer.json` or `vocab.txt`.
    pub tokenizer: PathBuf,
    /// The text tower's `config.json`, when present.
    pub text_config: Option<PathBuf>,
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

impl ModelSource {
    /// Resolves the model's files, downloading them into the Hugging Face cache if needed.
    pub fn resolve(&self) -> Result<ModelFiles> {
        match self {
            ModelSource::Local(dir) => resolve_local(dir),
            ModelSource::Hub(repo) => resolve_hub(repo),
        }
    }
}

fn resolve_local(dir: &Path) -> Result<ModelFiles> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a directory (pass a model directory or hf-hub:<repo-id>)",
            ),
        ));
    }
    let need = |names: &[&str], what: &'static str| {
        first_existing(dir, names).ok_or_else(|| Error::MissingModelFile {
            dir: dir.into(),
            what,
            candidates: names.join(", "),
        })
    };
    Ok(ModelFiles {
        config: need(&[CONFIG_FILE], "model config")?,
        weights: need(&WEIGHT_FILES, "weights")?,
        tokenizer: need(&TOKENIZER_FILES, "tokenizer")?,
        text_config: first_existing(dir, &[TEXT_CONFIG_FILE]),
    })
}

fn from_cache(repo: &str) -> Option<ModelFiles> {
    let cache = Cache::from_env().repo(Repo::model(repo.to_string()));
    let first = |names: &[&str]| names.iter().find_map(|n| cache.get(n));
    Some(ModelFiles {
        config: cache.get(CONFIG_FILE)?,
        weights: first(&WEIGHT_FILES)?,
        tokenizer: first(&TOKENIZER_FILES)?,
        text_config: cache.get(TEXT_CONFIG_FILE),
    })
}

fn resolve_hub(repo: &str) -> Result<ModelFiles> {
    if let Some(files) = from_cache(repo) {
        return Ok(files);
    }
    let hub_err = |file: &str, reason: String| Error::Hub {
        repo: repo.into(),
        file: file.into(),
        reason,
    };
    if offline() {
        return Err(hub_err(CONFIG_FILE, "HF_HUB_OFFLINE is set".into()));
    }
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| hub_err(CONFIG_FILE, e.to_string()))?;
    let remote = api.model(repo.to_string());
    let info = remote
        .info()
        .map_err(|e| hub_err(CONFIG_FILE, e.to_string()))?;
    let listed: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let pick = |names: &[&'static str]| -> Option<&'static str> {
        names.iter().find(|n| listed.contains(n)).copied()
    };
    let get = |name: &str| remote.get(name).map_err(|e| hub_err(name, e.to_string()));
    let missing = |names: &[&'static str]| {
        hub_err(
            names[0],
            format!("the repository has none of {}", names.join(", ")),
        )
    };
    let weights = pick(&WEIGHT_FILES).ok_or_else(|| missing(&WEIGHT_FILES))?;
    let tokenizer = pick(&TOKENIZER_FILES).ok_or_else(|| missing(&TOKENIZER_FILES))?;
    Ok(ModelFiles {
        config: get(CONFIG_FILE)?,
        weights: get(weights)?,
        tokenizer: get(tokenizer)?,
        text_config: match pick(&[TEXT_CONFIG_FILE]) {
            Some(name) => Some(get(name)?),
            None => None,
        },
    })
}
