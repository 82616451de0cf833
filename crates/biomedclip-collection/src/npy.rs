//! NumPy `.npy` matrices: written for clip-retrieval, autofaiss and `numpy.load`, and read
//! back memory-mapped for search.
//!
//! By hand because the format is one documented header (magic, version, a Python dict
//! literal naming dtype, order and shape, padded to 64 bytes) in front of the raw rows, and
//! search needs exactly those raw rows mapped in place as `f32` or `f16`, which the npy
//! crates (built around owned `ndarray`s) do not give.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Data starts on a 64-byte boundary (what NumPy itself pads to), so mapped rows are aligned.
const ALIGN: usize = 64;

/// How embeddings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Little-endian float32 (`<f4`): the model's numbers exactly.
    F32,
    /// Little-endian float16 (`<f2`): half the size; scores within about 1e-3.
    F16,
}

impl Dtype {
    /// NumPy's name for it.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F16 => "<f2",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" => Ok(Dtype::F16),
            other => Err(Error::Invalid(format!(
                "unknown storage type {other:?}: f32 or f16"
            ))),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        })
    }
}

fn header(dtype: Dtype, rows: usize, dim: usize) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}",
        dtype.descr()
    );
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = MAGIC.len() + 4 + dict.len() + 1;
    let padding = (ALIGN - unpadded % ALIGN) % ALIGN;
    let len = (dict.len() + padding + 1) as u16;
    let mut out = Vec::with_capacity(unpadded + padding);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + padding, b' ');
    out.push(b'\n');
    out
}

/// Writes `rows` x `dim` values (row-major) as an npy matrix of `dtype`.
pub fn write(
    out: &mut impl Write,
    dtype: Dtype,
    dim: usize,
    values: &[f32],
) -> std::io::Result<()> {
    assert_eq!(values.len() % dim.max(1), 0, "whole rows");
    let rows = values.len().checked_div(dim).unwrap_or(0);
    out.write_all(&header(dtype, rows, dim))?;
    match dtype {
        Dtype::F32 => {
            for chunk in values.chunks(4096) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                out.write_all(&bytes)?;
            }
        }
        Dtype::F16 => {
            for chunk in values.chunks(4096) {
                let bytes: Vec<u8> = chunk
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect();
                out.write_all(&bytes)?;
            }
        }
    }
    Ok(())
}

/// An npy matrix, memory-mapped.
#[derive(Debug)]
pub struct Matrix {
    path: PathBuf,
    map: Mmap,
    offset: usize,
    rows: usize,
    dim: usize,
    dtype: Dtype,
}

impl Matrix {
    /// Maps `path` and checks its header: a C-order 2-D `<f4`/`<f2` matrix whose data is all
    /// there.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        // SAFETY: collection files are replaced by rename, never rewritten in place, so the
        // mapped bytes do not change under the map.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let corrupt =
            |reason: String| Error::corrupt(path, format!("not a valid npy matrix: {reason}"));
        if len < MAGIC.len() + 4 || &map[..MAGIC.len()] != MAGIC {
            return Err(corrupt("no npy magic".into()));
        }
        let (header_len, start) = match map[6] {
            1 => (u16::from_le_bytes([map[8], map[9]]) as usize, 10),
            2 | 3 if len >= 12 => (
                u32::from_le_bytes([map[8], map[9], map[10], map[11]]) as usize,
                12,
            ),
            v => return Err(corrupt(format!("npy version {v}"))),
        };
        let offset = start + header_len;
        if offset > len {
            return Err(corrupt("header runs past the end of the file".into()));
        }
        let dict = std::str::from_utf8(&map[start..offset])
            .map_err(|_| corrupt("header is not text".into()))?;
        let dtype = if dict.contains("'descr': '<f4'") {
            Dtype::F32
        } else if dict.contains("'descr': '<f2'") {
            Dtype::F16
        } else {
            return Err(corrupt(format!("dtype is not <f4 or <f2: {}", dict.trim())));
        };
        if !dict.contains("'fortran_order': False") {
            return Err(corrupt("not in C order".into()));
        }
        let shape = dict
            .split("'shape': (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| corrupt("no shape".into()))?;
        let dims: Vec<usize> = shape
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| corrupt(format!("shape ({shape}) is not numbers")))?;
        let [rows, dim] = dims[..] else {
            return Err(corrupt(format!("shape ({shape}) is not 2-D")));
        };
        let need = rows
            .checked_mul(dim)
            .and_then(|n| n.checked_mul(dtype.size()))
            .and_then(|n| n.checked_add(offset))
            .ok_or_else(|| corrupt(format!("shape ({shape}) overflows")))?;
        if need != len {
            return Err(corrupt(format!(
                "shape ({rows}, {dim}) needs {need} bytes, the file has {len} (truncated or \
                 overwritten)"
            )));
        }
        if offset % dtype.size() != 0 {
            return Err(corrupt("data is not aligned".into()));
        }
        Ok(Matrix {
            path: path.to_path_buf(),
            map,
            offset,
            rows,
            dim,
            dtype,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The storage type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn bytes(&self) -> &[u8] {
        &self.map[self.offset..]
    }

    /// The rows as `f32`, if stored so.
    pub fn as_f32(&self) -> Option<&[f32]> {
        (self.dtype == Dtype::F32).then(|| {
            let bytes = self.bytes();
            // SAFETY: the map is page-aligned and the data offset a multiple of 4 (checked
            // in `open`); any bit pattern is a valid f32; the length is whole values.
            unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) }
        })
    }

    /// The rows as `f16`, if stored so.
    pub fn as_f16(&self) -> Option<&[f16]> {
        (self.dtype == Dtype::F16).then(|| {
            let bytes = self.bytes();
            // SAFETY: as in `as_f32`, with 2-byte values.
            unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f16>(), bytes.len() / 2) }
        })
    }

    /// Rows `range` as `f32`, converted if stored as `f16`.
    pub fn rows_f32(&self, range: std::ops::Range<usize>) -> std::borrow::Cow<'_, [f32]> {
        let (a, b) = (range.start * self.dim, range.end * self.dim);
        match self.dtype {
            Dtype::F32 => std::borrow::Cow::Borrowed(&self.as_f32().expect("f32")[a..b]),
            Dtype::F16 => {
                let mut out = vec![0f32; b - a];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(
                    &self.as_f16().expect("f16")[a..b],
                    &mut out,
                );
                std::borrow::Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_to_64_and_round_trips() {
        for dtype in [Dtype::F32, Dtype::F16] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.npy");
            let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
            let mut bytes = Vec::new();
            write(&mut bytes, dtype, 4, &values).unwrap();
            assert_eq!(
                (bytes.len() - values.len() * dtype.size()) % ALIGN,
                0,
                "data aligned"
            );
            std::fs::write(&path, &bytes).unwrap();
            let m = Matrix::open(&path).unwrap();
            assert_eq!((m.rows(), m.dim(), m.dtype()), (3, 4, dtype));
            assert_eq!(&*m.rows_f32(0..3), &values[..]);
            std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
            let err = Matrix::open(&path).unwrap_err().to_string();
            assert!(err.contains("truncated"), "{err}");
        }
    }
}
