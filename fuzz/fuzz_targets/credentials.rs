//! Credentials file parser: never panics; other profiles and comments change nothing; the secret never shows.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::target::s3::credentials::check_parse(data));
