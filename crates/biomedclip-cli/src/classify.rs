//! `biomedclip classify`: labels ranked by zero-shot probability for each image.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use biomedclip::{ImageInput, DEFAULT_TEMPLATE};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::Serialize;

use crate::options::{common, common_args, image_args, image_options, Common, ImageOptions};
use crate::progress::progress_bar;
use crate::terminal::printable;

/// `classify` options.
pub struct Classify {
    /// Shared options.
    pub common: Common,
    /// Prompt prefix put before each label.
    pub template: String,
    /// Candidate labels.
    pub labels: Vec<String>,
    /// Images to classify (directories expanded).
    pub images: Vec<PathBuf>,
    /// Directory entries that could not be read (already reported; they count as failed).
    pub unreadable: usize,
    /// Image options.
    pub image_options: ImageOptions,
    /// Labels printed per image.
    pub top_k: Option<usize>,
    /// JSON output.
    pub json: bool,
}

/// The subcommand's arguments.
pub fn command() -> Command {
    image_args(common_args(
        Command::new("classify")
            .about("Rank labels for each image by zero-shot probability")
            .arg(
                Arg::new("template")
                    .long("template")
                    .value_name("T")
                    .default_value(DEFAULT_TEMPLATE)
                    .help("Prompt prefix put before each label"),
            )
            .arg(
                Arg::new("label")
                    .long("label")
                    .value_name("L")
                    .action(ArgAction::Append)
                    .help("A candidate label (repeat for each)"),
            )
            .arg(
                Arg::new("labels-file")
                    .long("labels-file")
                    .value_name("F")
                    .conflicts_with("label")
                    .help("File with one label per line (blank lines are ignored)"),
            )
            .arg(
                Arg::new("top-k")
                    .long("top-k")
                    .value_name("K")
                    .value_parser(clap::value_parser!(usize))
                    .help("Print only the K most probable labels per image"),
            )
            .arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .help("Print JSON instead of text"),
            )
            .arg(
                Arg::new("images")
                    .value_name("IMAGE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .required(true)
                    .num_args(1..)
                    .help(
                        "Image files (DICOM, JPEG, PNG, GIF, BMP, TIFF, WebP; file.dcm#frame=N \
                     for frame N of a multi-frame DICOM) or directories",
                    ),
            ),
    ))
}

fn read_labels(path: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read labels file {path}"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Reads and validates the arguments.
pub fn parse(m: &ArgMatches) -> Result<Classify> {
    let labels: Vec<String> = match m.get_one::<String>("labels-file") {
        Some(f) => read_labels(f)?,
        None => m
            .get_many::<String>("label")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
    };
    if labels.is_empty() {
        bail!("no labels: pass --label L (repeatable) or --labels-file F");
    }
    let top_k = m.get_one::<usize>("top-k").copied();
    if top_k == Some(0) {
        bail!("--top-k must be at least 1");
    }
    let image_options = image_options(m)?;
    let images: Vec<PathBuf> = m
        .get_many::<PathBuf>("images")
        .expect("required")
        .cloned()
        .collect();
    let (images, unreadable) = image_options.expand(&images)?;
    if images.is_empty() && unreadable == 0 {
        match &image_options.glob {
            Some(g) => bail!("no image files in the given directories match --glob {g:?}"),
            None => bail!("no image files in the given directories"),
        }
    }
    Ok(Classify {
        common: common(m)?,
        template: m
            .get_one::<String>("template")
            .expect("has a default")
            .clone(),
        labels,
        images,
        unreadable,
        image_options,
        top_k,
        json: m.get_flag("json"),
    })
}

#[derive(Serialize)]
struct Score<'a> {
    label: &'a str,
    probability: f32,
}

#[derive(Serialize)]
struct ImageScores<'a> {
    image: String,
    scores: Vec<Score<'a>>,
}

/// Runs the classification and prints the result.
pub fn run(args: Classify) -> Result<ExitCode> {
    let mut model = args.common.load_model()?;
    args.image_options.apply(&mut model);
    let inputs: Vec<ImageInput<'_>> = args.images.iter().map(ImageInput::path).collect();
    let bar = progress_bar(args.images.len(), "images");
    let ranked = model
        .classify_with_progress(&inputs, &args.labels, &args.template, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();

    let mut failed = args.unreadable;
    let mut results = Vec::new();
    for (path, scores) in args.images.iter().zip(&ranked) {
        let scores = match scores {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {}", printable(&e.to_string()));
                failed += 1;
                continue;
            }
        };
        let k = args.top_k.unwrap_or(scores.len()).min(scores.len());
        results.push(ImageScores {
            image: path.display().to_string(),
            scores: scores[..k]
                .iter()
                .map(|s| Score {
                    label: &s.label,
                    probability: s.probability,
                })
                .collect(),
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            let name = std::path::Path::new(&r.image)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.image.clone());
            println!("{}:", printable(&name));
            for s in &r.scores {
                println!("{}: {}", printable(s.label), s.probability);
            }
            println!();
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} images failed",
            args.images.len() + args.unreadable
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
