//! Helpers shared by the binary's integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The library crate's committed fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../biomedclip/tests/fixtures")
}

/// Runs the `biomedclip` binary offline.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}
