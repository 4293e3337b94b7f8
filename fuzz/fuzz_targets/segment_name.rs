//! Segment names under each naming: never panics; position -> name -> position round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::naming::check_name(data));
