//! Embeddings cached on disk, keyed by the model and the input's content, so a second
//! evaluation of the same data does not encode it again.
//!
//! Layout: `<root>/<model fingerprint>/<2 hex>/<key>.f32`, each file the embedding as
//! little-endian f32. The model fingerprint hashes (BLAKE3) the config, the tokenizer and the
//! weights file; it is remembered in `<root>/models.json` so the weights are hashed once,
//! keyed as git keys its index: path, size, modification and status-change times, device and
//! inode. A replaced file gets a new inode or ctime even when its size and mtime are restored
//! (`touch -r` can set the mtime, nothing but the kernel sets the ctime), so it is hashed anew. Image keys hash the file's bytes, the DICOM frame and the
//! rendering options and the image tower's precision; text keys hash the text (the text tower
//! is `f32` at every precision).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::checkpoint::source::ModelFiles;
use crate::error::{Error, Result};
use crate::image::input::split_frame;
use crate::image::limits::open_input;
use crate::IMAGE_BATCH;
use crate::{BiomedClip, Precision};

/// An on-disk embedding store for one model.
#[derive(Debug, Clone)]
pub struct EmbeddingCache {
    dir: PathBuf,
    dim: usize,
    /// Rendering options and image precision, hashed into image keys.
    image_tag: String,
}

/// The default cache root: `$BIOMEDCLIP_CACHE`, else `$XDG_CACHE_HOME/biomedclip`, else
/// `~/.cache/biomedclip`.
pub fn default_root() -> PathBuf {
    if let Some(p) = std::env::var_os("BIOMEDCLIP_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("biomedclip");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("biomedclip")
}

impl EmbeddingCache {
    /// Opens (creating it if needed) the cache of `model` loaded from `files` under `root`.
    pub fn open(root: &Path, files: &ModelFiles, model: &BiomedClip) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let fingerprint = model_fingerprint(root, files)?;
        let dir = root.join(&fingerprint[..32]);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(EmbeddingCache {
            dir,
            dim: model.embed_dim(),
            image_tag: match model.precision() {
                Precision::F32 => model.preprocessor().rendering().cache_tag(),
                p => format!(
                    "{}|{}",
                    model.preprocessor().rendering().cache_tag(),
                    p.name()
                ),
            },
        })
    }

    /// The directory holding this model's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of an image argument (`file` or `file.dcm#frame=N`) under the current
    /// rendering options; reads the file.
    ///
    /// The file is hashed in 64 KiB pieces and not kept: on a miss it is read again to be
    /// decoded (usually from the page cache), which keeps memory flat for large collections
    /// instead of holding every missed file's bytes until its batch is encoded.
    pub fn image_key(&self, path: &Path) -> Result<String> {
        let (file, frame) = split_frame(path)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"image\0");
        hasher.update(self.image_tag.as_bytes());
        hasher.update(format!("\0frame={frame:?}\0").as_bytes());
        let mut f = open_input(&file)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&file, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// The key of a text.
    pub fn text_key(text: &str) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"text\0");
        hasher.update(text.as_bytes());
        hasher.finalize().to_hex().to_string()
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.f32"))
    }

    /// A stored embedding (a damaged or wrong-sized entry is treated as missing).
    pub fn get(&self, key: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.entry(key)).ok()?;
        (bytes.len() == self.dim * 4).then(|| {
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
    }

    /// Stores an embedding (written to a temporary file, then renamed into place).
    pub fn put(&self, key: &str, embedding: &[f32]) -> Result<()> {
        let path = self.entry(key);
        let parent = path.parent().expect("entries live in a sub-directory");
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

/// Counts of a cached encoding run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Inputs found in the cache.
    pub hits: usize,
    /// Inputs encoded (and stored).
    pub encoded: usize,
}

/// Images encoded between two writes to the cache: large enough to keep the engine's
/// batches full, small enough that an interruption loses little.
const PIECE: usize = 16 * IMAGE_BATCH;

/// Encodes image files through the cache when there is one: cached embeddings are read,
/// the rest encoded in batches and stored. Each file gets its own result, in order;
/// `progress(n)` is called as `n` more files are done.
pub fn encode_images_cached<P: AsRef<Path> + Sync>(
    model: &BiomedClip,
    cache: Option<&EmbeddingCache>,
    paths: &[P],
    mut progress: impl FnMut(usize),
) -> (Vec<Result<Vec<f32>>>, CacheStats) {
    let Some(cache) = cache else {
        let out = model.encode_image_files_with_progress(paths, progress);
        let encoded = out.len();
        return (out, CacheStats { hits: 0, encoded });
    };
    let mut results: Vec<Option<Result<Vec<f32>>>> = Vec::with_capacity(paths.len());
    let mut keys = Vec::with_capacity(paths.len());
    let mut todo = Vec::new();
    let mut stats = CacheStats::default();
    for (i, p) in paths.iter().enumerate() {
        match cache.image_key(p.as_ref()) {
            Ok(key) => {
                if let Some(e) = cache.get(&key) {
                    results.push(Some(Ok(e)));
                    stats.hits += 1;
                } else {
                    results.push(None);
                    todo.push(i);
                }
                keys.push(Some(key));
            }
            Err(e) => {
                results.push(Some(Err(e)));
                keys.push(None);
            }
        }
    }
    progress(paths.len() - todo.len());
    // Encoded in pieces, each stored before the next starts, so an interrupted run keeps
    // what it computed and the next run resumes from there.
    for piece in todo.chunks(PIECE) {
        let piece_paths: Vec<&Path> = piece.iter().map(|&i| paths[i].as_ref()).collect();
        let encoded = model.encode_image_files_with_progress(&piece_paths, &mut progress);
        for (&i, r) in piece.iter().zip(encoded) {
            if let (Ok(e), Some(key)) = (&r, &keys[i]) {
                // A cache that cannot be written only costs time later; the result stands.
                let _ = cache.put(key, e);
                stats.encoded += 1;
            }
            results[i] = Some(r);
        }
    }
    let out = results
        .into_iter()
        .map(|r| r.expect("every input has a result"))
        .collect();
    (out, stats)
}

/// Encodes texts through the cache when there is one.
pub fn encode_texts_cached(
    model: &BiomedClip,
    cache: Option<&EmbeddingCache>,
    texts: &[String],
) -> Result<(Vec<Vec<f32>>, CacheStats)> {
    let Some(cache) = cache else {
        let out = model.encode_texts(texts)?;
        let encoded = out.len();
        return Ok((out, CacheStats { hits: 0, encoded }));
    };
    let keys: Vec<String> = texts.iter().map(|t| EmbeddingCache::text_key(t)).collect();
    let mut out: Vec<Option<Vec<f32>>> = keys.iter().map(|k| cache.get(k)).collect();
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
    let stats = CacheStats {
        hits: texts.len() - missing.len(),
        encoded: missing.len(),
    };
    let fresh = model.encode_texts(&missing.iter().map(|&i| &texts[i]).collect::<Vec<_>>())?;
    for (i, e) in missing.into_iter().zip(fresh) {
        let _ = cache.put(&keys[i], &e);
        out[i] = Some(e);
    }
    Ok((out.into_iter().map(|e| e.expect("filled")).collect(), stats))
}

/// BLAKE3 of the config, tokenizer and weights, remembered per weights file identity (see
/// the module docs) in `models.json`.
fn model_fingerprint(root: &Path, files: &ModelFiles) -> Result<String> {
    let meta = std::fs::metadata(&files.weights).map_err(|e| Error::io(&files.weights, e))?;
    let canonical = std::fs::canonicalize(&files.weights).unwrap_or(files.weights.clone());
    let config = std::fs::read(&files.config).map_err(|e| Error::io(&files.config, e))?;
    let tokenizer = std::fs::read(&files.tokenizer).map_err(|e| Error::io(&files.tokenizer, e))?;
    let mut small = blake3::Hasher::new();
    small.update(&config);
    small.update(&tokenizer);
    let memo_key = format!(
        "{}|{}|{}",
        canonical.display(),
        file_identity(&meta),
        small.finalize().to_hex()
    );
    let memo_path = root.join("models.json");
    let mut memo: BTreeMap<String, String> = std::fs::read_to_string(&memo_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    if let Some(fp) = memo.get(&memo_key) {
        return Ok(fp.clone());
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&config);
    hasher.update(&tokenizer);
    hasher
        .update_mmap_rayon(&files.weights)
        .map_err(|e| Error::io(&files.weights, e))?;
    let fp = hasher.finalize().to_hex().to_string();
    memo.insert(memo_key, fp.clone());
    if let Ok(json) = serde_json::to_string_pretty(&memo) {
        // Atomic, so that two runs sharing the cache never read half a file; a memo that
        // cannot be written only means hashing again next time.
        let tmp = memo_path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &memo_path);
        }
    }
    Ok(fp)
}

