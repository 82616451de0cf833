//! `biomedclip`: zero-shot classification, embeddings, evaluation and searchable collections
//! with BiomedCLIP from the command line. This file dispatches; each command has its module (arguments, parsing,
//! `run`), and the options they share are in `options`.

mod classify;
mod convert;
mod embed;
mod eval;
mod index;
mod options;
mod progress;
mod search;
mod serve;
mod terminal;

use std::process::ExitCode;

use anyhow::Result;
use clap::Command;

fn cli() -> Command {
    Command::new("biomedclip")
        .about("BiomedCLIP zero-shot classification and embeddings (a research model, not for clinical use)")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(classify::command())
        .subcommand(convert::command())
        .subcommand(embed::command())
        .subcommand(eval::command())
        .subcommand(index::command())
        .subcommand(search::command())
        .subcommand(serve::command())
}

/// Parses the command line and runs the command; the exit code is non-zero if any input
/// failed.
fn run() -> Result<ExitCode> {
    let matches = cli().get_matches();
    match matches.subcommand() {
        Some(("classify", m)) => classify::run(classify::parse(m)?),
        Some(("embed", m)) => embed::run(embed::parse(m)?),
        Some(("convert", m)) => convert::run(convert::parse(m)?),
        Some(("eval", m)) => eval::run(eval::parse(m)?),
        Some(("index", m)) => index::run(index::parse(m)?),
        Some(("search", m)) => search::run(search::parse(m)?),
        Some(("serve", m)) => serve::run(serve::parse(m)?),
        _ => unreachable!("clap requires a subcommand"),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", terminal::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
