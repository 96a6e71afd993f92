//! Still-image decoding (JPEG, PNG, BMP, PNM, WebP by content) with a 1-megapixel limit, as the
//! image and folder sources and `enroll` use it. facegate catches a decoder panic and reports it
//! as `CaptureError::DecoderPanicked` (quietly); here it is turned back into a crash, so every
//! decoder panic is a finding.
#![no_main]

use facegate_capture::CaptureError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match facegate_capture::decode_image_bytes(data, 1 << 20) {
        Ok(frame) => assert!(u64::from(frame.width()) * u64::from(frame.height()) <= 1 << 20),
        Err(e @ CaptureError::DecoderPanicked { .. }) => panic!("{e}"),
        Err(_) => {}
    }
});
