//! `index build` and `index update`: embeds the inputs a collection does not hold yet, part
//! by part, each part committed atomically (embeddings first, then its metadata file, which
//! is the commit), so a writer stopped at any moment (Ctrl-C, `kill -9`, a crash) and run
//! again ends with exactly the collection an uninterrupted run makes, re-embedding nothing it
//! had committed.
//!
//! Why that holds: inputs are listed in one sorted order; a part takes the next
//! `part_size` inputs that are not done (done: committed as a row or as a failure, with the
//! same content hash); parts are numbered in order. A resumed run therefore sees the same
//! remaining list and cuts the same parts. Leftovers of the stopped writer (temporary files,
//! embeddings of a part whose metadata never landed) are removed first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use biomedclip::image::decode::is_dicom;
use biomedclip::image::dicom::{collection_tags, COLLECTION_TAGS};
use biomedclip::{BiomedClip, IMAGE_BATCH};
use rayon::prelude::*;

use crate::atomic::{remove_durably, write_atomic};
use crate::error::{Error, Result};
use crate::inputs::{self, InputSpec, Item};
use crate::layout::{part_number, Layout, Shard};
use crate::lock::Lock;
use crate::manifest::{LimitsRecord, Manifest, ModelId, PartSummary, RenderingRecord, FORMAT};
use crate::metadata::{self, Columns, Failure, PartInfo, Row, Table};
use crate::npy::{self, Dtype, Matrix};

/// Inputs per part unless told otherwise: small enough that a stopped run loses little,
/// large enough that a million images make a hundred parts, not a hundred thousand.
pub const DEFAULT_PART_SIZE: usize = 10_000;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The collection's folder.
    pub root: PathBuf,
    /// The inputs.
    pub spec: InputSpec,
    /// This writer's share.
    pub shard: Shard,
    /// Inputs per part.
    pub part_size: usize,
    /// Storage type.
    pub dtype: Dtype,
    /// Also drop deleted and changed files (`index update`).
    pub update: bool,
}

/// What a build tells as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// The inputs are listed and hashed.
    Planned {
        /// Inputs of this shard.
        inputs: usize,
        /// Already in the collection.
        done: usize,
        /// To embed now.
        pending: usize,
    },
    /// `n` more inputs went through the model.
    Embedded(usize),
    /// An input failed.
    Failed(&'a Failure),
    /// A part was committed.
    Committed(u32),
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs of this shard.
    pub inputs: usize,
    /// Of which already in the collection.
    pub already: usize,
    /// Embedded by this run.
    pub embedded: usize,
    /// Failed in this run.
    pub failed: usize,
    /// Rows dropped because their file was deleted or changed (`update`).
    pub dropped: usize,
    /// Rows kept whose caption or CSV columns changed (`update`): their metadata is
    /// rewritten and their caption re-embedded, the image is not.
    pub relabelled: usize,
    /// Parts committed by this run.
    pub parts: Vec<u32>,
    /// The manifest afterwards.
    pub manifest: Option<Manifest>,
}

