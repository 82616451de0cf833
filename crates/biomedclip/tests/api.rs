//! The public API's input kinds and checks: an image given as a file, as its bytes or as
//! decoded RGB pixels gives the same embedding; classification ranks labels like the
//! probabilities it is built from, and refuses labels it cannot score.

mod common;

use biomedclip::image::decode::{decode, Pixels};
use biomedclip::{Error, ImageInput, DEFAULT_TEMPLATE};
use common::*;

#[test]
fn files_bytes_and_rgb_pixels_give_the_same_embedding() {
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let path = fixtures().join("images/rgb_photo.png");
    let bytes = std::fs::read(&path).unwrap();
    let decoded = decode(&bytes, &path).unwrap();
    let Pixels::Rgb(rgb) = &decoded.pixels else {
        panic!("rgb_photo.png decodes to RGB");
    };
    let inputs = [
        ImageInput::path(&path),
        ImageInput::bytes("rgb_photo.png", &bytes),
        ImageInput::rgb8(decoded.width, decoded.height, rgb),
    ];
    let out: Vec<Vec<f32>> = model
        .encode_images(&inputs)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(out[0], out[1], "bytes differ from the file");
    assert_eq!(out[0], out[2], "decoded pixels differ from the file");
}

#[test]
fn a_bad_input_fails_alone_and_is_named() {
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let good = fixtures().join("images/ihc.jpg");
    let short = [0u8; 5];
    let inputs = [
        ImageInput::rgb8(2, 2, &short),
        ImageInput::bytes("upload #2", b"not an image"),
        ImageInput::path(&good),
    ];
    let out = model.encode_images(&inputs);
    let err = out[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("<2x2 RGB buffer>") && err.contains("expected 12"),
        "{err}"
    );
    let err = out[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("upload #2"), "{err}");
    assert_eq!(out[2].as_ref().unwrap().len(), model.embed_dim());
}

#[test]
fn classify_ranks_the_labels_by_their_probabilities() {
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let image = fixtures().join("images/ihc.jpg");
    let labels = [
        "chest X-ray",
        "brain MRI",
        "immunohistochemistry histopathology",
    ];
    let results = model
        .classify(&[ImageInput::path(&image)], &labels, DEFAULT_TEMPLATE)
        .unwrap();
    let ranked = results[0].as_ref().unwrap();

    let prompts: Vec<String> = labels
        .iter()
        .map(|l| format!("{DEFAULT_TEMPLATE}{l}"))
        .collect();
    let texts = model.encode_texts(&prompts).unwrap();
    let embedding = model.encode_image_files(&[&image]).remove(0).unwrap();
    let probs = model.probabilities(&embedding, &texts);
    assert_eq!(ranked.len(), labels.len());
    for pair in ranked.windows(2) {
        assert!(pair[0].probability >= pair[1].probability);
    }
    for score in ranked {
        let i = labels.iter().position(|l| *l == score.label).unwrap();
        assert_eq!(score.probability, probs[i], "{}", score.label);
    }
}

#[test]
fn classify_refuses_missing_empty_and_repeated_labels() {
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let image = fixtures().join("images/ihc.jpg");
    let images = [ImageInput::path(&image)];
    let cases: [(&[&str], &str); 3] = [
        (&[], "no labels"),
        (&["brain MRI", " "], "label 2 is empty"),
        (
            &["brain MRI", "chest X-ray", "brain MRI"],
            "\"brain MRI\" is given more than once",
        ),
    ];
    for (labels, want) in cases {
        match model.classify(&images, labels, DEFAULT_TEMPLATE) {
            Err(e @ Error::InvalidInput(_)) => assert!(e.to_string().contains(want), "{e}"),
            other => panic!("{labels:?}: {other:?}"),
        }
    }
}

#[test]
fn a_tokenizer_larger_than_the_embedding_table_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = std::fs::read_to_string(model_dir().join("vocab.txt")).unwrap();
    let extended = dir.path().join("vocab.txt");
    std::fs::write(&extended, format!("{vocab}zzzextratoken\n")).unwrap();
    let mut files = files("open_clip_model.safetensors", "vocab.txt");
    files.tokenizer = extended.clone();
    let err = biomedclip::BiomedClip::from_files(&files, &biomedclip::Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Tokenizer { .. }), "{text}");
    assert!(
        text.contains(&extended.display().to_string())
            && text.contains("text.transformer.embeddings.word_embeddings.weight"),
        "{text}"
    );
}
