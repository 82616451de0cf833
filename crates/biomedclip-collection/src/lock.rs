//! One writer per collection shard: an exclusive `flock` on a lock file, held for the whole
//! run. The kernel drops it when the process ends however it ends (`kill -9` included), so a
//! crashed writer never leaves a stale lock behind; the file records who holds it, for the
//! message the next writer gets.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

/// Opens (creating) a lock file without truncating the holder's note.
fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

impl Lock {
    /// Takes the lock at `path` for `what` (`shared`: with other shared holders, as shard
    /// writers share a collection), or fails at once naming the holder.
    pub fn acquire(path: &Path, what: &str, shared: bool) -> Result<Lock> {
        let mut file = open(path)?;
        let taken = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match taken {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    what: what.to_string(),
                    holder: if holder.is_empty() {
                        "unknown process".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
        if shared {
            // Shared holders do not overwrite one another's note.
            return Ok(Lock::held(file, path));
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let note = format!("pid {} on {}", std::process::id(), host.trim());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(|e| Error::io(path, e))?;
        Ok(Lock::held(file, path))
    }

    /// Waits for the lock at `path` (for short sections many writers share).
    pub fn wait(path: &Path) -> Result<Lock> {
        let file = open(path)?;
        file.lock().map_err(|e| Error::io(path, e))?;
        Ok(Lock::held(file, path))
    }

    fn held(file: File, path: &Path) -> Lock {
        Lock {
            _file: file,
            path: path.to_path_buf(),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
