//! Where a model comes from: a local directory laid out like the Hub repository, or
//! `hf-hub:<repo-id>` fetched with the `hf-hub` crate into the standard Hugging Face cache
//! (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) and reused from there without network.
//! `HF_HUB_OFFLINE=1` forbids network access altogether.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The official BiomedCLIP repository, written once for the two constants below.
macro_rules! default_repo {
    () => {
        "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    };
}

/// The official BiomedCLIP repository on the Hugging Face Hub.
pub const DEFAULT_REPO: &str = default_repo!();

/// [`DEFAULT_REPO`] as a model source is written (`hf-hub:<repo-id>`): the default model.
pub const DEFAULT_MODEL: &str = concat!("hf-hub:", default_repo!());

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
#[non_exhaustive]
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

impl ModelSource {
    /// Resolves the model's files, downloading them into the Hugging Face cache if needed.
    pub fn resolve(&self) -> Result<ModelFiles> {
        match self {
            ModelSource::Local(dir) => resolve_local(dir),
            #[cfg(feature = "hub")]
            ModelSource::Hub(repo) => super::hub::resolve(repo),
            #[cfg(not(feature = "hub"))]
            ModelSource::Hub(repo) => Err(Error::Hub {
                repo: repo.clone(),
                file: CONFIG_FILE.into(),
                reason: "this build lacks the library's `hub` feature".into(),
            }),
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
