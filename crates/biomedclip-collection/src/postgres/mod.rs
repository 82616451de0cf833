//! The same collection in PostgreSQL + pgvector (`--store postgres://...`), for archives one
//! machine cannot hold or serve: many `index build --shard K/N` workers write one table at
//! once, and any number of `search`/`serve` processes query it from anywhere.
//!
//! A collection `NAME` is a table `NAME` (one row per embedded image: path, content hash,
//! caption, size, `img_emb vector(dim)`, `text_emb vector(dim)`, the DICOM tags and CSV
//! columns in `metadata jsonb`), a table `NAME__failed` (inputs that could not be embedded,
//! and why), an HNSW index `NAME__img_hnsw` on `img_emb` with `vector_cosine_ops` once
//! `index ann` made it, and a row of `biomedclip_collections` holding the manifest (model
//! and hash of its weights, precision, dimensions, columns, inputs).
//!
//! Writes are idempotent: a row is keyed by (content hash, path), inserted with `ON CONFLICT
//! DO NOTHING`, a batch per transaction, so a worker stopped at any moment and started again
//! duplicates nothing and loses nothing.

mod filter_sql;
mod search;
mod write;

pub use search::PgCollection;
pub use write::{build, create_hnsw, PgBuildOptions, PgWriter};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::metadata::CORE_COLUMNS;

/// A PostgreSQL database, as a `postgres://` URL names it.
#[derive(Clone)]
pub struct Database {
    config: postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Database {
    /// Parses a `postgres://user[:password]@host[:port]/database[?options]` URL (or a
    /// `key=value` connection string). TLS is not offered: reach a remote server over a
    /// private network or a tunnel.
    pub fn parse(url: &str) -> Result<Database> {
        let config: postgres::Config = url.parse().map_err(|e| {
            Error::Invalid(format!(
                "--store: not a PostgreSQL URL ({e}); expected postgres://user@host:port/database"
            ))
        })?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let shown = format!(
            "postgres://{}@{}{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            if ports.is_empty() {
                String::new()
            } else {
                format!(":{}", ports.join(","))
            },
            config.get_dbname().unwrap_or("")
        );
        Ok(Database { config, shown })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// How errors about collection `name` start.
    pub fn target(&self, name: &str) -> String {
        format!("{} collection {name}", self.shown)
    }

    /// A new connection.
    pub fn connect(&self) -> Result<postgres::Client> {
        self.config
            .connect(postgres::NoTls)
            .map_err(|e| Error::database(&self.shown, &e))
    }

    /// A pool of connections for concurrent searches.
    pub(crate) fn pool(
        &self,
        size: u32,
    ) -> r2d2::Pool<r2d2_postgres::PostgresConnectionManager<postgres::NoTls>> {
        let manager =
            r2d2_postgres::PostgresConnectionManager::new(self.config.clone(), postgres::NoTls);
        // Connections are made when searches need them: a database that is down at the
        // moment fails those searches (503 in the server), not the process.
        r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(std::time::Duration::from_secs(10))
            .build_unchecked(manager)
    }
}

/// Refuses a collection name that is not a plain SQL identifier (it names tables).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__");
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "collection name {name:?}: in a database a collection is named by 1 to 40 lowercase \
             letters, digits and single underscores, starting with a letter or underscore"
        )))
    }
}

/// The registry of collections in a database.
const REGISTRY: &str = "biomedclip_collections";

/// Quoted table names of collection `name`.
pub(crate) struct Tables {
    pub(crate) rows: String,
    pub(crate) failed: String,
    pub(crate) hnsw: String,
}

impl Tables {
    pub(crate) fn of(name: &str) -> Tables {
        Tables {
            rows: format!("\"{name}\""),
            failed: format!("\"{name}__failed\""),
            hnsw: format!("{name}__img_hnsw"),
        }
    }
}

