//! What one image input may cost, checked before anything is allocated: decoded pixels
//! (Pillow's decompression-bomb limit) and bytes read from a file, which must be a regular
//! file (a FIFO would block forever, `/dev/zero` would be read until memory runs out).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Pillow's `Image.MAX_IMAGE_PIXELS`: `1024 * 1024 * 1024 // 4 // 3`, a quarter GiB of
/// 3-byte pixels. Pillow warns above it and refuses above twice as many; here the limit is
/// the refusal, so that the default never lets through more than Pillow warns about.
pub const MAX_IMAGE_PIXELS: u64 = 1024 * 1024 * 1024 / 4 / 3;

/// Default bound on the bytes of one input file: large multi-frame DICOM series fit, a
/// runaway file does not.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// Bounds on one image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pixels (width x height) one image (or DICOM frame) may have.
    pub max_pixels: u64,
    /// Most bytes read from one input file.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: MAX_IMAGE_PIXELS,
            max_bytes: MAX_INPUT_BYTES,
        }
    }
}

impl Limits {
    /// Refuses a `width` x `height` image with more than [`Limits::max_pixels`] pixels, or
    /// an empty one. The reason is for [`Error::Image`].
    pub fn check_pixels(&self, width: u64, height: u64) -> std::result::Result<(), String> {
        if width == 0 || height == 0 {
            return Err(format!(
                "image has zero width or height ({width} x {height})"
            ));
        }
        let pixels = width.saturating_mul(height);
        if pixels > self.max_pixels {
            return Err(format!(
                "{width} x {height} = {pixels} pixels is more than the limit of {} \
                 (a possible decompression bomb; raise it with --max-image-pixels or \
                 BIOMEDCLIP_MAX_IMAGE_PIXELS if the image is trusted)",
                self.max_pixels
            ));
        }
        Ok(())
    }

    /// Reads a whole input file, refusing anything but a regular file and files larger
    /// than [`Limits::max_bytes`]. The file is checked after opening (no window for a swap
    /// between the check and the read) and read through a bound, in case it grows.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
        let fail = |reason: String| Error::Image {
            path: path.into(),
            reason,
        };
        let mut file = open_input(path)?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let too_large = |n: u64| {
            fail(format!(
                "file is {n} bytes, more than the limit of {} (--max-input-bytes)",
                self.max_bytes
            ))
        };
        if len > self.max_bytes {
            return Err(too_large(len));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        (&mut file)
            .take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }
}

/// Opens an input file for reading, refusing anything but a regular file (after following
/// links) with an error naming the file and what it is.
pub(crate) fn open_input(path: &Path) -> Result<File> {
    open_regular(path).map_err(|e| match e {
        OpenError::Io(e) => Error::io(path, e),
        OpenError::NotRegular(kind) => Error::Image {
            path: path.into(),
            reason: format!("not a regular file ({kind}); images are read from regular files only"),
        },
    })
}

enum OpenError {
    Io(std::io::Error),
    NotRegular(&'static str),
}

/// Opens `path` for reading if it is a regular file (after following links). On Unix the
/// open does not block on a FIFO (`O_NONBLOCK`), so the type is checked before any read.
fn open_regular(path: &Path) -> std::result::Result<File, OpenError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever. It has no
        // effect on reads of regular files.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(OpenError::Io)?;
    let kind = file.metadata().map_err(OpenError::Io)?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(OpenError::NotRegular(describe(&kind)))
}

fn describe(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "not a file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_over_the_limit_are_refused_before_decoding() {
        let limits = Limits::default();
        assert!(limits.check_pixels(9459, 9459).is_ok());
        let msg = limits.check_pixels(60_000, 60_000).unwrap_err();
        assert!(msg.contains("3600000000 pixels"), "{msg}");
        assert!(limits.check_pixels(0, 10).is_err());
        assert!(limits.check_pixels(u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn only_regular_files_within_the_byte_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("a.png");
        std::fs::write(&small, [1u8; 100]).unwrap();
        let limits = Limits {
            max_bytes: 99,
            ..Limits::default()
        };
        let msg = limits.read_file(&small).unwrap_err().to_string();
        assert!(msg.contains("a.png") && msg.contains("100 bytes"), "{msg}");
        assert_eq!(Limits::default().read_file(&small).unwrap().len(), 100);

        let msg = Limits::default()
            .read_file(dir.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("a directory"), "{msg}");
        #[cfg(unix)]
        {
            let msg = Limits::default()
                .read_file(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains("character device"), "{msg}");
        }
    }
}
