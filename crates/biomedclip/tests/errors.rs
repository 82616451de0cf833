//! Bad input gets an error that names the file, the key or the shape.

mod common;

use std::collections::HashMap;
use std::path::Path;

use biomedclip::checkpoint::source::ModelFiles;
use biomedclip::{BiomedClip, Device, Error, ModelSource};
use candle_core::safetensors;
use candle_core::Tensor;
use common::*;

/// A copy of the tiny model whose safetensors file went through `edit`.
fn edited_model(
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
) -> (tempfile::TempDir, ModelFiles) {
    let dir = tempfile::tempdir().unwrap();
    let src = model_dir();
    for f in ["open_clip_config.json", "config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut tensors = safetensors::load(
        src.join("open_clip_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    edit(&mut tensors);
    let weights = dir.path().join("open_clip_model.safetensors");
    safetensors::save(&tensors, &weights).unwrap();
    let files = ModelSource::Local(dir.path().to_path_buf())
        .resolve()
        .unwrap();
    (dir, files)
}

fn load_err(files: &ModelFiles) -> Error {
    match BiomedClip::from_files(files, &Device::Cpu) {
        Ok(_) => panic!("loading should fail"),
        Err(e) => e,
    }
}

#[test]
fn missing_tensor_names_the_key() {
    let key = "visual.trunk.blocks.1.attn.proj.weight";
    let (_dir, files) = edited_model(|t| {
        t.remove(key);
    });
    let err = load_err(&files);
    assert!(
        matches!(&err, Error::MissingTensor { key: k, .. } if k == key),
        "{err}"
    );
    assert!(err.to_string().contains(key), "{err}");
}

#[test]
fn wrong_shape_names_key_expected_and_found() {
    let key = "text.proj.2.weight";
    let (_dir, files) = edited_model(|t| {
        t.insert(
            key.into(),
            Tensor::zeros((7, 24), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        );
    });
    let err = load_err(&files);
    match &err {
        Error::ShapeMismatch {
            key: k,
            expected,
            found,
            ..
        } => {
            assert_eq!(k, key);
            assert_eq!(expected, &vec![32, 24]);
            assert_eq!(found, &vec![7, 24]);
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn missing_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        model_dir().join("open_clip_config.json"),
        dir.path().join("open_clip_config.json"),
    )
    .unwrap();
    let err = ModelSource::Local(dir.path().to_path_buf())
        .resolve()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("open_clip_model.safetensors") && msg.contains("open_clip_pytorch_model.bin"),
        "{msg}"
    );

    let err = ModelSource::Local("/no/such/dir".into())
        .resolve()
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
}

#[test]
fn corrupt_weights_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = files("open_clip_pytorch_model.bin", "tokenizer.json");
    let bad = dir.path().join("open_clip_pytorch_model.bin");
    std::fs::write(&bad, b"not a zip archive").unwrap();
    files.weights = bad.clone();
    let err = load_err(&files);
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
}

#[test]
fn malformed_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = files("open_clip_model.safetensors", "tokenizer.json");
    let bad = dir.path().join("open_clip_config.json");
    std::fs::write(&bad, b"{\"model_cfg\": {\"embed_dim\": 32}}").unwrap();
    files.config = bad;
    let err = load_err(&files);
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("vision_cfg"), "{err}");
}

#[test]
fn bad_images_fail_alone_and_name_the_file() {
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let images = fixtures().join("images");
    let truncated_dir = tempfile::tempdir().unwrap();
    let truncated = truncated_dir.path().join("truncated.png");
    let bytes = std::fs::read(images.join("rgb_photo.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let paths = vec![
        images.join("gray.png"),
        images.join("not_an_image.png"),
        Path::new("/no/such/image.png").to_path_buf(),
        truncated.clone(),
        images.join("ihc.jpg"),
    ];
    let results = model.encode_image_files(&paths);
    assert_eq!(results.len(), paths.len());
    assert!(results[0].is_ok() && results[4].is_ok());
    for i in 1..4 {
        let err = results[i].as_ref().unwrap_err().to_string();
        assert!(err.contains(&paths[i].display().to_string()), "{err}");
    }
    // The good images are unaffected by the failures beside them.
    let alone = model.encode_image_files(&[&paths[4]]).remove(0).unwrap();
    assert!(max_abs_diff(&alone, results[4].as_ref().unwrap()) <= 1e-5);
}

#[test]
fn token_sequences_longer_than_the_positions_are_rejected() {
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let err = model.encode_token_ids(&[vec![101; 300]]).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}
