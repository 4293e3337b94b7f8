//! Remote record objects to entries: never panics; what assembles is a valid, contiguous manifest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = walship::catalog::assemble::check_assemble(data);
});
