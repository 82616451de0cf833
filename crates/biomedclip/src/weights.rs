//! Reading a checkpoint: `open_clip_model.safetensors` (memory-mapped, zero-copy until use) or
//! `open_clip_pytorch_model.bin` (a PyTorch zip/pickle, parsed by candle's pickle reader, which
//! interprets the pickle opcodes as data and never executes code).
//!
//! Every lookup checks the key and the shape and fails with both named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

enum Store {
    Safetensors(MmapedSafetensors),
    Pickle(PthTensors),
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
        let (store, stored): (Store, Vec<(String, Vec<usize>)>) = if is_safetensors {
            // SAFETY: the file is mapped read-only; like every mmap-based loader we assume it is
            // not truncated by another process while the model is alive.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(fail)?;
            let shapes = st
                .tensors()
                .into_iter()
                .map(|(k, v)| (k, v.shape().to_vec()))
                .collect();
            (Store::Safetensors(st), shapes)
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
            (Store::Pickle(pth), shapes)
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
        let stored = self.keys.get(key).ok_or_else(|| self.missing(key))?;
        let found = &self.shapes[key];
        if found.as_slice() != expected {
            return Err(self.shape_error(key, expected.to_vec(), found.clone()));
        }
        let fail = |e: candle_core::Error| Error::Weights {
            path: self.path.clone(),
            reason: format!("tensor `{key}`: {e}"),
        };
        let tensor = match &self.store {
            Store::Safetensors(st) => st.load(stored, &Device::Cpu).map_err(fail)?,
            Store::Pickle(pth) => pth
                .get(stored)
                .map_err(fail)?
                .ok_or_else(|| self.missing(key))?,
        };
        let tensor = match tensor.dtype() {
            DType::F32 => tensor,
            DType::F16 | DType::BF16 | DType::F64 => tensor.to_dtype(DType::F32).map_err(fail)?,
            other => {
                return Err(Error::Weights {
                    path: self.path.clone(),
                    reason: format!("tensor `{key}` has dtype {other:?}, expected a float type"),
                })
            }
        };
        tensor.to_device(&self.device).map_err(fail)
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
        let t = self.get(key, &shape)?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?[0])
    }
}

impl Weights {
    /// Loads `key` (shape checked) as a flat f32 vector in row-major order.
    pub fn get_vec(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        Ok(self.get(key, expected)?.flatten_all()?.to_vec1::<f32>()?)
    }
}
