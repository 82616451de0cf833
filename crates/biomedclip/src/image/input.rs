//! What an image comes as: a file (with an optional `#frame=N` suffix for DICOM), encoded
//! bytes, or a decoded RGB buffer ([`ImageInput`]); and image arguments -> image files, with
//! directories walked recursively (optionally filtered by a glob) and non-images counted
//! rather than dropped silently.

use std::io::Read;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};

use super::decode::is_dicom;
use crate::error::{Error, Result};

/// One image to encode. Borrowed, so that callers holding bytes or pixels (a server, the
/// Python bindings) hand them over without a copy.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ImageInput<'a> {
    /// An image file; `scan.dcm#frame=N` takes frame `N` (from 0) of a multi-frame DICOM
    /// file.
    Path(&'a Path),
    /// The bytes of an image file (any format [`crate::image::decode::decode`] reads).
    Bytes {
        /// What the bytes are called in messages (a file name, a request field).
        name: &'a str,
        /// The encoded image.
        data: &'a [u8],
    },
    /// Decoded 8-bit RGB pixels, interleaved, row by row: `width * height * 3` bytes.
    Rgb8 {
        /// Columns.
        width: usize,
        /// Rows.
        height: usize,
        /// The samples.
        data: &'a [u8],
    },
}

impl<'a> ImageInput<'a> {
    /// An image file.
    pub fn path<P: AsRef<Path> + ?Sized>(path: &'a P) -> Self {
        ImageInput::Path(path.as_ref())
    }

    /// The bytes of an image file, called `name` in messages.
    pub fn bytes(name: &'a str, data: &'a [u8]) -> Self {
        ImageInput::Bytes { name, data }
    }

    /// Decoded RGB pixels (`width * height * 3` bytes, interleaved).
    pub fn rgb8(width: usize, height: usize, data: &'a [u8]) -> Self {
        ImageInput::Rgb8 {
            width,
            height,
            data,
        }
    }

    /// What the input is called in messages: the path, the given name, or the buffer's size.
    pub fn name(&self) -> PathBuf {
        match self {
            ImageInput::Path(p) => p.to_path_buf(),
            ImageInput::Bytes { name, .. } => PathBuf::from(name),
            ImageInput::Rgb8 { width, height, .. } => {
                PathBuf::from(format!("<{width}x{height} RGB buffer>"))
            }
        }
    }
}

/// File extensions taken as images without looking inside (lower case).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "dcm", "dicom",
];

/// Splits a `path#frame=N` argument into the file and the frame (counted from 0). A path
/// that exists as written is never split; a suffix that is not a whole number on a file that
/// exists is an error naming the suffix.
pub fn split_frame(path: &Path) -> Result<(PathBuf, Option<u32>)> {
    let unsplit = Ok((path.into(), None));
    let Some((file, n)) = path.to_str().and_then(|s| s.rsplit_once("#frame=")) else {
        return unsplit;
    };
    if path.exists() {
        return unsplit;
    }
    match n.parse::<u32>() {
        Ok(n) => Ok((PathBuf::from(file), Some(n))),
        Err(_) if Path::new(file).exists() => Err(Error::Image {
            path: path.into(),
            reason: format!("`#frame={n}` is not a frame number (whole numbers from 0)"),
        }),
        Err(_) => unsplit,
    }
}

/// The image files found for a list of arguments.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Collected {
    /// Files to read, in argument order; directories expanded in sorted path order.
    pub images: Vec<PathBuf>,
    /// Files inside the directories that matched the glob but are not images.
    pub skipped: Vec<PathBuf>,
    /// Entries of the directories that could not be read (a dangling link, a link loop, a
    /// folder without permission), with the reason; the walk went on past them.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Expands `inputs`: files are kept as given (so a bad one is reported when read), and
