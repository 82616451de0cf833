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
}

impl Manifest {
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
