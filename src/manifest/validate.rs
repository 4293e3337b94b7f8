//! The rules every record must satisfy, wherever it comes from: a local
//! journal, a remote record object, or code about to append it.
//!
//! A record that breaks them is refused with a sentence saying which rule:
//! this is the wall against damaged and hostile manifests (keys that point
//! outside the stream's own batch object, absurd sizes, segment lists that do
//! not add up). Ordering between records is checked by the callers that see
//! more than one record ([`super::format::parse_each`], the journal).

use crate::target::keys;

use super::{BatchRecord, GapRecord, Record, SegmentEntry, shown};

/// Highest position a record may name (2^62).
pub const MAX_POSITION: u64 = 1 << 62;
/// Largest size, offset or length a record may state (2^50 bytes, 1 PiB).
pub const MAX_SIZE: u64 = 1 << 50;
/// Most segments one batch may hold.
pub const MAX_SEGMENTS: usize = 100_000;
/// Longest segment name in bytes (the usual file-name limit).
pub const MAX_NAME_LEN: usize = 255;

/// CRC32 of `a || b` from `crc_a = crc32(a)`, `crc_b = crc32(b)` and
/// `len_b = b.len()`, without the bytes.
pub fn combine_crc32(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(crc_a);
    hasher.combine(&crc32fast::Hasher::new_with_initial_len(crc_b, len_b));
    hasher.finalize()
}

/// Check one record of `stream` against every rule that does not involve
/// other records.
pub fn validate_record(record: &Record, stream: &str) -> Result<(), String> {
    validate_range(record.first(), record.last())?;
    match record {
        Record::Batch(batch) => validate_batch(batch, stream),
        Record::Gap(gap) => validate_gap(gap),
    }
}

fn validate_range(first: u64, last: u64) -> Result<(), String> {
    if first > last {
        return Err(format!("first position {first} is after last position {last}"));
    }
    if last > MAX_POSITION {
        return Err(format!("position {last} is beyond the limit 2^62 (absurd value)"));
    }
    Ok(())
}

fn validate_gap(_gap: &GapRecord) -> Result<(), String> {
    // Any reason text is acceptable: it is percent-encoded on disk and
    // escaped when shown.
    Ok(())
}

fn validate_batch(batch: &BatchRecord, stream: &str) -> Result<(), String> {
    let expected_key = keys::batch_key(stream, batch.first, batch.last);
    if batch.key != expected_key {
        return Err(format!(
            "key `{}` is not this batch's object key `{expected_key}` (a record may only name \
             its own batch object)",
            shown(&batch.key)
        ));
    }
    if batch.size > MAX_SIZE {
        return Err(format!("size {} is beyond the limit 2^50 (absurd value)", batch.size));
    }
    validate_segment_count(batch)?;
    let (total_len, total_crc) = validate_segments(batch)?;
    if total_len != batch.size {
        return Err(format!("segment lengths add up to {total_len}, not to the batch size {}", batch.size));
    }
    if total_crc != batch.crc32 {
        return Err(format!(
            "batch CRC32 {:08x} does not match the CRC32 {total_crc:08x} combined from its segments",
            batch.crc32
        ));
    }
    Ok(())
}

fn validate_segment_count(batch: &BatchRecord) -> Result<(), String> {
    // `validate_range` made first <= last <= 2^62, so this cannot overflow.
    let positions = batch.last - batch.first + 1;
    if positions > MAX_SEGMENTS as u64 {
        return Err(format!("batch covers {positions} positions; at most {MAX_SEGMENTS} fit in one batch"));
    }
    if batch.segments.len() as u64 != positions {
        return Err(format!(
            "batch {}..{} needs {positions} segments, one per position, but lists {}",
            batch.first,
            batch.last,
            batch.segments.len()
        ));
    }
    Ok(())
}

/// Check each segment in turn; returns the total length and combined CRC32.
fn validate_segments(batch: &BatchRecord) -> Result<(u64, u32), String> {
    let mut total_len = 0u64;
    let mut total_crc = 0u32;
    for (expected_position, segment) in (batch.first..).zip(&batch.segments) {
        validate_segment(segment, expected_position, total_len)?;
        total_len += segment.len;
        if total_len > MAX_SIZE {
            return Err("segment lengths add up beyond the limit 2^50 (absurd value)".into());
        }
        total_crc = combine_crc32(total_crc, segment.crc32, segment.len);
    }
    Ok((total_len, total_crc))
}

fn validate_segment(segment: &SegmentEntry, position: u64, offset: u64) -> Result<(), String> {
    if segment.position != position {
        return Err(format!(
            "segment at position {} found where position {position} was expected (segments \
             must list every position in order)",
            segment.position
        ));
    }
    validate_name(&segment.name).map_err(|why| format!("segment {position}: {why}"))?;
    if segment.offset != offset {
        return Err(format!(
            "segment {position} starts at offset {} but the previous segments end at {offset} \
             (offsets must be contiguous from 0)",
            segment.offset
        ));
    }
    if segment.len > MAX_SIZE {
        return Err(format!(
            "segment {position} length {} is beyond the limit 2^50 (absurd value)",
            segment.len
        ));
    }
    Ok(())
}

