//! What the `frames` fuzz target asserts, kept in the library so that its
//! seed corpus is replayed by `cargo test` (tests/fuzz_corpus.rs).

use std::io::Write;

use super::decode::{Expected, FrameChecker};
use super::encode::FramesReader;
use super::{FrameEncoder, plan_frame};

/// Any bytes, two ways. As segments (the input split at `|`, at most 16):
/// encoded at level 1 and checked back, the frames must give exactly the
/// segments, each frame alone too. As a stored object (archive bytes walship
/// did not write), with recorded frame lengths or without: checking must
/// not panic, and must not accept bytes as frames that end elsewhere than
/// recorded.
pub fn check_frames(data: &[u8]) {
    let segments: Vec<&[u8]> = data.splitn(16, |&b| b == b'|').collect();
    let mut encoder = FrameEncoder::new(1).expect("a zstd context");
    let plans: Vec<_> =
        segments.iter().map(|s| plan_frame(&mut encoder, s).expect("frame planned")).collect();
    let kinds = segments.iter().zip(&plans).map(|(s, p)| (*s, p.kind)).collect();
    let mut object = Vec::new();
    std::io::Read::read_to_end(&mut FramesReader::new(encoder, kinds), &mut object).expect("frames made");
    let expected: Vec<Expected> = segments
        .iter()
        .zip(&plans)
        .map(|(s, p)| Expected {
            len: s.len() as u64,
            crc32: crc32fast::hash(s),
            stored_len: Some(p.stored_len),
        })
        .collect();
    let raw = decode(&object, &expected).expect("walship's own frames check back");
    assert_eq!(raw, segments.concat());
    let mut offset = 0;
    for (one, plan) in expected.iter().zip(&plans) {
        let frame = &object[offset..offset + plan.stored_len as usize];
        decode(frame, std::slice::from_ref(one)).expect("one frame alone checks back");
        offset += plan.stored_len as usize;
    }

    // The input as stored bytes, expected to hold two frames.
    let half = data.len() as u64 / 2;
    let guess = Expected { len: half, crc32: crc32fast::hash(&data[..half as usize]), stored_len: None };
    let _ = decode(data, &[guess, guess]);
    let recorded = [
        Expected { stored_len: Some(half), ..guess },
        Expected { stored_len: Some(data.len() as u64 - half), ..guess },
    ];
    if let Ok(raw) = decode(data, &recorded) {
        assert_eq!(raw.len() as u64, 2 * half, "accepted frames of other lengths than recorded");
    }
}

/// The raw bytes `object` decodes to, checked against `expected`.
fn decode(object: &[u8], expected: &[Expected]) -> Result<Vec<u8>, ()> {
    let mut checker = FrameChecker::new(expected, expected.len(), Vec::new()).map_err(|_| ())?;
    for chunk in object.chunks(1000) {
        checker.write_all(chunk).map_err(|_| ())?;
    }
    let (checked, raw) = checker.finish().map_err(|_| ())?;
    assert_eq!(checked.stored_size, object.len() as u64);
    Ok(raw)
}
