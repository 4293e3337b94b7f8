//! S3 response reader: never panics, whatever a server or proxy sends; escaped text reads back as itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walship::target::s3::xml::check_parse(data));
