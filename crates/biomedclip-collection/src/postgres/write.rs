//! `index build|update --store postgres://...`: embeds the inputs the table does not hold
//! yet, a batch per transaction, and (with `--ann`, or `index ann`) builds the HNSW index.
//!
//! Why a stopped worker loses and duplicates nothing: a batch's rows and failures commit in
//! one transaction (all or none), every row is keyed by (content hash, path) and inserted
//! with `ON CONFLICT DO NOTHING`, and a started worker first asks the database which of its
//! inputs are done. Workers of different shards run at once; two of the same shard, or an
//! unsharded writer beside shard writers, are refused through advisory locks (held by the
//! session, so a killed worker's lock goes with its connection).

use std::collections::HashSet;

use biomedclip::BiomedClip;
use postgres::types::ToSql;
use rayon::prelude::*;

use super::{ensure_collection, jsonb_columns, read_manifest, Database, Tables};
use crate::build::{
    caption_embeddings, embed_part, hash_file, wanted_manifest, Current, Embedded, Event, Report,
};
use crate::error::{Error, Result};
use crate::inputs::{self, InputSpec, Item};
use crate::layout::Shard;
use crate::manifest::{Manifest, ModelId};
use crate::metadata::{Columns, Failure, Row};
use crate::npy::Dtype;

/// Tries for a writer's lock, 250 ms apart.
const LOCK_TRIES: usize = 12;

/// Hashes asked about per query while finding what is done.
const LOOKUP_CHUNK: usize = 10_000;

/// What to build, and where.
#[derive(Debug, Clone)]
pub struct PgBuildOptions {
    /// The database.
    pub database: Database,
    /// The collection's name (its table).
    pub name: String,
    /// The inputs.
    pub spec: InputSpec,
    /// This worker's share.
    pub shard: Shard,
    /// Inputs per transaction.
    pub batch: usize,
    /// Also drop the rows of deleted and changed files (`index update`).
    pub update: bool,
}

