//! Heartbeat objects and fleet indexes: never panic; what parses writes back to the same heartbeats.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::fleet::heartbeat::check_parse(data));
