//! Command-line arguments, validated into a [`Command`] before any work starts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use biomedclip::input::collect_images;
use biomedclip::render::{HighBitDepth, Rendering, Window, WINDOW_PRESETS};
use biomedclip::{BiomedClip, Device, ModelFiles, ModelSource, Precision};
use clap::{Arg, ArgAction, ArgMatches, Command as ClapCommand};

/// The model card's prompt template.
pub const DEFAULT_TEMPLATE: &str = "this is a photo of ";

/// Options shared by every subcommand.
pub struct Common {
    /// Where the model comes from.
    pub model: ModelSource,
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
    /// Arithmetic of the image tower.
    pub precision: Precision,
}

impl Common {
    /// Configures the thread pools, then loads the model.
    pub fn load_model(&self) -> Result<BiomedClip> {
        Ok(self.load_model_and_files()?.1)
    }

    /// Configures the thread pools, resolves the model's files and loads it.
    pub fn load_model_and_files(&self) -> Result<(ModelFiles, BiomedClip)> {
        if let Some(n) = self.threads {
            // candle sizes its matrix-multiply pool from RAYON_NUM_THREADS.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("cannot configure the thread pool")?;
        }
        let files = self
            .model
            .resolve()
            .with_context(|| format!("cannot load model {}", self.model))?;
        let model = BiomedClip::from_files_at(&files, &Device::Cpu, self.precision)
            .with_context(|| format!("cannot load model {}", self.model))?;
        if !self.precision.accelerated() {
            eprintln!(
                "warning: this CPU lacks AVX512_BF16, so bf16 is emulated (same numbers, slower \
                 than f32); int8 is the fast reduced precision here"
            );
        }
        Ok((files, model))
    }
}

/// How image files are found and rendered.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Windowing and 16-bit handling.
    pub rendering: Rendering,
    /// Filter for files inside directories.
    pub glob: Option<String>,
}

impl ImageOptions {
    /// Expands directories among `inputs` into image files, telling stderr how many
    /// non-image files were skipped.
    pub fn expand(&self, inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let found = collect_images(inputs, self.glob.as_deref())?;
        if !found.skipped.is_empty() {
            eprintln!(
                "skipped {} non-image file(s) in directories, e.g. {}",
                found.skipped.len(),
                found.skipped[0].display()
            );
        }
        Ok(found.images)
    }
}

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
    /// Image options.
    pub image_options: ImageOptions,
    /// Labels printed per image.
    pub top_k: Option<usize>,
    /// JSON output.
    pub json: bool,
}

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
}

/// `convert` options.
pub struct Convert {
    /// Shared options.
    pub common: Common,
    /// Where to write the `.safetensors` file (default: beside the `.bin`).
    pub output: Option<PathBuf>,
}

/// A validated subcommand.
pub enum Command {
    /// Zero-shot classification.
    Classify(Classify),
    /// Embeddings as JSON Lines.
    Embed(Embed),
    /// `.bin` to `.safetensors`.
    Convert(Convert),
    /// Evaluation on labelled data.
    Eval(crate::eval::Eval),
}

impl Command {
    /// Runs the command; the exit code is non-zero if any input failed.
    pub fn run(self) -> Result<ExitCode> {
        match self {
            Command::Classify(c) => crate::classify::run(c),
            Command::Embed(e) => crate::embed::run(e),
            Command::Convert(c) => crate::convert::run(c),
            Command::Eval(e) => crate::eval::run(e),
        }
    }
}

