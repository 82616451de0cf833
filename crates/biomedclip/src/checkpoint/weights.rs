//! Reading a checkpoint: `open_clip_model.safetensors` (the header parsed by the `safetensors`
//! crate) or `open_clip_pytorch_model.bin` (a PyTorch zip/pickle, parsed by candle's pickle
//! reader, which interprets the pickle opcodes as data and never executes code).
//!
//! The file is memory-mapped: `f32` tensors are used in place ([`Floats`]), others are
//! converted from the mapped bytes. The checkpoint must not be modified or truncated while a
//! model loaded from it is alive (as with every memory-mapped loader, a truncated file faults).
//!
//! Every lookup checks the key and the shape and fails with both named.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};

pub use crate::checkpoint::floats::Floats;
use crate::error::{Error, Result};

enum Store {
    Safetensors {
        /// Byte offset of the first tensor's data in the file.
        data_start: usize,
        infos: HashMap<String, TensorInfo>,
    },
    Pickle {
        pth: PthTensors,
        /// Zip entry name -> (offset of its data in the file, its length), for stored
        /// (uncompressed) entries.
        stored: HashMap<String, (usize, usize)>,
    },
}

/// Where each tensor storage's bytes lie in a PyTorch zip, for the uncompressed ones.
fn stored_entries(
    map: &Mmap,
    pth: &PthTensors,
) -> std::io::Result<HashMap<String, (usize, usize)>> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(&map[..])).map_err(std::io::Error::other)?;
    let mut out = HashMap::new();
    for info in pth.tensor_infos().values() {
        if out.contains_key(&info.path) {
            continue;
        }
        let entry = zip
            .by_name_raw(info.path.as_bytes())
            .map_err(std::io::Error::other)?;
        if entry.compression() == zip::CompressionMethod::Stored {
            if let Some(start) = entry.data_start() {
                out.insert(info.path.clone(), (start as usize, entry.size() as usize));
            }
        }
    }
    Ok(out)
}

/// Tensor names with their shapes.
type Shapes = Vec<(String, Vec<usize>)>;

fn open_safetensors(map: &Mmap) -> std::result::Result<(Store, Shapes), String> {
    let (header_len, metadata) =
        safetensors::SafeTensors::read_metadata(map).map_err(|e| e.to_string())?;
    let infos: HashMap<String, TensorInfo> = metadata
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let shapes = infos
        .iter()
        .map(|(k, v)| (k.clone(), v.shape.clone()))
        .collect();
    Ok((
        Store::Safetensors {
            data_start: 8 + header_len,
            infos,
        },
        shapes,
    ))
}

/// Decodes little-endian `dtype` bytes into f32.
fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

/// The index of the first NaN or infinity. Blocks are tested without branching, so the scan
/// vectorises and costs little next to reading the weights.
pub(crate) fn first_non_finite(v: &[f32]) -> Option<usize> {
    const BLOCK: usize = 1024;
    v.chunks(BLOCK)
        .position(|b| b.iter().fold(false, |bad, x| bad | !x.is_finite()))
        .map(|block| {
            let start = block * BLOCK;
            start + v[start..].iter().position(|x| !x.is_finite()).unwrap_or(0)
        })
}