/// Size, times, device and inode of a file (git's "stat data"), as one string.
fn file_identity(meta: &std::fs::Metadata) -> String {
    let nanos = |t: std::io::Result<std::time::SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos())
    };
    let mtime = nanos(meta.modified());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let ctime = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
        format!(
            "size={} mtime={mtime} ctime={ctime} dev={} ino={}",
            meta.len(),
            meta.dev(),
            meta.ino()
        )
    }
    #[cfg(not(unix))]
    {
        // Without inodes, the creation time stands in for the file's identity.
        format!(
            "size={} mtime={mtime} created={}",
            meta.len(),
            nanos(meta.created())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_is_never_taken_for_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.bin");
        std::fs::write(&path, [1u8; 64]).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let mtime = before.modified().unwrap();
        let id = file_identity(&before);
        // The kernel's timestamps may be as coarse as a scheduler tick.
        std::thread::sleep(std::time::Duration::from_millis(30));

        // Rewritten in place, same size, mtime restored (as `touch -r` would): ctime moved.
        std::fs::write(&path, [2u8; 64]).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let rewritten = std::fs::metadata(&path).unwrap();
        assert_eq!(rewritten.len(), before.len());
        assert_eq!(rewritten.modified().unwrap(), mtime);
        assert_ne!(file_identity(&rewritten), id);

        // Replaced by another file renamed over it: new inode.
        let other = dir.path().join("new.bin");
        std::fs::write(&other, [3u8; 64]).unwrap();
        let f = std::fs::File::options().write(true).open(&other).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(file_identity(&std::fs::metadata(&path).unwrap()), id);
        assert_eq!(
            file_identity(&std::fs::metadata(&path).unwrap()),
            file_identity(&std::fs::metadata(&path).unwrap())
        );
    }
}
