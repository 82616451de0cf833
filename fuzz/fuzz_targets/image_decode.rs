//! Any image file's bytes (JPEG, PNG, GIF, BMP, TIFF, WebP, DICOM) -> decode -> preprocess.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    biomedclip_fuzz::decode_and_preprocess(data);
});
