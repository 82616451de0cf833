//! Searching a collection kept in PostgreSQL: exact (a scan ordered by inner product, `<#>`,
//! which no index serves) or approximate (the HNSW index, ordered by cosine distance, `<=>`,
//! with `hnsw.ef_search` set for the query); the embeddings are L2-normalised, so both rank
//! by cosine similarity.

use postgres::types::ToSql;

use super::filter_sql::{to_sql, Params};
use super::write::count;
use super::{jsonb_columns, read_manifest, Database, Tables};
use crate::collection::Target;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::manifest::{Manifest, ModelId};
use crate::store::{Found, Summary};

/// How long counted rows and failures are reused: counting is a scan of the table (seconds
/// at tens of millions of rows), and a page listing the collections asks often.
const SUMMARY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// pgvector's largest `hnsw.ef_search`.
pub const MAX_EF_SEARCH: usize = 1000;

/// A collection in a database, opened for search.
pub struct PgCollection {
    database: Database,
    name: String,
    tables: Tables,
    target: String,
    manifest: Manifest,
    jsonb: Vec<String>,
    pool: r2d2::Pool<r2d2_postgres::PostgresConnectionManager<postgres::NoTls>>,
    /// The last summary and when it was taken.
    summary: std::sync::Mutex<Option<(std::time::Instant, Summary)>>,
}

impl std::fmt::Debug for PgCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.target)
    }
}