/// Builds (or resumes, or updates) a collection.
pub fn build(
    model: &BiomedClip,
    model_id: &ModelId,
    options: &BuildOptions,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Report> {
    if options.part_size == 0 {
        return Err(Error::Invalid("--part-size must be at least 1".into()));
    }
    let layout = Layout::new(&options.root);
    let listed = inputs::list(&options.spec)?;
    let columns = Columns {
        captions: listed.captions,
        extra: listed.extra_columns.clone(),
    };
    layout.create_dirs(columns.captions)?;
    // An unsharded writer owns the whole collection; shard writers share it, each alone on
    // its shard.
    let whole = layout.locks().join("collection.lock");
    let _collection_lock = if options.shard.count == 1 {
        Lock::acquire(&whole, "the collection", false)?
    } else {
        Lock::acquire(&whole, "the collection", true)?
    };
    let _shard_lock = Lock::acquire(
        &layout.locks().join(options.shard.lock_name()),
        &format!("shard {}", options.shard),
        false,
    )?;
    let wanted = wanted_manifest(
        model,
        model_id,
        &columns,
        &options.spec,
        options.part_size,
        options.dtype,
    );
    let manifest = {
        let _m = Lock::wait(&layout.locks().join("manifest.lock"))?;
        if layout.manifest().exists() {
            let existing = Manifest::read(&layout.manifest())?;
            existing.check_same_making(&wanted, &layout.manifest())?;
            existing.check_same_inputs(&wanted, &layout.manifest())?;
            existing
        } else {
            wanted.write(&layout.manifest())?;
            wanted
        }
    };
    let mut writer = Writer {
        layout: layout.clone(),
        columns: columns.clone(),
        dtype: manifest.dtype,
        dim: manifest.dim,
        shard: options.shard,
        next: 0,
    };
    let mut parts = writer.reconcile()?;
    writer.start_after(&parts);
    if options.shard.count > 1 {
        if let Some((n, (_, info))) = parts.iter().find(|(_, (_, info))| {
            info.shard
                .split_once('/')
                .is_some_and(|(_, count)| count != "1" && count != options.shard.count.to_string())
        }) {
            return Err(Error::Invalid(format!(
                "{}: part {n} was written by shard {} of another split; every worker of one \
                 collection must use the same N in --shard K/N",
                options.root.display(),
                info.shard
            )));
        }
    }

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
        let current = Current::new(&mine, &hashes);
        let numbers: Vec<u32> = parts
            .keys()
            .copied()
            .filter(|n| options.shard.owns_part(*n))
            .collect();
        for n in numbers {
            let (table, info) = &parts[&n];
            let rows = metadata::rows_of(table, &columns);
            // Rows that stay, each with its input when the caption or CSV columns changed.
            let keep: Vec<(usize, Option<&Item>)> = rows
                .iter()
                .enumerate()
                .filter(|(_, r)| current.stays(&r.image_path, Some(&r.blake3)))
                .map(|(i, r)| (i, current.relabelled(r)))
                .collect();
            let failed: Vec<Failure> = info
                .failed
                .iter()
                .filter(|f| current.stays(&f.path, f.blake3.as_deref()))
                .cloned()
                .collect();
            let relabelled = keep.iter().filter(|(_, item)| item.is_some()).count();
            if keep.len() == rows.len() && relabelled == 0 && failed.len() == info.failed.len() {
                continue;
            }
            report.dropped += rows.len() - keep.len();
            report.relabelled += relabelled;
            let (new, table, info) = writer.rewrite(model, n, rows, &keep, failed)?;
            parts.remove(&n);
            parts.insert(new, (table, info));
            report.parts.push(new);
            on(Event::Committed(new));
        }
    }

    let done: HashSet<(&str, Option<&str>)> = done_keys(&parts).collect();
    let pending: Vec<(&Item, Option<&str>)> = mine
        .iter()
        .zip(&hashes)
        .filter(|(i, h)| !done.contains(&(i.path.as_str(), h.as_deref())))
        .map(|(i, h)| (*i, h.as_deref()))
        .collect();
    report.already = mine.len() - pending.len();
    on(Event::Planned {
        inputs: mine.len(),
        done: report.already,
        pending: pending.len(),
    });
    drop(done);

    let mut manifest = manifest;
    let mut known: Known = parts
        .iter()
        .map(|(n, (_, info))| (*n, info.clone()))
        .collect();
    drop(parts);
    refresh_manifest(&layout, &mut manifest, &listed.unreadable, &mut known)?;
    for chunk in pending.chunks(options.part_size) {
        let embedded = embed_part(model, chunk, columns.captions, on)?;
        report.embedded += embedded.rows.len();
        report.failed += embedded.failed.len();
        let n = writer.commit(embedded, Vec::new())?;
        report.parts.push(n);
        on(Event::Committed(n));
        refresh_manifest(&layout, &mut manifest, &listed.unreadable, &mut known)?;
    }
    refresh_manifest(&layout, &mut manifest, &listed.unreadable, &mut known)?;
    report.manifest = Some(manifest);
    Ok(report)
}