/// Builds (or resumes, or updates) collection `options.name` in the database.
pub fn build(
    model: &BiomedClip,
    model_id: &ModelId,
    options: &PgBuildOptions,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Report> {
    super::check_name(&options.name)?;
    if options.batch == 0 {
        return Err(Error::Invalid("--part-size must be at least 1".into()));
    }
    let database = &options.database;
    let target = database.target(&options.name);
    let db = |e: postgres::Error| Error::database(&target, &e);
    let listed = inputs::list(&options.spec)?;
    let columns = Columns {
        captions: listed.captions,
        extra: listed.extra_columns.clone(),
    };
    let wanted = wanted_manifest(
        model,
        model_id,
        &columns,
        &options.spec,
        options.batch,
        Dtype::F32,
    );
    let mut client = database.connect()?;
    let manifest = ensure_collection(&mut client, database, &options.name, &wanted)?;
    lock(&mut client, &target, &options.name, options.shard)?;
    let tables = Tables::of(&options.name);

    let mine: Vec<&Item> = listed
        .items
        .iter()
        .filter(|i| options.shard.owns_item(&i.path))
        .collect();
    let hashes: Vec<Option<String>> = mine.par_iter().map(|i| hash_file(&i.path)).collect();
    let mut report = Report {
        inputs: mine.len(),
        ..Report::default()
    };

    if options.update {
        (report.dropped, report.relabelled) = update_rows(
            &mut client,
            model,
            &target,
            &tables,
            &manifest,
            options.shard,
            &mine,
            &hashes,
        )?;
    }

    // What is done: a row or a recorded failure with the same path and content.
    let mut done: HashSet<(String, String)> = HashSet::new();
    let known: Vec<String> = hashes
        .iter()
        .map(|h| h.clone().unwrap_or_default())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    for chunk in known.chunks(LOOKUP_CHUNK) {
        for table in [&tables.rows, &tables.failed] {
            let rows = client
                .query(
                    &format!("SELECT image_path, blake3 FROM {table} WHERE blake3 = ANY($1)"),
                    &[&chunk],
                )
                .map_err(db)?;
            done.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
        }
    }
    let pending: Vec<(&Item, Option<&str>)> = mine
        .iter()
        .zip(&hashes)
        .filter(|(i, h)| !done.contains(&(i.path.clone(), (*h).clone().unwrap_or_default())))
        .map(|(i, h)| (*i, h.as_deref()))
        .collect();
    report.already = mine.len() - pending.len();
    on(Event::Planned {
        inputs: mine.len(),
        done: report.already,
        pending: pending.len(),
    });
    drop(done);

    // Inputs the listing could not read (an unreadable folder) are recorded as failures too.
    if options.shard == Shard::ALL || options.shard.index == 0 {
        commit(
            &mut client,
            &target,
            &tables,
            &manifest,
            Embedded {
                rows: Vec::new(),
                images: Vec::new(),
                captions: None,
                failed: listed.unreadable.clone(),
            },
        )?;
    }
    for (j, chunk) in pending.chunks(options.batch).enumerate() {
        let embedded = embed_part(model, chunk, manifest.captions, on)?;
        report.embedded += embedded.rows.len();
        report.failed += embedded.failed.len();
        commit(&mut client, &target, &tables, &manifest, embedded)?;
        report.parts.push(j as u32);
        on(Event::Committed(j as u32));
    }
    let mut summary = manifest;
    summary.rows = count(&mut client, &target, &tables.rows)?;
    summary.failed = failures(&mut client, &target, &tables.failed)?;
    report.manifest = Some(summary);
    Ok(report)
}

/// Takes the writer's advisory locks: the collection (shared by shard workers, exclusive
/// for an unsharded writer) and its shard (exclusive).
fn lock(client: &mut postgres::Client, target: &str, name: &str, shard: Shard) -> Result<()> {
    let db = |e: postgres::Error| Error::database(target, &e);
    let key = format!("biomedclip collection {name}");
    let whole = if shard.count == 1 {
        "pg_try_advisory_lock"
    } else {
        "pg_try_advisory_lock_shared"
    };
    // A worker killed a moment ago holds its locks until the server sees its connection
    // close: a few tries before refusing.
    let mut try_lock = |sql: &str, params: &[&(dyn ToSql + Sync)]| -> Result<bool> {
        for attempt in 0..LOCK_TRIES {
            let got: bool = client.query_one(sql, params).map_err(db)?.get(0);
            if got {
                return Ok(true);
            }
            if attempt + 1 < LOCK_TRIES {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        Ok(false)
    };
    let got = try_lock(&format!("SELECT {whole}(hashtext($1), -1)"), &[&key])?;
    if !got {
        return Err(Error::Invalid(format!(
            "{target}: the collection is being written by another process ({}); wait for it \
             to finish or stop it",
            if shard.count == 1 {
                "shard workers or another writer"
            } else {
                "an unsharded writer"
            }
        )));
    }
    if shard.count > 1 {
        let got = try_lock(
            "SELECT pg_try_advisory_lock(hashtext($1), $2)",
            &[&key, &(shard.index as i32)],
        )?;
        if !got {
            return Err(Error::Invalid(format!(
                "{target}: shard {shard} is being written by another worker; wait for it to \
                 finish or stop it"
            )));
        }
    }
    Ok(())
}

/// `index update` on this shard's rows: deletes the rows and failures that
/// [`Current::stays`] lets go, and gives the staying rows whose caption or CSV columns
/// changed their new ones (the caption re-embedded, the image not). Returns (rows dropped,
/// rows relabelled).
#[allow(clippy::too_many_arguments)]
fn update_rows(
    client: &mut postgres::Client,
    model: &BiomedClip,
    target: &str,
    tables: &Tables,
    manifest: &Manifest,
    shard: Shard,
    mine: &[&Item],
    hashes: &[Option<String>],
) -> Result<(usize, usize)> {
    let db = |e: postgres::Error| Error::database(target, &e);
    let current = Current::new(mine, hashes);
    // A failure of an unreadable file is stored with an empty hash.
    let stays = |path: &str, hash: &str| current.stays(path, (!hash.is_empty()).then_some(hash));
    let mut dropped = 0;
    let mut relabel: Vec<(Row, &Item)> = Vec::new();
    for table in [&tables.rows, &tables.failed] {
        let is_rows = table == &tables.rows;
        let sql = if is_rows {
            format!("SELECT image_path, blake3, caption, metadata FROM {table}")
        } else {
            format!("SELECT image_path, blake3 FROM {table}")
        };
        let mut gone: Vec<(String, String)> = Vec::new();
        for r in client.query(&sql, &[]).map_err(db)? {
            let (path, hash): (String, String) = (r.get(0), r.get(1));
            if !shard.owns_item(&path) {
                continue;
            }
            if !stays(&path, &hash) {
                gone.push((path, hash));
            } else if is_rows {
                let metadata: serde_json::Value = r.get(3);
                let row = Row {
                    image_path: path,
                    caption: r.get(2),
                    blake3: hash,
                    size: 0,
                    dicom: Vec::new(),
                    extra: manifest
                        .extra_columns
                        .iter()
                        .map(|n| metadata.get(n).and_then(|v| v.as_str()).map(String::from))
                        .collect(),
                };
                if let Some(item) = current.relabelled(&row) {
                    relabel.push((row, item));
                }
            }
        }
        let (paths, blake3s): (Vec<String>, Vec<String>) = gone.into_iter().unzip();
        let n = client
            .execute(
                &format!(
                    "DELETE FROM {table} t USING unnest($1::text[], $2::text[]) AS g(p, h) \
                     WHERE t.image_path = g.p AND t.blake3 = g.h"
                ),
                &[&paths, &blake3s],
            )
            .map_err(db)?;
        if is_rows {
            dropped = n as usize;
        }
    }
    if relabel.is_empty() {
        return Ok((dropped, 0));
    }
    // Only changed captions are embedded again (a row whose CSV columns alone changed
    // keeps its caption embedding).
    let caption_changed = |row: &Row, item: &Item| manifest.captions && item.caption != row.caption;
    let changed: Vec<bool> = relabel
        .iter()
        .map(|(row, item)| caption_changed(row, item))
        .collect();
    let texts: Vec<Option<&str>> = relabel
        .iter()
        .zip(&changed)
        .filter(|(_, &c)| c)
        .map(|((_, item), _)| item.caption.as_deref())
        .collect();
    let mut embedded = caption_embeddings(model, &texts)?.into_iter();
    let mut tx = client.transaction().map_err(db)?;
    let update = tx
        .prepare(&format!(
            "UPDATE {} SET caption = $3, metadata = metadata || $4, \
             text_emb = CASE WHEN $5 THEN $6 ELSE text_emb END \
             WHERE image_path = $1 AND blake3 = $2",
            tables.rows
        ))
        .map_err(db)?;
    for (i, (row, item)) in relabel.iter().enumerate() {
        let extra: serde_json::Map<String, serde_json::Value> = manifest
            .extra_columns
            .iter()
            .zip(&item.extra)
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.clone().map_or(serde_json::Value::Null, Into::into),
                )
            })
            .collect();
        let extra = serde_json::Value::Object(extra);
        let changed = changed[i];
        let text: Option<pgvector::Vector> = changed.then(|| {
            embedded
                .next()
                .expect("one embedding per changed caption")
                .into()
        });
        let params: [&(dyn ToSql + Sync); 6] = [
            &row.image_path,
            &row.blake3,
            &item.caption,
            &extra,
            &changed,
            &text,
        ];
        tx.execute(&update, &params).map_err(db)?;
    }
    tx.commit().map_err(db)?;
    Ok((dropped, relabel.len()))
}

