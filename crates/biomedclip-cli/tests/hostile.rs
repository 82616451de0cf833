//! Hostile inputs through the binary: each is refused with an error naming the input and the
//! reason, the rest of the batch still runs, and the worst cases stay within 1.5 GiB of
//! address space (`prlimit --as`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fixtures, run};

/// Address space allowed to the runs that would exhaust memory without the limits.
const ADDRESS_SPACE: u64 = 1536 << 20;

fn model() -> String {
    fixtures().join("tiny-model").to_str().unwrap().to_string()
}

fn image(name: &str) -> String {
    fixtures()
        .join("images")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Runs the binary under `prlimit --as` where the tool exists (else plainly).
fn run_limited(args: &[&str]) -> Output {
    let has_prlimit = Command::new("prlimit").arg("--version").output().is_ok();
    if !has_prlimit {
        return run(args);
    }
    Command::new("prlimit")
        .arg(format!("--as={ADDRESS_SPACE}"))
        .arg(env!("CARGO_BIN_EXE_biomedclip"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The image names classify printed results for (JSON output).
fn classified(out: &Output) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(out)));
    json.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let p = r["image"].as_str().unwrap();
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn classify(images: &[&str]) -> Vec<String> {
    let m = model();
    let mut args = vec![
        "classify", "--model", &m, "--json", "--label", "a", "--label", "b",
    ];
    args.extend(images);
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn memory_bombs_fail_alone_within_the_address_space_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 1 x 1,000,000 grey PNG (about 1 KB): the resize asked 4.5 GB before the crop-only resize.
    let strip = dir.path().join("strip.png");
    image::save_buffer(
        &strip,
        &vec![128u8; 1_000_000],
        1,
        1_000_000,
        image::ColorType::L8,
    )
    .unwrap();
    // 1 x 100,000 RGB PNG: 15 GB before.
    let rgb = dir.path().join("rgbstrip.png");
    image::save_buffer(
        &rgb,
        &vec![7u8; 300_000],
        1,
        100_000,
        image::ColorType::Rgb8,
    )
    .unwrap();
    // A JPEG whose header claims 60000 x 60000 (10.8 GB of RGB).
    let mut jpeg = std::fs::read(image("ihc.jpg")).unwrap();
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let bomb = dir.path().join("bomb.jpg");
    std::fs::write(&bomb, &jpeg).unwrap();

    let args = classify(&[
        &s(&bomb),
        &s(&strip),
        "/dev/zero",
        &s(&rgb),
        &image("gray.png"),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_limited(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bomb.jpg") && err.contains("3600000000 pixels"),
        "{err}"
    );
    assert!(
        err.contains("/dev/zero") && err.contains("character device"),
        "{err}"
    );
    assert!(err.contains("2 of 5 images failed"), "{err}");
    assert_eq!(classified(&out), ["strip.png", "rgbstrip.png", "gray.png"]);
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let args = classify(&[&s(&fifo), &image("gray.png")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pipe.png") && err.contains("a FIFO"), "{err}");
    assert_eq!(classified(&out), ["gray.png"]);
}

#[test]
fn absurd_thread_counts_are_refused() {
    let m = model();
    let out = run(&["embed", "--model", &m, "--threads", "100000", "--text", "x"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("--threads 100000") && err.contains("per core"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn bad_folder_entries_are_reported_and_the_rest_classified() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(image("gray.png"), data.join("a.png")).unwrap();
    std::os::unix::fs::symlink(data.join("gone.png"), data.join("b.png")).unwrap();
    std::os::unix::fs::symlink(&data, data.join("loop")).unwrap();
    std::fs::copy(image("ihc.jpg"), data.join("c.jpg")).unwrap();
    // A name that is not UTF-8 is still an image to classify.
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
        std::fs::copy(image("small.png"), data.join(name)).unwrap();
    }
    let args = classify(&[&s(&data)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("b.png: a dangling link"), "{err}");
    assert!(err.contains("loop: a link loop"), "{err}");
    assert!(err.contains("2 of 5 images failed"), "{err}");
    assert_eq!(classified(&out), ["a.png", "c.jpg", "caf\u{fffd}.png"]);
}

#[cfg(unix)]
#[test]
fn a_non_utf8_file_argument_is_read() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"\xffscan.png");
    let path = dir.path().join(name);
    std::fs::copy(image("gray.png"), &path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_biomedclip"))
        .args(["embed", "--model", &model(), "--image"])
        .arg(&path)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// A model directory with the tiny model's files copied (not linked).
fn model_copy(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir(&m).unwrap();
    for e in std::fs::read_dir(fixtures().join("tiny-model")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    std::fs::remove_file(m.join("open_clip_model.safetensors")).unwrap();
    m
}

#[test]
fn convert_never_destroys_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = model_copy(dir.path());
    let bin = m.join("open_clip_pytorch_model.bin");
    let vocab = m.join("vocab.txt");
    let vocab_before = std::fs::read(&vocab).unwrap();
    let bin_before = std::fs::read(&bin).unwrap();
    let ms = s(&m);

    // Over another file: refused without --force, the file intact.
    let out = run(&["convert", "--model", &ms, "--output", &s(&vocab)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exists; pass --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&vocab).unwrap(), vocab_before);

    // Over its own input: refused even with --force.
    let out = run(&["convert", "--model", &ms, "--output", &s(&bin), "--force"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is the checkpoint being converted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&bin).unwrap(), bin_before);

    // Over a device: refused.
    let out = run(&[
        "convert",
        "--model",
        &ms,
        "--output",
        "/dev/null",
        "--force",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );

    // The default destination, then again: the second run has nothing to do unless forced.
    let out = run(&["convert", "--model", &ms]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = m.join("open_clip_model.safetensors");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&st).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{mode:o}");
    }
    let out = run(&["convert", "--model", &ms]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("already exists; nothing to do"),
        "{}",
        stderr(&out)
    );
    // --output is honoured even though the model now has a safetensors file.
    let elsewhere = dir.path().join("copy.safetensors");
    let out = run(&["convert", "--model", &ms, "--output", &s(&elsewhere)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        std::fs::read(&st).unwrap()
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&m)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn a_one_class_zero_shot_eval_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("data/tumour");
    std::fs::create_dir_all(&class).unwrap();
    std::fs::copy(image("gray.png"), class.join("a.png")).unwrap();
    let m = model();
    let data = s(&dir.path().join("data"));
    let out = run(&["eval", "zero-shot", "--model", &m, "--no-cache", &data]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("single class (tumour)"), "{err}");
}