/// The manifest a build from `spec` with `model` makes (its identity fields; the contents
/// are filled in as parts are committed).
pub(crate) fn wanted_manifest(
    model: &BiomedClip,
    model_id: &ModelId,
    columns: &Columns,
    spec: &InputSpec,
    part_size: usize,
    dtype: Dtype,
) -> Manifest {
    Manifest {
        format: FORMAT,
        model: model_id.clone(),
        precision: model.precision().to_string(),
        dim: model.embed_dim(),
        dtype,
        captions: columns.captions,
        extra_columns: columns.extra.clone(),
        inputs: spec.inputs.iter().map(|p| inputs::absolute(p)).collect(),
        glob: spec.glob.clone(),
        captions_csv: spec.captions.as_deref().map(inputs::absolute),
        part_size,
        rows: 0,
        parts: Vec::new(),
        failed: Vec::new(),
        rendering: Some(RenderingRecord::of(model.preprocessor().rendering())),
        limits: Some(LimitsRecord::of(model.preprocessor().limits())),
    }
}

/// The listed inputs and their content now, for `index update` to decide which rows stay
/// and which are relabelled.
pub(crate) struct Current<'a>(HashMap<&'a str, (Option<&'a str>, &'a Item)>);

impl<'a> Current<'a> {
    /// `items` with their hashes (`None`: could not be read).
    pub(crate) fn new(items: &[&'a Item], hashes: &'a [Option<String>]) -> Self {
        Current(
            items
                .iter()
                .zip(hashes)
                .map(|(i, h)| (i.path.as_str(), (h.as_deref(), *i)))
                .collect(),
        )
    }

    /// Whether a row (or failure) of `path` with content `hash` stays. It goes when its file
    /// is gone, or listed with other content. A file that exists but is not listed now (an
    /// unreadable folder, a mount that failed) or cannot be hashed now keeps its row: a
    /// listing problem is not a deletion.
    pub(crate) fn stays(&self, path: &str, hash: Option<&str>) -> bool {
        match self.0.get(path) {
            Some((Some(now), _)) => Some(*now) == hash,
            Some((None, _)) => true,
            None => Path::new(path).exists(),
        }
    }

    /// The input of a staying row whose caption or CSV columns are not what the inputs
    /// give now (the captions CSV was edited); `None` when they are the same or the file is
    /// not listed now.
    pub(crate) fn relabelled(&self, row: &Row) -> Option<&'a Item> {
        let (_, item) = self.0.get(row.image_path.as_str())?;
        (item.caption != row.caption || item.extra != row.extra).then_some(*item)
    }
}

/// BLAKE3 of a file, hex; `None` if it cannot be read (it then fails, with the reason, when
/// embedded).
pub(crate) fn hash_file(path: &str) -> Option<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path).ok()?;
    Some(hasher.finalize().to_hex().to_string())
}

/// What the manifest says of each committed part, by number. A committed part never
/// changes (an update writes a new number), so each part's footer is read once per run, not
/// at every commit: with thousands of parts that is the difference between a linear and a
/// quadratic run.
pub(crate) type Known = HashMap<u32, PartInfo>;

/// Rewrites the manifest's contents from the committed parts (under the manifest lock, so
/// shard writers do not interleave).
pub(crate) fn refresh_manifest(
    layout: &Layout,
    manifest: &mut Manifest,
    unreadable: &[Failure],
    known: &mut Known,
) -> Result<()> {
    let _m = Lock::wait(&layout.locks().join("manifest.lock"))?;
    // Under the manifest lock no one else is writing it: a temporary manifest is a leftover
    // of a writer that was stopped.
    let entries = std::fs::read_dir(layout.root()).map_err(|e| Error::io(layout.root(), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{}.tmp-", crate::layout::MANIFEST)) {
            remove_durably(&entry.path())?;
        }
    }
    let committed = layout.committed_parts()?;
    let now: HashSet<u32> = committed.iter().copied().collect();
    known.retain(|n, _| now.contains(n));
    let mut parts = Vec::new();
    let mut failed = unreadable.to_vec();
    for n in committed {
        let info = match known.entry(n) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(metadata::read_info(&layout.metadata(n))?)
            }
        };
        parts.push(PartSummary {
            part: n,
            rows: info.rows,
            shard: info.shard.clone(),
        });
        failed.extend(info.failed.iter().cloned());
    }
    failed.sort_by(|a, b| a.path.cmp(&b.path));
    manifest.rows = parts.iter().map(|p| p.rows).sum();
    manifest.parts = parts;
    manifest.failed = failed;
    manifest.write(&layout.manifest())
}

