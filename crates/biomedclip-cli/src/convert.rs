//! `biomedclip convert`: the PyTorch checkpoint rewritten as safetensors.

use std::process::ExitCode;

use anyhow::{Context, Result};
use biomedclip::convert::bin_to_safetensors;
use biomedclip::hub::WEIGHT_FILES;

use crate::args::Convert;

/// Converts the model's `.bin` weights and says where the result went.
pub fn run(args: Convert) -> Result<ExitCode> {
    let files = args
        .common
        .model
        .resolve()
        .with_context(|| format!("cannot resolve model {}", args.common.model))?;
    if files
        .weights
        .extension()
        .is_some_and(|e| e == "safetensors")
    {
        eprintln!(
            "{} is already safetensors; nothing to do",
            files.weights.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let dst = match args.output {
        Some(p) => p,
        None => files
            .weights
            .parent()
            .context("weights file has no parent directory")?
            .join(WEIGHT_FILES[0]),
    };
    let n = bin_to_safetensors(&files.weights, &dst)?;
    eprintln!("wrote {n} tensors to {}", dst.display());
    Ok(ExitCode::SUCCESS)
}
