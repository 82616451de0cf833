//! `Precision::Int8` and `Precision::Bf16` against `f32` on the committed fixtures (every
//! golden image, the synthetic worst cases among them: flat, blocky, line art, text, noise;
//! the evaluation dataset; the readable DICOM files): every image embedding within the
//! precision's cosine bound of `f32` and every zero-shot top-1 label unchanged, with texts
//! untouched.

mod common;

use biomedclip::Precision;
use common::{cosine, fixtures, golden, load, prompts};

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// The golden images and the evaluation dataset's images.
fn image_paths() -> Vec<std::path::PathBuf> {
    let g = golden();
    let mut paths: Vec<_> = g["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| fixtures().join("images").join(e["file"].as_str().unwrap()))
        .collect();
    let dataset = fixtures().join("dataset/images");
    for class in std::fs::read_dir(&dataset).unwrap() {
        for file in std::fs::read_dir(class.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if biomedclip::image::input::looks_like_image(&path) {
                paths.push(path);
            }
        }
    }
    // The DICOM fixtures the decoders read (JPEG 12-bit, JPEG-LS and one malformed file are
    // refused, as tests/dicom.rs checks).
    let exact = load("open_clip_model.safetensors", "tokenizer.json");
    let mut dicoms: Vec<_> = std::fs::read_dir(fixtures().join("dicom"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dicoms.sort();
    let readable = exact.encode_image_files(&dicoms);
    let before = paths.len();
    paths.extend(
        dicoms
            .into_iter()
            .zip(readable)
            .filter_map(|(p, r)| r.is_ok().then_some(p)),
    );
    assert!(
        paths.len() - before >= 10,
        "{} DICOM files",
        paths.len() - before
    );
    paths.sort();
    paths
}

/// Every image embedding of `precision` within cosine `bound` of `f32`, the same top-1 label,
/// the texts bit for bit `f32`. Returns the worst cosine.
fn embeddings_and_labels_match_f32(precision: Precision, bound: f64) -> f64 {
    let g = golden();
    let exact = load("open_clip_model.safetensors", "tokenizer.json");
    let mut reduced = load("open_clip_model.safetensors", "tokenizer.json");
    reduced.set_precision(precision).unwrap();
    assert_eq!(reduced.precision(), precision);

    let labels = prompts(&g);
    let text = exact.encode_texts(&labels).unwrap();
    assert_eq!(
        reduced.encode_texts(&labels).unwrap(),
        text,
        "texts stay f32"
    );

    let paths = image_paths();
    assert!(paths.len() >= 50, "{} images", paths.len());
    let want = exact.encode_image_files(&paths);
    let got = reduced.encode_image_files(&paths);
    // Loaded at the precision: the same weights, never laid out in f32, the same bits.
    let mut direct = biomedclip::BiomedClip::from_files_at(
        &common::files("open_clip_model.safetensors", "tokenizer.json"),
        &biomedclip::Device::Cpu,
        precision,
    )
    .unwrap();
    direct.set_rendering(biomedclip::image::render::Rendering::reference());
    assert_eq!(direct.precision(), precision);
    for (path, (a, b)) in paths
        .iter()
        .zip(direct.encode_image_files(&paths).iter().zip(&got))
    {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        assert_eq!(a, b, "{}: loaded at {}", path.display(), precision.name());
    }
    let mut worst = 1.0f64;
    for ((path, w), o) in paths.iter().zip(want).zip(got) {
        let (w, o) = (w.unwrap(), o.unwrap());
        let cos = cosine(&w, &o);
        worst = worst.min(cos);
        assert!(cos >= bound, "{}: cosine {cos:.6}", path.display());
        let (pw, po) = (
            exact.probabilities(&w, &text),
            reduced.probabilities(&o, &text),
        );
        assert_eq!(argmax(&pw), argmax(&po), "{}: top-1 label", path.display());
        // Not bit-identical: the reduced precision really is in use.
        assert_ne!(w, o, "{}", path.display());
    }
    eprintln!(
        "{}: {} images, worst cosine {worst:.6}",
        precision.name(),
        paths.len()
    );
    worst
}

#[test]
fn int8_embeddings_and_labels_match_f32() {
    // The documented bound (docs/engine.md); the attention projections run in bf16 for it.
    embeddings_and_labels_match_f32(Precision::Int8, 0.9995);
}

#[test]
fn bf16_embeddings_and_labels_match_f32() {
    // bf16 keeps 8 significant bits where int8 keeps about 7 over a row's range: closer.
    embeddings_and_labels_match_f32(Precision::Bf16, 0.9999);
}

#[test]
fn reduced_precisions_are_refused_after_the_fact_and_on_candle() {
    let mut int8 = load("open_clip_model.safetensors", "tokenizer.json");
    int8.set_precision(Precision::Int8).unwrap();
    let err = int8.set_precision(Precision::F32).unwrap_err().to_string();
    assert!(err.contains("load it again"), "{err}");
    let err = int8.set_precision(Precision::Bf16).unwrap_err().to_string();
    assert!(err.contains("int8 model cannot change to bf16"), "{err}");

    let files = common::files("open_clip_model.safetensors", "tokenizer.json");
    let mut candle = biomedclip::BiomedClip::from_files_on_candle_cpu(&files).unwrap();
    let err = candle
        .set_precision(Precision::Int8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CPU engine"), "{err}");
    let err = candle
        .set_precision(Precision::Bf16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bf16 precision needs the CPU engine"), "{err}");
    assert!("int4".parse::<Precision>().is_err());
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
}
