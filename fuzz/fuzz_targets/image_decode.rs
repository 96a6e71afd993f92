//! Still-image decoding (JPEG, PNG, BMP, PNM, WebP by content) with a 1-megapixel limit, as the
//! image and folder sources and `enroll` use it. A decoder panic is caught and reported by
//! facegate as an error; the fuzzer still sees it as a crash, so such inputs are findings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = facegate_capture::decode_image_bytes(data, 1 << 20) {
        assert!(u64::from(frame.width()) * u64::from(frame.height()) <= 1 << 20);
    }
});
