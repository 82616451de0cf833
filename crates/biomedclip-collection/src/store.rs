//! One face for both places a collection can live: a folder (clip-retrieval's npy + parquet
//! layout, searched in memory-mapped form, with an optional usearch HNSW file) or a table in
//! PostgreSQL + pgvector. `search` and `serve` open a [`Store`] and do not care which.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::ann::Ann;
use crate::collection::{Collection, Target};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::manifest::{Manifest, ModelId};
use crate::postgres::{Database, PgCollection};
use crate::search::exact;

/// Where a collection lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A folder.
    Folder(PathBuf),
    /// A database, and the collection's name in it.
    Postgres(Box<Database>, String),
}

impl Location {
    /// A collection named `name` in the database at `store`, or the folder `name` when there
    /// is no store.
    pub fn new(store: Option<&str>, name: &str) -> Result<Location> {
        match store {
            None => Ok(Location::Folder(PathBuf::from(name))),
            Some(url) => {
                crate::postgres::check_name(name)?;
                Ok(Location::Postgres(
                    Box::new(Database::parse(url)?),
                    name.to_string(),
                ))
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Folder(p) => write!(f, "{}", p.display()),
            Location::Postgres(db, name) => f.write_str(&db.target(name)),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The row: its position in a folder collection, its `id` in a database.
    pub id: u64,
    /// Cosine similarity to the query (the embeddings are L2-normalised).
    pub score: f32,
    /// The image file.
    pub path: Option<String>,
    /// Every metadata column of the row.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// What a store holds, in summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Rows.
    pub rows: usize,
    /// Inputs that could not be embedded.
    pub failed: usize,
    /// Whether approximate search is available.
    pub ann: bool,
}

/// An opened collection.
// One per opened collection, made once and never moved on a hot path: its size does not
// matter, and boxing a variant would only add a pointer to every search.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Store {
    /// A folder, with its HNSW index when it has a current one.
    Folder {
        /// The collection.
        collection: Collection,
        /// Its HNSW index, or why there is none to use: opened on first use, so an exact
        /// search never maps it.
        ann: OnceLock<Result<Ann>>,
    },
    /// A table in PostgreSQL.
    Postgres(PgCollection),
}

impl Store {
    /// Opens the collection at `location`. A folder's HNSW index is opened on first use (an
    /// approximate search, [`Store::summary`], [`Store::ann_error`]), so that an exact search
    /// from the command line never maps it. `connections` bounds a database's connection pool.
    pub fn open(location: &Location, connections: u32) -> Result<Store> {
        match location {
            Location::Folder(dir) => {
                let collection = Collection::open(dir)?;
                Ok(Store::Folder {
                    collection,
                    ann: OnceLock::new(),
                })
            }
            Location::Postgres(db, name) => {
                Ok(Store::Postgres(PgCollection::open(db, name, connections)?))
            }
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Store::Folder { collection, .. } => collection.manifest(),
            Store::Postgres(pg) => pg.manifest(),
        }
    }

    /// Rows, failures and whether there is an HNSW index (a database's counted at most
    /// seconds ago).
    pub fn summary(&self) -> Result<Summary> {
        match self {
            Store::Folder { collection, ann } => Ok(Summary {
                rows: collection.len(),
                failed: collection.manifest().failed.len(),
                ann: ann.get_or_init(|| Ann::open(collection)).is_ok(),
            }),
            Store::Postgres(pg) => pg.summary(),
        }
    }

    /// Why a folder's HNSW index, present but stale or damaged, cannot be used.
    pub fn ann_problem(&self) -> Option<String> {
        match self {
            Store::Folder { collection, .. } if collection.layout().ann().1.exists() => {
                self.ann_error()
            }
            _ => None,
        }
    }

    /// Why approximate search cannot be used on a folder (no HNSW index, or a stale or
    /// damaged one); `None` when it can, and for a database (which answers for itself).
    pub fn ann_error(&self) -> Option<String> {
        match self {
            Store::Folder { collection, ann } => ann
                .get_or_init(|| Ann::open(collection))
                .as_ref()
                .err()
                .map(ToString::to_string),
            Store::Postgres(_) => None,
        }
    }

    /// Metadata column names, in order.
    pub fn columns(&self) -> Vec<String> {
        self.manifest().columns().names()
    }

    /// Refuses a model other than the collection's, naming both.
    pub fn check_model(&self, model: &ModelId) -> Result<()> {
        match self {
            Store::Folder { collection, .. } => collection.check_model(model),
            Store::Postgres(pg) => pg.check_model(model),
        }
    }

    /// Parses a `--where` filter against the collection's columns.
    pub fn parse_filter(&self, expr: &str) -> Result<Filter> {
        match self {
            Store::Folder { collection, .. } => Filter::parse(expr, collection.metadata()),
            Store::Postgres(pg) => pg.parse_filter(expr),
        }
    }

    /// The best `k` rows for each query, exactly or (`ann: Some(ef)`) through the HNSW
    /// index.
    pub fn search(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        target: Target,
        filter: Option<&Filter>,
        ann: Option<Option<usize>>,
    ) -> Result<Vec<Vec<Found>>> {
        match self {
            Store::Postgres(pg) => pg.search(queries, k, target, filter, ann),
            Store::Folder {
                collection,
                ann: index,
            } => {
                let allowed = filter.map(|f| f.mask(collection.metadata()));
                let hits = match ann {
                    None => exact(collection, queries, k, target, allowed.as_deref())?,
                    Some(ef) => {
                        if target == Target::Captions {
                            return Err(Error::Invalid(
                                "the HNSW index covers the images only".into(),
                            ));
                        }
                        let index = index
                            .get_or_init(|| Ann::open(collection))
                            .as_ref()
                            .map_err(|e| Error::Invalid(e.to_string()))?;
                        index.search(collection, queries, k, ef, allowed.as_deref())?
                    }
                };
                let meta = collection.metadata();
                Ok(hits
                    .into_iter()
                    .map(|hits| {
                        hits.into_iter()
                            .map(|h| Found {
                                id: h.id as u64,
                                score: h.score,
                                path: collection.image_path(h.id).map(str::to_string),
                                metadata: meta.row_json(h.id),
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// The image file of row `id`, if there is such a row.
    pub fn image_path(&self, id: u64) -> Result<Option<String>> {
        match self {
            Store::Folder { collection, .. } => Ok(usize::try_from(id)
                .ok()
                .and_then(|id| collection.image_path(id))
                .map(str::to_string)),
            Store::Postgres(pg) => pg.image_path(id),
        }
    }
}
