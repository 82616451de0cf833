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

// ---- Hostile inputs: each refused with a message naming the input and the reason. ----

/// The message of the error `path` gives when preprocessed alone.
fn image_err(model: &BiomedClip, path: &Path) -> String {
    match model.encode_image_files(&[path]).remove(0) {
        Ok(_) => panic!("{} should fail", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let key = "visual.trunk.blocks.0.attn.qkv.weight";
    let (_dir, files) = edited_model(|t| {
        let w = t[key].to_dtype(candle_core::DType::F32).unwrap();
        let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[7] = f32::NAN;
        t.insert(
            key.into(),
            Tensor::from_vec(v, w.shape(), &candle_core::Device::Cpu).unwrap(),
        );
    });
    let msg = load_err(&files).to_string();
    assert!(
        msg.contains(key) && msg.contains("NaN") && msg.contains("index 7"),
        "{msg}"
    );
}

#[test]
fn non_finite_word_embeddings_are_refused_when_their_tokens_are_met() {
    let key = "text.transformer.embeddings.word_embeddings.weight";
    let (_dir, files) = edited_model(|t| {
        let w = t[key].to_dtype(candle_core::DType::F32).unwrap();
        let nan = (w * f64::NAN).unwrap();
        t.insert(key.into(), nan);
    });
    // The table is read by rows: loading succeeds, the first text names the tensor and token.
    let model = BiomedClip::from_files(&files, &Device::Cpu).unwrap();
    let msg = model.encode_texts(&["a scan"]).unwrap_err().to_string();
    assert!(msg.contains(key) && msg.contains("token id"), "{msg}");
}

#[test]
fn zero_attention_heads_are_refused() {
    let (dir, files) = edited_model(|_| {});
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["num_attention_heads"] = 0.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let msg = load_err(&files).to_string();
    assert!(msg.contains("0 heads"), "{msg}");
}

/// A PyTorch-style zip holding `pickle` as `archive/data.pkl`.
fn torch_zip(dir: &Path, pickle: &[u8]) -> ModelFiles {
    use std::io::Write;
    for f in ["open_clip_config.json", "config.json", "tokenizer.json"] {
        std::fs::copy(model_dir().join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("open_clip_pytorch_model.bin");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options).unwrap();
    zip.write_all(pickle).unwrap();
    zip.finish().unwrap();
    ModelSource::Local(dir.to_path_buf()).resolve().unwrap()
}

#[test]
fn pickle_bombs_are_refused_before_they_expand() {
    // 564-byte class: a list, then rounds of (copy, copy) tuples through the memo. Replayed
    // by candle's reader this would clone 2^40 objects.
    let mut laughs = b"\x80\x02]q\x00".to_vec();
    for i in 0..40u8 {
        laughs.extend_from_slice(&[b'(', b'h', i, b'h', i, b't', b'q', i + 1]);
    }
    laughs.push(b'.');
    let dir = tempfile::tempdir().unwrap();
    let msg = load_err(&torch_zip(dir.path(), &laughs)).to_string();
    assert!(
        msg.contains("open_clip_pytorch_model.bin") && msg.contains("billion laughs"),
        "{msg}"
    );

    // 1 MB of nested lists: candle's reader would overflow the stack dropping them.
    let mut deep = b"\x80\x02".to_vec();
    deep.extend(std::iter::repeat_n(b']', 500_000));
    deep.extend(std::iter::repeat_n(b'a', 499_999));
    deep.push(b'.');
    let dir = tempfile::tempdir().unwrap();
    let msg = load_err(&torch_zip(dir.path(), &deep)).to_string();
    assert!(msg.contains("levels deep"), "{msg}");

    // An opcode the reader does not know is named, without a backtrace.
    let dir = tempfile::tempdir().unwrap();
    let msg = load_err(&torch_zip(
        dir.path(),
        b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00lsti.",
    ))
    .to_string();
    assert!(
        msg.contains("opcode 0x69") && !msg.contains("backtrace"),
        "{msg}"
    );
}

#[test]
fn legacy_torch_files_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let files = torch_zip(dir.path(), b".");
    std::fs::write(
        &files.weights,
        b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.",
    )
    .unwrap();
    let msg = load_err(&files).to_string();
    assert!(msg.contains("legacy (non-zip) PyTorch file"), "{msg}");
}

#[test]
fn oversized_and_cut_images_are_refused_and_extreme_shapes_work() {
    let mut model = load("open_clip_model.safetensors", "tokenizer.json");
    let dir = tempfile::tempdir().unwrap();
    let images = fixtures().join("images");

    // A JPEG whose header claims 60000 x 60000: refused from the header.
    let mut jpeg = std::fs::read(images.join("ihc.jpg")).unwrap();
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .expect("a SOF marker");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let bomb = dir.path().join("bomb.jpg");
    std::fs::write(&bomb, &jpeg).unwrap();
    let msg = image_err(&model, &bomb);
    assert!(
        msg.contains("bomb.jpg") && msg.contains("3600000000 pixels"),
        "{msg}"
    );

    // A JPEG cut in half: refused as Pillow refuses it.
    let whole = std::fs::read(images.join("rgb_photo.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let msg = image_err(&model, &cut);
    assert!(
        msg.contains("cut.jpg") && msg.contains("truncated"),
        "{msg}"
    );

    // 1 x 100,000 RGB: resized to 224 x 22,400,000 before the crop, so only the crop is
    // computed; the result is the same as for the centre of the strip.
    let tall = dir.path().join("tall.png");
    let strip: Vec<u8> = (0..100_000u32)
        .flat_map(|y| [(y % 251) as u8, 40, 200])
        .collect();
    image::save_buffer(&tall, &strip, 1, 100_000, image::ColorType::Rgb8).unwrap();
    let e = model.encode_image_files(&[&tall]).remove(0).unwrap();
    assert_eq!(e.len(), model.embed_dim());

    // Limits are the caller's to set.
    model.set_limits(biomedclip::image::Limits {
        max_pixels: 1000,
        ..Default::default()
    });
    let msg = image_err(&model, &images.join("ihc.jpg"));
    assert!(msg.contains("more than the limit of 1000"), "{msg}");
    let msg = image_err(&model, &tall);
    assert!(msg.contains("100000 pixels"), "{msg}");
}

/// A copy of a DICOM fixture with `edit` applied.
fn edited_dicom(
    dir: &Path,
    tag: &str,
    edit: impl FnOnce(&mut dicom_object::DefaultDicomObject),
) -> std::path::PathBuf {
    let mut obj = dicom_object::open_file(fixtures().join("dicom/CT_small.dcm")).unwrap();
    edit(&mut obj);
    let out = dir.join(format!("{tag}.dcm"));
    obj.write_to_file(&out).unwrap();
    out
}

#[test]
fn inconsistent_dicom_files_are_named_with_the_reason() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let model = load("open_clip_model.safetensors", "tokenizer.json");
    let dir = tempfile::tempdir().unwrap();
    let put = |tag, vr, v: PrimitiveValue| {
        move |o: &mut dicom_object::DefaultDicomObject| {
            o.put(DataElement::new(tag, vr, v));
        }
    };

    // CT_small.dcm has no window of its own: give it a centre and a zero width.
    let zero_width = edited_dicom(dir.path(), "zero-width", |o| {
        o.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, "40"));
        o.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, "0"));
    });
    let msg = image_err(&model, &zero_width);
    assert!(msg.contains("Window Width (0028,1051) is 0"), "{msg}");

    let tall = edited_dicom(
        dir.path(),
        "tall",
        put(tags::ROWS, VR::US, PrimitiveValue::from(4096u16)),
    );
    let msg = image_err(&model, &tall);
    assert!(
        msg.contains("Pixel Data holds") && msg.contains("4096"),
        "{msg}"
    );

    let one_bit = edited_dicom(
        dir.path(),
        "one-bit",
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(1u16)),
    );
    let msg = image_err(&model, &one_bit);
    assert!(msg.contains("Bits Allocated (0028,0100) is 1"), "{msg}");

    let float = edited_dicom(dir.path(), "float", |o| {
        o.remove_element(tags::PIXEL_DATA);
        o.put(DataElement::new(
            tags::FLOAT_PIXEL_DATA,
            VR::OF,
            PrimitiveValue::F32(vec![0.5f32; 16].into()),
        ));
    });
    let msg = image_err(&model, &float);
    assert!(msg.contains("Float Pixel Data (7FE0,0008)"), "{msg}");

    let frame = std::path::PathBuf::from(format!(
        "{}#frame=-1",
        fixtures().join("dicom/CT_small.dcm").display()
    ));
    let msg = image_err(&model, &frame);
    assert!(msg.contains("not a frame number"), "{msg}");
}

