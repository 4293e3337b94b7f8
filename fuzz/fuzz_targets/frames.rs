//! zstd frames: walship's own round-trip exactly; any stored bytes are checked without a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::frames::check::check_frames(data));
