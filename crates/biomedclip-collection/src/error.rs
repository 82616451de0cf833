//! What can go wrong with a collection, each error naming the file, column or option at fault.

use std::path::PathBuf;

/// A collection error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file of the collection is not what it should be (truncated, wrong shape, wrong type).
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process writes the same collection (or the same shard of it).
    #[error("{}: {what} is being written by another process ({holder}); wait for it to finish or stop it", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The collection or shard.
        what: String,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The collection was made by another model (or at another precision or storage type).
    #[error("{}: {reason}", path.display())]
    Mismatch {
        /// The collection's manifest.
        path: PathBuf,
        /// Both sides, named.
        reason: String,
    },
    /// A bad option or input list.
    #[error("{0}")]
    Invalid(String),
    /// A bad `--where` filter.
    #[error("--where {expr:?}: {reason}")]
    Filter {
        /// The filter as given.
        expr: String,
        /// What is wrong with it, where.
        reason: String,
    },
    /// The database refused or failed (`--store postgres://...`).
    #[error("{target}: {reason}")]
    Database {
        /// The database and collection, without credentials.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] biomedclip::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt file.
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl Error {
    /// A database error on `target`, with the server's message and detail when it sent them.
    pub fn database(target: &str, e: &postgres::Error) -> Self {
        let reason = match e.as_db_error() {
            Some(db) => {
                let mut r = format!("{}: {}", db.severity(), db.message());
                if let Some(detail) = db.detail() {
                    r.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = db.hint() {
                    r.push_str(&format!("; hint: {hint}"));
                }
                r
            }
            None => e.to_string(),
        };
        Error::Database {
            target: target.to_string(),
            reason,
        }
    }
}

/// A collection result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
