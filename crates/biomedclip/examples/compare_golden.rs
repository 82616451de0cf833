//! Compares a model directory against golden outputs written by
//! `tools/reference/make_fixtures.py` (e.g. the full-size random-weight checkpoint) and prints
//! the parity figures.
//!
//! ```text
//! cargo run --release --example compare_golden -- /tmp/biomedclip-full [IMAGES_DIR] [--precision int8]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use biomedclip::image::decode::decode;
use biomedclip::{BiomedClip, Device, ModelSource};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    d / (n(a) * n(b))
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut precision = biomedclip::Precision::F32;
    if let Some(i) = args.iter().position(|a| a == "--precision") {
        precision = args.get(i + 1).ok_or("--precision f32|int8")?.parse()?;
        args.drain(i..i + 2);
    }
    let mut args = args.into_iter();
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: compare_golden MODEL_DIR [IMAGES_DIR] [--precision P]")?,
    );
    let images = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images"));
    // The committed fixtures keep the goldens beside the model directory.
    let golden_dir = if dir.join("golden").is_dir() {
        dir.join("golden")
    } else {
        dir.parent().unwrap_or(&dir).join("golden")
    };
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir.join("golden.json"))?)?;
    let t = Instant::now();
    let mut model = BiomedClip::load(&ModelSource::Local(dir.clone()), &Device::Cpu)?;
    // The goldens are the reference's pixels, 16-bit clamp included.
    model.set_rendering(biomedclip::image::render::Rendering::reference());
    model.set_precision(precision)?;
    println!(
        "loaded {} in {:.2} s: {:?}",
        dir.display(),
        t.elapsed().as_secs_f64(),
        model.dims()
    );

    let (mut worst_cos, mut worst_abs, mut ids_ok) = (1.0f64, 0.0f32, 0);
    let texts = golden["texts"].as_array().unwrap();
    let strings: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let embs = model.encode_texts(&strings)?;
    for (t, e) in texts.iter().zip(&embs) {
        let ids: Vec<u32> = t["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        ids_ok += (model.tokenizer().encode(t["text"].as_str().unwrap())? == ids) as usize;
        worst_cos = worst_cos.min(cosine(e, &floats(&t["embedding"])));
        worst_abs = worst_abs.max(max_abs(e, &floats(&t["embedding"])));
    }
    println!(
        "texts: {}/{} token sequences identical; embeddings worst cosine {worst_cos:.8}, max abs diff {worst_abs:.2e}",
        ids_ok,
        texts.len()
    );

    let labels: Vec<String> = golden["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{}{}",
                golden["template"].as_str().unwrap(),
                l.as_str().unwrap()
            )
        })
        .collect();
    let label_emb = model.encode_texts(&labels)?;
    let (mut worst_cos, mut worst_abs, mut worst_p, mut px_same, mut px_total, mut px_max) =
        (1.0f64, 0.0f32, 0.0f32, 0usize, 0usize, 0i32);
    let mut same_top1 = 0;
    let entries = golden["images"].as_array().unwrap();
    let paths: Vec<PathBuf> = entries
        .iter()
        .map(|e| images.join(e["file"].as_str().unwrap()))
        .collect();
    for (e, p) in entries.iter().zip(&paths) {
        let file = e["file"].as_str().unwrap();
        let pix_path = golden_dir.join("pixels").join(format!("{file}.png"));
        let reference = decode(&std::fs::read(&pix_path)?, &pix_path)?.to_image8();
        let ours = model
            .preprocessor()
            .to_rgb8(&decode(&std::fs::read(p)?, p)?)?;
        px_total += ours.data.len();
        for (a, b) in ours.data.iter().zip(&reference.data) {
            px_same += (a == b) as usize;
            px_max = px_max.max((*a as i32 - *b as i32).abs());
        }
    }
    let t = Instant::now();
    let results = model.encode_image_files(&paths);
    let secs = t.elapsed().as_secs_f64();
    for (e, r) in entries.iter().zip(results) {
        let emb = r?;
        worst_cos = worst_cos.min(cosine(&emb, &floats(&e["embedding"])));
        worst_abs = worst_abs.max(max_abs(&emb, &floats(&e["embedding"])));
        let probs = model.probabilities(&emb, &label_emb);
        let want = floats(&e["probabilities"]);
        worst_p = worst_p.max(max_abs(&probs, &want));
        same_top1 += (argmax(&probs) == argmax(&want)) as usize;
    }
    println!(
        "images: {} files, pixels {:.4}% identical (max diff {px_max}); embeddings worst cosine {worst_cos:.8}, \
         max abs diff {worst_abs:.2e}; probabilities max abs diff {worst_p:.2e}, same top-1 {same_top1}/{}; \
         encoded in {secs:.2} s",
        entries.len(),
        100.0 * px_same as f64 / px_total as f64,
        entries.len(),
    );
    Ok(())
}