/// directories are walked recursively for image files whose path relative to the
/// directory matches `glob` (default: every file). A file inside a directory is an image
/// if its extension is in [`IMAGE_EXTENSIONS`] or its first bytes are a known image or
/// DICOM signature; other files are listed in [`Collected::skipped`], and entries that
/// cannot be read in [`Collected::unreadable`] (the walk goes on).
pub fn collect_images(inputs: &[PathBuf], glob: Option<&str>) -> Result<Collected> {
    let matcher = glob
        .map(|g| {
            Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| Error::InvalidInput(format!("--glob {g:?}: {e}")))
        })
        .transpose()?;
    let mut out = Collected::default();
    for input in inputs {
        if input.is_dir() {
            walk(input, matcher.as_ref(), &mut out);
        } else {
            out.images.push(input.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, matcher: Option<&GlobMatcher>, out: &mut Collected) {
    let entries = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_path_buf();
                let reason = match (e.loop_ancestor(), e.io_error()) {
                    (Some(ancestor), _) => {
                        format!("a link loop (back to {})", ancestor.display())
                    }
                    (None, Some(io)) if io.kind() == std::io::ErrorKind::NotFound => {
                        "a dangling link (its target does not exist)".to_string()
                    }
                    (None, Some(io)) => io.to_string(),
                    (None, None) => e.to_string(),
                };
                out.unreadable.push((path, reason));
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let relative = path.strip_prefix(dir).unwrap_or(path);
        if matcher.is_some_and(|m| !m.is_match(relative)) {
            continue;
        }
        if looks_like_image(path) {
            out.images.push(path.to_path_buf());
        } else {
            out.skipped.push(path.to_path_buf());
        }
    }
}

/// Whether a file is an image by its extension or, failing that, its first bytes.
pub fn looks_like_image(path: &Path) -> bool {
    let by_extension = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    if by_extension {
        return true;
    }
    let mut head = Vec::with_capacity(132);
    match std::fs::File::open(path) {
        Ok(f) => {
            if f.take(132).read_to_end(&mut head).is_err() {
                return false;
            }
        }
        Err(_) => return false,
    }
    is_dicom(&head) || image::guess_format(&head).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_suffix_is_split_only_when_the_path_does_not_exist() {
        assert_eq!(
            split_frame(Path::new("/nonexistent/a.dcm#frame=3")).unwrap(),
            (PathBuf::from("/nonexistent/a.dcm"), Some(3))
        );
        assert_eq!(
            split_frame(Path::new("/nonexistent/a.dcm#frame=x")).unwrap(),
            (PathBuf::from("/nonexistent/a.dcm#frame=x"), None)
        );
        assert_eq!(
            split_frame(Path::new("a.png")).unwrap(),
            (PathBuf::from("a.png"), None)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("scan.dcm");
        std::fs::write(&file, b"x").unwrap();
        let arg = PathBuf::from(format!("{}#frame=-1", file.display()));
        let msg = split_frame(&arg).unwrap_err().to_string();
        assert!(
            msg.contains("scan.dcm#frame=-1") && msg.contains("not a frame number"),
            "{msg}"
        );
    }

    #[test]
    fn directories_are_walked_with_a_glob_and_non_images_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(sub.join("c.JPG"), b"x").unwrap();
        std::fs::write(sub.join("notes.txt"), b"hello").unwrap();
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM");
        std::fs::write(sub.join("IM0001"), &dicom).unwrap();

        let all = collect_images(&[dir.path().into()], None).unwrap();
        assert_eq!(
            all.images,
            vec![
                dir.path().join("a.png"),
                sub.join("IM0001"),
                sub.join("c.JPG")
            ]
        );
        assert_eq!(all.skipped, vec![sub.join("notes.txt")]);

        let only_b = collect_images(&[dir.path().into()], Some("b/*")).unwrap();
        assert_eq!(only_b.images, vec![sub.join("IM0001"), sub.join("c.JPG")]);
        assert!(collect_images(&[dir.path().into()], Some("[")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn bad_entries_are_reported_and_the_walk_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(sub.join("z.png"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("missing.png"), dir.path().join("b.png"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("loop")).unwrap();
        let found = collect_images(&[dir.path().into()], None).unwrap();
        assert_eq!(
            found.images,
            vec![dir.path().join("a.png"), sub.join("z.png")]
        );
        let reasons: Vec<String> = found
            .unreadable
            .iter()
            .map(|(p, r)| format!("{}: {r}", p.display()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("b.png: a dangling link"), "{reasons:?}");
        assert!(reasons[1].contains("loop: a link loop"), "{reasons:?}");
    }
}
