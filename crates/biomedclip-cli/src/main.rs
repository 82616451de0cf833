//! `biomedclip`: zero-shot classification and embeddings with BiomedCLIP from the command line.

mod args;
mod classify;
mod convert;
mod embed;
mod eval;

use std::process::ExitCode;

fn main() -> ExitCode {
    match args::parse().and_then(args::Command::run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
