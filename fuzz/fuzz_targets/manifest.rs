//! The model manifest parser and its validation (hashes, shapes, preprocessing, calibration).
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = facegate_vision::Manifest::parse(
        text,
        Path::new("fuzz/manifest.toml"),
        PathBuf::from("/nonexistent-facegate-fuzz"),
    );
});
