//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Each target hands outside bytes to one of biomedclip's public entry points; an `Err` is
//! a correct answer, a panic, abort, hang or runaway allocation is a bug.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use biomedclip::checkpoint::config::{BertJsonConfig, ModelDims, OpenClipConfig, PreprocessCfg};
use biomedclip::checkpoint::Weights;
use biomedclip::image::decode::{decode_frame, is_dicom, Decoded};
use biomedclip::image::preprocess::Preprocessor;
use biomedclip::image::Limits;

/// Decoded images with more pixels than this are not preprocessed (preprocessing reads every
/// pixel; bigger images would only make the run slow).
pub const MAX_PREPROCESS_PIXELS: usize = 1 << 22;

/// The decoders' limits while fuzzing: the library's default pixel limit (Pillow's, a
/// quarter of a billion pixels) lets a few header bytes ask for gigabytes, which is by design
/// but would trip the fuzzer's RSS limit; 16 Mpx keeps a decoded image under 64 MiB.
pub fn fuzz_limits() -> Limits {
    Limits {
        max_pixels: 1 << 24,
        ..Limits::default()
    }
}

/// The fixtures directory of the library's tests.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/biomedclip/tests/fixtures")
}

/// The open_clip preprocessing at 224 px with open_clip's mean/std (`PreprocessCfg::default`).
pub fn preprocessor() -> &'static Preprocessor {
    static P: OnceLock<Preprocessor> = OnceLock::new();
    P.get_or_init(|| Preprocessor::new(&PreprocessCfg::default(), 224))
}

/// Known bugs to step around while fuzzing, so that a run keeps finding new ones:
/// `BIOMEDCLIP_FUZZ_SKIP=png8,dicom-len` (comma-separated). Each is described in README.md, "Findings";
/// remove it from the list once the library is fixed.
pub fn skip(bug: &str) -> bool {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("BIOMEDCLIP_FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|s| s == bug)
}

/// Finding 1: an 8-bit grayscale or palette PNG overflows `(1u16 << 8) as u8 - 1` in
/// `decode_png`'s `unpack` (a panic with overflow checks on).
fn is_png8_gray_or_palette(data: &[u8]) -> bool {
    data.starts_with(b"\x89PNG\r\n\x1a\n")
        && data.get(12..16) == Some(b"IHDR")
        && data.get(24) == Some(&8)
        && matches!(data.get(25), Some(0 | 3))
}

/// Finding 2: dicom-rs (`dicom-parser`'s `read_value_ob`) allocates and zero-fills an
/// element's declared length before reading it, so a few bytes claiming a 4 GB OB value cost
/// gigabytes and seconds. A rough pre-scan: any explicit-VR long-form header (`OB`, `OW`,
/// `UN`, ... then two zero bytes) whose defined length runs past the end of the input.
fn has_dicom_length_past_end(data: &[u8]) -> bool {
    const LONG_VRS: [&[u8; 2]; 12] = [
        b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR", b"SV",
    ];
    (0..data.len().saturating_sub(8)).any(|i| {
        let vr = &data[i..i + 2];
        if !LONG_VRS.iter().any(|v| v.as_slice() == vr) || data[i + 2..i + 4] != [0, 0] {
            return false;
        }
        let len = u32::from_le_bytes([data[i + 4], data[i + 5], data[i + 6], data[i + 7]]);
        len != u32::MAX && len as usize > data.len() - (i + 8)
    })
}

/// Decodes `data` as an image file and, when it decodes to a reasonably sized image,
/// preprocesses it as the model would.
pub fn decode_and_preprocess(data: &[u8]) {
    let name = Path::new("fuzz");
    if skip("png8") && is_png8_gray_or_palette(data) {
        return;
    }
    if skip("dicom-len") && is_dicom(data) && has_dicom_length_past_end(data) {
        return;
    }
    let Ok(decoded) = decode_frame(data, name, None, None, &fuzz_limits()) else {
        return;
    };
    preprocess(&decoded, name);
}

/// Preprocesses a decoded image unless it is huge.
pub fn preprocess(decoded: &Decoded, name: &Path) {
    let pixels = decoded.width.saturating_mul(decoded.height);
    if pixels > MAX_PREPROCESS_PIXELS {
        return;
    }
    if let Ok(v) = preprocessor().process_decoded(decoded, name) {
        assert_eq!(v.len(), 3 * 224 * 224, "preprocessed tensor has the wrong size");
    }
}

/// A file named `file_name` in a directory of this process's own under the temp directory
/// (`TMPDIR`; fuzz/run.sh points it at /dev/shm when it can).
pub fn scratch_file(file_name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("biomedclip-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir
    });
    dir.join(file_name)
}