/// A checkpoint opened for lookups by state-dict key.
pub struct Weights {
    path: PathBuf,
    map: Arc<Mmap>,
    store: Store,
    /// Stored key for each canonical key (a leading `module.` from DataParallel is dropped).
    keys: HashMap<String, String>,
    shapes: HashMap<String, Vec<usize>>,
    device: Device,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("tensors", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Weights {
    /// Opens a `.safetensors` or PyTorch `.bin`/`.pt`/`.pth` checkpoint; tensors are read on demand.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        // candle appends a backtrace to some messages; the first line is the message.
        let fail = |e: candle_core::Error| Error::Weights {
            path: path.into(),
            reason: e.to_string().lines().next().unwrap_or_default().to_string(),
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: mapped read-only; the module documents that the file must not change while
        // the model is alive.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?);
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let (store, stored): (Store, Shapes) = if is_safetensors {
            open_safetensors(&map).map_err(|reason| Error::Weights {
                path: path.into(),
                reason,
            })?
        } else {
            super::pickle_guard::check_checkpoint(&map).map_err(|reason| Error::Weights {
                path: path.into(),
                reason,
            })?;
            let mut pth = PthTensors::new(path, None).map_err(fail)?;
            if pth.tensor_infos().is_empty() {
                pth = PthTensors::new(path, Some("state_dict")).map_err(fail)?;
            }
            let shapes = pth
                .tensor_infos()
                .iter()
                .map(|(k, v)| (k.clone(), v.layout.shape().dims().to_vec()))
                .collect();
            // Without offsets every tensor goes through candle's reader: slower, same values.
            let stored = stored_entries(&map, &pth).unwrap_or_default();
            (Store::Pickle { pth, stored }, shapes)
        };
        if stored.is_empty() {
            return Err(Error::Weights {
                path: path.into(),
                reason: "the file holds no tensors".into(),
            });
        }
        let strip = stored.iter().all(|(k, _)| k.starts_with("module."));
        let mut keys = HashMap::new();
        let mut shapes = HashMap::new();
        for (k, s) in stored {
            let canonical = if strip {
                k["module.".len()..].to_string()
            } else {
                k.clone()
            };
            shapes.insert(canonical.clone(), s);
            keys.insert(canonical, k);
        }
        Ok(Weights {
            path: path.into(),
            map,
            store,
            keys,
            shapes,
            device: Device::Cpu,
        })
    }

    /// Puts the tensors that [`Self::get`] makes on `device` (the candle towers' device).
    pub(crate) fn set_device(&mut self, device: Device) {
        self.device = device;
    }

    /// The device of the tensors that [`Self::get`] makes.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the checkpoint has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Number of tensors in the checkpoint.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the checkpoint is empty (never true for an opened checkpoint).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The shape of `key`, which must have `rank` dimensions.
    pub fn shape_of(&self, key: &str, rank: usize) -> Result<Vec<usize>> {
        let shape = self.shapes.get(key).ok_or_else(|| self.missing(key))?;
        if shape.len() != rank {
            return Err(Error::ShapeMismatch {
                key: key.into(),
                path: self.path.clone(),
                expected: vec![0; rank],
                found: shape.clone(),
            });
        }
        Ok(shape.clone())
    }

    pub(crate) fn missing(&self, key: &str) -> Error {
        Error::MissingTensor {
            key: key.into(),
            path: self.path.clone(),
        }
    }

    pub(crate) fn shape_error(&self, key: &str, expected: Vec<usize>, found: Vec<usize>) -> Error {
        Error::ShapeMismatch {
            key: key.into(),
            path: self.path.clone(),
            expected,
            found,
        }
    }

    /// Loads `key` as f32 on the model's device after checking it has shape `expected`.
    pub(crate) fn get(&self, key: &str, expected: &[usize]) -> Result<Tensor> {
        let data = self.get_vec(key, expected)?;
        Ok(Tensor::from_vec(data, expected, &self.device)?)
    }

    /// Loads `key` (shape checked) as a flat f32 vector in row-major order.
    pub fn get_vec(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        Ok(self.get_floats(key, expected)?.into_vec())
    }

    /// Loads `key` (shape checked) in row-major order, in place in the mapped file where it
    /// is stored as aligned `f32` ([`Floats`]), else converted into a buffer of its own.
    /// Values that are not finite (NaN, infinities) are refused, naming the tensor: they
    /// would turn every output into NaN without a word.
    pub fn get_floats(&self, key: &str, expected: &[usize]) -> Result<Floats> {
        let floats = self.read_floats(key, expected)?;
        if let Some(i) = first_non_finite(&floats) {
            return Err(Error::Weights {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{key}` holds {} at index {i}; the checkpoint is damaged",
                    floats[i]
                ),
            });
        }
        Ok(floats)
    }

    /// Loads a table read by rows (an embedding table) like [`Self::get_floats`] but without
    /// the finiteness scan, which would read every page of it at load; the caller checks
    /// the rows it gathers ([`first_non_finite`]).
    pub(crate) fn get_table(&self, key: &str, expected: &[usize]) -> Result<Floats> {
        self.read_floats(key, expected)
    }

    fn read_floats(&self, key: &str, expected: &[usize]) -> Result<Floats> {
        let stored = self.keys.get(key).ok_or_else(|| self.missing(key))?;
        let found = &self.shapes[key];
        if found.as_slice() != expected {
            return Err(self.shape_error(key, expected.to_vec(), found.clone()));
        }
        let fail = |reason: String| Error::Weights {
            path: self.path.clone(),
            reason: format!("tensor `{key}`: {reason}"),
        };
        // The bytes at `start..start + len` of the file as `dtype`.
        let from_bytes = |start: usize, len: usize, dtype: Dtype| -> Result<Floats> {
            if dtype == Dtype::F32 {
                if let Some(floats) = Floats::mapped(&self.map, start, len / 4) {
                    return Ok(floats);
                }
            }
            let bytes = start
                .checked_add(len)
                .and_then(|end| self.map.get(start..end))
                .ok_or_else(|| {
                    fail(format!(
                        "its data lies past the end of the file ({len} bytes at {start})"
                    ))
                })?;
            to_f32(bytes, dtype)
                .map(Floats::Owned)
                .ok_or_else(|| fail(format!("dtype {dtype:?} is not a float type")))
        };
        match &self.store {
            Store::Safetensors { data_start, infos } => {
                let info = &infos[stored];
                let (start, end) = info.data_offsets;
                from_bytes(data_start + start, end - start, info.dtype)
            }
            Store::Pickle {
                pth,
                stored: entries,
            } => {
                let info = &pth.tensor_infos()[stored];
                let size = info.dtype.size_in_bytes();
                let dtype = match info.dtype {
                    DType::F32 => Some(Dtype::F32),
                    DType::F16 => Some(Dtype::F16),
                    DType::BF16 => Some(Dtype::BF16),
                    DType::F64 => Some(Dtype::F64),
                    _ => None,
                };
                let n = info.layout.shape().elem_count();
                // candle's pickle layouts count the storage offset in bytes.
                let start = info.layout.start_offset();
                let len = n * size;
                let direct = entries.get(&info.path).filter(|&&(_, entry_len)| {
                    info.layout.is_contiguous() && start + len <= entry_len
                });
                if let (Some(dtype), Some(&(data, _))) = (dtype, direct) {
                    return from_bytes(data + start, len, dtype);
                }
                // Compressed, strided or unusual entries go through candle's reader.
                let t = pth
                    .get(stored)
                    .map_err(|e| fail(e.to_string()))?
                    .ok_or_else(|| self.missing(key))?;
                let t = match t.dtype() {
                    DType::F32 => t,
                    DType::F16 | DType::BF16 | DType::F64 => {
                        t.to_dtype(DType::F32).map_err(|e| fail(e.to_string()))?
                    }
                    other => return Err(fail(format!("dtype {other:?} is not a float type"))),
                };
                t.flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map(Floats::Owned)
                    .map_err(|e| fail(e.to_string()))
            }
        }
    }

    /// Loads `key` whatever its shape (for scalars such as `logit_scale`).
    pub fn get_scalar(&self, key: &str) -> Result<f32> {
        let shape = self
            .shapes
            .get(key)
            .ok_or_else(|| self.missing(key))?
            .clone();
        if shape.iter().product::<usize>() != 1 {
            return Err(self.shape_error(key, vec![], shape));
        }
        Ok(self.get_vec(key, &shape)?[0])
    }
}
