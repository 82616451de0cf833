//! Links OpenBLAS for the CPU engine's large matrix products when the system has it
//! (Debian: `apt-get install libopenblas-dev`); otherwise the pure-Rust `gemm` crate does all
//! of them. `BIOMEDCLIP_BLAS=none` forces the pure-Rust build.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(openblas)");
    println!("cargo:rerun-if-env-changed=BIOMEDCLIP_BLAS");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var("BIOMEDCLIP_BLAS").is_ok_and(|v| v == "none") {
        return;
    }
    let Ok(out) = Command::new("pkg-config")
        .args(["--libs", "openblas"])
        .output()
    else {
        return;
    };
    if !out.status.success() {
        return;
    }
    for flag in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        }
    }
    println!("cargo:rustc-cfg=openblas");
}
