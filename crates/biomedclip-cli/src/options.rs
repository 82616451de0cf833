//! The options several commands share: the model and where it runs, threads, precision,
//! and how image files are found and rendered.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use biomedclip::image::input::collect_images;
use biomedclip::image::render::{HighBitDepth, Rendering, Window, WINDOW_PRESETS};
use biomedclip::image::{Limits, MAX_IMAGE_PIXELS, MAX_INPUT_BYTES};
use biomedclip::{BiomedClip, Device, ModelFiles, ModelSource, Precision, DEFAULT_MODEL};
use clap::{Arg, ArgAction, ArgMatches, Command as ClapCommand};

use crate::terminal::printable;

/// Threads per core `--threads` may ask for: beyond one per core only overhead grows, and
/// thousands of threads stall the machine before any work is done.
const MAX_THREADS_PER_CORE: usize = 4;

/// Options shared by every subcommand.
pub struct Common {
    /// Where the model comes from.
    pub model: ModelSource,
    /// Where the towers run.
    pub device: Device,
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
    /// Arithmetic of the image tower.
    pub precision: Precision,
}

impl Common {
    /// The model as a collection's manifest names it: `hf-hub:<repo>`, or a folder's absolute
    /// path (so the name means the same from any working directory).
    pub fn model_name(&self) -> String {
        match &self.model {
            ModelSource::Local(dir) => std::path::absolute(dir)
                .unwrap_or_else(|_| dir.clone())
                .display()
                .to_string(),
            hub => hub.to_string(),
        }
    }

    /// Configures the thread pools, then loads the model.
    pub fn load_model(&self) -> Result<BiomedClip> {
        Ok(self.load_model_and_files()?.1)
    }

    /// Configures the thread pools, resolves the model's files and loads it.
    pub fn load_model_and_files(&self) -> Result<(ModelFiles, BiomedClip)> {
        self.configure_threads()?;
        self.load()
    }

    /// Sizes the thread pools by `--threads` (once per process, before any work).
    pub fn configure_threads(&self) -> Result<()> {
        if let Some(n) = self.threads {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let most = MAX_THREADS_PER_CORE * cores;
            if n > most {
                bail!(
                    "--threads {n}: this machine has {cores} core(s); at most {most} threads \
                     ({MAX_THREADS_PER_CORE} per core) are accepted, and more than one per \
                     core only adds overhead"
                );
            }
            // candle sizes its matrix-multiply pool from RAYON_NUM_THREADS.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("cannot configure the thread pool")?;
        }
        Ok(())
    }

    /// Resolves the model's files and loads it (the thread pools already configured).
    pub fn load(&self) -> Result<(ModelFiles, BiomedClip)> {
        let files = self
            .model
            .resolve()
            .with_context(|| format!("cannot load model {}", self.model))?;
        let model = BiomedClip::from_files_at(&files, &self.device, self.precision)
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
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Windowing and 16-bit handling.
    pub rendering: Rendering,
    /// Filter for files inside directories.
    pub glob: Option<String>,
    /// What one image may cost.
    pub limits: Limits,
}

impl ImageOptions {
    /// Gives the model the rendering and the limits.
    pub fn apply(&self, model: &mut BiomedClip) {
        model.set_rendering(self.rendering);
        model.set_limits(self.limits);
    }

    /// Expands directories among `inputs` into image files, telling stderr how many
    /// non-image files were skipped and which entries could not be read (each an error;
    /// the walk goes on). Returns the files and the number of unreadable entries.
    pub fn expand(&self, inputs: &[PathBuf]) -> Result<(Vec<PathBuf>, usize)> {
        let found = collect_images(inputs, self.glob.as_deref())?;
        if !found.skipped.is_empty() {
            eprintln!(
                "skipped {} non-image file(s) in directories, e.g. {}",
                found.skipped.len(),
                printable(&found.skipped[0].display().to_string())
            );
        }
        for (path, reason) in &found.unreadable {
            eprintln!(
                "error: {}: {}; skipped",
                printable(&path.display().to_string()),
                printable(reason)
            );
        }
        Ok((found.images, found.unreadable.len()))
    }
}

/// `--model`, `--device`, `--threads` and `--precision`.
pub fn common_args(cmd: ClapCommand) -> ClapCommand {
    cmd.arg(
        Arg::new("model")
            .long("model")
            .value_name("SRC")
            .default_value(DEFAULT_MODEL)
            .help("Model directory (laid out like the Hub repository) or hf-hub:<repo-id>"),
    )
    .arg(
        Arg::new("device")
            .long("device")
            .value_name("DEVICE")
            .default_value("cpu")
            .help(
                "cpu (the CPU engine), or cuda[:N] / metal[:N] for a GPU (builds with the \
                 `cuda` / `metal` feature; f32 only)",
            ),
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

/// `--window`, `--reference-16bit`, `--glob` and the input limits.
pub fn image_args(cmd: ClapCommand) -> ClapCommand {
    rendering_args(cmd)
        .arg(
            Arg::new("max-input-bytes")
                .long("max-input-bytes")
                .value_name("N")
                .env("BIOMEDCLIP_MAX_INPUT_BYTES")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help(format!(
                    "Refuse image files larger than N bytes (default {MAX_INPUT_BYTES})"
                )),
        )
        .arg(Arg::new("glob").long("glob").value_name("PATTERN").help(
            "Only files in directories whose relative path matches PATTERN (e.g. '**/*.dcm')",
        ))
}

/// `--window`, `--reference-16bit` and `--max-image-pixels`: how any image is read,
/// wherever it comes from.
pub fn rendering_args(cmd: ClapCommand) -> ClapCommand {
    let presets: Vec<&str> = WINDOW_PRESETS.iter().map(|(n, _)| *n).collect();
    cmd.arg(
        Arg::new("max-image-pixels")
            .long("max-image-pixels")
            .value_name("N")
            .env("BIOMEDCLIP_MAX_IMAGE_PIXELS")
            .value_parser(clap::value_parser!(u64).range(1..))
            .help(format!(
                "Refuse images with more pixels than N, from their header, before decoding \
                 (default {MAX_IMAGE_PIXELS}, Pillow's MAX_IMAGE_PIXELS; a guard against \
                 decompression bombs)"
            )),
    )
    .arg(
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
        // `serve` has neither `--glob` nor `--max-input-bytes`.
        glob: m.try_get_one::<String>("glob").ok().flatten().cloned(),
        limits: Limits {
            max_pixels: m
                .get_one::<u64>("max-image-pixels")
                .copied()
                .unwrap_or(MAX_IMAGE_PIXELS),
            max_bytes: m
                .try_get_one::<u64>("max-input-bytes")
                .ok()
                .flatten()
                .copied()
                .unwrap_or(MAX_INPUT_BYTES),
        },
    })
}

/// Reads the options every subcommand shares.
pub fn common(m: &ArgMatches) -> Result<Common> {
    let threads = m.get_one::<usize>("threads").copied();
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    Ok(Common {
        model: ModelSource::parse(m.get_one::<String>("model").expect("has a default")),
        device: m
            .get_one::<String>("device")
            .expect("has a default")
            .parse()?,
        threads,
        precision: m
            .get_one::<String>("precision")
            .expect("has a default")
            .parse()?,
    })
}
