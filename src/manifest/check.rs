//! What the fuzz targets assert, kept in the library so that the seed
//! corpus is replayed by `cargo test` (tests/fuzz_corpus.rs) and a crash
//! found by the fuzzer is a plain function call away from a named test.
//!
//! Inputs are parsed as the manifest of stream [`FUZZ_STREAM`] named by
//! [`FUZZ_PATTERN`]; the seeds under `fuzz/corpus/` use both.

use std::io;

use super::format::{self, Version};
use super::{Manifest, StreamRules};
use crate::naming::Naming;

/// Stream name the checks parse with (seed keys use it).
pub const FUZZ_STREAM: &str = "sensors";
/// Segment naming the checks parse with (seed names use it).
pub const FUZZ_PATTERN: &str = "data-{seq}.log";

/// Parse `text` as the fuzz stream's manifest.
pub fn parse_fuzz_manifest(text: &[u8], source: &str) -> Result<format::Parsed, super::ManifestError> {
    let naming = fuzz_naming();
    format::parse(text, source, &StreamRules::new(FUZZ_STREAM, &naming))
}

fn fuzz_naming() -> Naming {
    Naming::from_pattern(FUZZ_PATTERN).unwrap_or_else(|why| panic!("FUZZ_PATTERN: {why}"))
}

/// Whatever `data` is, parsing must not panic; parsing it whole and in
/// small chunks must agree; and if it parses (v1 or v2), serializing the
/// manifest as v2 and parsing again must give the same manifest.
pub fn check_round_trip(data: &[u8]) {
    let naming = fuzz_naming();
    let rules = StreamRules::new(FUZZ_STREAM, &naming);
    let parsed = format::parse(data, "fuzz-input", &rules);
    let mut streamed = Manifest::default();
    let chunked = format::parse_each(io::BufReader::with_capacity(7, data), "fuzz-input", &rules, |entry| {
        streamed.push(entry)
    });
    let parsed = match (parsed, chunked) {
        (Ok(parsed), Ok(summary)) => {
            assert_eq!(parsed.manifest, streamed, "chunked parse read other entries");
            assert_eq!(parsed.dropped_torn_tail, summary.dropped_torn_tail);
            parsed
        }
        (Err(_), Err(_)) => return,
        (whole, chunked) => panic!("whole and chunked parses disagree: {whole:?} / {chunked:?}"),
    };
    let text = format::serialize(&parsed.manifest.entries().collect::<Vec<_>>());
    let again = format::parse(text.as_bytes(), "round-trip", &rules)
        .unwrap_or_else(|error| panic!("serialized manifest does not parse: {error}\n{text}"));
    assert_eq!(again.manifest, parsed.manifest, "serialize-then-parse changed the manifest");
    assert_eq!(again.dropped_torn_tail, None, "serialized manifest has a torn tail");
}

/// One entry body, without the line CRC32 that keeps mutated manifests
/// from ever reaching the record parser. Parsing (as v2, and as v1) must
/// not panic; an entry that parses must serialize to a v2 body that parses
/// to the same entry; a v2 body must be made of the same fields as the one
/// written back (one spelling per value, only the order of named fields may
/// differ); and a manifest of it must parse back.
pub fn check_record_round_trip(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let naming = fuzz_naming();
    let rules = StreamRules::new(FUZZ_STREAM, &naming);
    for version in [Version::V2, Version::V1] {
        let Ok(entry) = format::parse_entry(body, version, &rules) else {
            continue;
        };
        let text = format::serialize_entry(&entry);
        let again = format::parse_entry(&text, Version::V2, &rules)
            .unwrap_or_else(|error| panic!("serialized entry does not parse: {error}\n{text}"));
        assert_eq!(again, entry, "serialize-then-parse changed the entry");
        if version == Version::V2 {
            let (mut read, mut written): (Vec<&str>, Vec<&str>) =
                (body.split(' ').collect(), text.split(' ').collect());
            read.sort_unstable();
            written.sort_unstable();
            assert_eq!(read, written, "a parsed field has another spelling than the one written back");
        }
        let manifest = format::serialize(std::slice::from_ref(&entry));
        let parsed = format::parse(manifest.as_bytes(), "round-trip", &rules)
            .unwrap_or_else(|error| panic!("manifest of one entry does not parse: {error}\n{manifest}"));
        assert_eq!(
            parsed.manifest.entries().collect::<Vec<_>>(),
            [entry],
            "manifest of one entry read back otherwise"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_accept_junk() {
        for data in [&b""[..], b"\xff\xfe", b"walship-manifest v2\n\n\n", b"walship-manifest v1\nxx", b"gap"]
        {
            check_round_trip(data);
            check_record_round_trip(data);
        }
    }

    #[test]
    fn record_check_takes_both_versions() {
        check_record_round_trip(b"gap first=0 last=3 reason=a%20b");
        check_record_round_trip(
            b"batch first=0 last=0 size=1 crc32=e8b7be43 key=sensors/batches/0000000000000000-0000000000000000 \
              seg=0,data-0.log,0,1,e8b7be43",
        );
    }
}