/// `--model`, `--threads` and `--precision`.
pub fn common_args(cmd: ClapCommand) -> ClapCommand {
    cmd.arg(
        Arg::new("model")
            .long("model")
            .value_name("SRC")
            .default_value("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
            .help("Model directory (laid out like the Hub repository) or hf-hub:<repo-id>"),
    )
    .arg(
        Arg::new("threads")
            .long("threads")
            .value_name("N")
            .value_parser(clap::value_parser!(usize))
            .help("Worker threads (default: all cores)"),
    )
    .arg(
        Arg::new("precision")
            .long("precision")
            .value_name("P")
            .value_parser(["f32", "int8", "bf16"])
            .default_value("f32")
            .help(
                "Image tower arithmetic: f32 (the reference's numbers), int8 (fastest; \
                 embeddings within about 1e-3 cosine of f32) or bf16 (within about 1e-5; fast \
                 with AVX512_BF16). Texts stay f32",
            ),
    )
}

/// `--window`, `--reference-16bit` and `--glob`.
pub fn image_args(cmd: ClapCommand) -> ClapCommand {
    let presets: Vec<&str> = WINDOW_PRESETS.iter().map(|(n, _)| *n).collect();
    cmd.arg(
        Arg::new("window")
            .long("window")
            .value_name("C,W|PRESET")
            .allow_hyphen_values(true)
            .help(format!(
                "Window for DICOM and 16-bit images: CENTER,WIDTH (e.g. -600,1500) or a preset \
                 ({}); overrides the window stored in DICOM files",
                presets.join(", ")
            )),
    )
    .arg(
        Arg::new("reference-16bit")
            .long("reference-16bit")
            .action(ArgAction::SetTrue)
            .conflicts_with("window")
            .help(
                "Clamp 16-bit PNG/TIFF grayscale at 255 as the reference does, instead of \
                 mapping its full range to 8 bits",
            ),
    )
    .arg(
        Arg::new("glob").long("glob").value_name("PATTERN").help(
            "Only files in directories whose relative path matches PATTERN (e.g. '**/*.dcm')",
        ),
    )
}

/// Reads the image options.
pub fn image_options(m: &ArgMatches) -> Result<ImageOptions> {
    let window = m
        .get_one::<String>("window")
        .map(|w| w.parse::<Window>())
        .transpose()?;
    let high_bit_depth = if m.get_flag("reference-16bit") {
        HighBitDepth::Reference
    } else {
        HighBitDepth::FullRange
    };
    Ok(ImageOptions {
        rendering: Rendering {
            window,
            high_bit_depth,
        },
        glob: m.get_one::<String>("glob").cloned(),
    })
}

fn cli() -> ClapCommand {
    ClapCommand::new("biomedclip")
        .about("BiomedCLIP zero-shot classification and embeddings")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(crate::eval::command())
        .subcommand(image_args(common_args(
            ClapCommand::new("classify")
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
                        .required(true)
                        .num_args(1..)
                        .help(
                            "Image files (DICOM, JPEG, PNG, GIF, BMP, TIFF, WebP; file.dcm#frame=N \
                             for frame N of a multi-frame DICOM) or directories",
                        ),
                ),
        )))
        .subcommand(common_args(
            ClapCommand::new("convert")
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
        ))
        .subcommand(image_args(common_args(
            ClapCommand::new("embed")
                .about("Write L2-normalised embeddings as JSON Lines, one per input in order")
                .arg(
                    Arg::new("image")
                        .long("image")
                        .value_name("PATH")
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
        )))
}

/// Reads the options every subcommand shares.
pub fn common(m: &ArgMatches) -> Result<Common> {
    let threads = m.get_one::<usize>("threads").copied();
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    Ok(Common {
        model: ModelSource::parse(m.get_one::<String>("model").expect("has a default")),
        threads,
        precision: m
            .get_one::<String>("precision")
            .expect("has a default")
            .parse()?,
    })
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

/// Parses and validates the command line.
pub fn parse() -> Result<Command> {
    let matches = cli().get_matches();
    match matches.subcommand() {
        Some(("classify", m)) => {
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
                .get_many::<String>("images")
                .expect("required")
                .map(PathBuf::from)
                .collect();
            let images = image_options.expand(&images)?;
            if images.is_empty() {
                match &image_options.glob {
                    Some(g) => bail!("no image files in the given directories match --glob {g:?}"),
                    None => bail!("no image files in the given directories"),
                }
            }
            Ok(Command::Classify(Classify {
                common: common(m)?,
                template: m
                    .get_one::<String>("template")
                    .expect("has a default")
                    .clone(),
                labels,
                images,
                image_options,
                top_k,
                json: m.get_flag("json"),
            }))
        }
        Some(("embed", m)) => {
            let mut indexed: Vec<(usize, EmbedInput)> = Vec::new();
            if let (Some(idx), Some(vals)) = (m.indices_of("image"), m.get_many::<String>("image"))
            {
                indexed.extend(
                    idx.zip(vals)
                        .map(|(i, v)| (i, EmbedInput::Image(PathBuf::from(v)))),
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
            for (_, input) in indexed {
                match input {
                    EmbedInput::Image(p) if p.is_dir() => inputs.extend(
                        image_options
                            .expand(&[p])?
                            .into_iter()
                            .map(EmbedInput::Image),
                    ),
                    other => inputs.push(other),
                }
            }
            Ok(Command::Embed(Embed {
                common: common(m)?,
                inputs,
                image_options,
            }))
        }
        Some(("convert", m)) => Ok(Command::Convert(Convert {
            common: common(m)?,
            output: m.get_one::<String>("output").map(PathBuf::from),
        })),
        Some(("eval", m)) => Ok(Command::Eval(crate::eval::parse(m)?)),
        _ => unreachable!("clap requires a subcommand"),
    }
}
