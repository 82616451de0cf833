//! `biomedclip classify`: labels ranked by zero-shot probability for each image.

use std::process::ExitCode;

use anyhow::Result;
use biomedclip::scores::ranking;
use serde::Serialize;

use crate::args::Classify;
use crate::embed::progress_bar;

#[derive(Serialize)]
struct Score<'a> {
    label: &'a str,
    probability: f32,
}

#[derive(Serialize)]
struct ImageScores<'a> {
    image: String,
    scores: Vec<Score<'a>>,
}

/// Runs the classification and prints the result.
pub fn run(args: Classify) -> Result<ExitCode> {
    let mut model = args.common.load_model()?;
    model.set_rendering(args.image_options.rendering);
    let prompts: Vec<String> = args
        .labels
        .iter()
        .map(|l| format!("{}{l}", args.template))
        .collect();
    let text = model.encode_texts(&prompts)?;
    let bar = progress_bar(args.images.len(), "images");
    let embeddings = model.encode_image_files_with_progress(&args.images, |n| bar.inc(n as u64));
    bar.finish_and_clear();

    let mut failed = 0;
    let mut results = Vec::new();
    for (path, emb) in args.images.iter().zip(embeddings) {
        let emb = match emb {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let probs = model.probabilities(&emb, &text);
        let k = args
            .top_k
            .unwrap_or(args.labels.len())
            .min(args.labels.len());
        let scores = ranking(&probs)
            .into_iter()
            .take(k)
            .map(|i| Score {
                label: &args.labels[i],
                probability: probs[i],
            })
            .collect();
        results.push(ImageScores {
            image: path.display().to_string(),
            scores,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            let name = std::path::Path::new(&r.image)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.image.clone());
            println!("{name}:");
            for s in &r.scores {
                println!("{}: {}", s.label, s.probability);
            }
            println!();
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} images failed", args.images.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