/// A segment name must be a plain file name: restore writes it inside the
/// target directory and nowhere else.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty segment name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("segment name is longer than {MAX_NAME_LEN} bytes"));
    }
    if name.contains(['/', '\0']) {
        return Err(format!("segment name `{}` contains '/' or NUL", shown(name)));
    }
    if name.starts_with('.') {
        return Err(format!("segment name `{}` starts with '.'", shown(name)));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid batch of `stream` over `first..=last` whose segments hold
    /// `contents` (one per position) under the given names.
    pub(crate) fn batch(stream: &str, first: u64, names: &[&str], contents: &[&[u8]]) -> Record {
        let mut segments = Vec::new();
        let mut offset = 0;
        for ((position, name), bytes) in (first..).zip(names).zip(contents) {
            let len = bytes.len() as u64;
            let crc32 = crc32fast::hash(bytes);
            segments.push(SegmentEntry { position, name: name.to_string(), offset, len, crc32 });
            offset += len;
        }
        let last = first + names.len() as u64 - 1;
        Record::Batch(BatchRecord {
            first,
            last,
            key: keys::batch_key(stream, first, last),
            size: offset,
            crc32: crc32fast::hash(&contents.concat()),
            segments,
        })
    }

    fn batch_mut(record: &mut Record) -> &mut BatchRecord {
        match record {
            Record::Batch(b) => b,
            Record::Gap(_) => panic!("not a batch"),
        }
    }

    fn refused(record: &Record, needle: &str) {
        let err = validate_record(record, "s").expect_err("must be refused");
        assert!(err.contains(needle), "`{err}` should mention `{needle}`");
    }

    fn two_segments() -> Record {
        batch("s", 1, &["a", "b"], &[b"hello ", b"world"])
    }

    #[test]
    fn combine_matches_crc_of_concatenation() {
        let (a, b) = (b"hello ".as_slice(), b"world".as_slice());
        let combined = combine_crc32(crc32fast::hash(a), crc32fast::hash(b), b.len() as u64);
        assert_eq!(combined, crc32fast::hash(b"hello world"));
        assert_eq!(combine_crc32(0, crc32fast::hash(b), 5), crc32fast::hash(b));
        assert_eq!(combine_crc32(crc32fast::hash(a), 0, 0), crc32fast::hash(a));
    }

    #[test]
    fn valid_batch_and_gap_pass() {
        assert_eq!(validate_record(&two_segments(), "s"), Ok(()));
        let empty = batch("s", 0, &["empty"], &[b""]);
        assert_eq!(validate_record(&empty, "s"), Ok(()));
        let gap = Record::Gap(GapRecord { first: 5, last: 5, reason: String::new() });
        assert_eq!(validate_record(&gap, "s"), Ok(()));
    }

    #[test]
    fn keys_other_than_the_batch_own_are_refused() {
        for key in [
            "s/batches/../../etc/passwd",
            "/etc/passwd",
            "other/batches/0000000000000001-0000000000000002",
            "s/batches/0000000000000001-0000000000000003",
            "s/batches/0000000000000001-0000000000000002/../x",
        ] {
            let mut record = two_segments();
            batch_mut(&mut record).key = key.into();
            refused(&record, "is not this batch's object key");
        }
    }

    #[test]
    fn inverted_and_absurd_ranges_are_refused() {
        let gap = Record::Gap(GapRecord { first: 9, last: 3, reason: "x".into() });
        refused(&gap, "is after last position");
        let far = Record::Gap(GapRecord { first: 0, last: u64::MAX, reason: "x".into() });
        refused(&far, "beyond the limit 2^62");
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let mut record = two_segments();
        batch_mut(&mut record).size = 1 << 51;
        refused(&record, "size 2251799813685248 is beyond the limit 2^50");
        let mut record = two_segments();
        batch_mut(&mut record).segments[1].len = 1 << 51;
        refused(&record, "length 2251799813685248 is beyond the limit");
    }

    #[test]
    fn segment_count_must_match_range() {
        let mut record = two_segments();
        batch_mut(&mut record).segments.pop();
        refused(&record, "needs 2 segments, one per position, but lists 1");
        let mut record = two_segments();
        let b = batch_mut(&mut record);
        b.last = b.first + MAX_SEGMENTS as u64;
        b.key = keys::batch_key("s", b.first, b.last);
        refused(&record, "at most 100000 fit in one batch");
    }

    #[test]
    fn segments_must_be_in_order_and_contiguous() {
        let mut record = two_segments();
        batch_mut(&mut record).segments.swap(0, 1);
        refused(&record, "found where position 1 was expected");
        let mut record = two_segments();
        batch_mut(&mut record).segments[1].offset = 7;
        refused(&record, "offsets must be contiguous from 0");
        let mut record = two_segments();
        batch_mut(&mut record).size = 10;
        refused(&record, "add up to 11, not to the batch size 10");
    }

    #[test]
    fn crc_must_match_segments() {
        let mut record = two_segments();
        batch_mut(&mut record).crc32 ^= 1;
        refused(&record, "combined from its segments");
        let mut record = two_segments();
        batch_mut(&mut record).segments[0].crc32 ^= 1;
        refused(&record, "does not match the CRC32");
    }

    #[test]
    fn unsafe_names_are_refused() {
        let long = "x".repeat(256);
        for name in ["", ".", "..", ".hidden", "a/b", "a\0b", long.as_str()] {
            let mut record = two_segments();
            batch_mut(&mut record).segments[0].name = name.into();
            refused(&record, "segment 1: ");
        }
    }
}
