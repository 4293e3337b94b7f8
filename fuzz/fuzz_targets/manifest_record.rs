//! One manifest record body, past the line CRC32: never panics; serialize-then-parse round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::manifest::check::check_record_round_trip(data));