/// Reads collection `name`'s manifest.
pub(crate) fn read_manifest(
    client: &mut postgres::Client,
    database: &Database,
    name: &str,
) -> Result<Manifest> {
    let target = database.target(name);
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&REGISTRY])
        .map_err(|e| Error::database(&target, &e))?
        .get(0);
    let row = if exists {
        client
            .query_opt(
                &format!("SELECT manifest FROM {REGISTRY} WHERE name = $1"),
                &[&name],
            )
            .map_err(|e| Error::database(&target, &e))?
    } else {
        None
    };
    let Some(row) = row else {
        return Err(Error::Invalid(format!(
            "{target}: no such collection (make one with `biomedclip index build --store {} --out {name}`)",
            database.shown()
        )));
    };
    let json: serde_json::Value = row.get(0);
    serde_json::from_value(json)
        .map_err(|e| Error::Database {
            target: target.clone(),
            reason: format!("the registry's manifest is not one this build reads: {e}"),
        })
        .and_then(|m: Manifest| {
            if m.format == crate::manifest::FORMAT {
                Ok(m)
            } else {
                Err(Error::Database {
                    target,
                    reason: format!("manifest format {}", m.format),
                })
            }
        })
}

/// Creates the extension, the registry and collection `name`'s tables if missing, and
/// registers `wanted` as its manifest, or checks that the registered one was made the same
/// way. Under a transaction-wide advisory lock, so workers starting together do not race.
pub(crate) fn ensure_collection(
    client: &mut postgres::Client,
    database: &Database,
    name: &str,
    wanted: &Manifest,
) -> Result<Manifest> {
    let target = database.target(name);
    let db = |e: postgres::Error| Error::database(&target, &e);
    let tables = Tables::of(name);
    let mut tx = client.transaction().map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('biomedclip ddl'))",
        &[],
    )
    .map_err(db)?;
    tx.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS vector;
         CREATE TABLE IF NOT EXISTS {REGISTRY} (
             name text PRIMARY KEY,
             manifest jsonb NOT NULL,
             created timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .map_err(db)?;
    let existing = tx
        .query_opt(
            &format!("SELECT manifest FROM {REGISTRY} WHERE name = $1"),
            &[&name],
        )
        .map_err(db)?;
    let manifest = match existing {
        Some(row) => {
            let json: serde_json::Value = row.get(0);
            let existing: Manifest = serde_json::from_value(json).map_err(|e| Error::Database {
                target: target.clone(),
                reason: format!("the registry's manifest is not one this build reads: {e}"),
            })?;
            let at = std::path::PathBuf::from(&target);
            existing.check_same_making(wanted, &at)?;
            existing.check_same_inputs(wanted, &at)?;
            existing
        }
        None => {
            let json = serde_json::to_value(wanted).expect("serialisable");
            tx.execute(
                &format!("INSERT INTO {REGISTRY} (name, manifest) VALUES ($1, $2)"),
                &[&name, &json],
            )
            .map_err(db)?;
            wanted.clone()
        }
    };
    let dim = manifest.dim;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {rows} (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             image_path text NOT NULL,
             blake3 text NOT NULL,
             caption text,
             size bigint NOT NULL,
             metadata jsonb NOT NULL,
             img_emb vector({dim}) NOT NULL,
             text_emb vector({dim}),
             UNIQUE (blake3, image_path)
         );
         CREATE TABLE IF NOT EXISTS {failed} (
             image_path text NOT NULL,
             blake3 text NOT NULL,
             error text NOT NULL,
             PRIMARY KEY (blake3, image_path)
         );",
        rows = tables.rows,
        failed = tables.failed,
    ))
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(manifest)
}

/// The names of the columns kept in `metadata jsonb` rather than as table columns.
pub(crate) fn jsonb_columns(manifest: &Manifest) -> Vec<String> {
    manifest
        .columns()
        .names()
        .into_iter()
        .filter(|n| !CORE_COLUMNS.contains(&n.as_str()))
        .collect()
}

/// Collection `name`'s manifest, as its first writer registered it.
pub fn manifest(database: &Database, name: &str) -> Result<Manifest> {
    check_name(name)?;
    let mut client = database.connect()?;
    read_manifest(&mut client, database, name)
}
