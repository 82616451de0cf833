//! Checkpoint tensors are read in place where the file stores them as plain `f32`, converted
//! otherwise, and give the same values either way.

mod common;

use std::collections::HashMap;

use biomedclip::checkpoint::weights::Weights;
use biomedclip::Error;
use candle_core::{DType, Tensor};
use common::*;

/// `arange(24) * 0.5 - 3`, the storage behind `fixtures/weights/f32_tensors.bin`.
fn base() -> Vec<f32> {
    (0..24).map(|i| i as f32 * 0.5 - 3.0).collect()
}

#[test]
fn bin_tensors_are_mapped_when_plain_and_converted_otherwise() {
    let w = Weights::open(&fixtures().join("weights/f32_tensors.bin")).unwrap();
    let base = base();

    let plain = w.get_floats("plain", &[4, 6]).unwrap();
    assert!(plain.is_mapped(), "{plain:?}");
    assert_eq!(&*plain, &base[..]);

    // A view at a storage offset is mapped from its first element.
    let view = w.get_floats("offset_view", &[3, 4]).unwrap();
    assert!(view.is_mapped(), "{view:?}");
    assert_eq!(&*view, &base[6..18]);

    // A transposed tensor is gathered in row-major order.
    let transposed = w.get_floats("transposed", &[6, 4]).unwrap();
    assert!(!transposed.is_mapped());
    let want: Vec<f32> = (0..6)
        .flat_map(|c| (0..4).map(move |r| r * 6 + c))
        .map(|i| base[i])
        .collect();
    assert_eq!(&*transposed, &want[..]);

    let half = w.get_floats("half", &[8]).unwrap();
    assert!(!half.is_mapped());
    let want: Vec<f32> = base[..8].iter().map(|v| v * 0.25).collect();
    assert_eq!(&*half, &want[..]);

    assert_eq!(w.get_vec("offset_view", &[3, 4]).unwrap(), base[6..18]);
}

#[test]
fn f32_safetensors_are_mapped_and_agree_with_the_f16_fixture() {
    // The committed tiny model stores f16 safetensors; an f32 copy must load in place and
    // give the same values (f16 -> f32 is exact).
    let src = model_dir().join("open_clip_model.safetensors");
    let tensors = candle_core::safetensors::load(&src, &candle_core::Device::Cpu).unwrap();
    let f32_tensors: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.to_dtype(DType::F32).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("open_clip_model.safetensors");
    candle_core::safetensors::save(&f32_tensors, &copy).unwrap();

    let half = Weights::open(&src).unwrap();
    let full = Weights::open(&copy).unwrap();
    let key = "visual.trunk.blocks.0.attn.qkv.weight";
    let shape = full.shape_of(key, 2).unwrap();
    let mapped = full.get_floats(key, &shape).unwrap();
    let converted = half.get_floats(key, &shape).unwrap();
    assert!(mapped.is_mapped() && !converted.is_mapped());
    assert_eq!(&*mapped, &*converted);
}

#[test]
fn a_truncated_safetensors_file_is_an_error_not_a_fault() {
    let src = model_dir().join("open_clip_model.safetensors");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("open_clip_model.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 64]).unwrap();
    let err = match Weights::open(&cut) {
        Err(e) => e,
        Ok(_) => panic!("a file shorter than its header says must not open"),
    };
    assert!(matches!(err, Error::Weights { .. }), "{err}");
    assert!(
        err.to_string().contains("open_clip_model.safetensors"),
        "{err}"
    );
}
