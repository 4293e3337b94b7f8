//! Heartbeat objects: never panics; what parses writes back to the same heartbeat.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::fleet::heartbeat::check_parse(data));
