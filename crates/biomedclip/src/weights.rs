//! Reading a checkpoint: `open_clip_model.safetensors` (the header parsed by the `safetensors`
//! crate over a memory map, each tensor then read straight into its final buffer, so the
//! process holds one copy of the weights) or `open_clip_pytorch_model.bin` (a PyTorch
//! zip/pickle, parsed by candle's pickle reader, which interprets the pickle opcodes as data
//! and never executes code).
//!
//! Every lookup checks the key and the shape and fails with both named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::fs::File;
#[cfg(not(unix))]
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;

use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorInfo};

use crate::error::{Error, Result};

enum Store {
    Safetensors {
        file: Mutex<File>,
        data_start: u64,
        infos: HashMap<String, TensorInfo>,
    },
    Pickle {
        pth: PthTensors,
        file: Mutex<File>,
        /// Zip entry name -> (offset of its data in the file, its length), for stored
        /// (uncompressed) entries.
        stored: HashMap<String, (u64, u64)>,
    },
}

/// Where each tensor storage's bytes lie in a PyTorch zip, for the uncompressed ones.
fn stored_entries(path: &Path, pth: &PthTensors) -> std::io::Result<HashMap<String, (u64, u64)>> {
    let file = File::open(path)?;
    let mut zip =
        zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(std::io::Error::other)?;
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
                out.insert(info.path.clone(), (start, entry.size()));
            }
        }
    }
    Ok(out)
}

/// Tensor names with their shapes.
type Shapes = Vec<(String, Vec<usize>)>;

fn open_safetensors(path: &Path) -> std::result::Result<(Store, Shapes), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: mapped read-only to parse the header; only the header pages are touched.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let (header_len, metadata) =
        safetensors::SafeTensors::read_metadata(&map).map_err(|e| e.to_string())?;
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
            file: Mutex::new(file),
            data_start: 8 + header_len as u64,
            infos,
        },
        shapes,
    ))
}

/// Reads `buf.len()` bytes at `offset`; positional reads let tensors load in parallel.
fn read_at(file: &Mutex<File>, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let f = file.lock().unwrap_or_else(|e| e.into_inner()).try_clone()?;
        f.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
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

/// A checkpoint opened for lookups by state-dict key.
pub struct Weights {
    path: PathBuf,
    store: Store,
    /// Stored key for each canonical key (a leading `module.` from DataParallel is dropped).
    keys: HashMap<String, String>,
    shapes: HashMap<String, Vec<usize>>,
    device: Device,
}

impl Weights {
    /// Opens a `.safetensors` or PyTorch `.bin`/`.pt`/`.pth` checkpoint; tensors are read on demand.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let fail = |e: candle_core::Error| Error::Weights {
            path: path.into(),
            reason: e.to_string(),
        };
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let (store, stored): (Store, Shapes) = if is_safetensors {
            open_safetensors(path).map_err(|reason| Error::Weights {
                path: path.into(),
                reason,
            })?
        } else {
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
            let stored = stored_entries(path, &pth).unwrap_or_default();
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            (
                Store::Pickle {
                    pth,
                    file: Mutex::new(file),
                    stored,
                },
                shapes,
            )
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
            store,
            keys,
            shapes,
            device: device.clone(),
        })
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
    pub fn get(&self, key: &str, expected: &[usize]) -> Result<Tensor> {
        let data = self.get_vec(key, expected)?;
        Ok(Tensor::from_vec(data, expected, &self.device)?)
    }

    /// Loads `key` (shape checked) as a flat f32 vector in row-major order.
    pub fn get_vec(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let stored = self.keys.get(key).ok_or_else(|| self.missing(key))?;
        let found = &self.shapes[key];
        if found.as_slice() != expected {
            return Err(self.shape_error(key, expected.to_vec(), found.clone()));
        }
        let fail = |reason: String| Error::Weights {
            path: self.path.clone(),
            reason: format!("tensor `{key}`: {reason}"),
        };
        match &self.store {
            Store::Safetensors {
                file,
                data_start,
                infos,
            } => {
                let info = &infos[stored];
                let (start, end) = info.data_offsets;
                let offset = data_start + start as u64;
                if info.dtype == Dtype::F32 && cfg!(target_endian = "little") {
                    // Read the bytes straight into the final buffer: no second copy.
                    let mut out = vec![0f32; (end - start) / 4];
                    // SAFETY: any byte pattern is a valid f32 and the lengths match.
                    let bytes = unsafe {
                        std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, out.len() * 4)
                    };
                    read_at(file, offset, bytes).map_err(|e| fail(e.to_string()))?;
                    return Ok(out);
                }
                let mut bytes = vec![0u8; end - start];
                read_at(file, offset, &mut bytes).map_err(|e| fail(e.to_string()))?;
                to_f32(&bytes, info.dtype)
                    .ok_or_else(|| fail(format!("dtype {:?} is not a float type", info.dtype)))
            }
            Store::Pickle {
                pth,
                file,
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
                let start = (info.layout.start_offset() * size) as u64;
                let len = (n * size) as u64;
                let direct = entries.get(&info.path).filter(|&&(_, entry_len)| {
                    info.layout.is_contiguous() && start + len <= entry_len
                });
                if let (Some(dtype), Some(&(data, _))) = (dtype, direct) {
                    if dtype == Dtype::F32 && cfg!(target_endian = "little") {
                        let mut out = vec![0f32; n];
                        // SAFETY: any byte pattern is a valid f32 and the lengths match.
                        let bytes = unsafe {
                            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, n * 4)
                        };
                        read_at(file, data + start, bytes).map_err(|e| fail(e.to_string()))?;
                        return Ok(out);
                    }
                    let mut bytes = vec![0u8; len as usize];
                    read_at(file, data + start, &mut bytes).map_err(|e| fail(e.to_string()))?;
                    return to_f32(&bytes, dtype)
                        .ok_or_else(|| fail(format!("dtype {dtype:?} is not a float type")));
                }
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
