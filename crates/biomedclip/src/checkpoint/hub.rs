//! Models from the Hugging Face Hub (feature `hub`): the standard cache first, then a
//! download through hf-hub unless `HF_HUB_OFFLINE` is set.

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};

use super::source::{ModelFiles, CONFIG_FILE, TEXT_CONFIG_FILE, TOKENIZER_FILES, WEIGHT_FILES};
use crate::error::{Error, Result};

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

pub(crate) fn resolve(repo: &str) -> Result<ModelFiles> {
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
