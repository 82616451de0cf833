//! Approximate search for large collections: an HNSW graph over the image embeddings (the
//! `usearch` crate), saved beside the parts (`ann/img_emb.usearch`) and memory-mapped to
//! search. A description (`ann/img_emb.json`) records which parts the graph covers, so an
//! index older than the collection is refused rather than silently missing rows.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::atomic::{temp_path, write_bytes_atomic};
use crate::collection::{Collection, Target};
use crate::error::{Error, Result};
use crate::search::{Hit, TopK};

/// How the graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnParams {
    /// Neighbours per node (HNSW's M).
    pub connectivity: usize,
    /// Candidates kept while inserting (efConstruction).
    pub expansion_add: usize,
    /// Candidates kept while searching (ef), unless a search asks for another.
    pub expansion_search: usize,
    /// How vectors are stored in the graph: `f32`, `f16` or `i8`.
    pub quantization: Quantization,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            quantization: Quantization::I8,
        }
    }
}

/// Storage of vectors inside the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Full precision.
    F32,
    /// Half the memory; candidates re-scored exactly.
    F16,
    /// A quarter of the memory and the fastest graph; its approximate distances cap recall
    /// near 0.9, so candidates are re-scored exactly (recall then as `f32`'s).
    I8,
}

impl std::str::FromStr for Quantization {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Quantization::F32),
            "f16" => Ok(Quantization::F16),
            "i8" | "int8" => Ok(Quantization::I8),
            other => Err(Error::Invalid(format!(
                "unknown HNSW quantization {other:?}: f32, f16 or i8"
            ))),
        }
    }
}

impl Quantization {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::I8 => "i8",
        }
    }

    fn scalar(self) -> ScalarKind {
        match self {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        }
    }
}

/// What the saved graph covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnInfo {
    /// Parameters it was built with.
    pub params: AnnParams,
    /// Part numbers and rows, in order, it was built over.
    pub parts: Vec<(u32, usize)>,
    /// Dimensions.
    pub dim: usize,
}

fn parts_of(collection: &Collection) -> Vec<(u32, usize)> {
    collection
        .parts()
        .iter()
        .map(|p| (p.number, p.images.rows()))
        .collect()
}

fn options(dim: usize, params: &AnnParams) -> IndexOptions {
    IndexOptions {
        dimensions: dim,
        metric: MetricKind::IP,
        quantization: params.quantization.scalar(),
        connectivity: params.connectivity,
        expansion_add: params.expansion_add,
        expansion_search: params.expansion_search,
        multi: false,
    }
}

/// Creates an index for `params`.
fn new_index(dim: usize, params: &AnnParams) -> Result<Index> {
    Index::new(&options(dim, params)).map_err(|e| usearch_error("cannot create", e))
}

fn usearch_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("HNSW index: {what}: {e}"))
}

