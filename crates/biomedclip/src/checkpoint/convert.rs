//! `open_clip_pytorch_model.bin` -> `open_clip_model.safetensors`, so that later loads read
//! plain tensor bytes instead of unpickling a zip archive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::Tensor;

use crate::error::{Error, Result};

/// Writes every tensor of the PyTorch checkpoint `src` to `dst` (written to a temporary file
/// beside it, then renamed). Returns the number of tensors written.
pub fn bin_to_safetensors(src: &Path, dst: &Path) -> Result<usize> {
    let fail = |path: &Path, reason: String| Error::Weights {
        path: path.into(),
        reason,
    };
    let mut pth = PthTensors::new(src, None).map_err(|e| fail(src, e.to_string()))?;
    if pth.tensor_infos().is_empty() {
        pth = PthTensors::new(src, Some("state_dict")).map_err(|e| fail(src, e.to_string()))?;
    }
    let names: Vec<String> = pth.tensor_infos().keys().cloned().collect();
    if names.is_empty() {
        return Err(fail(src, "the file holds no tensors".into()));
    }
    let strip = names.iter().all(|k| k.starts_with("module."));
    let mut tensors: HashMap<String, Tensor> = HashMap::with_capacity(names.len());
    for name in &names {
        let t = pth
            .get(name)
            .map_err(|e| fail(src, format!("tensor `{name}`: {e}")))?
            .ok_or_else(|| fail(src, format!("tensor `{name}` vanished")))?
            .contiguous()?;
        let key = if strip {
            &name["module.".len()..]
        } else {
            name
        };
        tensors.insert(key.to_string(), t);
    }
    let tmp: PathBuf = dst.with_extension("safetensors.partial");
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| fail(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, dst).map_err(|e| Error::io(dst, e))?;
    Ok(tensors.len())
}