impl PgCollection {
    /// Opens collection `name`, with a pool of up to `connections` connections.
    pub fn open(database: &Database, name: &str, connections: u32) -> Result<PgCollection> {
        super::check_name(name)?;
        let target = database.target(name);
        let manifest = read_manifest(&mut database.connect()?, database, name)?;
        let pool = database.pool(connections.max(1));
        Ok(PgCollection {
            database: database.clone(),
            name: name.to_string(),
            tables: Tables::of(name),
            target,
            jsonb: jsonb_columns(&manifest),
            manifest,
            pool,
            summary: std::sync::Mutex::new(None),
        })
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database and collection, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The manifest (as registered by the first writer; rows and failures are counted live).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn client(
        &self,
    ) -> Result<r2d2::PooledConnection<r2d2_postgres::PostgresConnectionManager<postgres::NoTls>>>
    {
        self.pool.get().map_err(|e| Error::Database {
            target: self.target.clone(),
            reason: format!("no connection: {e}"),
        })
    }

    fn db(&self, e: postgres::Error) -> Error {
        Error::database(&self.target, &e)
    }

    /// Rows now.
    pub fn rows(&self) -> Result<usize> {
        count(&mut *self.client()?, &self.target, &self.tables.rows)
    }

    /// Inputs recorded as failed now.
    pub fn failed(&self) -> Result<usize> {
        count(&mut *self.client()?, &self.target, &self.tables.failed)
    }

    /// Rows, failures and whether the HNSW index exists, counted at most ten seconds
    /// ago.
    pub fn summary(&self) -> Result<Summary> {
        let mut last = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, summary)) = &*last {
            if at.elapsed() < SUMMARY_TTL {
                return Ok(summary.clone());
            }
        }
        let summary = Summary {
            rows: self.rows()?,
            failed: self.failed()?,
            ann: self.has_ann()?,
        };
        *last = Some((std::time::Instant::now(), summary.clone()));
        Ok(summary)
    }

    /// Whether the HNSW index exists.
    pub fn has_ann(&self) -> Result<bool> {
        Ok(self
            .client()?
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.tables.hnsw])
            .map_err(|e| self.db(e))?
            .get(0))
    }

    /// Refuses a model other than the collection's, naming both.
    pub fn check_model(&self, model: &ModelId) -> Result<()> {
        self.manifest
            .check_model(model, std::path::Path::new(&self.target))
    }

    /// Parses a `--where` filter against the collection's columns.
    pub fn parse_filter(&self, expr: &str) -> Result<Filter> {
        Filter::parse_columns(expr, &self.manifest.columns().typed())
    }

    /// The best `k` rows for each query: exact unless `ann` (then `Some(ef)`, the HNSW
    /// search breadth, at least `k`).
    pub fn search(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        target: Target,
        filter: Option<&Filter>,
        ann: Option<Option<usize>>,
    ) -> Result<Vec<Vec<Found>>> {
        let column = match target {
            Target::Images => "img_emb",
            Target::Captions if self.manifest.captions => "text_emb",
            Target::Captions => {
                return Err(Error::Invalid(format!(
                    "{}: the collection has no captions to search",
                    self.target
                )))
            }
        };
        if ann.is_some() && target == Target::Captions {
            return Err(Error::Invalid(
                "the HNSW index covers the images only".into(),
            ));
        }
        let mut client = self.client()?;
        let tables = &self.tables;
        let mut out = Vec::with_capacity(queries.len());
        for query in queries {
            if query.len() != self.manifest.dim {
                return Err(Error::Invalid(format!(
                    "a query of {} dimensions against a collection of {}",
                    query.len(),
                    self.manifest.dim
                )));
            }
            let mut params: Params = vec![Box::new(pgvector::Vector::from(query.clone()))];
            let filter = filter
                .map(|f| format!("WHERE {}", to_sql(f, &mut params)))
                .unwrap_or_default();
            // Exact ties rank by id, as the file store ranks them by row; the HNSW scan must
            // be ordered by the distance alone for pgvector to use the index.
            let order = match ann {
                None => format!("{column} <#> $1, id"),
                Some(_) => format!("{column} <=> $1"),
            };
            let score = match ann {
                None => format!("-({column} <#> $1)"),
                Some(_) => format!("1 - ({column} <=> $1)"),
            };
            let sql = format!(
                "SELECT id, image_path, caption, blake3, size, metadata, ({score})::float4 \
                 FROM {rows} {filter} ORDER BY {order} LIMIT {k}",
                rows = tables.rows,
            );
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = match ann {
                None => client.query(&sql, &refs).map_err(|e| self.db(e))?,
                Some(ef) => {
                    let ef = ef.unwrap_or(40).max(k).min(MAX_EF_SEARCH);
                    let mut tx = client.transaction().map_err(|e| self.db(e))?;
                    tx.batch_execute(&format!("SET LOCAL hnsw.ef_search = {ef}"))
                        .map_err(|e| self.db(e))?;
                    let rows = tx.query(&sql, &refs).map_err(|e| self.db(e))?;
                    tx.commit().map_err(|e| self.db(e))?;
                    rows
                }
            };
            out.push(rows.iter().map(|r| self.found(r)).collect());
        }
        Ok(out)
    }

    fn found(&self, r: &postgres::Row) -> Found {
        let mut metadata = serde_json::Map::new();
        let path: String = r.get(1);
        metadata.insert("image_path".into(), path.clone().into());
        if self.manifest.captions {
            let caption: Option<String> = r.get(2);
            metadata.insert("caption".into(), caption.into());
        }
        metadata.insert("blake3".into(), r.get::<_, String>(3).into());
        metadata.insert("size".into(), r.get::<_, i64>(4).into());
        let json: serde_json::Value = r.get(5);
        for name in &self.jsonb {
            metadata.insert(
                name.clone(),
                json.get(name).cloned().unwrap_or(serde_json::Value::Null),
            );
        }
        Found {
            id: r.get::<_, i64>(0) as u64,
            score: r.get(6),
            path: Some(path),
            metadata,
        }
    }

    /// The image file of row `id`, if there is such a row.
    pub fn image_path(&self, id: u64) -> Result<Option<String>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        Ok(self
            .client()?
            .query_opt(
                &format!("SELECT image_path FROM {} WHERE id = $1", self.tables.rows),
                &[&id],
            )
            .map_err(|e| self.db(e))?
            .map(|r| r.get(0)))
    }
}
