//! Parity with the open_clip 2.23.0 reference on the committed tiny checkpoint: token ids,
//! preprocessed pixels, embeddings and zero-shot probabilities (goldens written by
//! `tools/reference/make_fixtures.py`).

mod common;

use biomedclip::image::decode::decode;
use common::*;

const WEIGHTS: [&str; 2] = ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"];

#[test]
fn token_ids_are_identical_with_both_tokenizer_files() {
    let g = golden();
    for tokenizer in ["tokenizer.json", "vocab.txt"] {
        let model = load("open_clip_model.safetensors", tokenizer);
        for t in g["texts"].as_array().unwrap() {
            let text = t["text"].as_str().unwrap();
            let expected: Vec<u32> = t["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let ours = model.tokenizer().encode(text).unwrap();
            assert_eq!(ours, expected, "{tokenizer}: {text:?}");
        }
    }
}

#[test]
fn preprocessed_pixels_match_pillow() {
    let g = golden();
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for entry in g["images"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let path = fixtures().join("images").join(file);
        let decoded = decode(&std::fs::read(&path).unwrap(), &path).unwrap();
        let ours = model.preprocessor().to_rgb8(&decoded).unwrap();
        let reference = golden_pixels(file);
        assert_eq!(
            (ours.width, ours.height),
            (reference.width, reference.height)
        );
        let n = ours.data.len();
        let max = ours
            .data
            .iter()
            .zip(&reference.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        let same = ours
            .data
            .iter()
            .zip(&reference.data)
            .filter(|(a, b)| a == b)
            .count();
        let frac = same as f64 / n as f64;
        let line = format!("{file}: max diff {max}, identical {:.4}%", 100.0 * frac);
        if !(max <= 1 && frac >= 0.99) {
            failures.push(line.clone());
        }
        report.push(line);
    }
    println!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "outside tolerance:\n{}",
        failures.join("\n")
    );
}

#[test]
fn normalisation_matches_to_tensor_and_normalize() {
    let g = golden();
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    for entry in g["images"].as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let x = model.preprocessor().normalize(&golden_pixels(file));
        let s = model.preprocessor().size();
        let expected = floats(&entry["normalized_head"]);
        let mut ours = Vec::new();
        for c in 0..3 {
            ours.extend_from_slice(&x[c * s * s + 100 * s..c * s * s + 100 * s + 16]);
        }
        assert!(max_abs_diff(&ours, &expected) <= 1e-6, "{file}");
    }
}

#[test]
fn image_tower_matches_on_reference_pixels() {
    let g = golden();
    for weights in WEIGHTS {
        let model = load(weights, "tokenizer.json");
        let entries = g["images"].as_array().unwrap();
        let pixels: Vec<Vec<f32>> = entries.iter().map(|e| golden_input(&model, e)).collect();
        let embs = model.encode_pixels(&pixels).unwrap();
        for (e, ours) in entries.iter().zip(&embs) {
            let what = format!("{weights}: {}", e["file"]);
            assert_embedding_close(&what, ours, &floats(&e["embedding"]));
        }
    }
}

#[test]
fn images_from_files_match_end_to_end() {
    let g = golden();
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let entries = g["images"].as_array().unwrap();
    let paths: Vec<_> = entries
        .iter()
        .map(|e| fixtures().join("images").join(e["file"].as_str().unwrap()))
        .collect();
    let labels = prompts(&g);
    let text = model.encode_texts(&labels).unwrap();
    for (e, r) in entries.iter().zip(model.encode_image_files(&paths)) {
        let emb = r.unwrap();
        let file = e["file"].as_str().unwrap();
        assert_embedding_close(file, &emb, &floats(&e["embedding"]));
        let probs = model.probabilities(&emb, &text);
        let pdiff = max_abs_diff(&probs, &floats(&e["probabilities"]));
        assert!(pdiff <= 1e-4, "{file}: probability diff {pdiff:.2e}");
    }
}

