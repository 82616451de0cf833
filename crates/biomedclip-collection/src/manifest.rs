//! `manifest.json`: what made the collection (model, hash of its weights, precision, storage
//! type, dimensions, inputs and options) and what it holds (parts, rows, the files that
//! failed). Identity fields are fixed by the first writer and checked by every later one and
//! by search; the contents are rewritten (atomically) from the parts after each part a writer
//! commits, so the manifest always agrees with the files.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_bytes_atomic;
use crate::error::{Error, Result};
use crate::metadata::{Columns, Failure};
use crate::npy::Dtype;

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Which model made the embeddings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// Where it came from (a folder or `hf-hub:<repo>`), for people.
    pub name: String,
    /// BLAKE3 of its weights file, hex: what decides whether two models are the same.
    pub weights_blake3: String,
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (weights {})",
            self.name,
            &self.weights_blake3[..self.weights_blake3.len().min(12)]
        )
    }
}

/// One part, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSummary {
    /// Its number.
    pub part: u32,
    /// Rows.
    pub rows: usize,
    /// The shard that wrote it.
    pub shard: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// The model.
    pub model: ModelId,
    /// The image tower's arithmetic (`f32`, `bf16`, `int8`).
    pub precision: String,
    /// Embedding dimensions.
    pub dim: usize,
    /// Storage type of the npy files.
    pub dtype: Dtype,
    /// Whether captions were embedded (`text_emb/`, `caption` column).
    pub captions: bool,
    /// Columns taken from an input CSV.
    pub extra_columns: Vec<String>,
    /// The inputs (absolute), as `index update` lists them again.
    pub inputs: Vec<String>,
    /// `--glob`.
    pub glob: Option<String>,
    /// `--captions`.
    pub captions_csv: Option<String>,
    /// Inputs per part.
    pub part_size: usize,
    /// Embedding rows in all parts.
    pub rows: usize,
    /// The parts.
    pub parts: Vec<PartSummary>,
    /// Inputs that could not be embedded, with the reason.
    pub failed: Vec<Failure>,
    /// How images were rendered: embeddings of other renderings are not comparable. Absent
    /// in manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendering: Option<RenderingRecord>,
    /// What one input could cost (`--max-image-pixels`, `--max-input-bytes`): files over them
    /// are recorded as failed, so later runs use the same limits unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsRecord>,
}

/// `--window` and `--reference-16bit`, as a manifest records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderingRecord {
    /// `CENTER,WIDTH`, when a window overrode the files' own.
    pub window: Option<String>,
    /// 16-bit grayscale clamped as the reference does, instead of mapped full-range.
    pub reference_16bit: bool,
}

impl RenderingRecord {
    /// The record of `rendering`.
    pub fn of(rendering: &biomedclip::image::Rendering) -> Self {
        RenderingRecord {
            window: rendering.window.map(|w| w.to_string()),
            reference_16bit: rendering.high_bit_depth == biomedclip::image::HighBitDepth::Reference,
        }
    }

    /// The rendering it records.
    pub fn rendering(&self) -> Result<biomedclip::image::Rendering> {
        Ok(biomedclip::image::Rendering {
            window: self.window.as_deref().map(str::parse).transpose()?,
            high_bit_depth: if self.reference_16bit {
                biomedclip::image::HighBitDepth::Reference
            } else {
                biomedclip::image::HighBitDepth::FullRange
            },
        })
    }
}

impl std::fmt::Display for RenderingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.window {
            Some(w) => write!(f, "--window {w}")?,
            None => f.write_str("no --window")?,
        }
        if self.reference_16bit {
            f.write_str(" --reference-16bit")?;
        }
        Ok(())
    }
}

/// Input limits, as a manifest records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRecord {
    /// Most pixels of one image.
    pub max_image_pixels: u64,
    /// Most bytes of one file.
    pub max_input_bytes: u64,
}

impl LimitsRecord {
    /// The record of `limits`.
    pub fn of(limits: &biomedclip::image::Limits) -> Self {
        LimitsRecord {
            max_image_pixels: limits.max_pixels,
            max_input_bytes: limits.max_bytes,
        }
    }
}