/// Builds the graph over every image embedding of `collection` and saves it atomically;
/// `progress(n)` after every `n` rows added.
pub fn build(
    collection: &Collection,
    params: &AnnParams,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<AnnInfo> {
    let dim = collection.dim();
    let index = new_index(dim, params)?;
    let threads = rayon::current_num_threads();
    index
        .reserve_capacity_and_threads(collection.len().max(1), threads)
        .map_err(|e| usearch_error("cannot reserve memory", e))?;
    for part in collection.parts() {
        const CHUNK: usize = 1024;
        (0..part.images.rows())
            .step_by(CHUNK)
            .collect::<Vec<_>>()
            .par_iter()
            .try_for_each(|&start| {
                let end = (start + CHUNK).min(part.images.rows());
                let rows = part.images.rows_f32(start..end);
                for (i, row) in rows.chunks_exact(dim).enumerate() {
                    let key = (part.offset + start + i) as u64;
                    index
                        .add(key, row)
                        .map_err(|e| usearch_error("cannot add a vector", e))?;
                }
                progress(end - start);
                Ok::<(), Error>(())
            })?;
    }
    let (path, info_path) = collection.layout().ann();
    let dir = path.parent().expect("ann/ folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // A graph-in-progress of a stopped `index ann` can be gigabytes: cleared first.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let temp = temp_path(&path);
    index
        .save(&temp.to_string_lossy())
        .map_err(|e| usearch_error("cannot save", e))?;
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
    let info = AnnInfo {
        params: *params,
        parts: parts_of(collection),
        dim,
    };
    write_bytes_atomic(
        &info_path,
        &serde_json::to_vec_pretty(&info).expect("serialisable"),
    )?;
    Ok(info)
}

/// Candidates per result a quantized graph is asked for before exact re-scoring.
pub const RERANK: usize = 4;

/// Largest search breadth a search may ask for.
pub const MAX_EF: usize = 4096;

/// A saved graph, memory-mapped.
pub struct Ann {
    index: Index,
    info: AnnInfo,
    /// usearch keeps the search breadth in the index: a search with its own `ef` sets it,
    /// searches and puts the default back alone; other searches share the lock.
    breadth: std::sync::RwLock<()>,
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann").field("info", &self.info).finish()
    }
}

impl Ann {
    /// Opens `collection`'s graph; refuses one built over other parts than it has now.
    pub fn open(collection: &Collection) -> Result<Ann> {
        let (path, info_path) = collection.layout().ann();
        let bytes = std::fs::read(&info_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Invalid(format!(
                "{}: the collection has no HNSW index; build one with `biomedclip index ann {}`",
                collection.root().display(),
                collection.root().display()
            )),
            _ => Error::io(&info_path, e),
        })?;
        let info: AnnInfo = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(&info_path, format!("not an HNSW description: {e}")))?;
        if info.parts != parts_of(collection) || info.dim != collection.dim() {
            return Err(Error::Invalid(format!(
                "{}: the HNSW index is older than the collection (built over {} rows, the \
                 collection has {}); rebuild it with `biomedclip index ann {}`",
                path.display(),
                info.parts.iter().map(|p| p.1).sum::<usize>(),
                collection.len(),
                collection.root().display()
            )));
        }
        let index = new_index(info.dim, &info.params)?;
        index
            .view(&path.to_string_lossy())
            .map_err(|e| Error::corrupt(&path, format!("cannot map the HNSW index: {e}")))?;
        if index.size() != collection.len() {
            return Err(Error::corrupt(
                &path,
                format!(
                    "{} vectors, the collection has {}",
                    index.size(),
                    collection.len()
                ),
            ));
        }
        Ok(Ann {
            index,
            info,
            breadth: std::sync::RwLock::new(()),
        })
    }

    /// The SIMD kernels usearch picked for this CPU (e.g. `skylake`, `serial`).
    pub fn hardware_acceleration(&self) -> String {
        self.index.hardware_acceleration()
    }

    /// What it covers.
    pub fn info(&self) -> &AnnInfo {
        &self.info
    }

    /// Approximate top `k` for each query, best first; `ef` overrides the search breadth.
    ///
    /// A graph of `f16` or `i8` vectors ranks by approximate distances: it is asked for
    /// [`RERANK`] times `k` candidates, which are scored again exactly against `collection`'s
    /// own rows (a few dozen dot products), so the order and the scores are exact search's
    /// for the rows found and recall is not capped by the quantization.
    pub fn search(
        &self,
        collection: &Collection,
        queries: &[Vec<f32>],
        k: usize,
        ef: Option<usize>,
        allowed: Option<&[bool]>,
    ) -> Result<Vec<Vec<Hit>>> {
        let rerank = self.info.params.quantization != Quantization::F32;
        let wanted = if rerank { k * RERANK } else { k };
        if ef.is_some_and(|ef| ef > MAX_EF) {
            return Err(Error::Invalid(format!("ef must be at most {MAX_EF}")));
        }
        let _exclusive;
        let _shared;
        match ef {
            Some(ef) => {
                _exclusive = self.breadth.write().unwrap_or_else(|e| e.into_inner());
                self.index.change_expansion_search(ef.max(wanted));
            }
            None => _shared = self.breadth.read().unwrap_or_else(|e| e.into_inner()),
        }
        let found = queries
            .par_iter()
            .map(|q| {
                let matches = match allowed {
                    None => self.index.search(q, wanted),
                    Some(a) => self.index.filtered_search(q, wanted, |key| {
                        a.get(key as usize).copied().unwrap_or(false)
                    }),
                }
                .map_err(|e| usearch_error("search failed", e))?;
                let mut top = TopK::new(k);
                for (key, distance) in matches.keys.iter().zip(&matches.distances) {
                    let id = *key as usize;
                    let score = match rerank {
                        true => collection
                            .row_f32(id, Target::Images)
                            .map_or(f32::NEG_INFINITY, |row| {
                                row.iter().zip(q).map(|(a, b)| a * b).sum()
                            }),
                        // usearch's inner-product distance is 1 - dot.
                        false => 1.0 - distance,
                    };
                    top.push(Hit { id, score });
                }
                Ok(top.into_sorted())
            })
            .collect();
        if ef.is_some() {
            self.index
                .change_expansion_search(self.info.params.expansion_search);
        }
        found
    }
}