/// Writes `data` to the scratch file `file_name` and returns its path.
pub fn write_scratch(file_name: &str, data: &[u8]) -> PathBuf {
    let path = scratch_file(file_name);
    std::fs::write(&path, data).expect("writing the scratch file");
    path
}

/// The tiny test model's `open_clip_config.json`, for [`ModelDims::infer`].
fn tiny_config() -> &'static (OpenClipConfig, PathBuf) {
    static CFG: OnceLock<(OpenClipConfig, PathBuf)> = OnceLock::new();
    CFG.get_or_init(|| {
        let path = fixtures().join("tiny-model/open_clip_config.json");
        let cfg = OpenClipConfig::from_file(&path).expect("the tiny model's config");
        (cfg, path)
    })
}

/// Most tensors looked at per input.
const MAX_TENSORS: usize = 64;

/// Tensor names and shapes as the underlying readers see them (`Weights` lists no keys).
fn list_tensors(path: &Path, data: &[u8], is_safetensors: bool) -> Vec<(String, Vec<usize>)> {
    if is_safetensors {
        match safetensors::SafeTensors::read_metadata(data) {
            Ok((_, meta)) => meta
                .tensors()
                .into_iter()
                .map(|(k, v)| (k, v.shape.clone()))
                .collect(),
            Err(_) => Vec::new(),
        }
    } else {
        let list = |key: Option<&str>| {
            candle_core::pickle::PthTensors::new(path, key)
                .map(|p| {
                    p.tensor_infos()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.layout.shape().dims().to_vec()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let mut v = list(None);
        if v.is_empty() {
            v = list(Some("state_dict"));
        }
        v
    }
}

/// Opens `data` as a checkpoint file named `file_name` and reads what it offers.
pub fn fuzz_weights(file_name: &str, data: &[u8]) {
    let path = write_scratch(file_name, data);
    let Ok(weights) = Weights::open(&path) else {
        return;
    };
    assert!(!weights.is_empty(), "an opened checkpoint is never empty");
    let _ = weights.len();
    let mut tensors = list_tensors(&path, data, file_name.ends_with(".safetensors"));
    tensors.sort();
    tensors.truncate(MAX_TENSORS);
    for (key, shape) in &tensors {
        // Weights drops a `module.` prefix when every key has one.
        let key = if weights.contains(key) {
            key.as_str()
        } else {
            match key.strip_prefix("module.") {
                Some(k) if weights.contains(k) => k,
                _ => continue,
            }
        };
        let Ok(found) = weights.shape_of(key, shape.len()) else {
            continue;
        };
        let _ = weights.shape_of(key, shape.len() + 1);
        if let Ok(floats) = weights.get_floats(key, &found) {
            let n: usize = found.iter().product();
            assert_eq!(floats.len(), n, "tensor {key}: wrong number of values");
        }
        let _ = weights.get_scalar(key);
    }
    let (cfg, cfg_path) = tiny_config();
    let _ = ModelDims::infer(cfg, cfg_path, None, &weights);
    let _ = ModelDims::infer(cfg, cfg_path, Some(&BertJsonConfig::default()), &weights);
}
