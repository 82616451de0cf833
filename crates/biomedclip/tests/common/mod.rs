//! Shared helpers: the committed fixtures and their golden outputs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use biomedclip::checkpoint::source::ModelFiles;
use biomedclip::image::decode::decode;
use biomedclip::image::resample::Image8;
use biomedclip::{BiomedClip, Device};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model_dir() -> PathBuf {
    fixtures().join("tiny-model")
}

pub fn golden() -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden/golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The tiny model with the given weights and tokenizer file names.
pub fn files(weights: &str, tokenizer: &str) -> ModelFiles {
    let dir = model_dir();
    ModelFiles {
        config: dir.join("open_clip_config.json"),
        weights: dir.join(weights),
        tokenizer: dir.join(tokenizer),
        text_config: Some(dir.join("config.json")),
    }
}

/// The model with the reference's rendering of 16-bit images (the goldens come from it).
pub fn load(weights: &str, tokenizer: &str) -> BiomedClip {
    let mut model = BiomedClip::from_files(&files(weights, tokenizer), &Device::Cpu).unwrap();
    model.set_rendering(biomedclip::image::render::Rendering::reference());
    model
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts the engine issue's embedding tolerances: cosine >= 0.99999, max |diff| <= 1e-4.
pub fn assert_embedding_close(what: &str, ours: &[f32], reference: &[f32]) {
    let cos = cosine(ours, reference);
    let diff = max_abs_diff(ours, reference);
    assert!(
        cos >= 0.99999 && diff <= 1e-4,
        "{what}: cosine {cos:.7}, max abs diff {diff:.2e}"
    );
}

/// The model card's prompts, `template + label`, as the goldens used them.
pub fn prompts(g: &Value) -> Vec<String> {
    g["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{}{}", g["template"].as_str().unwrap(), l.as_str().unwrap()))
        .collect()
}

/// The golden texts, in order.
pub fn golden_texts(g: &Value) -> Vec<&str> {
    g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect()
}

/// The reference's preprocessed pixels of a golden image.
pub fn golden_pixels(file: &str) -> Image8 {
    let path = fixtures().join("golden/pixels").join(format!("{file}.png"));
    let bytes = std::fs::read(&path).unwrap();
    let d = decode(&bytes, &path).unwrap();
    let img = d.to_image8();
    assert_eq!(img.channels, 3, "{file}");
    img
}

/// The model's input for a golden image entry: the reference's pixels, normalised.
pub fn golden_input(model: &biomedclip::BiomedClip, entry: &Value) -> Vec<f32> {
    model
        .preprocessor()
        .normalize(&golden_pixels(entry["file"].as_str().unwrap()))
}