/// Writes one batch's rows and failures in one transaction.
fn commit(
    client: &mut postgres::Client,
    target: &str,
    tables: &Tables,
    manifest: &Manifest,
    part: Embedded,
) -> Result<()> {
    insert(
        client,
        target,
        tables,
        manifest,
        &part.rows,
        &part.images,
        part.captions.as_deref(),
        &part.failed,
    )
}

/// Inserts rows (with their embeddings, `dim` values a row) and failures in one transaction;
/// rows and failures already present are left as they are.
#[allow(clippy::too_many_arguments)]
fn insert(
    client: &mut postgres::Client,
    target: &str,
    tables: &Tables,
    manifest: &Manifest,
    rows: &[Row],
    images: &[f32],
    captions: Option<&[f32]>,
    failed: &[Failure],
) -> Result<()> {
    let dim = manifest.dim;
    if images.len() != rows.len() * dim || captions.is_some_and(|c| c.len() != rows.len() * dim) {
        return Err(Error::Invalid(format!(
            "{target}: {} rows need {} embedding values, got {}",
            rows.len(),
            rows.len() * dim,
            images.len()
        )));
    }
    let db = |e: postgres::Error| Error::database(target, &e);
    let jsonb = jsonb_columns(manifest);
    let mut tx = client.transaction().map_err(db)?;
    // One prepared statement executed per row: a batch of a thousand rows costs well under
    // a second on a local network, against minutes of embedding.
    let insert = tx
        .prepare(&format!(
            "INSERT INTO {} (image_path, blake3, caption, size, metadata, img_emb, text_emb) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (blake3, image_path) DO NOTHING",
            tables.rows
        ))
        .map_err(db)?;
    for (i, row) in rows.iter().enumerate() {
        let mut metadata = serde_json::Map::new();
        let values = row.dicom.iter().chain(&row.extra);
        for (name, value) in jsonb.iter().zip(values) {
            metadata.insert(
                name.clone(),
                value
                    .as_ref()
                    .map_or(serde_json::Value::Null, |v| v.clone().into()),
            );
        }
        let metadata = serde_json::Value::Object(metadata);
        let image = pgvector::Vector::from(images[i * dim..(i + 1) * dim].to_vec());
        let text = captions.map(|c| pgvector::Vector::from(c[i * dim..(i + 1) * dim].to_vec()));
        let params: [&(dyn ToSql + Sync); 7] = [
            &row.image_path,
            &row.blake3,
            &row.caption,
            &row.size,
            &metadata,
            &image,
            &text,
        ];
        tx.execute(&insert, &params).map_err(db)?;
    }
    let insert_failed = tx
        .prepare(&format!(
            "INSERT INTO {} (image_path, blake3, error) VALUES ($1, $2, $3) \
             ON CONFLICT (blake3, image_path) DO NOTHING",
            tables.failed
        ))
        .map_err(db)?;
    for f in failed {
        let hash = f.blake3.clone().unwrap_or_default();
        tx.execute(&insert_failed, &[&f.path, &hash, &f.error])
            .map_err(db)?;
    }
    tx.commit().map_err(db)
}