/// The fuzzing corpora (`fuzz/corpus/<target>/`, minimised by libFuzzer) replayed through the
/// same entry points as the fuzz targets: none may panic, and every error names its input.
#[test]
fn fuzz_corpora_replay_without_panics() {
    use biomedclip::checkpoint::config::{OpenClipConfig, PreprocessCfg};
    use biomedclip::checkpoint::Weights;
    use biomedclip::image::decode::decode_frame;
    use biomedclip::image::preprocess::Preprocessor;
    use biomedclip::image::Limits;
    use biomedclip::text::clean::clean_text;
    use biomedclip::text::TextTokenizer;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let inputs = |target: &str| -> Vec<Vec<u8>> {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(target))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "fuzz/corpus/{target} is empty");
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    let name = Path::new("corpus-input");
    let pre = Preprocessor::new(&PreprocessCfg::default(), 224);
    // The fuzz targets' bounds: decoded images up to 16 Mpx, preprocessed up to 4 Mpx.
    let limits = Limits {
        max_pixels: 1 << 24,
        ..Limits::default()
    };
    let image = |data: &[u8]| {
        if let Ok(d) = decode_frame(data, name, None, None, &limits) {
            if d.width * d.height <= 1 << 22 {
                let _ = pre.process_decoded(&d, name);
            }
        }
    };
    // The crashes fuzzing found, now errors: fuzz/crashes/<target>/.
    let crashes = |target: &str| -> Vec<Vec<u8>> {
        let dir = root.join("../crashes").join(target);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    for data in inputs("image_decode")
        .into_iter()
        .chain(crashes("image_decode"))
    {
        image(&data);
    }
    for data in inputs("dicom").into_iter().chain(crashes("dicom")) {
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend_from_slice(&data);
        image(&file);
    }
    let dir = tempfile::tempdir().unwrap();
    for (target, file_name) in [
        ("checkpoint", "open_clip_pytorch_model.bin"),
        ("safetensors", "open_clip_model.safetensors"),
    ] {
        let path = dir.path().join(file_name);
        for data in inputs(target) {
            std::fs::write(&path, &data).unwrap();
            if let Err(e) = Weights::open(&path) {
                assert!(e.to_string().contains(file_name), "{e}");
            }
        }
    }
    let path = dir.path().join("open_clip_config.json");
    for data in inputs("config") {
        std::fs::write(&path, &data).unwrap();
        let _ = OpenClipConfig::from_file(&path);
    }
    let tok = TextTokenizer::from_vocab(&model_dir().join("vocab.txt"), 256).unwrap();
    for data in inputs("text") {
        let text = String::from_utf8_lossy(&data);
        let _ = clean_text(&text);
        if let Ok(ids) = tok.encode(&text) {
            assert!(ids.len() <= 256 && ids.iter().all(|&i| i <= tok.max_id()));
        }
    }
}
