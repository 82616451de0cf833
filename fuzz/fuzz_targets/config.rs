//! `open_clip_config.json` and the text tower's `config.json`.
#![no_main]

use std::path::Path;

use biomedclip::checkpoint::config::{BertJsonConfig, OpenClipConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = biomedclip_fuzz::write_scratch("open_clip_config.json", data);
    if let Ok(cfg) = OpenClipConfig::from_file(&path) {
        let name = Path::new("fuzz");
        let _ = cfg.model_cfg.text_cfg.pooling(name);
        let _ = cfg.model_cfg.text_cfg.projection(name);
        // The preprocessing this config asks for, on a tiny image.
        let pre = biomedclip::image::preprocess::Preprocessor::new(&cfg.preprocess_cfg, 8);
        let img = biomedclip::image::decode::Decoded {
            width: 3,
            height: 2,
            pixels: biomedclip::image::pixels::Pixels::Gray(vec![0, 64, 128, 192, 255, 7]),
            nearest: false,
        };
        let _ = pre.process_decoded(&img, name);
    }
    let path = biomedclip_fuzz::write_scratch("config.json", data);
    let _ = BertJsonConfig::from_file(&path);
});