/// One part's worth of results, before it is written.
pub(crate) struct Embedded {
    pub(crate) rows: Vec<Row>,
    pub(crate) images: Vec<f32>,
    pub(crate) captions: Option<Vec<f32>>,
    pub(crate) failed: Vec<Failure>,
}

/// Reads, hashes, decodes and preprocesses one input (on the rayon pool). `listed_hash` is
/// the hash the listing computed: a file refused before it is read (too large, not a regular
/// file) is recorded with it, so the next run finds it done.
fn prepare(
    model: &BiomedClip,
    item: &Item,
    listed_hash: Option<&str>,
) -> std::result::Result<(Row, Vec<f32>), Failure> {
    let path = Path::new(&item.path);
    let fail = |blake3: Option<String>, e: biomedclip::Error| Failure {
        path: item.path.clone(),
        blake3,
        error: e.to_string(),
    };
    let bytes = model
        .preprocessor()
        .limits()
        .read_file(path)
        .map_err(|e| fail(listed_hash.map(str::to_string), e))?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let dicom = if is_dicom(&bytes) {
        collection_tags(&bytes, path).map_err(|e| fail(Some(hash.clone()), e))?
    } else {
        vec![None; COLLECTION_TAGS.len()]
    };
    let pixels = model
        .preprocessor()
        .process_bytes(&bytes, path, None)
        .map_err(|e| fail(Some(hash.clone()), e))?;
    Ok((
        Row {
            image_path: item.path.clone(),
            caption: item.caption.clone(),
            blake3: hash,
            size: bytes.len() as i64,
            dicom,
            extra: item.extra.clone(),
        },
        pixels,
    ))
}

/// Embeds one part's inputs. Decoding of the next batch overlaps the model's work on this
/// one: a reader thread prepares batches on the rayon pool while this thread encodes.
pub(crate) fn embed_part(
    model: &BiomedClip,
    items: &[(&Item, Option<&str>)],
    captions: bool,
    on: &mut dyn FnMut(Event<'_>),
) -> Result<Embedded> {
    type Prepared = Vec<std::result::Result<(Row, Vec<f32>), Failure>>;
    let mut out = Embedded {
        rows: Vec::with_capacity(items.len()),
        images: Vec::with_capacity(items.len() * model.embed_dim()),
        captions: None,
        failed: Vec::new(),
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Prepared>(1);
        scope.spawn(move || {
            for batch in items.chunks(IMAGE_BATCH) {
                let prepared: Prepared = batch
                    .par_iter()
                    .map(|(item, hash)| prepare(model, item, *hash))
                    .collect();
                if tx.send(prepared).is_err() {
                    break;
                }
            }
        });
        for prepared in rx {
            let count = prepared.len();
            let mut ok_rows = Vec::new();
            let mut pixels = Vec::new();
            for p in prepared {
                match p {
                    Ok((row, px)) => {
                        ok_rows.push(row);
                        pixels.push(px);
                    }
                    Err(f) => {
                        on(Event::Failed(&f));
                        out.failed.push(f);
                    }
                }
            }
            match model.encode_pixels(&pixels) {
                Ok(embeddings) => {
                    for (row, e) in ok_rows.into_iter().zip(embeddings) {
                        out.rows.push(row);
                        out.images.extend_from_slice(&e);
                    }
                }
                Err(e) => {
                    for row in ok_rows {
                        let f = Failure {
                            path: row.image_path,
                            blake3: Some(row.blake3),
                            error: format!("the model failed on its batch: {e}"),
                        };
                        on(Event::Failed(&f));
                        out.failed.push(f);
                    }
                }
            }
            on(Event::Embedded(count));
        }
    });
    if captions {
        let texts: Vec<Option<&str>> = out.rows.iter().map(|r| r.caption.as_deref()).collect();
        out.captions = Some(caption_embeddings(model, &texts)?.concat());
    }
    Ok(out)
}

