//! The metadata of each part as Parquet (`metadata/metadata_{n}.parquet`), one row per
//! embedding row, with clip-retrieval's column names (`image_path`, `caption`) then the
//! content hash, the size, the DICOM tags and any columns of an input CSV. The part's own
//! record (its number, shard, the files that failed, the parts it replaces) rides in the
//! Parquet footer's key-value metadata, so a part describes itself completely.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use biomedclip::image::dicom::COLLECTION_TAGS;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};

/// The footer key holding a part's [`PartInfo`].
const PART_KEY: &str = "biomedclip.part";

/// The columns every collection has (`caption` only with captions); the rest are DICOM tags
/// and CSV columns.
pub const CORE_COLUMNS: [&str; 4] = ["image_path", "caption", "blake3", "size"];

/// An input that could not be embedded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The file.
    pub path: String,
    /// Its content hash, when it could be read.
    pub blake3: Option<String>,
    /// Why it failed.
    pub error: String,
}

/// A part's own record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// Its number.
    pub part: u32,
    /// The shard that wrote it (`K/N`).
    pub shard: String,
    /// Embedding rows.
    pub rows: usize,
    /// Inputs of this part that failed (they have no row).
    pub failed: Vec<Failure>,
    /// Parts this one supersedes (an update rewrote them without deleted or changed files);
    /// any still present are removed.
    pub replaces: Vec<u32>,
}

/// One row of metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The image file (absolute).
    pub image_path: String,
    /// Its caption, in collections with captions.
    pub caption: Option<String>,
    /// BLAKE3 of the file's bytes, hex.
    pub blake3: String,
    /// Bytes.
    pub size: i64,
    /// [`COLLECTION_TAGS`], for DICOM files.
    pub dicom: Vec<Option<String>>,
    /// The input CSV's other columns.
    pub extra: Vec<Option<String>>,
}

/// Which columns a collection's metadata has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Columns {
    /// Whether there is a `caption` column (and `text_emb`).
    pub captions: bool,
    /// Columns from an input CSV.
    pub extra: Vec<String>,
}

impl Columns {
    /// The Arrow schema.
    pub fn schema(&self) -> Schema {
        let mut fields = vec![Field::new("image_path", DataType::Utf8, false)];
        if self.captions {
            fields.push(Field::new("caption", DataType::Utf8, true));
        }
        fields.push(Field::new("blake3", DataType::Utf8, false));
        fields.push(Field::new("size", DataType::Int64, false));
        for (_, name) in COLLECTION_TAGS {
            fields.push(Field::new(name, DataType::Utf8, true));
        }
        for name in &self.extra {
            fields.push(Field::new(name, DataType::Utf8, true));
        }
        Schema::new(fields)
    }

    /// Every column name, in order, with whether it holds numbers (for [`Filter`](crate::Filter)).
    pub fn typed(&self) -> Vec<(String, bool)> {
        self.schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type() == &DataType::Int64))
            .collect()
    }

    /// Every column name, in order.
    pub fn names(&self) -> Vec<String> {
        self.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}

/// Writes part metadata atomically.
pub fn write_part(path: &Path, columns: &Columns, rows: &[Row], info: &PartInfo) -> Result<()> {
    let schema = Arc::new(columns.schema());
    let text = |f: &dyn Fn(&Row) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let mut arrays: Vec<ArrayRef> = vec![text(&|r| Some(r.image_path.as_str()))];
    if columns.captions {
        arrays.push(text(&|r| r.caption.as_deref()));
    }
    arrays.push(text(&|r| Some(r.blake3.as_str())));
    arrays.push(Arc::new(
        rows.iter().map(|r| r.size).collect::<Int64Array>(),
    ));
    for i in 0..COLLECTION_TAGS.len() {
        arrays.push(text(&|r| r.dicom.get(i).and_then(|v| v.as_deref())));
    }
    for i in 0..columns.extra.len() {
        arrays.push(text(&|r| r.extra.get(i).and_then(|v| v.as_deref())));
    }
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)
        .map_err(|e| Error::corrupt(path, format!("cannot assemble metadata: {e}")))?;
    let info_json = serde_json::to_string(info).expect("serialisable");
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(PART_KEY.to_string(), info_json)]))
        .build();
    write_atomic(path, |out| {
        let fail = |e: parquet::errors::ParquetError| {
            Error::corrupt(path, format!("cannot write Parquet: {e}"))
        };
        let mut writer = ArrowWriter::try_new(out, schema, Some(props)).map_err(fail)?;
        writer.write(&batch).map_err(fail)?;
        writer.close().map_err(fail)?;
        Ok(())
    })
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::corrupt(path, format!("not a readable Parquet file: {e}")))
}

fn info_of(
    path: &Path,
    builder: &ParquetRecordBatchReaderBuilder<std::fs::File>,
) -> Result<PartInfo> {
    let value = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == PART_KEY))
        .and_then(|kv| kv.value.clone())
        .ok_or_else(|| {
            Error::corrupt(
                path,
                format!(
                    "no {PART_KEY} record in the Parquet footer (not written by biomedclip index)"
                ),
            )
        })?;
    serde_json::from_str(&value)
        .map_err(|e| Error::corrupt(path, format!("bad {PART_KEY} record: {e}")))
}