#[test]
fn text_tower_matches() {
    let g = golden();
    for weights in WEIGHTS {
        let model = load(weights, "tokenizer.json");
        let texts = golden_texts(&g);
        let embs = model.encode_texts(&texts).unwrap();
        for (t, ours) in g["texts"].as_array().unwrap().iter().zip(&embs) {
            let what = format!("{weights}: {:?}", t["text"].as_str().unwrap());
            assert_embedding_close(&what, ours, &floats(&t["embedding"]));
        }
    }
}

#[test]
fn zero_shot_probabilities_match_on_reference_pixels() {
    let g = golden();
    let model = load("open_clip_pytorch_model.bin", "vocab.txt");
    assert!((model.logit_scale() - g["logit_scale"].as_f64().unwrap() as f32).abs() < 1e-4);
    let labels = prompts(&g);
    let text = model.encode_texts(&labels).unwrap();
    for e in g["images"].as_array().unwrap() {
        let file = e["file"].as_str().unwrap();
        let px = model.preprocessor().normalize(&golden_pixels(file));
        let emb = model.encode_pixels(&[px]).unwrap().remove(0);
        let probs = model.probabilities(&emb, &text);
        let diff = max_abs_diff(&probs, &floats(&e["probabilities"]));
        assert!(diff <= 1e-4, "{file}: probability diff {diff:.2e}");
    }
}

#[test]
fn batches_equal_one_at_a_time() {
    let g = golden();
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let texts = golden_texts(&g);
    let batched = model.encode_texts(&texts).unwrap();
    for (t, b) in texts.iter().zip(&batched) {
        let single = model.encode_texts(&[*t]).unwrap().remove(0);
        assert!(max_abs_diff(&single, b) <= 1e-5, "{t:?}");
    }
    let paths: Vec<_> = [
        "rgb_photo.jpg",
        "gray.png",
        "rgba.png",
        "wide.png",
        "small.png",
    ]
    .iter()
    .map(|f| fixtures().join("images").join(f))
    .collect();
    let batched: Vec<Vec<f32>> = model
        .encode_image_files(&paths)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (p, b) in paths.iter().zip(&batched) {
        let single = model.encode_image_files(&[p]).remove(0).unwrap();
        assert!(max_abs_diff(&single, b) <= 1e-5, "{}", p.display());
    }
}

#[test]
fn candle_backend_matches_the_reference_too() {
    let g = golden();
    let model = biomedclip::BiomedClip::from_files_on_candle_cpu(&files(
        "open_clip_model.safetensors",
        "tokenizer.json",
    ))
    .unwrap();
    let texts = golden_texts(&g);
    for (t, ours) in g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(model.encode_texts(&texts).unwrap())
    {
        assert_embedding_close(t["text"].as_str().unwrap(), &ours, &floats(&t["embedding"]));
    }
    for e in g["images"].as_array().unwrap().iter().take(6) {
        let file = e["file"].as_str().unwrap();
        let px = model.preprocessor().normalize(&golden_pixels(file));
        let ours = model.encode_pixels(&[px]).unwrap().remove(0);
        assert_embedding_close(file, &ours, &floats(&e["embedding"]));
    }
}

#[test]
fn converted_checkpoint_loads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("open_clip_model.safetensors");
    let n = biomedclip::checkpoint::convert::bin_to_safetensors(
        &model_dir().join("open_clip_pytorch_model.bin"),
        &dst,
        false,
    )
    .unwrap();
    assert!(n > 40, "{n} tensors");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{mode:o}");
    }
    let mut converted = files("open_clip_model.safetensors", "tokenizer.json");
    converted.weights = dst;
    let a = biomedclip::BiomedClip::from_files(&converted, &biomedclip::Device::Cpu).unwrap();
    let b = load("open_clip_pytorch_model.bin", "tokenizer.json");
    let texts = ["this is a photo of chest X-ray", "ﬁbrosis"];
    assert_eq!(
        a.encode_texts(&texts).unwrap(),
        b.encode_texts(&texts).unwrap()
    );
    let img = [fixtures().join("images/ihc.jpg")];
    assert_eq!(
        a.encode_image_files(&img).remove(0).unwrap(),
        b.encode_image_files(&img).remove(0).unwrap()
    );
}
