//! DICOM only: the fuzz bytes follow a 128-byte preamble and `DICM`, so every input reaches
//! the DICOM parser (file meta group, data set, pixel data, rendering, preprocessing).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = Vec::with_capacity(132 + data.len());
    file.extend_from_slice(&[0u8; 128]);
    file.extend_from_slice(b"DICM");
    file.extend_from_slice(data);
    biomedclip_fuzz::decode_and_preprocess(&file);
});
