//! The `f32` values of one weight tensor, either read in place from the checkpoint's memory
//! map or held in their own buffer.
//!
//! A checkpoint that stores a tensor as aligned little-endian `f32` (safetensors, and the
//! uncompressed entries of a PyTorch zip, whose writer aligns each to 64 bytes) is used where
//! it lies: no copy, no fresh pages to zero, and pages the model never reads (most of the
//! vocabulary's embeddings) never enter memory. Copying the 784 MB of BiomedCLIP's weights out
//! of the page cache cost about 0.6 s of a 1.2 s cold start; mapping them costs about 30 ms.

use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

/// `f32` values borrowed from a mapped checkpoint or owned.
#[non_exhaustive]
pub enum Floats {
    /// `len` values at byte `start` of `map` (4-byte aligned).
    Mapped {
        /// The whole checkpoint file.
        map: Arc<Mmap>,
        /// Byte offset of the first value.
        start: usize,
        /// Number of values.
        len: usize,
    },
    /// Values converted or gathered into their own buffer.
    Owned(Vec<f32>),
}

impl Floats {
    /// The `len` values at byte `start` of `map`, if they lie inside it, 4-byte aligned, on
    /// a little-endian machine; `None` where they must be copied instead.
    pub fn mapped(map: &Arc<Mmap>, start: usize, len: usize) -> Option<Floats> {
        let end = start.checked_add(len.checked_mul(4)?)?;
        let aligned = (map.as_ptr() as usize + start).is_multiple_of(std::mem::align_of::<f32>());
        (cfg!(target_endian = "little") && aligned && end <= map.len()).then(|| Floats::Mapped {
            map: Arc::clone(map),
            start,
            len,
        })
    }

    /// The values in a buffer of their own (copied when mapped).
    pub fn into_vec(mut self) -> Vec<f32> {
        match &mut self {
            Floats::Owned(v) => std::mem::take(v),
            Floats::Mapped { .. } => self.to_vec(),
        }
    }

    /// Whether the values are read in place from the checkpoint file.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Floats::Mapped { .. })
    }
}

/// Mapped values of at least this many bytes give their pages back when dropped.
const RELEASE_BYTES: usize = 1 << 20;

impl Drop for Floats {
    /// A mapped tensor that is dropped while the model lives (a weight replaced by its int8
    /// form, parts copied into a fused weight) stops counting in the process's memory: its
    /// whole pages are unmapped from this process (the file's page cache keeps them).
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Floats::Mapped { map, start, len } = self {
            release(map, *start, *len * 4);
        }
    }
}

/// Drops this process's page-table entries for the whole pages of `map[start..start + bytes]`.
#[cfg(unix)]
fn release(map: &Mmap, start: usize, bytes: usize) {
    if bytes < RELEASE_BYTES {
        return;
    }
    // The smallest page size; memmap2 aligns the start down to the real one, which at worst
    // takes in a page shared with a neighbouring tensor (refaulted on its next read).
    let page = 4096;
    let base = map.as_ptr() as usize;
    let first = (base + start).div_ceil(page) * page - base;
    let end = (base + start + bytes) / page * page - base;
    if end > first {
        // SAFETY: `MADV_DONTNEED` on a read-only file mapping only drops this process's
        // page-table entries: any later read of those pages (by a tensor sharing an edge
        // page) faults the same bytes back in from the file. Failure only leaves the pages
        // mapped, so its result is ignored.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, end - first)
        };
    }
}

impl Default for Floats {
    fn default() -> Self {
        Floats::Owned(Vec::new())
    }
}

impl From<Vec<f32>> for Floats {
    fn from(v: Vec<f32>) -> Self {
        Floats::Owned(v)
    }
}

impl Deref for Floats {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: `mapped` checked that the range lies in the map and is aligned for
            // f32, any bit pattern is a valid f32, and the map is read-only and lives as
            // long as `self` holds its `Arc`.
            Floats::Mapped { map, start, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*start) as *const f32, *len)
            },
            Floats::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for Floats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "Floats({kind}, {} values)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn mapped_values_are_the_file_bytes_and_bad_ranges_are_refused() {
        let values = [1.5f32, -2.0, 3.25, 0.0];
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[0u8; 4]).unwrap();
        for v in values {
            file.write_all(&v.to_le_bytes()).unwrap();
        }
        file.write_all(&[0u8; 3]).unwrap();
        file.flush().unwrap();
        // SAFETY: the temporary file is not modified while mapped.
        let map = Arc::new(unsafe { Mmap::map(file.as_file()) }.unwrap());
        let floats = Floats::mapped(&map, 4, 4).expect("aligned and inside");
        assert!(floats.is_mapped());
        assert_eq!(&*floats, &values);
        assert_eq!(floats.into_vec(), values.to_vec());
        assert!(Floats::mapped(&map, 2, 1).is_none(), "unaligned");
        assert!(Floats::mapped(&map, 8, 4).is_none(), "past the end");
        assert!(Floats::mapped(&map, 4, usize::MAX).is_none(), "overflow");
    }
}
