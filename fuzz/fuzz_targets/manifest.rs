//! Manifest parser: never panics; whole and chunked parses agree; serialize-then-parse round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::manifest::check::check_round_trip(data));