pub(crate) fn count(client: &mut postgres::Client, target: &str, table: &str) -> Result<usize> {
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .map_err(|e| Error::database(target, &e))?
        .get(0);
    Ok(n as usize)
}

pub(crate) fn failures(
    client: &mut postgres::Client,
    target: &str,
    table: &str,
) -> Result<Vec<Failure>> {
    Ok(client
        .query(
            &format!("SELECT image_path, blake3, error FROM {table} ORDER BY image_path"),
            &[],
        )
        .map_err(|e| Error::database(target, &e))?
        .iter()
        .map(|r| {
            let hash: String = r.get(1);
            Failure {
                path: r.get(0),
                blake3: (!hash.is_empty()).then_some(hash),
                error: r.get(2),
            }
        })
        .collect())
}

/// Builds the HNSW index on the image embeddings (`vector_cosine_ops`, `m`, and
/// `ef_construction`), unless the collection has one; later inserts keep it current.
/// Returns whether it was built now.
pub fn create_hnsw(
    database: &Database,
    name: &str,
    m: usize,
    ef_construction: usize,
) -> Result<bool> {
    super::check_name(name)?;
    let target = database.target(name);
    let db = |e: postgres::Error| Error::database(&target, &e);
    let mut client = database.connect()?;
    read_manifest(&mut client, database, name)?;
    let tables = Tables::of(name);
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&tables.hnsw])
        .map_err(db)?
        .get(0);
    if exists {
        return Ok(false);
    }
    // pgvector builds fastest when the graph fits in maintenance_work_mem.
    client
        .batch_execute(&format!(
            "SET maintenance_work_mem = '1GB';
             CREATE INDEX IF NOT EXISTS {hnsw} ON {rows} USING hnsw (img_emb vector_cosine_ops)
                 WITH (m = {m}, ef_construction = {ef_construction});",
            hnsw = tables.hnsw,
            rows = tables.rows,
        ))
        .map_err(db)?;
    Ok(true)
}

/// Writes rows embedded elsewhere (a Ray job, another tool) into a collection: the same
/// tables, keys and idempotent inserts as `index build --store`.
pub struct PgWriter {
    client: postgres::Client,
    target: String,
    tables: Tables,
    manifest: Manifest,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.target)
    }
}

impl PgWriter {
    /// Creates collection `name` with `manifest` if it does not exist, or checks that the
    /// existing one was made the same way (model, precision, dimensions, columns, inputs).
    pub fn open(database: &Database, name: &str, manifest: &Manifest) -> Result<PgWriter> {
        super::check_name(name)?;
        let mut client = database.connect()?;
        let manifest = ensure_collection(&mut client, database, name, manifest)?;
        Ok(PgWriter {
            client,
            target: database.target(name),
            tables: Tables::of(name),
            manifest,
        })
    }

    /// Inserts `rows` with their image embeddings (and caption embeddings, in collections
    /// with captions) and `failed` in one transaction.
    pub fn insert(
        &mut self,
        rows: &[Row],
        images: &[f32],
        captions: Option<&[f32]>,
        failed: &[Failure],
    ) -> Result<()> {
        if captions.is_some() != self.manifest.captions {
            return Err(Error::Invalid(format!(
                "{}: the collection {} captions",
                self.target,
                if self.manifest.captions {
                    "has"
                } else {
                    "has no"
                }
            )));
        }
        insert(
            &mut self.client,
            &self.target,
            &self.tables,
            &self.manifest,
            rows,
            images,
            captions,
            failed,
        )
    }
}
