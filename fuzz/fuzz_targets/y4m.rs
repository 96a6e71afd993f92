//! The Y4M parser: header, FRAME lines and frame payloads, with a 1-megapixel limit. Every
//! input must give frames or a typed error, never a panic, and never allocate beyond the limit.
#![no_main]

use facegate_capture::{FrameSource, Y4mSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut src) =
        Y4mSource::from_reader(std::io::Cursor::new(data.to_vec()), "fuzz.y4m", 1 << 20)
    else {
        return;
    };
    for _ in 0..64 {
        match src.next_frame() {
            Ok(Some(frame)) => {
                assert!(u64::from(frame.width()) * u64::from(frame.height()) <= 1 << 20);
            }
            Ok(None) => break,
            Err(e) if e.is_frame_error() => {}
            Err(_) => break,
        }
    }
});
