//! Text-clean throughput: `ftfy.fix_text` alone and open_clip's whole clean over the
//! differential corpus, and the clean's share of the text tower's time on a captions file.
//! Run by `tools/bench/clean.py`, which times Python's clean on the same strings.
//!
//! ```text
//! clean_bench CORPUS.jsonl.gz [--seconds S] [--captions FILE [--model DIR]]
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use biomedclip::text::clean::clean_text;
use biomedclip::text::ftfy::fix_text;
use biomedclip::{BiomedClip, Device, ModelSource};

/// Items per second of `f` (which handles `items` items per call), repeated for `seconds`.
fn rate(seconds: f64, items: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0usize;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        f();
        calls += 1;
    }
    (calls * items) as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: clean_bench CORPUS.jsonl.gz [--seconds S] [--captions FILE [--model DIR]]";
    let corpus = PathBuf::from(args.next().ok_or(usage)?);
    let (mut seconds, mut captions_file, mut model_dir) = (3.0, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().ok_or(usage)?.parse()?,
            "--captions" => captions_file = Some(PathBuf::from(args.next().ok_or(usage)?)),
            "--model" => model_dir = Some(PathBuf::from(args.next().ok_or(usage)?)),
            other => return Err(format!("unknown argument {other}; {usage}").into()),
        }
    }
    let reader = BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(&corpus)?));
    let mut inputs = Vec::new();
    for line in reader.lines() {
        let record: serde_json::Value = serde_json::from_str(&line?)?;
        inputs.push(
            record["input"]
                .as_str()
                .ok_or("record without input")?
                .to_string(),
        );
    }
    let r = rate(seconds, inputs.len(), || {
        inputs
            .iter()
            .for_each(|s| drop(std::hint::black_box(fix_text(s))));
    });
    println!("{{\"work\": \"ftfy_corpus\", \"per_second\": {r:.1}}}");
    let r = rate(seconds, inputs.len(), || {
        inputs
            .iter()
            .for_each(|s| drop(std::hint::black_box(clean_text(s))));
    });
    println!("{{\"work\": \"clean_corpus\", \"per_second\": {r:.1}}}");
    let Some(file) = captions_file else {
        return Ok(());
    };
    let captions: Vec<String> = std::fs::read_to_string(&file)?
        .lines()
        .map(String::from)
        .collect();
    let clean_rate = rate(seconds, captions.len(), || {
        captions
            .iter()
            .for_each(|s| drop(std::hint::black_box(clean_text(s))));
    });
    println!("{{\"work\": \"clean_captions\", \"per_second\": {clean_rate:.1}}}");
    if let Some(dir) = model_dir {
        let model = BiomedClip::load(&ModelSource::Local(dir), &Device::Cpu)?;
        let text_rate = rate(seconds, captions.len(), || {
            model.encode_texts(&captions).expect("encode");
        });
        println!("{{\"work\": \"text_captions\", \"per_second\": {text_rate:.3}}}");
        let share = text_rate / clean_rate;
        println!("{{\"work\": \"clean_share_of_text_time\", \"fraction\": {share:.6}}}");
    }
    Ok(())
}
