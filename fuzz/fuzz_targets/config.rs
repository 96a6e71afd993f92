//! The configuration file: TOML into raw sections, then every bound and rule of the validated
//! config. Compiles the service's own `config.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/facegate-cli/src/config.rs"]
#[allow(dead_code)]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A manifest path is always given by the seed corpus or absent; absent means a search of
    // the working directory, which deploy/fuzz.sh runs from the repository root.
    let _ = config::Config::parse(text, "fuzz.toml", None);
});
