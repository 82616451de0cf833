//! Throughput of the engine on one model, printed as JSON lines for `tools/bench/bench.py`.
//!
//! ```text
//! cargo run --release --example bench -- MODEL_DIR [--seconds S] [--batches 1,8,32] [--texts FILE] [--precision int8] [--no-text]
//! ```
//! Images are random normalised pixels (speed does not depend on values); texts are the model
//! card's nine prompts and, with `--texts`, one caption per line of FILE.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use biomedclip::{BiomedClip, Device, ModelSource};

const PROMPTS: [&str; 9] = [
    "adenocarcinoma histopathology",
    "brain MRI",
    "covid line chart",
    "squamous cell carcinoma histopathology",
    "immunohistochemistry histopathology",
    "bone X-ray",
    "chest X-ray",
    "pie chart",
    "hematoxylin and eosin histopathology",
];

/// Runs `f` (which processes `items` inputs) repeatedly for at least `seconds` after one
/// warm-up call and returns inputs per second.
fn rate(seconds: f64, items: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0;
    while n == 0 || start.elapsed() < Duration::from_secs_f64(seconds) {
        f();
        n += items;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: bench MODEL_DIR [--seconds S] [--batches 1,8,32] [--texts FILE]")?,
    );
    let (mut seconds, mut batches, mut texts_file) = (8.0, vec![1usize, 8, 32], None);
    let mut precision = biomedclip::Precision::F32;
    let mut with_text = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().ok_or("--seconds S")?.parse()?,
            "--batches" => {
                batches = args
                    .next()
                    .ok_or("--batches LIST")?
                    .split(',')
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?
            }
            "--no-text" => with_text = false,
            "--precision" => precision = args.next().ok_or("--precision P")?.parse()?,
            "--texts" => texts_file = Some(PathBuf::from(args.next().ok_or("--texts FILE")?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut model = BiomedClip::load(&ModelSource::Local(dir), &Device::Cpu)?;
    model.set_precision(precision)?;
    let s = model.preprocessor().size();
    let mut seed = 1u32;
    let mut noise = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0
    };
    for &b in &batches {
        let images: Vec<Vec<f32>> = (0..b)
            .map(|_| (0..3 * s * s).map(|_| noise()).collect())
            .collect();
        let r = rate(seconds, b, || {
            model.encode_pixels(&images).expect("encode");
        });
        println!("{{\"work\": \"image_batch_{b}\", \"per_second\": {r:.3}}}");
    }
    if !with_text {
        return Ok(());
    }
    let prompts: Vec<String> = PROMPTS
        .iter()
        .map(|l| format!("this is a photo of {l}"))
        .collect();
    let r = rate(seconds, prompts.len(), || {
        model.encode_texts(&prompts).expect("encode");
    });
    println!("{{\"work\": \"text_prompts\", \"per_second\": {r:.3}}}");
    if let Some(f) = texts_file {
        let captions: Vec<String> = std::fs::read_to_string(&f)?
            .lines()
            .map(String::from)
            .collect();
        let r = rate(seconds, captions.len(), || {
            model.encode_texts(&captions).expect("encode");
        });
        println!("{{\"work\": \"text_captions\", \"per_second\": {r:.3}}}");
    }
    Ok(())
}
