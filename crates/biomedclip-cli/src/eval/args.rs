//! The `eval` command line, validated into [`Eval`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use biomedclip::eval::cache::default_root;
use clap::{Arg, ArgAction, ArgMatches, Command as ClapCommand};

use super::{default_template, Eval, Task};
use crate::options::{common, common_args, image_args, image_options};

fn shared(cmd: ClapCommand) -> ClapCommand {
    image_args(common_args(cmd))
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the results as JSON"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .help("Also write metrics.json (and confusion.csv/.png, predictions.csv) here"),
        )
        .arg(
            Arg::new("cache-dir")
                .long("cache-dir")
                .value_name("DIR")
                .help("Embedding cache (default: $BIOMEDCLIP_CACHE, else ~/.cache/biomedclip)"),
        )
        .arg(
            Arg::new("no-cache")
                .long("no-cache")
                .action(ArgAction::SetTrue)
                .conflicts_with("cache-dir")
                .help("Encode everything; read and write no cache"),
        )
}

fn classes_arg() -> Arg {
    Arg::new("classes")
        .long("classes")
        .value_name("JSON")
        .help("Class names: {\"label\": \"name\", ...} or [\"name0\", ...] for integer labels")
}

/// The `eval` subcommand.
pub fn command() -> ClapCommand {
    ClapCommand::new("eval")
        .about("Evaluate on labelled data (CLIP_benchmark definitions)")
        .subcommand_required(true)
        .subcommand(
            shared(ClapCommand::new("zero-shot"))
                .about("Zero-shot classification: top-1/top-5, balanced accuracy, confusion")
                .arg(classes_arg())
                .arg(
                    Arg::new("templates")
                        .long("templates")
                        .value_name("FILE")
                        .help("Prompt templates, one per line, {c} for the class name"),
                )
                .arg(
                    Arg::new("template")
                        .long("template")
                        .value_name("T")
                        .action(ArgAction::Append)
                        .conflicts_with("templates")
                        .help("A prompt template with {c} (repeatable; default: the model card's)"),
                )
                .arg(
                    Arg::new("data")
                        .value_name("DATA")
                        .required(true)
                        .help("A folder of class folders, or a CSV with path,label columns"),
                ),
        )
        .subcommand(
            shared(ClapCommand::new("retrieval"))
                .about("Image-text retrieval: recall@k both ways")
                .arg(
                    Arg::new("k")
                        .long("k")
                        .value_name("K,...")
                        .default_value("1,5,10")
                        .help("Recall cut-offs"),
                )
                .arg(
                    Arg::new("pairs")
                        .value_name("CSV")
                        .required(true)
                        .help("image,caption rows (several captions per image allowed)"),
                ),
        )
        .subcommand(
            shared(ClapCommand::new("linear-probe"))
                .about("Logistic regression on frozen image embeddings, L2 chosen on validation")
                .arg(classes_arg())
                .arg(
                    Arg::new("train")
                        .long("train")
                        .value_name("DATA")
                        .required(true)
                        .help("Training data: folder of class folders or path,label CSV"),
                )
                .arg(
                    Arg::new("test")
                        .long("test")
                        .value_name("DATA")
                        .required(true)
                        .help("Test data"),
                )
                .arg(
                    Arg::new("val")
                        .long("val")
                        .value_name("DATA")
                        .conflicts_with("k-shot")
                        .help("Validation data (default: held out from the training data)"),
                )
                .arg(
                    Arg::new("val-fraction")
                        .long("val-fraction")
                        .value_name("F")
                        .default_value("0.2")
                        .value_parser(clap::value_parser!(f64))
                        .help("Share of each training class held out for validation"),
                )
                .arg(
                    Arg::new("k-shot")
                        .long("k-shot")
                        .value_name("K")
                        .value_parser(clap::value_parser!(usize))
                        .help("Train on K samples per class (validate on up to K others)"),
                )
                .arg(
                    Arg::new("seed")
                        .long("seed")
                        .value_name("N")
                        .default_value("0")
                        .value_parser(clap::value_parser!(u64))
                        .help("Seed of the validation split and k-shot sampling"),
                ),
        )
}

fn read_templates(path: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read templates {path}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.contains("{c}") {
            bail!("{path} line {}: template has no {{c}}: {line:?}", i + 1);
        }
        out.push(line.to_string());
    }
    if out.is_empty() {
        bail!("{path}: no templates");
    }
    Ok(out)
}

/// Validates the `eval` arguments.
pub fn parse(m: &ArgMatches) -> Result<Eval> {
    let (name, sub) = m.subcommand().expect("clap requires a subcommand");
    let path = |id: &str| sub.get_one::<String>(id).map(PathBuf::from);
    let task = match name {
        "zero-shot" => {
            let templates = match sub.get_one::<String>("templates") {
                Some(f) => read_templates(f)?,
                None => match sub.get_many::<String>("template") {
                    Some(t) => t.cloned().collect(),
                    None => vec![default_template()],
                },
            };
            if let Some(t) = templates.iter().find(|t| !t.contains("{c}")) {
                bail!("template {t:?} has no {{c}} for the class name");
            }
            Task::ZeroShot {
                data: path("data").expect("required"),
                templates,
            }
        }
        "retrieval" => {
            let ks = sub
                .get_one::<String>("k")
                .expect("has a default")
                .split(',')
                .map(|k| match k.trim().parse::<usize>() {
                    Ok(k) if k > 0 => Ok(k),
                    _ => bail!("--k: {k:?} is not a positive integer"),
                })
                .collect::<Result<Vec<_>>>()?;
            Task::Retrieval {
                pairs: path("pairs").expect("required"),
                ks,
            }
        }
        _ => {
            let val_fraction = *sub.get_one::<f64>("val-fraction").expect("has a default");
            if !(0.0..1.0).contains(&val_fraction) || val_fraction == 0.0 {
                bail!("--val-fraction must be in (0, 1)");
            }
            let k = sub.get_one::<usize>("k-shot").copied();
            if k == Some(0) {
                bail!("--k-shot must be at least 1");
            }
            Task::LinearProbe {
                train: path("train").expect("required"),
                test: path("test").expect("required"),
                val: path("val"),
                val_fraction,
                k_shot: k,
                seed: *sub.get_one::<u64>("seed").expect("has a default"),
            }
        }
    };
    let cache = if sub.get_flag("no-cache") {
        None
    } else {
        Some(path("cache-dir").unwrap_or_else(default_root))
    };
    Ok(Eval {
        common: common(sub)?,
        images: image_options(sub)?,
        task,
        classes: sub
            .try_get_one::<String>("classes")
            .ok()
            .flatten()
            .map(PathBuf::from),
        json: sub.get_flag("json"),
        out: path("out"),
        cache,
    })
}
