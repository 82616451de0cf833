//! Searchable BiomedCLIP collections: embed an archive of images (and their captions) once,
//! then search it by text or by image. BiomedCLIP is a research model, not for clinical use.
//!
//! On disk a collection is clip-retrieval's layout, so its tools and autofaiss read it as
//! is: `img_emb/img_emb_{n}.npy`, `text_emb/text_emb_{n}.npy`,
//! `metadata/metadata_{n}.parquet`, plus `manifest.json` naming the model (and a hash of its
//! weights), precision, storage type and dimensions.
//!
//! The data flow, one module a stage:
//! - inputs (files, folders, CSVs, captions) -> a sorted, deduplicated list: [`inputs`];
//! - the list -> parts of embeddings and metadata, written atomically, resumable, by shards:
//!   [`build`](mod@build) (through [`npy`], [`metadata`], [`atomic`], [`lock`], [`layout`],
//!   [`manifest`]);
//! - parts -> an opened, checked collection: [`collection`];
//! - queries -> top-k rows, exactly ([`search`]) or through an HNSW graph ([`ann`]),
//!   filtered by metadata ([`filter`]);
//! - the same collection in PostgreSQL + pgvector, written by many workers and searched from
//!   anywhere: [`postgres`]; either kind opened for search: [`store`].

pub mod ann;
pub mod atomic;
pub mod build;
pub mod collection;
pub mod error;
pub mod filter;
pub mod inputs;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod metadata;
pub mod npy;
pub mod postgres;
pub mod search;
pub mod store;
pub mod writer;

pub use build::{build, BuildOptions, Event, Report, DEFAULT_PART_SIZE};
pub use collection::{Collection, Target};
pub use error::{Error, Result};
pub use filter::Filter;
pub use manifest::{Manifest, ModelId};
pub use search::Hit;
pub use store::{Found, Location, Store, Summary};
pub use writer::FolderWriter;

use biomedclip::ModelFiles;

/// Names a model and hashes its weights file (BLAKE3 over a memory map, on all cores).
pub fn model_id(name: &str, files: &ModelFiles) -> Result<ModelId> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap_rayon(&files.weights)
        .map_err(|e| Error::io(&files.weights, e))?;
    Ok(ModelId {
        name: name.to_string(),
        weights_blake3: hasher.finalize().to_hex().to_string(),
    })
}
