//! `biomedclip embed`: one JSON line per input, in the order given.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::Serialize;

use crate::options::{common, common_args, image_args, image_options, Common, ImageOptions};
use crate::progress::progress_bar;
use crate::terminal::printable;

/// One `embed` input, in command-line order.
pub enum EmbedInput {
    /// An image file.
    Image(PathBuf),
    /// A text.
    Text(String),
}

/// `embed` options.
pub struct Embed {
    /// Shared options.
    pub common: Common,
    /// Inputs in the order given (directories expanded in place).
    pub inputs: Vec<EmbedInput>,
    /// Image options.
    pub image_options: ImageOptions,
    /// Directory entries that could not be read (already reported; they count as failed).
    pub unreadable: usize,
}

/// The subcommand's arguments.
pub fn command() -> Command {
    image_args(common_args(
        Command::new("embed")
            .about("Write L2-normalised embeddings as JSON Lines, one per input in order")
            .arg(
                Arg::new("image")
                    .long("image")
                    .value_name("PATH")
                    .value_parser(clap::value_parser!(PathBuf))
                    .action(ArgAction::Append)
                    .help("An image or directory of images to embed (repeatable)"),
            )
            .arg(
                Arg::new("text")
                    .long("text")
                    .value_name("STR")
                    .action(ArgAction::Append)
                    .help("A text to embed, used as given (repeatable)"),
            ),
    ))
}

/// Reads and validates the arguments.
pub fn parse(m: &ArgMatches) -> Result<Embed> {
    let mut indexed: Vec<(usize, EmbedInput)> = Vec::new();
    if let (Some(idx), Some(vals)) = (m.indices_of("image"), m.get_many::<PathBuf>("image")) {
        indexed.extend(
            idx.zip(vals)
                .map(|(i, v)| (i, EmbedInput::Image(v.clone()))),
        );
    }
    if let (Some(idx), Some(vals)) = (m.indices_of("text"), m.get_many::<String>("text")) {
        indexed.extend(idx.zip(vals).map(|(i, v)| (i, EmbedInput::Text(v.clone()))));
    }
    if indexed.is_empty() {
        bail!("nothing to embed: pass --image PATH and/or --text STR");
    }
    indexed.sort_by_key(|(i, _)| *i);
    let image_options = image_options(m)?;
    let mut inputs = Vec::with_capacity(indexed.len());
    let mut unreadable = 0;
    for (_, input) in indexed {
        match input {
            EmbedInput::Image(p) if p.is_dir() => {
                let (found, bad) = image_options.expand(&[p])?;
                inputs.extend(found.into_iter().map(EmbedInput::Image));
                unreadable += bad;
            }
            other => inputs.push(other),
        }
    }
    Ok(Embed {
        common: common(m)?,
        inputs,
        image_options,
        unreadable,
    })
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    input: std::borrow::Cow<'a, str>,
    embedding: &'a [f32],
}

/// Embeds every input and writes JSON Lines to stdout.
pub fn run(args: Embed) -> Result<ExitCode> {
    let mut model = args.common.load_model()?;
    args.image_options.apply(&mut model);
    let images: Vec<PathBuf> = args
        .inputs
        .iter()
        .filter_map(|i| match i {
            EmbedInput::Image(p) => Some(p.clone()),
            EmbedInput::Text(_) => None,
        })
        .collect();
    let texts: Vec<&str> = args
        .inputs
        .iter()
        .filter_map(|i| match i {
            EmbedInput::Text(t) => Some(t.as_str()),
            EmbedInput::Image(_) => None,
        })
        .collect();
    let text_emb = model.encode_texts(&texts)?;
    let bar = progress_bar(images.len(), "images");
    let image_emb = model.encode_image_files_with_progress(&images, |n| bar.inc(n as u64));
    bar.finish_and_clear();

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut ti, mut ii) = (text_emb.iter(), image_emb.iter());
    let mut failed = args.unreadable;
    for input in &args.inputs {
        let line = match input {
            EmbedInput::Text(t) => Line {
                kind: "text",
                input: std::borrow::Cow::Borrowed(t),
                embedding: ti.next().expect("one embedding per text"),
            },
            EmbedInput::Image(p) => match ii.next().expect("one result per image") {
                Ok(e) => Line {
                    kind: "image",
                    input: p.to_string_lossy(),
                    embedding: e,
                },
                Err(e) => {
                    eprintln!("error: {}", printable(&e.to_string()));
                    failed += 1;
                    continue;
                }
            },
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if failed > 0 {
        eprintln!(
            "{failed} of {} images failed",
            images.len() + args.unreadable
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