/// A part's record, from its footer.
pub fn read_info(path: &Path) -> Result<PartInfo> {
    info_of(path, &open(path)?)
}

/// One column of metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Text.
    Text(Vec<Option<String>>),
    /// Integers.
    Int(Vec<Option<i64>>),
}

impl Column {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Int(v) => v.len(),
        }
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` as JSON.
    pub fn json(&self, i: usize) -> serde_json::Value {
        match self {
            Column::Text(v) => v[i].clone().map_or(serde_json::Value::Null, Into::into),
            Column::Int(v) => v[i].map_or(serde_json::Value::Null, Into::into),
        }
    }

    fn extend(&mut self, other: Column) {
        match (self, other) {
            (Column::Text(a), Column::Text(b)) => a.extend(b),
            (Column::Int(a), Column::Int(b)) => a.extend(b),
            _ => unreachable!("columns of one name have one type (checked on read)"),
        }
    }
}

/// Metadata rows, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names.
    pub names: Vec<String>,
    /// Columns, as `names`.
    pub columns: Vec<Column>,
}

impl Table {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Column::len)
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.columns[i])
    }

    /// Text of column `name` at row `i`.
    pub fn text(&self, name: &str, i: usize) -> Option<&str> {
        match self.column(name)? {
            Column::Text(v) => v[i].as_deref(),
            Column::Int(_) => None,
        }
    }

    /// Row `i` as a JSON object.
    pub fn row_json(&self, i: usize) -> serde_json::Map<String, serde_json::Value> {
        self.names
            .iter()
            .zip(&self.columns)
            .map(|(n, c)| (n.clone(), c.json(i)))
            .collect()
    }

    /// Appends another part's rows; both must have the same columns.
    pub fn append(&mut self, other: Table, path: &Path) -> Result<()> {
        if self.names.is_empty() {
            *self = other;
            return Ok(());
        }
        if self.names != other.names {
            return Err(Error::corrupt(
                path,
                format!(
                    "its columns ({}) differ from the other parts' ({})",
                    other.names.join(", "),
                    self.names.join(", ")
                ),
            ));
        }
        for (a, b) in self.columns.iter_mut().zip(other.columns) {
            if std::mem::discriminant(a) != std::mem::discriminant(&b) {
                return Err(Error::corrupt(
                    path,
                    "a column's type differs from the other parts'",
                ));
            }
            a.extend(b);
        }
        Ok(())
    }
}

/// Reads a part's metadata and record.
pub fn read_part(path: &Path) -> Result<(Table, PartInfo)> {
    let builder = open(path)?;
    let info = info_of(path, &builder)?;
    let schema = builder.schema().clone();
    let reader = builder
        .build()
        .map_err(|e| Error::corrupt(path, format!("cannot read Parquet: {e}")))?;
    let mut table = Table {
        names: schema.fields().iter().map(|f| f.name().clone()).collect(),
        columns: schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int64 => Ok(Column::Int(Vec::new())),
                DataType::Utf8 => Ok(Column::Text(Vec::new())),
                other => Err(Error::corrupt(
                    path,
                    format!(
                        "column {} has type {other}, expected text or int64",
                        f.name()
                    ),
                )),
            })
            .collect::<Result<_>>()?,
    };
    for batch in reader {
        let batch = batch.map_err(|e| Error::corrupt(path, format!("cannot read Parquet: {e}")))?;
        for (column, array) in table.columns.iter_mut().zip(batch.columns()) {
            match column {
                Column::Text(v) => {
                    let a = array
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("utf8 column");
                    v.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())));
                }
                Column::Int(v) => {
                    let a = array
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("int64 column");
                    v.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))));
                }
            }
        }
    }
    if table.rows() != info.rows {
        return Err(Error::corrupt(
            path,
            format!("{} rows, its footer says {}", table.rows(), info.rows),
        ));
    }
    Ok((table, info))
}

/// The rows of a table written with `columns`, back as [`Row`]s (to rewrite a part).
pub fn rows_of(table: &Table, columns: &Columns) -> Vec<Row> {
    let text = |name: &str, i: usize| table.text(name, i).map(str::to_string);
    (0..table.rows())
        .map(|i| Row {
            image_path: text("image_path", i).unwrap_or_default(),
            caption: columns.captions.then(|| text("caption", i)).flatten(),
            blake3: text("blake3", i).unwrap_or_default(),
            size: match table.column("size") {
                Some(Column::Int(v)) => v[i].unwrap_or(0),
                _ => 0,
            },
            dicom: COLLECTION_TAGS.iter().map(|(_, n)| text(n, i)).collect(),
            extra: columns.extra.iter().map(|n| text(n, i)).collect(),
        })
        .collect()
}
