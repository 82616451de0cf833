//! Passes side by side (one per worker thread, each pass's work on its own thread) against the
//! reference goldens, on a two-thread pool of their own.

mod common;

use common::*;
use serde_json::Value;

/// Large enough inputs run as several passes side by side, one per worker thread (each pass's
/// products on its own thread); every embedding must still match the reference's.
#[test]
fn passes_side_by_side_match_the_reference() {
    let g = golden();
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let workers = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // Texts: the golden ones over and over, past the tokens that start side-by-side passes.
    let entries = g["texts"].as_array().unwrap();
    let mut texts = Vec::new();
    let mut tokens = 0;
    while tokens < 4 * biomedclip::TEXT_TOKENS {
        let e = &entries[texts.len() % entries.len()];
        let text = e["text"].as_str().unwrap();
        tokens += model.tokenizer().encode(text).unwrap().len();
        texts.push((text, e));
    }
    let only: Vec<&str> = texts.iter().map(|(t, _)| *t).collect();
    let embs = workers.install(|| model.encode_texts(&only)).unwrap();
    for ((t, e), ours) in texts.iter().zip(&embs) {
        assert_embedding_close(&format!("{t:?}"), ours, &floats(&e["embedding"]));
    }
    // Images: a full batch of the golden pixels (split in two passes of four).
    let entries = g["images"].as_array().unwrap();
    let batch: Vec<&Value> = entries.iter().cycle().take(8).collect();
    let pixels: Vec<Vec<f32>> = batch.iter().map(|e| golden_input(&model, e)).collect();
    let embs = workers.install(|| model.encode_pixels(&pixels)).unwrap();
    for (e, ours) in batch.iter().zip(&embs) {
        assert_embedding_close(&e["file"].to_string(), ours, &floats(&e["embedding"]));
    }
}
