//! `biomedclip convert`: the PyTorch checkpoint rewritten as safetensors.

use std::process::ExitCode;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
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
    /// Replace an existing output file.
    pub force: bool,
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
            )
            .arg(
                Arg::new("force")
                    .long("force")
                    .action(clap::ArgAction::SetTrue)
                    .help("Replace the output file if it exists (never the .bin itself)"),
            ),
    )
}

/// Reads the arguments.
pub fn parse(m: &ArgMatches) -> Result<Convert> {
    Ok(Convert {
        common: common(m)?,
        output: m.get_one::<String>("output").map(PathBuf::from),
        force: m.get_flag("force"),
    })
}

/// Converts the model's `.bin` weights and says where the result went.
pub fn run(args: Convert) -> Result<ExitCode> {
    let files = args
        .common
        .model
        .resolve()
        .with_context(|| format!("cannot resolve model {}", args.common.model))?;
    // The model resolves to its safetensors when there is one; the .bin beside it is still
    // what gets converted when an output is named or --force asks for a rewrite.
    let dir = files
        .weights
        .parent()
        .context("weights file has no parent directory")?
        .to_path_buf();
    let bin = dir.join(WEIGHT_FILES[1]);
    let has_safetensors = files
        .weights
        .extension()
        .is_some_and(|e| e == "safetensors");
    if has_safetensors && !bin.is_file() {
        bail!(
            "{} is already safetensors and there is no {} to convert",
            files.weights.display(),
            WEIGHT_FILES[1]
        );
    }
    if has_safetensors && args.output.is_none() && !args.force {
        eprintln!(
            "{} already exists; nothing to do (--output PATH writes elsewhere, --force rewrites it)",
            files.weights.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let src = if has_safetensors { bin } else { files.weights };
    let dst = args.output.unwrap_or_else(|| dir.join(WEIGHT_FILES[0]));
    let n = bin_to_safetensors(&src, &dst, args.force)?;
    eprintln!("wrote {n} tensors to {}", dst.display());
    Ok(ExitCode::SUCCESS)
}
