//! Evaluation data: labelled images (a folder of class folders, or a `path,label` CSV),
//! class names (from the labels or a JSON mapping) and image-caption pairs (an
//! `image,caption` CSV).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::input::collect_images;

/// Images with their raw labels (class folder names or the CSV's `label` column).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledImages {
    /// Image files.
    pub images: Vec<PathBuf>,
    /// The label of each image, as written in the data.
    pub labels: Vec<String>,
    /// Files in class folders that are not images (reported, not used).
    pub skipped: Vec<PathBuf>,
    /// Entries of class folders that could not be read, with the reason (reported as
    /// failures; the rest of the data is used).
    pub unreadable: Vec<(PathBuf, String)>,
}

impl LabelledImages {
    /// Reads a folder of class folders (images found recursively, filtered by `glob`) or a
    /// CSV file with `path` (or `image`) and `label` columns, paths relative to the CSV.
    pub fn load(source: &Path, glob: Option<&str>) -> Result<Self> {
        if source.is_dir() {
            Self::from_folder(source, glob)
        } else {
            Self::from_csv(source)
        }
    }

    fn from_folder(root: &Path, glob: Option<&str>) -> Result<Self> {
        let mut classes: Vec<(String, PathBuf)> = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .map(|entry| {
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                )
            })
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{}: no class folders (expected one sub-folder of images per class)",
                root.display()
            )));
        }
        let mut out = LabelledImages::default();
        for (name, dir) in classes {
            let found = collect_images(&[dir], glob)?;
            out.labels
                .extend(std::iter::repeat_n(name.clone(), found.images.len()));
            out.images.extend(found.images);
            out.skipped.extend(found.skipped);
            out.unreadable.extend(found.unreadable);
        }
        Ok(out)
    }

    fn from_csv(path: &Path) -> Result<Self> {
        let table = Table::read(path)?;
        let image_col = table.column(path, &["path", "image", "filepath", "file"])?;
        let label_col = table.column(path, &["label", "class", "target"])?;
        let mut out = LabelledImages::default();
        for (line, row) in &table.rows {
            let image = row.get(image_col).map(String::as_str).unwrap_or("");
            let label = row.get(label_col).map(String::as_str).unwrap_or("");
            if image.is_empty() || label.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{} line {line}: empty path or label",
                    path.display()
                )));
            }
            out.images.push(table.resolve(image));
            out.labels.push(label.to_string());
        }
        Ok(out)
    }
}

/// Class names and the index of each raw label.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    /// Raw labels in index order.
    pub labels: Vec<String>,
    /// The name put into the prompt templates for each class.
    pub names: Vec<String>,
}

impl Classes {
    /// Builds the class list from every raw label seen (sorted; integer labels sorted as
    /// numbers). `mapping` is a JSON file: an object from raw label to class name, or an
    /// array of class names indexed by integer labels (then it also fixes the class order).
    pub fn new<'a>(
        seen: impl IntoIterator<Item = &'a String>,
        mapping: Option<&Path>,
    ) -> Result<Self> {
        let mut labels: Vec<String> = seen.into_iter().cloned().collect();
        labels.sort();
        labels.dedup();
        if labels.iter().all(|l| l.parse::<u64>().is_ok()) {
            labels.sort_by_key(|l| l.parse::<u64>().unwrap_or(0));
        }
        let Some(mapping) = mapping else {
            return Ok(Classes {
                names: labels.clone(),
                labels,
            });
        };
        let text = std::fs::read_to_string(mapping).map_err(|e| Error::io(mapping, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!("{}: not valid JSON: {e}", mapping.display()))
        })?;
        let bad = |what: String| Error::InvalidInput(format!("{}: {what}", mapping.display()));
        match json {
            serde_json::Value::Object(map) => {
                let names = labels
                    .iter()
                    .map(|l| match map.get(l) {
                        Some(serde_json::Value::String(s)) => Ok(s.clone()),
                        Some(_) => Err(bad(format!("the name of {l:?} is not a string"))),
                        None => Err(bad(format!("no class name for label {l:?}"))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Classes { labels, names })
            }
            serde_json::Value::Array(items) => {
                let names = items
                    .iter()
                    .map(|v| v.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("class names must be strings".into()))?;
                for l in &labels {
                    match l.parse::<usize>() {
                        Ok(i) if i < names.len() => {}
                        _ => {
                            return Err(bad(format!(
                                "label {l:?} is not an index into its {} class names",
                                names.len()
                            )))
                        }
                    }
                }
                Ok(Classes {
                    labels: (0..names.len()).map(|i| i.to_string()).collect(),
                    names,
                })
            }
            _ => Err(bad(
                "expected an object {label: name} or an array of names".into()
            )),
        }
    }

    /// The class index of each raw label (every label must be known).
    pub fn indices(&self, labels: &[String]) -> Result<Vec<usize>> {
        let index: BTreeMap<&str, usize> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        labels
            .iter()
            .map(|l| {
                index.get(l.as_str()).copied().ok_or_else(|| {
                    Error::InvalidInput(format!("label {l:?} is not among the classes"))
                })
            })
            .collect()
    }
}