impl Manifest {
    /// The manifest of a collection of rows embedded elsewhere (written through
    /// [`crate::writer::FolderWriter`] or [`crate::postgres::PgWriter`]): it records the model,
    /// precision, dimensions, storage type and columns, and no inputs of its own.
    pub fn new(
        model: ModelId,
        precision: &str,
        dim: usize,
        dtype: Dtype,
        columns: &Columns,
    ) -> Manifest {
        Manifest {
            format: FORMAT,
            model,
            precision: precision.to_string(),
            dim,
            dtype,
            captions: columns.captions,
            extra_columns: columns.extra.clone(),
            inputs: Vec::new(),
            glob: None,
            captions_csv: None,
            part_size: crate::build::DEFAULT_PART_SIZE,
            rows: 0,
            parts: Vec::new(),
            failed: Vec::new(),
            rendering: None,
            limits: None,
        }
    }

    /// The metadata columns.
    pub fn columns(&self) -> Columns {
        Columns {
            captions: self.captions,
            extra: self.extra_columns.clone(),
        }
    }

    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Manifest> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Invalid(format!(
                "{}: no collection here (no {}; make one with `biomedclip index build`)",
                path.parent().unwrap_or(path).display(),
                crate::layout::MANIFEST
            )),
            _ => Error::io(path, e),
        })?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(path, format!("not a collection manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(Error::corrupt(
                path,
                format!(
                    "manifest format {} (this build reads {FORMAT})",
                    manifest.format
                ),
            ));
        }
        Ok(manifest)
    }

    /// Writes `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self).expect("serialisable");
        json.push(b'\n');
        write_bytes_atomic(path, &json)
    }

    /// Refuses embeddings made otherwise than this collection's: another model, precision,
    /// storage type or set of columns.
    pub fn check_same_making(&self, other: &Manifest, path: &Path) -> Result<()> {
        let mismatch = |reason: String| Error::Mismatch {
            path: path.to_path_buf(),
            reason,
        };
        self.check_model(&other.model, path)?;
        if self.precision != other.precision {
            return Err(mismatch(format!(
                "the collection was embedded at precision {}, this run uses {}",
                self.precision, other.precision
            )));
        }
        if self.dtype != other.dtype {
            return Err(mismatch(format!(
                "the collection stores {}, this run asks for {}",
                self.dtype, other.dtype
            )));
        }
        if let (Some(ours), Some(theirs)) = (&self.rendering, &other.rendering) {
            if ours != theirs {
                return Err(mismatch(format!(
                    "the collection's images were rendered with {ours}, this run uses \
                     {theirs}; embeddings of other renderings are not comparable (pass the \
                     collection's options, or make another collection)"
                )));
            }
        }
        if self.captions != other.captions || self.extra_columns != other.extra_columns {
            return Err(mismatch(format!(
                "the collection's metadata columns are ({}), this run's inputs give ({})",
                self.columns().names().join(", "),
                other.columns().names().join(", ")
            )));
        }
        Ok(())
    }

    /// Refuses a build of this collection from other inputs or in other parts than the
    /// first one's: the next `index update` lists the inputs recorded here, and parts are
    /// cut by the recorded size (to add inputs, make another collection or edit the CSV the
    /// inputs name, then `index update`).
    pub fn check_same_inputs(&self, other: &Manifest, path: &Path) -> Result<()> {
        let mismatch = |what: &str, ours: String, theirs: String| Error::Mismatch {
            path: path.to_path_buf(),
            reason: format!(
                "the collection was built with {what} {ours}, this run gives {theirs}; a later \
                 build must repeat the first one's inputs and options (use `biomedclip index \
                 update` to bring it up to date)"
            ),
        };
        if self.inputs != other.inputs {
            return Err(mismatch(
                "inputs",
                self.inputs.join(" "),
                other.inputs.join(" "),
            ));
        }
        if self.glob != other.glob {
            return Err(mismatch(
                "--glob",
                format!("{:?}", self.glob),
                format!("{:?}", other.glob),
            ));
        }
        if self.captions_csv != other.captions_csv {
            return Err(mismatch(
                "--captions",
                format!("{:?}", self.captions_csv),
                format!("{:?}", other.captions_csv),
            ));
        }
        if self.part_size != other.part_size {
            return Err(mismatch(
                "--part-size",
                self.part_size.to_string(),
                other.part_size.to_string(),
            ));
        }
        Ok(())
    }

    /// Refuses a model other than the one that made the collection, naming both.
    pub fn check_model(&self, model: &ModelId, path: &Path) -> Result<()> {
        if self.model.weights_blake3 != model.weights_blake3 {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "the collection was embedded by model {}, not by {}; embeddings of \
                     different models cannot be compared (search with --model {} or rebuild \
                     the collection)",
                    self.model, model, self.model.name
                ),
            });
        }
        Ok(())
    }
}
