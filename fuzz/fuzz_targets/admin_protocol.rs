//! The admin protocol as the service reads it: bytes from a peer split into lines bounded while
//! read, each parsed into a typed request. Compiles the service's own module.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/facegate-cli/src/adminproto.rs"]
#[allow(dead_code)]
mod adminproto;

use adminproto::{Line, MAX_LINE, Request, read_line};

fuzz_target!(|data: &[u8]| {
    // A small buffer so lines cross refills, as they do on a socket.
    let mut reader = BufReader::with_capacity(64, data);
    let mut taken = 0usize;
    loop {
        match read_line(&mut reader, MAX_LINE, &mut || Ok(())) {
            Ok(Line::Complete(line)) => {
                assert!(line.len() <= MAX_LINE);
                taken += line.len() + 1;
                if let Ok(req) = Request::parse(&line) {
                    let _ = (req.op(), req.needs_admin());
                }
            }
            Ok(Line::Closed | Line::TooLong) | Err(_) => break,
        }
    }
    assert!(taken <= data.len());
});
