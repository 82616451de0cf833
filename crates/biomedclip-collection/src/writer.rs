//! Rows embedded elsewhere (a Ray job, another tool) written into a folder collection: the
//! same layout, atomic parts and manifest as `index build`, so `search`, `serve`, `index ann`,
//! clip-retrieval and autofaiss read it as they read a built one.

use std::collections::HashSet;
use std::path::Path;

use biomedclip::image::dicom::COLLECTION_TAGS;

use crate::build::{done_keys, refresh_manifest, Embedded, Known, Writer};
use crate::error::{Error, Result};
use crate::layout::{Layout, Shard};
use crate::lock::Lock;
use crate::manifest::Manifest;
use crate::metadata::{Failure, Row};

/// How far from 1 an embedding's length may be: search ranks by inner product, which is
/// the cosine similarity only for unit vectors.
const NORM_TOLERANCE: f32 = 1e-3;

/// Writes rows embedded elsewhere into a folder collection, alone (the collection's lock is
/// held until it is dropped). Each [`FolderWriter::append`] commits one part atomically and
/// updates the manifest; rows already in the collection (same path and content hash) are
/// left as they are, so a job run again duplicates nothing.
#[derive(Debug)]
pub struct FolderWriter {
    writer: Writer,
    manifest: Manifest,
    known: Known,
    done: HashSet<(String, Option<String>)>,
    _lock: Lock,
}

impl FolderWriter {
    /// Opens the collection at `root`, creating it with `manifest` (see [`Manifest::new`])
    /// if there is none; an existing one must have been made the same way (model,
    /// precision, storage type, columns). Leftovers of a stopped writer are removed.
    pub fn open(root: &Path, manifest: &Manifest) -> Result<FolderWriter> {
        let layout = Layout::new(root);
        layout.create_dirs(manifest.captions)?;
        let lock = Lock::acquire(
            &layout.locks().join("collection.lock"),
            "the collection",
            false,
        )?;
        let manifest = {
            let _m = Lock::wait(&layout.locks().join("manifest.lock"))?;
            if layout.manifest().exists() {
                let existing = Manifest::read(&layout.manifest())?;
                // A collection built from inputs is kept by `index build|update`: the next
                // update would drop rows it cannot list, and the manifest's listing failures
                // are its own.
                if !existing.inputs.is_empty() {
                    return Err(Error::Invalid(format!(
                        "{}: the collection is built from inputs ({}); add files to those \
                         inputs and run `biomedclip index update`, or write into a new \
                         collection",
                        root.display(),
                        existing.inputs.join(" ")
                    )));
                }
                existing.check_same_making(manifest, &layout.manifest())?;
                existing
            } else {
                manifest.write(&layout.manifest())?;
                manifest.clone()
            }
        };
        let mut writer = Writer {
            layout,
            columns: manifest.columns(),
            dtype: manifest.dtype,
            dim: manifest.dim,
            shard: Shard::ALL,
            next: 0,
        };
        let parts = writer.reconcile()?;
        writer.start_after(&parts);
        let done = done_keys(&parts)
            .map(|(path, hash)| (path.to_string(), hash.map(str::to_string)))
            .collect();
        let known = parts.into_iter().map(|(n, (_, info))| (n, info)).collect();
        Ok(FolderWriter {
            writer,
            manifest,
            known,
            done,
            _lock: lock,
        })
    }

    /// The manifest as of the last commit.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Commits `rows` with their image embeddings (`dim` values a row, unit length), their
    /// caption embeddings in collections with captions (unit length, or zero for a row
    /// without a caption) and `failed`, as one part; returns its number, or `None` when
    /// everything given is already in the collection.
    pub fn append(
        &mut self,
        rows: &[Row],
        images: &[f32],
        captions: Option<&[f32]>,
        failed: &[Failure],
    ) -> Result<Option<u32>> {
        self.check(rows, images, captions)?;
        let dim = self.manifest.dim;
        // Keys new to the collection, each once (a key given twice in one call is written
        // once, as it would be over two calls).
        let mut fresh: HashSet<(String, Option<String>)> = HashSet::new();
        let mut is_new = |path: &str, blake3: Option<&str>| {
            let key = (path.to_string(), blake3.map(str::to_string));
            !self.done.contains(&key) && fresh.insert(key)
        };
        let new: Vec<usize> = (0..rows.len())
            .filter(|&i| is_new(&rows[i].image_path, Some(&rows[i].blake3)))
            .collect();
        let failed: Vec<Failure> = failed
            .iter()
            .filter(|f| is_new(&f.path, f.blake3.as_deref()))
            .cloned()
            .collect();
        if new.is_empty() && failed.is_empty() {
            return Ok(None);
        }
        let gather = |values: &[f32]| -> Vec<f32> {
            new.iter()
                .flat_map(|&i| values[i * dim..(i + 1) * dim].iter().copied())
                .collect()
        };
        let part = Embedded {
            rows: new.iter().map(|&i| rows[i].clone()).collect(),
            images: gather(images),
            captions: captions.map(gather),
            failed,
        };
        let n = self.writer.commit(part, Vec::new())?;
        self.done.extend(fresh);
        refresh_manifest(
            &self.writer.layout,
            &mut self.manifest,
            &[],
            &mut self.known,
        )?;
        Ok(Some(n))
    }

    /// Refuses rows that do not fit the collection, naming the row.
    fn check(&self, rows: &[Row], images: &[f32], captions: Option<&[f32]>) -> Result<()> {
        let root = self.writer.layout.root().display();
        let m = &self.manifest;
        let invalid = |reason: String| Err(Error::Invalid(format!("{root}: {reason}")));
        if captions.is_some() != m.captions {
            return invalid(format!(
                "the collection {} captions",
                if m.captions { "has" } else { "has no" }
            ));
        }
        for (what, values) in [("image", Some(images)), ("caption", captions)] {
            let Some(values) = values else { continue };
            if values.len() != rows.len() * m.dim {
                return invalid(format!(
                    "{} rows need {} {what} embedding values ({} dimensions each), got {}",
                    rows.len(),
                    rows.len() * m.dim,
                    m.dim,
                    values.len()
                ));
            }
            for (row, v) in rows.iter().zip(values.chunks_exact(m.dim)) {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                // A row without a caption has a zero caption vector, as `index build` gives
                // it: a caption search then never ranks it above a captioned row.
                let (wanted, fits) = if what == "caption" && row.caption.is_none() {
                    ("0 (the row has no caption)", norm == 0.0)
                } else {
                    // Written so that NaN fails too.
                    ("1", (norm - 1.0).abs() <= NORM_TOLERANCE)
                };
                if !fits {
                    return invalid(format!(
                        "{}: its {what} embedding has length {norm}, not {wanted}; normalise \
                         embeddings before writing them",
                        row.image_path
                    ));
                }
            }
        }
        for row in rows {
            if row.dicom.len() != COLLECTION_TAGS.len() || row.extra.len() != m.extra_columns.len()
            {
                return invalid(format!(
                    "{}: {} DICOM values and {} CSV values, the collection has {} and {} ({})",
                    row.image_path,
                    row.dicom.len(),
                    row.extra.len(),
                    COLLECTION_TAGS.len(),
                    m.extra_columns.len(),
                    m.extra_columns.join(", ")
                ));
            }
            if row.caption.is_some() && !m.captions {
                return invalid(format!(
                    "{}: a caption, but the collection has no captions",
                    row.image_path
                ));
            }
        }
        Ok(())
    }
}
