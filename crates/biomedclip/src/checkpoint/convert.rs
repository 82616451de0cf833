//! `open_clip_pytorch_model.bin` -> `open_clip_model.safetensors`, so that later loads read
//! plain tensor bytes instead of unpickling a zip archive.
//!
//! The write cannot destroy anything: the destination must not exist (unless `force`), must
//! never be the source, and must be a regular file if it does exist; the tensors go to a
//! temporary file in the destination's directory, flushed to disk, then renamed over it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::pickle::PthTensors;
use candle_core::Tensor;

use super::pickle_guard::check_checkpoint;
use crate::error::{Error, Result};

/// Writes every tensor of the PyTorch checkpoint `src` to `dst`, keeping each tensor's
/// dtype. Refuses to replace an existing `dst` unless `force`, and never writes over `src`
/// or anything but a regular file. Returns the number of tensors written.
pub fn bin_to_safetensors(src: &Path, dst: &Path, force: bool) -> Result<usize> {
    let fail = |path: &Path, reason: String| Error::Weights {
        path: path.into(),
        reason,
    };
    let existing = check_destination(src, dst, force)?;
    let file = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
    // SAFETY: mapped read-only for the check below and dropped before candle reopens the
    // file; a concurrent writer could only make the check see inconsistent bytes, which it
    // reports as an error.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(src, e))?;
    check_checkpoint(&map).map_err(|reason| fail(src, reason))?;
    drop(map);
    let first_line =
        |e: candle_core::Error| e.to_string().lines().next().unwrap_or_default().to_string();
    let mut pth = PthTensors::new(src, None).map_err(|e| fail(src, first_line(e)))?;
    if pth.tensor_infos().is_empty() {
        pth = PthTensors::new(src, Some("state_dict")).map_err(|e| fail(src, first_line(e)))?;
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
            .map_err(|e| fail(src, format!("tensor `{name}`: {}", first_line(e))))?
            .ok_or_else(|| fail(src, format!("tensor `{name}` vanished")))?
            .contiguous()?;
        let key = if strip {
            &name["module.".len()..]
        } else {
            name
        };
        tensors.insert(key.to_string(), t);
    }

    let dir = match dst.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".biomedclip-convert-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    candle_core::safetensors::save(&tensors, tmp.path())
        .map_err(|e| fail(tmp.path(), first_line(e)))?;
    // A replaced file keeps its permissions; a new one gets the usual 0644 rather than the
    // temporary file's private 0600.
    if let Some(permissions) = existing
        .map(|m| m.permissions())
        .or_else(default_permissions)
    {
        std::fs::set_permissions(tmp.path(), permissions).map_err(|e| Error::io(tmp.path(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    // Without --force, a file that appeared at `dst` since the check is not replaced either.
    if force {
        tmp.persist(dst).map_err(|e| Error::io(dst, e.error))?;
    } else {
        tmp.persist_noclobber(dst)
            .map_err(|e| Error::io(dst, e.error))?;
    }
    Ok(tensors.len())
}

/// The destination's metadata if it exists and may be replaced; an error naming it if not.
fn check_destination(src: &Path, dst: &Path, force: bool) -> Result<Option<std::fs::Metadata>> {
    let refuse = |reason: String| Error::InvalidInput(format!("{}: {reason}", dst.display()));
    let meta = match std::fs::metadata(dst) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(dst, e)),
    };
    if !meta.is_file() {
        return Err(refuse(
            "exists and is not a regular file; refusing to write over it".into(),
        ));
    }
    if same_file(src, dst) {
        return Err(refuse(
            "is the checkpoint being converted; refusing to write over it".into(),
        ));
    }
    if !force {
        return Err(refuse("exists; pass --force to replace it".into()));
    }
    Ok(Some(meta))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(unix)]
fn default_permissions() -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Some(std::fs::Permissions::from_mode(0o644))
}

/// Elsewhere the temporary file's own permissions are the platform's usual ones.
#[cfg(not(unix))]
fn default_permissions() -> Option<std::fs::Permissions> {
    None
}
