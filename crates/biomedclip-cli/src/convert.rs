//! `biomedclip convert`: the PyTorch checkpoint rewritten as safetensors.

use std::process::ExitCode;

use std::path::PathBuf;

use anyhow::{Context, Result};
use biomedclip::checkpoint::convert::bin_to_safetensors;
use biomedclip::checkpoint::source::WEIGHT_FILES;
use clap::{Arg, ArgMatches, Command};

use crate::options::{common, common_args, Common};

/// `convert` options.
pub struct Convert {
    /// Shared options.
    pub common: Common,
    /// Where to write the `.safetensors` file (default: beside the `.bin`).
    pub output: Option<PathBuf>,
}

/// The subcommand's arguments.
pub fn command() -> Command {
    common_args(
        Command::new("convert")
            .about(
                "Write open_clip_model.safetensors beside open_clip_pytorch_model.bin so \
             later loads skip unpickling",
            )
            .arg(
                Arg::new("output")
                    .long("output")
                    .value_name("PATH")
                    .help("Output file (default: open_clip_model.safetensors beside the .bin)"),
            ),
    )
}

/// Reads the arguments.
pub fn parse(m: &ArgMatches) -> Result<Convert> {
    Ok(Convert {
        common: common(m)?,
        output: m.get_one::<String>("output").map(PathBuf::from),
    })
}

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
