//! DICOM rendering against pydicom (`apply_modality_lut` -> `apply_voi_lut` -> 0..255),
//! goldens made by `tools/reference/make_dicom_fixtures.py` from pydicom's own test files.

mod common;

use biomedclip::image::decode::{decode, decode_frame, Pixels};
use biomedclip::image::render::Window;
use biomedclip::image::Limits;
use common::fixtures;
use serde_json::Value;

/// pydicom and we may round a value on either side of a half level.
const MAX_LEVEL_DIFF: i32 = 1;

fn index() -> Value {
    let text = std::fs::read_to_string(fixtures().join("golden/dicom/dicom.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn renderings_match_pydicom_within_one_level() {
    let idx = index();
    let mut report = Vec::new();
    for case in idx["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let path = fixtures().join("dicom").join(file);
        let frame = case["frame"].as_u64().map(|f| f as u32);
        let window = case["window"]
            .as_str()
            .map(|w| w.parse::<Window>().unwrap());
        let ours = decode_frame(
            &std::fs::read(&path).unwrap(),
            &path,
            frame,
            window,
            &Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let gold_path = fixtures()
            .join("golden/dicom")
            .join(case["golden"].as_str().unwrap());
        let gold = decode(&std::fs::read(&gold_path).unwrap(), &gold_path).unwrap();
        assert_eq!(
            (ours.width, ours.height),
            (gold.width, gold.height),
            "{file}: size"
        );
        let (a, b) = match (&ours.pixels, &gold.pixels) {
            (Pixels::Gray(a), Pixels::Gray(b)) | (Pixels::Rgb(a), Pixels::Rgb(b)) => (a, b),
            (a, b) => panic!(
                "{file}: layouts differ: {:?} vs {:?}",
                std::mem::discriminant(a),
                std::mem::discriminant(b)
            ),
        };
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as i32 - *y as i32).abs())
            .max()
            .unwrap();
        let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
        report.push(format!(
            "{file} frame={frame:?} window={window:?}: max diff {max}, {:.2}% identical",
            100.0 * same as f64 / a.len() as f64
        ));
        assert!(
            max <= MAX_LEVEL_DIFF,
            "{file}: max level difference {max}\n{}",
            report.join("\n")
        );
    }
    println!("{}", report.join("\n"));
}

#[test]
fn undecodable_files_name_the_transfer_syntax() {
    let idx = index();
    for case in idx["failures"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let path = fixtures().join("dicom").join(file);
        let err = decode(&std::fs::read(&path).unwrap(), &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(case["error"].as_str().unwrap()) && err.contains(file),
            "{file}: {err}"
        );
    }
}

#[test]
fn frames_are_chosen_and_checked() {
    let path = fixtures().join("dicom/SC_rgb_rle_2frame.dcm");
    let bytes = std::fs::read(&path).unwrap();
    let first = decode_frame(&bytes, &path, Some(0), None, &Limits::default()).unwrap();
    let second = decode_frame(&bytes, &path, Some(1), None, &Limits::default()).unwrap();
    assert_ne!(first.pixels, second.pixels);
    // Default: the middle frame (index 1 of 2).
    assert_eq!(decode(&bytes, &path).unwrap().pixels, second.pixels);
    let err = decode_frame(&bytes, &path, Some(2), None, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 frame(s)"), "{err}");
    let png = fixtures().join("images/ihc.jpg");
    let err = decode_frame(
        &std::fs::read(&png).unwrap(),
        &png,
        Some(0),
        None,
        &Limits::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("only be chosen in DICOM"), "{err}");
}

#[test]
fn sixteen_bit_grayscale_maps_its_full_range_or_a_window() {
    use biomedclip::image::render::{HighBitDepth, Rendering};
    let mut model = common::load("open_clip_model.safetensors", "tokenizer.json");
    let path = fixtures().join("images/gray16.png");
    let decoded = decode(&std::fs::read(&path).unwrap(), &path).unwrap();
    for (window, golden) in [
        (None, "gray16_full_range.png"),
        (
            Some(Window::new(30000.0, 20000.0)),
            "gray16_window_30000_20000.png",
        ),
    ] {
        model.set_rendering(Rendering {
            window,
            high_bit_depth: HighBitDepth::FullRange,
        });
        let ours = model.preprocessor().to_rgb8(&decoded).unwrap();
        let gold_path = fixtures().join("golden/dicom").join(golden);
        let gold = decode(&std::fs::read(&gold_path).unwrap(), &gold_path)
            .unwrap()
            .to_image8();
        let gray: Vec<u8> = ours.data.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(gray.len(), gold.data.len());
        // NumPy rounds halves to even, we round them up: one level at most.
        let max = gray
            .iter()
            .zip(&gold.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(
            max <= MAX_LEVEL_DIFF,
            "{golden}: max level difference {max}"
        );
    }
    // The reference clamps at 255: almost everything is white.
    model.set_rendering(Rendering::reference());
    let clamped = model.preprocessor().to_rgb8(&decoded).unwrap();
    let white = clamped.data.iter().filter(|&&v| v == 255).count();
    assert!(white * 10 > clamped.data.len() * 9);
}