/// One embedding per caption, in order. A row without a caption gets a zero vector: it
/// scores 0 against every query and keeps the rows of `text_emb` aligned with `img_emb`'s.
/// The model runs only when there is a caption to embed.
pub(crate) fn caption_embeddings(
    model: &BiomedClip,
    captions: &[Option<&str>],
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = captions.iter().flatten().copied().collect();
    let mut embedded = if texts.is_empty() {
        Vec::new().into_iter()
    } else {
        model.encode_texts(&texts)?.into_iter()
    };
    Ok(captions
        .iter()
        .map(|c| match c {
            None => vec![0.0; model.embed_dim()],
            Some(_) => embedded.next().expect("one embedding per caption"),
        })
        .collect())
}

/// The (image path, content hash) of every row and failure in `parts`: the inputs they
/// hold need no embedding again.
pub(crate) fn done_keys(
    parts: &BTreeMap<u32, (Table, PartInfo)>,
) -> impl Iterator<Item = (&str, Option<&str>)> {
    parts.values().flat_map(|(table, info)| {
        (0..table.rows())
            .map(|i| {
                (
                    table.text("image_path", i).unwrap_or(""),
                    table.text("blake3", i),
                )
            })
            .chain(
                info.failed
                    .iter()
                    .map(|f| (f.path.as_str(), f.blake3.as_deref())),
            )
    })
}

/// Writes parts of one shard.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) layout: Layout,
    pub(crate) columns: Columns,
    pub(crate) dtype: Dtype,
    pub(crate) dim: usize,
    pub(crate) shard: Shard,
    /// The shard's next part index (`j` of `shard.part(j)`).
    pub(crate) next: u32,
}

impl Writer {
    /// Removes what stopped writers left (superseded parts, uncommitted embeddings, temp
    /// files of this shard) and returns the committed parts.
    pub(crate) fn reconcile(&self) -> Result<BTreeMap<u32, (Table, PartInfo)>> {
        let mut parts = BTreeMap::new();
        for n in self.layout.committed_parts()? {
            parts.insert(n, metadata::read_part(&self.layout.metadata(n))?);
        }
        let replaced: Vec<u32> = parts
            .values()
            .flat_map(|(_, info)| info.replaces.clone())
            .filter(|n| parts.contains_key(n))
            .collect();
        for n in replaced {
            self.remove_part(n)?;
            parts.remove(&n);
        }
        let mut leftovers = self.layout.temp_files()?;
        leftovers.extend(
            self.layout
                .embedding_files()?
                .into_iter()
                .filter(|p| part_number(p).is_some_and(|n| !parts.contains_key(&n))),
        );
        for path in leftovers {
            if part_number(&path).is_some_and(|n| self.shard.owns_part(n)) {
                remove_durably(&path)?;
            }
        }
        for (n, (table, _)) in &parts {
            self.check_part(*n, table.rows())?;
        }
        Ok(parts)
    }

    /// Sets the shard's next number above every number in use or ever replaced (an update
    /// writes its rewritten parts under any shard's numbers): a number is never reused.
    pub(crate) fn start_after(&mut self, parts: &BTreeMap<u32, (Table, PartInfo)>) {
        let highest = parts
            .iter()
            .flat_map(|(n, (_, info))| std::iter::once(*n).chain(info.replaces.iter().copied()))
            .max();
        self.next = highest.map_or(0, |h| {
            (h + 1)
                .saturating_sub(self.shard.index)
                .div_ceil(self.shard.count)
        });
    }