/// Image-caption pairs: every image once, each caption pointing at its image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptionPairs {
    /// Distinct images in order of first appearance.
    pub images: Vec<PathBuf>,
    /// Captions in file order.
    pub captions: Vec<String>,
    /// The image (index into `images`) of each caption.
    pub caption_image: Vec<usize>,
}

impl CaptionPairs {
    /// Reads a CSV with `image` (or `path`) and `caption` (or `text`) columns; an image may
    /// appear on several rows, one per caption.
    pub fn load(path: &Path) -> Result<Self> {
        let table = Table::read(path)?;
        let image_col = table.column(path, &["image", "path", "filepath", "file"])?;
        let caption_col = table.column(path, &["caption", "text", "title"])?;
        let mut out = CaptionPairs::default();
        let mut seen: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for (line, row) in &table.rows {
            let image = row.get(image_col).map(String::as_str).unwrap_or("");
            let caption = row.get(caption_col).map(String::as_str).unwrap_or("");
            if image.is_empty() || caption.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "{} line {line}: empty image or caption",
                    path.display()
                )));
            }
            let image = table.resolve(image);
            let next = seen.len();
            let idx = *seen.entry(image.clone()).or_insert(next);
            if idx == out.images.len() {
                out.images.push(image);
            }
            out.captions.push(caption.to_string());
            out.caption_image.push(idx);
        }
        Ok(out)
    }
}

/// A CSV file with a header row.
struct Table {
    base: PathBuf,
    header: Vec<String>,
    /// `(line number, fields)`.
    rows: Vec<(u64, Vec<String>)>,
}

impl Table {
    fn read(path: &Path) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| csv_error(path, e))?;
        let header = reader
            .headers()
            .map_err(|e| csv_error(path, e))?
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, e))?;
            let line = record.position().map_or(0, |p| p.line());
            rows.push((line, record.iter().map(String::from).collect()));
        }
        if rows.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{}: no rows after the header",
                path.display()
            )));
        }
        Ok(Table {
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            header,
            rows,
        })
    }

    fn column(&self, path: &Path, names: &[&str]) -> Result<usize> {
        self.header
            .iter()
            .position(|h| names.contains(&h.as_str()))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{}: the header needs a column named {} (found: {})",
                    path.display(),
                    names.join(" or "),
                    self.header.join(", ")
                ))
            })
    }

    fn resolve(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    if e.is_io_error() {
        if let csv::ErrorKind::Io(error) = e.into_kind() {
            return Error::io(path, error);
        }
        unreachable!("is_io_error means an Io kind");
    }
    Error::InvalidInput(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_labels_map_to_classes_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "path,label\na.png,cat\nsub/b.png,dog\nc.png,cat\n").unwrap();
        let d = LabelledImages::load(&csv, None).unwrap();
        assert_eq!(d.images[1], dir.path().join("sub/b.png"));
        let classes = Classes::new(&d.labels, None).unwrap();
        assert_eq!(classes.names, vec!["cat", "dog"]);
        assert_eq!(classes.indices(&d.labels).unwrap(), vec![0, 1, 0]);

        let map = dir.path().join("m.json");
        std::fs::write(&map, r#"{"cat": "a cat", "dog": "a dog"}"#).unwrap();
        let named = Classes::new(&d.labels, Some(&map)).unwrap();
        assert_eq!(named.names, vec!["a cat", "a dog"]);
        std::fs::write(&map, r#"{"cat": "a cat"}"#).unwrap();
        let err = Classes::new(&d.labels, Some(&map)).unwrap_err().to_string();
        assert!(err.contains("\"dog\""), "{err}");

        std::fs::write(&csv, "path,label\na.png,cat\nb.png\n").unwrap();
        let err = LabelledImages::load(&csv, None).unwrap_err().to_string();
        assert!(err.contains("d.csv") && err.contains("line: 3"), "{err}");
        std::fs::write(&csv, "path,y\na.png,cat\n").unwrap();
        let err = LabelledImages::load(&csv, None).unwrap_err().to_string();
        assert!(err.contains("label"), "{err}");
    }

    #[test]
    fn integer_labels_index_an_array_of_names() {
        let labels: Vec<String> = ["1", "0", "10", "2"].map(String::from).to_vec();
        assert_eq!(
            Classes::new(&labels, None).unwrap().labels,
            vec!["0", "1", "2", "10"]
        );
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("m.json");
        std::fs::write(&map, r#"["a", "b", "c"]"#).unwrap();
        let err = Classes::new(&labels, Some(&map)).unwrap_err().to_string();
        assert!(err.contains("\"10\""), "{err}");
    }

    #[test]
    fn captions_group_by_image() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("r.csv");
        std::fs::write(
            &csv,
            "image,caption\na.png,one\nb.png,two\na.png,\"three, four\"\n",
        )
        .unwrap();
        let p = CaptionPairs::load(&csv).unwrap();
        assert_eq!(p.images.len(), 2);
        assert_eq!(p.caption_image, vec![0, 1, 0]);
        assert_eq!(p.captions[2], "three, four");
    }
}
