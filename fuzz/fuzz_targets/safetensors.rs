//! A safetensors checkpoint: `Weights::open` then every lookup.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    biomedclip_fuzz::fuzz_weights("open_clip_model.safetensors", data);
});
