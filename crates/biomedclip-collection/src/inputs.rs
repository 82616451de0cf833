//! What a collection is made of: image files and folders given on the command line, or CSV
//! files with a `path` column (other columns become metadata, a `caption` column the
//! caption), plus an optional captions CSV. Every path is made absolute, listed once, in
//! sorted order, so every run and every shard sees the same list.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use biomedclip::image::input::collect_images;

use crate::error::{Error, Result};
use crate::metadata::Failure;

/// One input image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The file, absolute.
    pub path: String,
    /// Its caption, if the inputs give one.
    pub caption: Option<String>,
    /// Values of the input CSV's other columns.
    pub extra: Vec<Option<String>>,
}

/// How the inputs were given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputSpec {
    /// Files, folders and CSV files.
    pub inputs: Vec<PathBuf>,
    /// Only files in folders whose relative path matches.
    pub glob: Option<String>,
    /// A CSV of `path,caption`.
    pub captions: Option<PathBuf>,
}

/// The inputs, listed.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// Images, sorted by path, each once.
    pub items: Vec<Item>,
    /// Whether captions are given (by `--captions` or a `caption` column).
    pub captions: bool,
    /// The input CSV's other columns.
    pub extra_columns: Vec<String>,
    /// Folder entries that could not be read.
    pub unreadable: Vec<Failure>,
    /// Non-image files skipped in folders.
    pub skipped: Vec<PathBuf>,
    /// Paths listed more than once (kept once).
    pub duplicates: usize,
}

/// Absolute, and with symbolic links and `..` resolved when the file exists.
pub fn absolute(path: &Path) -> String {
    let abs = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    abs.to_string_lossy().into_owned()
}

fn is_csv(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// A CSV's rows as (path, caption, other columns), paths relative to the CSV's folder.
struct CsvRows {
    extra: Vec<String>,
    has_caption: bool,
    rows: Vec<(String, Option<String>, Vec<Option<String>>)>,
}

fn read_csv(csv_path: &Path, allow_extra: bool) -> Result<CsvRows> {
    let mut reader = csv::Reader::from_path(csv_path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", csv_path.display())))?;
    let headers = reader
        .headers()
        .map_err(|e| Error::Invalid(format!("{}: {e}", csv_path.display())))?
        .clone();
    let find = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim()));
    let path_col = find(&["path", "image_path", "filepath"]).ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no `path` column (the header is: {})",
            csv_path.display(),
            headers.iter().collect::<Vec<_>>().join(",")
        ))
    })?;
    let caption_col = find(&["caption", "title", "text"]);
    let extra_cols: Vec<usize> = if allow_extra {
        (0..headers.len())
            .filter(|&i| i != path_col && Some(i) != caption_col)
            .collect()
    } else {
        Vec::new()
    };
    let reserved = crate::metadata::Columns {
        captions: true,
        extra: Vec::new(),
    }
    .names();
    let extra: Vec<String> = extra_cols
        .iter()
        .map(|&i| headers[i].trim().to_string())
        .collect();
    if let Some(clash) = extra.iter().find(|n| reserved.contains(n)) {
        return Err(Error::Invalid(format!(
            "{}: column {clash:?} would clash with the collection's own column of that name; \
             rename it",
            csv_path.display()
        )));
    }
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            Error::Invalid(format!("{}: line {}: {e}", csv_path.display(), line + 2))
        })?;
        let path = record.get(path_col).unwrap_or("").trim();
        if path.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: line {}: the path is empty",
                csv_path.display(),
                line + 2
            )));
        }
        let caption = caption_col
            .and_then(|i| record.get(i))
            .map(str::to_string)
            .filter(|c| !c.is_empty());
        let values = extra_cols
            .iter()
            .map(|&i| record.get(i).map(str::to_string).filter(|v| !v.is_empty()))
            .collect();
        rows.push((absolute(&base.join(path)), caption, values));
    }
    Ok(CsvRows {
        extra,
        has_caption: caption_col.is_some(),
        rows,
    })
}

/// Lists the inputs.
pub fn list(spec: &InputSpec) -> Result<Listed> {
    let mut out = Listed::default();
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let mut add = |item: Item, out: &mut Listed| {
        if items.contains_key(&item.path) {
            out.duplicates += 1;
        } else {
            items.insert(item.path.clone(), item);
        }
    };
    let mut extra_of_csv: Option<(PathBuf, Vec<String>)> = None;
    for input in &spec.inputs {
        if is_csv(input) {
            let csv = read_csv(input, true)?;
            match &extra_of_csv {
                Some((first, columns)) if *columns != csv.extra => {
                    return Err(Error::Invalid(format!(
                        "{} has columns ({}) but {} has ({}); input CSVs of one collection \
                         must have the same columns",
                        input.display(),
                        csv.extra.join(", "),
                        first.display(),
                        columns.join(", ")
                    )))
                }
                Some(_) => {}
                None => extra_of_csv = Some((input.clone(), csv.extra.clone())),
            }
            out.captions |= csv.has_caption;
            for (path, caption, extra) in csv.rows {
                add(
                    Item {
                        path,
                        caption,
                        extra,
                    },
                    &mut out,
                );
            }
        } else {
            if !input.exists() {
                return Err(Error::Invalid(format!(
                    "{}: no such file or folder",
                    input.display()
                )));
            }
            let found = collect_images(std::slice::from_ref(input), spec.glob.as_deref())?;
            out.skipped.extend(found.skipped);
            out.unreadable
                .extend(found.unreadable.into_iter().map(|(p, reason)| Failure {
                    path: p.to_string_lossy().into_owned(),
                    blake3: None,
                    error: reason,
                }));
            for path in found.images {
                add(
                    Item {
                        path: absolute(&path),
                        caption: None,
                        extra: Vec::new(),
                    },
                    &mut out,
                );
            }
        }
    }
    out.extra_columns = extra_of_csv.map(|(_, c)| c).unwrap_or_default();
    let width = out.extra_columns.len();
    for item in items.values_mut() {
        item.extra.resize(width, None);
    }
    if let Some(captions) = &spec.captions {
        let csv = read_csv(captions, false)?;
        if !csv.has_caption {
            return Err(Error::Invalid(format!(
                "{}: no `caption` column",
                captions.display()
            )));
        }
        out.captions = true;
        let by_path: HashMap<String, Option<String>> =
            csv.rows.into_iter().map(|(p, c, _)| (p, c)).collect();
        for item in items.values_mut() {
            if let Some(c) = by_path.get(&item.path) {
                item.caption.clone_from(c);
            }
        }
    }
    out.items = items.into_values().collect();
    Ok(out)
}
