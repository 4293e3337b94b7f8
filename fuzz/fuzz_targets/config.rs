//! Config parser: never panics; errors name the file; a config that parses keeps the rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::config::check_parse(data));
