use std::io::{Read, Write};

use super::decode::{Expected, FrameChecker, FrameError};
use super::encode::FramesReader;
use super::*;

/// Log lines as an application writes them: compressible, not repetitive.
fn log_text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut n = 0u64;
    while out.len() < len {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let level = ["INFO", "WARN", "DEBUG", "ERROR"][(state >> 60) as usize % 4];
        let line = format!(
            "2026-11-30T02:{:02}:{:02}.{:03}Z {level} sensor-{} reading={} latency_ms={}\n",
            (n / 60) % 60,
            n % 60,
            state % 1000,
            (state >> 20) % 64,
            (state >> 30) % 100_000,
            (state >> 40) % 500
        );
        out.extend_from_slice(line.as_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}

/// Bytes no compressor can shrink.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The object `segments` make at `level`, with each frame's plan.
fn encode(segments: &[&[u8]], level: i32) -> (Vec<u8>, Vec<FramePlan>) {
    let mut encoder = FrameEncoder::new(level).unwrap();
    let plans: Vec<FramePlan> = segments.iter().map(|s| plan_frame(&mut encoder, s).unwrap()).collect();
    let with_kinds = segments.iter().zip(&plans).map(|(s, p)| (*s, p.kind)).collect();
    let mut object = Vec::new();
    FramesReader::new(encoder, with_kinds).read_to_end(&mut object).unwrap();
    (object, plans)
}

fn expected(segments: &[&[u8]], plans: &[FramePlan]) -> Vec<Expected> {
    segments
        .iter()
        .zip(plans)
        .map(|(s, p)| Expected {
            len: s.len() as u64,
            crc32: crc32fast::hash(s),
            stored_len: Some(p.stored_len),
        })
        .collect()
}

/// Decode `object` expecting `segments`, in chunks of `chunk` bytes.
fn decode(object: &[u8], expect: &[Expected], chunk: usize) -> Result<(Vec<u8>, u32), FrameError> {
    let mut checker = FrameChecker::new(expect, expect.len(), Vec::new()).unwrap();
    for piece in object.chunks(chunk.max(1)) {
        if checker.write_all(piece).is_err() {
            return Err(checker.failure().expect("the checker's own failure"));
        }
    }
    let (checked, raw) = checker.finish()?;
    assert_eq!(checked.stored_size, object.len() as u64);
    Ok((raw, checked.stored_crc32))
}

/// Every level round-trips; the plan measured exactly the bytes the second
/// pass produced (offsets and CRC32 known before the upload hold).
#[test]
fn every_level_round_trips_and_the_plan_matches_the_bytes() {
    let text = log_text(300_000, 1);
    let tiny = b"x".to_vec();
    let segments: Vec<&[u8]> = vec![&text, &[], &tiny, &text[..1000]];
    let concatenation = segments.concat();
    for level in ZSTD_LEVELS_FOR_TESTS {
        let (object, plans) = encode(&segments, level);
        let total: u64 = plans.iter().map(|p| p.stored_len).sum();
        assert_eq!(total, object.len() as u64, "level {level}");
        let whole = crate::crc::concatenation(plans.iter().map(|p| (p.crc32, p.stored_len))).unwrap().1;
        assert_eq!(whole, crc32fast::hash(&object), "level {level}");
        let (raw, stored_crc) = decode(&object, &expected(&segments, &plans), 4096).unwrap();
        assert_eq!(raw, concatenation, "level {level}");
        assert_eq!(stored_crc, crc32fast::hash(&object));
        assert!(object.len() * 4 < text.len(), "level {level}: {} bytes for {}", object.len(), text.len());
    }
}

const ZSTD_LEVELS_FOR_TESTS: std::ops::RangeInclusive<i32> = crate::config::ZSTD_LEVELS;

/// Incompressible segments are stored as raw blocks: a few bytes more
/// than the data, decoded by libzstd like any frame, across block limits.
#[test]
fn incompressible_segments_become_raw_frames() {
    for len in [0, 1, BLOCK_MAX - 1, BLOCK_MAX, BLOCK_MAX + 1, 3 * BLOCK_MAX + 17] {
        let data = noise(len, len as u64 + 7);
        let (object, plans) = encode(&[&data], 3);
        if len > 100 {
            assert_eq!(plans[0].kind, FrameKind::Raw, "{len} bytes");
        }
        if plans[0].kind == FrameKind::Raw {
            assert_eq!(object.len() as u64, raw_frame_len(len as u64), "{len} bytes");
        }
        let (raw, _) = decode(&object, &expected(&[&data], &plans), 777).unwrap();
        assert_eq!(raw, data, "{len} bytes");
    }
}

/// A large segment, fed to the checker in odd chunks, with a mix of kinds.
#[test]
fn large_and_mixed_segments_round_trip_in_any_chunking() {
    let text = log_text(5 << 20, 2);
    let random = noise(1 << 20, 3);
    let segments: Vec<&[u8]> = vec![&random, &text, b"", &random[..10]];
    let (object, plans) = encode(&segments, 3);
    assert_eq!(plans[0].kind, FrameKind::Raw);
    assert_eq!(plans[1].kind, FrameKind::Compressed);
    let expect = expected(&segments, &plans);
    for chunk in [1, 3, 65_536, object.len()] {
        if chunk == 1 && object.len() > 2 << 20 {
            continue;
        }
        let (raw, _) = decode(&object, &expect, chunk).unwrap();
        assert!(raw == segments.concat(), "chunks of {chunk}");
    }
}

/// One segment's frame alone (what a ranged fetch receives) decodes.
#[test]
fn one_frame_in_the_middle_decodes_alone() {
    let (a, b, c) = (log_text(70_000, 4), log_text(90_000, 5), log_text(50_000, 6));
    let segments: Vec<&[u8]> = vec![&a, &b, &c];
    let (object, plans) = encode(&segments, 3);
    let offset = plans[0].stored_len as usize;
    let frame = &object[offset..offset + plans[1].stored_len as usize];
    let expect = &expected(&segments, &plans)[1..2];
    assert_eq!(decode(frame, expect, 1000).unwrap().0, b);
}

/// Damage of every kind is refused, naming the frame.
#[test]
fn damaged_objects_are_refused() {
    let (a, b) = (log_text(40_000, 7), log_text(40_000, 8));
    let segments: Vec<&[u8]> = vec![&a, &b];
    let (object, plans) = encode(&segments, 3);
    let expect = expected(&segments, &plans);
    let first = plans[0].stored_len as usize;

    let mut flipped = object.clone();
    flipped[first / 2] ^= 0x40;
    let error = decode(&flipped, &expect, 4096).unwrap_err();
    assert!(matches!(error, FrameError::Frame { index: 0, .. }), "{error}");

    let error = decode(&object[..object.len() - 3], &expect, 4096).unwrap_err();
    assert_eq!(error, FrameError::Truncated { index: 1 });

    let mut longer = object.clone();
    longer.extend_from_slice(b"junk");
    assert_eq!(decode(&longer, &expect, 4096).unwrap_err(), FrameError::Trailing { bytes: 4 });

    // A record whose frame boundary is not where the frame ends.
    let mut shifted = expect.clone();
    shifted[0].stored_len = Some(plans[0].stored_len + 1);
    shifted[1].stored_len = Some(plans[1].stored_len - 1);
    let error = decode(&object, &shifted, 4096).unwrap_err();
    assert!(error.to_string().contains("not the"), "{error}");
    shifted[0].stored_len = Some(plans[0].stored_len - 1);
    shifted[1].stored_len = Some(plans[1].stored_len + 1);
    let error = decode(&object, &shifted, 4096).unwrap_err();
    assert!(error.to_string().contains("does not end within"), "{error}");

    // Right frames, wrong raw CRC recorded.
    let mut wrong = expect.clone();
    wrong[1].crc32 ^= 1;
    let error = decode(&object, &wrong, 4096).unwrap_err();
    assert!(error.to_string().contains("frame 2") && error.to_string().contains("CRC32"), "{error}");
}

/// Found, not recorded: the layout of an object read without stored
/// lengths (the heal path) is each frame's true length.
#[test]
fn frame_lengths_are_found_when_not_recorded() {
    let (a, b) = (log_text(10_000, 9), noise(5_000, 10));
    let segments: Vec<&[u8]> = vec![&a, &b];
    let (object, plans) = encode(&segments, 3);
    let unknown: Vec<Expected> =
        expected(&segments, &plans).into_iter().map(|e| Expected { stored_len: None, ..e }).collect();
    let mut checker = FrameChecker::new(&unknown, 0, std::io::sink()).unwrap();
    checker.write_all(&object).unwrap();
    let (checked, _) = checker.finish().unwrap();
    assert_eq!(checked.stored_lens, plans.iter().map(|p| p.stored_len).collect::<Vec<_>>());
}