    /// Checks that part `n`'s embedding files are whole and as long as its metadata.
    fn check_part(&self, n: u32, rows: usize) -> Result<()> {
        let mut files = vec![self.layout.img_emb(n)];
        if self.columns.captions {
            files.push(self.layout.text_emb(n));
        }
        for path in files {
            let m = Matrix::open(&path)?;
            if m.rows() != rows || m.dim() != self.dim {
                return Err(Error::corrupt(
                    &path,
                    format!(
                        "{} x {} embeddings, but its metadata has {rows} rows of {} \
                         dimensions; remove part {n} (its img_emb, text_emb and metadata \
                         files) and run again to re-embed it",
                        m.rows(),
                        m.dim(),
                        self.dim
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Removes part `n`: the metadata first (so the part stops existing), then the rest.
    fn remove_part(&self, n: u32) -> Result<()> {
        remove_durably(&self.layout.metadata(n))?;
        remove_durably(&self.layout.img_emb(n))?;
        remove_durably(&self.layout.text_emb(n))
    }

    /// Writes a new part; returns its number.
    pub(crate) fn commit(&mut self, part: Embedded, replaces: Vec<u32>) -> Result<u32> {
        let n = self.shard.part(self.next);
        self.next += 1;
        let write_npy = |path: PathBuf, values: &[f32]| {
            write_atomic(&path, |out| {
                npy::write(out, self.dtype, self.dim, values).map_err(|e| Error::io(&path, e))
            })
        };
        write_npy(self.layout.img_emb(n), &part.images)?;
        if let Some(captions) = &part.captions {
            write_npy(self.layout.text_emb(n), captions)?;
        }
        let info = PartInfo {
            part: n,
            shard: self.shard.to_string(),
            rows: part.rows.len(),
            failed: part.failed,
            replaces,
        };
        metadata::write_part(&self.layout.metadata(n), &self.columns, &part.rows, &info)?;
        Ok(n)
    }

    /// Rewrites part `n` with only rows `keep` and failures `failed`, as a new part that
    /// replaces it; then removes the old one. Images are not re-embedded; a kept row given
    /// with its input takes that input's caption and CSV columns, its caption re-embedded.
    fn rewrite(
        &mut self,
        model: &BiomedClip,
        n: u32,
        rows: Vec<Row>,
        keep: &[(usize, Option<&Item>)],
        failed: Vec<Failure>,
    ) -> Result<(u32, Table, PartInfo)> {
        let gather = |path: PathBuf| -> Result<Vec<f32>> {
            let m = Matrix::open(&path)?;
            let mut out = Vec::with_capacity(keep.len() * self.dim);
            for &(i, _) in keep {
                out.extend_from_slice(&m.rows_f32(i..i + 1));
            }
            Ok(out)
        };
        let kept: Vec<Row> = keep
            .iter()
            .map(|&(i, item)| {
                let mut row = rows[i].clone();
                if let Some(item) = item {
                    row.caption = item.caption.clone();
                    row.extra = item.extra.clone();
                }
                row
            })
            .collect();
        let captions = if self.columns.captions {
            let mut matrix = gather(self.layout.text_emb(n))?;
            let changed: Vec<usize> = (0..kept.len())
                .filter(|&j| keep[j].1.is_some() && kept[j].caption != rows[keep[j].0].caption)
                .collect();
            let texts: Vec<Option<&str>> = changed
                .iter()
                .map(|&j| kept[j].caption.as_deref())
                .collect();
            for (j, e) in changed.iter().zip(caption_embeddings(model, &texts)?) {
                matrix[j * self.dim..(j + 1) * self.dim].copy_from_slice(&e);
            }
            Some(matrix)
        } else {
            None
        };
        let part = Embedded {
            rows: kept,
            images: gather(self.layout.img_emb(n))?,
            captions,
            failed,
        };
        let new = self.commit(part, vec![n])?;
        self.remove_part(n)?;
        let (table, info) = metadata::read_part(&self.layout.metadata(new))?;
        Ok((new, table, info))
    }
}
