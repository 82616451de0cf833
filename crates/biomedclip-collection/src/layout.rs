//! Where each file of a collection lives: clip-retrieval's layout (`img_emb/img_emb_{n}.npy`,
//! `text_emb/text_emb_{n}.npy`, `metadata/metadata_{n}.parquet`), plus the manifest, the
//! locks and the HNSW index. Part `n` is the three files with the same `n`; its metadata file
//! is written last, so a part exists exactly when its metadata file does.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// The paths of one collection.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The collection at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The collection's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `manifest.json`.
    pub fn manifest(&self) -> PathBuf {
        self.root.join(MANIFEST)
    }

    /// Image embeddings of part `n`.
    pub fn img_emb(&self, n: u32) -> PathBuf {
        self.root.join("img_emb").join(format!("img_emb_{n}.npy"))
    }

    /// Caption embeddings of part `n`.
    pub fn text_emb(&self, n: u32) -> PathBuf {
        self.root.join("text_emb").join(format!("text_emb_{n}.npy"))
    }

    /// Metadata of part `n` (written last: its presence commits the part).
    pub fn metadata(&self, n: u32) -> PathBuf {
        self.root
            .join("metadata")
            .join(format!("metadata_{n}.parquet"))
    }

    /// The folder of lock files.
    pub fn locks(&self) -> PathBuf {
        self.root.join(".locks")
    }

    /// The HNSW index over the image embeddings, and its description.
    pub fn ann(&self) -> (PathBuf, PathBuf) {
        let dir = self.root.join("ann");
        (dir.join("img_emb.usearch"), dir.join("img_emb.json"))
    }

    /// Creates the folders a writer needs.
    pub fn create_dirs(&self, captions: bool) -> Result<()> {
        let mut dirs = vec![
            self.root.join("img_emb"),
            self.root.join("metadata"),
            self.locks(),
        ];
        if captions {
            dirs.push(self.root.join("text_emb"));
        }
        for dir in dirs {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    /// The numbers of the committed parts (those with a metadata file), ascending.
    pub fn committed_parts(&self) -> Result<Vec<u32>> {
        let mut parts = numbered(&self.root.join("metadata"), "metadata_", ".parquet")?;
        parts.sort_unstable();
        Ok(parts)
    }

    /// Numbers of `img_emb`/`text_emb` files, committed or not.
    pub fn embedding_files(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for (dir, prefix) in [("img_emb", "img_emb_"), ("text_emb", "text_emb_")] {
            let dir = self.root.join(dir);
            for n in numbered(&dir, prefix, ".npy")? {
                out.push(dir.join(format!("{prefix}{n}.npy")));
            }
        }
        Ok(out)
    }

    /// Temporary files left in the part folders by writers that were stopped.
    pub fn temp_files(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for dir in ["img_emb", "text_emb", "metadata"] {
            let dir = self.root.join(dir);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp-") {
                    out.push(entry.path());
                }
            }
        }
        Ok(out)
    }
}

/// The part number in a part file's name (`img_emb_12.npy` -> 12), if it is one.
pub fn part_number(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_prefix('.').unwrap_or(name);
    let digits: String = name
        .split('_')
        .nth(
            if name.starts_with("img_emb") || name.starts_with("text_emb") {
                2
            } else {
                1
            },
        )?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<u32>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(suffix))
            .and_then(|s| s.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    Ok(out)
}

/// Which share of the inputs one writer takes: `--shard K/N` (1-based K).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// The whole collection.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether part `n` is this shard's: shard K writes parts K-1, K-1+N, K-1+2N, ... so
    /// writers never pick the same number.
    pub fn owns_part(&self, n: u32) -> bool {
        n % self.count == self.index
    }

    /// The `j`-th part number of this shard.
    pub fn part(&self, j: u32) -> u32 {
        self.index + j * self.count
    }

    /// Whether an input is this shard's: by a hash of its path, so the split is the same on
    /// every machine and in every run, whatever order the files are listed in.
    pub fn owns_item(&self, path: &str) -> bool {
        if self.count == 1 {
            return true;
        }
        let h = blake3::hash(path.as_bytes());
        let v = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        (v % u64::from(self.count)) as u32 == self.index
    }

    /// The lock file's name.
    pub fn lock_name(&self) -> String {
        format!("shard-{}-of-{}.lock", self.index + 1, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "--shard {s:?}: expected K/N with 1 <= K <= N (e.g. 2/8: the second of eight)"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard {
            index: k - 1,
            count: n,
        })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}
