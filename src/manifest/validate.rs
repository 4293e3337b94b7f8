//! The rules every entry must satisfy on its own, wherever it comes from: a
//! local journal, a remote record object, or code about to store it.
//!
//! An entry that breaks them is refused with a sentence saying which rule:
//! this is the wall against damaged and hostile manifests (keys that point
//! outside the stream's own objects, absurd positions and sizes, segment
//! lists that do not add up, segment names that are not the stream's own).
//! Order between entries is [`super::sequence`]'s business.

use std::collections::HashSet;

use crate::crc;
use crate::target::keys;

use super::{BatchRecord, Encoding, Entry, PruneRecord, Record, SegmentEntry, SnapshotRecord, StoredObject};
use super::{StreamRules, shown};

/// Highest position a record may name (2^62).
pub const MAX_POSITION: u64 = 1 << 62;
/// Largest size, offset or length a record may state (2^50 bytes, 1 PiB).
pub const MAX_SIZE: u64 = 1 << 50;
/// Most segments one batch may hold, and most keys one prune may delete.
pub const MAX_SEGMENTS: usize = 100_000;
/// Longest segment name in bytes (the usual file-name limit).
pub const MAX_NAME_LEN: usize = 255;

/// Check one entry of a stream against every rule that does not involve
/// other entries.
pub fn validate_entry(entry: &Entry, rules: &StreamRules<'_>) -> Result<(), String> {
    match entry {
        Entry::Log(record) => validate_record(record, rules),
        Entry::Snapshot(snapshot) => validate_snapshot(snapshot, rules.name),
        Entry::Prune(prune) => validate_prune(prune, rules.name),
    }
}

/// Check one log record (batch or gap) of a stream.
pub fn validate_record(record: &Record, rules: &StreamRules<'_>) -> Result<(), String> {
    validate_range(record.first(), record.last())?;
    match record {
        Record::Batch(batch) => validate_batch(batch, rules),
        // Percent-encoded on disk, but printed as it is by `list`, `verify`
        // and `restore`: no control character (a terminal escape, a
        // newline forging a row).
        Record::Gap(gap) if gap.reason.chars().any(char::is_control) => {
            Err(format!("the gap's reason `{}` holds control characters", super::shown(&gap.reason)))
        }
        Record::Gap(_) => Ok(()),
    }
}

fn validate_range(first: u64, last: u64) -> Result<(), String> {
    if first > last {
        return Err(format!("first position {first} is after last position {last}"));
    }
    validate_position(last)
}

fn validate_position(position: u64) -> Result<(), String> {
    if position > MAX_POSITION {
        return Err(format!("position {position} is beyond the limit 2^62 (absurd value)"));
    }
    Ok(())
}

fn validate_size(what: &str, size: u64) -> Result<(), String> {
    if size > MAX_SIZE {
        return Err(format!("{what} {size} is beyond the limit 2^50 (absurd value)"));
    }
    Ok(())
}

fn validate_key(what: &str, key: &str, expected: &str) -> Result<(), String> {
    if key != expected {
        return Err(format!(
            "key `{}` is not this {what}'s object key `{expected}` (a record may only name its own \
             object)",
            shown(key)
        ));
    }
    Ok(())
}

fn validate_batch(batch: &BatchRecord, rules: &StreamRules<'_>) -> Result<(), String> {
    validate_key("batch", &batch.key, &keys::batch_key(rules.name, batch.first, batch.last))?;
    validate_size("size", batch.size)?;
    validate_size("stored size", batch.stored.size)?;
    validate_segment_count(batch)?;
    let mut stored_offset = 0u64;
    for (position, segment) in (batch.first..).zip(&batch.segments) {
        validate_segment(segment, position, stored_offset, rules)?;
        // Each addend is at most 2^50, and at most 100,000 of them: no overflow.
        stored_offset += segment.stored_len;
    }
    let segments = batch.segments.iter().map(|s| (s.crc32, s.len));
    let (total_len, total_crc) = crc::concatenation(segments).unwrap_or((u64::MAX, 0));
    if total_len != batch.size {
        return Err(format!("segment lengths add up to {total_len}, not to the batch size {}", batch.size));
    }
    if total_crc != batch.crc32 {
        return Err(format!(
            "batch CRC32 {:08x} does not match the CRC32 {total_crc:08x} combined from its segments",
            batch.crc32
        ));
    }
    if stored_offset != batch.stored.size {
        return Err(format!(
            "segments take {stored_offset} stored bytes, not the stored size {}",
            batch.stored.size
        ));
    }
    validate_identity(&batch.stored, batch.size, batch.crc32)?;
    match batch.stored.encoding {
        Encoding::Identity => match batch.segments.iter().find(|s| s.stored_len != s.len) {
            Some(segment) => Err(format!(
                "segment {} takes {} stored bytes for {} raw bytes, but the encoding is identity",
                segment.position, segment.stored_len, segment.len
            )),
            None => Ok(()),
        },
        Encoding::ZstdFrames => batch
            .segments
            .iter()
            .try_for_each(|s| validate_frame_len(&format!("segment {}", s.position), s.stored_len, s.len)),
    }
}

/// A zstd frame takes at least [`MIN_FRAME_LEN`] bytes, and no zstd
/// encoder makes one larger than `frames::max_frame_len` of its `len`
/// bytes; `what` (a segment, a snapshot) takes `stored_len`.
fn validate_frame_len(what: &str, stored_len: u64, len: u64) -> Result<(), String> {
    let largest = crate::frames::max_frame_len(len);
    if stored_len < MIN_FRAME_LEN || stored_len > largest {
        return Err(format!(
            "{what} takes {stored_len} stored bytes; a zstd frame of its {len} bytes takes \
             {MIN_FRAME_LEN} to {largest}"
        ));
    }
    Ok(())
}

/// The smallest zstd frame: magic (4), descriptor (1), content size (1),
/// one empty block (3).
pub const MIN_FRAME_LEN: u64 = 9;

/// With identity encoding the stored bytes are the logical bytes.
fn validate_identity(stored: &StoredObject, size: u64, crc32: u32) -> Result<(), String> {
    if stored.encoding == Encoding::Identity && (stored.size, stored.crc32) != (size, crc32) {
        return Err(format!(
            "stored object ({} bytes, CRC32 {:08x}) differs from its content ({size} bytes, CRC32 \
             {crc32:08x}) although the encoding is identity",
            stored.size, stored.crc32
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

fn validate_segment(
    segment: &SegmentEntry,
    position: u64,
    stored_offset: u64,
    rules: &StreamRules<'_>,
) -> Result<(), String> {
    if segment.position != position {
        return Err(format!(
            "segment at position {} found where position {position} was expected (segments \
             must list every position in order)",
            segment.position
        ));
    }
    validate_name(&segment.name, position, rules).map_err(|why| format!("segment {position}: {why}"))?;
    if segment.offset != stored_offset {
        return Err(format!(
            "segment {position} starts at offset {} but the previous segments end at {stored_offset} \
             (offsets must be contiguous from 0)",
            segment.offset
        ));
    }
    validate_size(&format!("segment {position} length"), segment.len)?;
    validate_size(&format!("segment {position} stored length"), segment.stored_len)
}

/// A segment name must be a plain file name (restore writes it inside the
/// target directory and nowhere else) that the stream's naming reads as the
/// segment's own position. Two records can therefore never name the same
/// file: one name stands for one position.
fn validate_name(name: &str, position: u64, rules: &StreamRules<'_>) -> Result<(), String> {
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
    rules.naming.check_recorded(name, position).map_err(|mismatch| mismatch.to_string())
}

fn validate_snapshot(snapshot: &SnapshotRecord, stream: &str) -> Result<(), String> {
    validate_position(snapshot.position)?;
    validate_key("snapshot", &snapshot.key, &keys::snapshot_key(stream, snapshot.position))?;
    validate_size("size", snapshot.size)?;
    validate_size("stored size", snapshot.stored.size)?;
    validate_identity(&snapshot.stored, snapshot.size, snapshot.crc32)?;
    match snapshot.stored.encoding {
        Encoding::Identity => Ok(()),
        // One frame holding the image.
        Encoding::ZstdFrames => validate_frame_len("the snapshot", snapshot.stored.size, snapshot.size),
    }
}

fn validate_prune(prune: &PruneRecord, stream: &str) -> Result<(), String> {
    if prune.sequence == 0 {
        return Err("prune sequence numbers start at 1".into());
    }
    validate_position(prune.before)?;
    if prune.deleted.len() > MAX_SEGMENTS {
        return Err(format!("prune deletes more than {MAX_SEGMENTS} objects"));
    }
    let mut seen = HashSet::new();
    for key in &prune.deleted {
        if !seen.insert(key.as_str()) {
            return Err(format!("prune deletes `{}` twice", shown(key)));
        }
        validate_deleted_key(key, prune.before, stream)?;
    }
    Ok(())
}

/// A prune may delete only the stream's own snapshots, and batches wholly
/// below its pruned-before mark.
fn validate_deleted_key(key: &str, before: u64, stream: &str) -> Result<(), String> {
    if let Some((first, last)) = keys::parse_batch_key(stream, key) {
        if keys::batch_key(stream, first, last) == key && first <= last && last < before {
            return Ok(());
        }
        return Err(format!(
            "prune deletes batch `{}`, which does not lie wholly before its mark {before}",
            shown(key)
        ));
    }
    match keys::parse_snapshot_key(stream, key) {
        Some(_) => Ok(()),
        None => Err(format!(
            "prune deletes `{}`, which is neither a batch nor a snapshot of this stream",
            shown(key)
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::GapRecord;
    use crate::naming::Naming;

    /// The naming the unit tests use: `{seq}` (plain decimal names).
    pub(crate) fn naming() -> Naming {
        Naming::from_pattern("{seq}").expect("pattern")
    }

    /// A valid batch of `stream` over `first..` whose segments hold
    /// `contents` (one per position), named by their positions.
    pub(crate) fn batch(stream: &str, first: u64, contents: &[&[u8]]) -> Record {
        let mut segments = Vec::new();
        let mut offset = 0;
        for (position, bytes) in (first..).zip(contents) {
            let len = bytes.len() as u64;
            segments.push(SegmentEntry::identity(
                position,
                position.to_string(),
                offset,
                len,
                crc32fast::hash(bytes),
            ));
            offset += len;
        }
        let last = first + contents.len() as u64 - 1;
        Record::Batch(BatchRecord::identity(stream, first, last, segments))
    }

    pub(crate) fn batch_mut(record: &mut Record) -> &mut BatchRecord {
        match record {
            Record::Batch(b) => b,
            Record::Gap(_) => panic!("not a batch"),
        }
    }

    fn refused(entry: Entry, needle: &str) {
        let naming = naming();
        let err = validate_entry(&entry, &StreamRules::new("s", &naming)).expect_err("must be refused");
        assert!(err.contains(needle), "`{err}` should mention `{needle}`");
    }

    fn refused_record(record: Record, needle: &str) {
        refused(Entry::Log(record), needle);
    }

    fn two_segments() -> Record {
        batch("s", 1, &[b"hello ", b"world"])
    }

    fn snapshot(position: u64) -> SnapshotRecord {
        let stored = StoredObject { size: 5, crc32: crc32fast::hash(b"image"), encoding: Encoding::Identity };
        SnapshotRecord {
            position,
            key: keys::snapshot_key("s", position),
            size: 5,
            crc32: stored.crc32,
            stored,
        }
    }

    #[test]
    fn valid_entries_pass() {
        let naming = naming();
        let rules = StreamRules::new("s", &naming);
        assert_eq!(validate_record(&two_segments(), &rules), Ok(()));
        assert_eq!(validate_record(&batch("s", 0, &[b""]), &rules), Ok(()));
        let gap = Record::Gap(GapRecord { first: 5, last: 5, reason: String::new() });
        assert_eq!(validate_record(&gap, &rules), Ok(()));
        assert_eq!(validate_entry(&Entry::Snapshot(snapshot(100)), &rules), Ok(()));
        let prune = PruneRecord {
            sequence: 1,
            before: 3,
            deleted: vec![keys::batch_key("s", 0, 2), keys::snapshot_key("s", 0)],
        };
        assert_eq!(validate_entry(&Entry::Prune(prune), &rules), Ok(()));
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
            refused_record(record, "is not this batch's object key");
        }
        let mut foreign = snapshot(7);
        foreign.key = "s/snapshots/../../etc/passwd".into();
        refused(Entry::Snapshot(foreign), "is not this snapshot's object key");
    }

    #[test]
    fn inverted_and_absurd_ranges_are_refused() {
        refused_record(Record::Gap(GapRecord { first: 9, last: 3, reason: "x".into() }), "is after last");
        refused_record(Record::Gap(GapRecord { first: 0, last: u64::MAX, reason: "x".into() }), "2^62");
        for reason in ["\u{1b}[2J", "a\nb", "tab\there", "\u{7f}", "\u{85}"] {
            refused_record(Record::Gap(GapRecord { first: 1, last: 2, reason: reason.into() }), "control");
        }
        refused(Entry::Snapshot(snapshot(MAX_POSITION + 1)), "beyond the limit 2^62");
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let mut record = two_segments();
        batch_mut(&mut record).size = 1 << 51;
        refused_record(record, "size 2251799813685248 is beyond the limit 2^50");
        let mut record = two_segments();
        batch_mut(&mut record).segments[1].len = 1 << 51;
        refused_record(record, "length 2251799813685248 is beyond the limit");
    }

    #[test]
    fn segment_count_must_match_range() {
        let mut record = two_segments();
        batch_mut(&mut record).segments.pop();
        refused_record(record, "needs 2 segments, one per position, but lists 1");
        let mut record = two_segments();
        let b = batch_mut(&mut record);
        b.last = b.first + MAX_SEGMENTS as u64;
        b.key = keys::batch_key("s", b.first, b.last);
        refused_record(record, "at most 100000 fit in one batch");
    }

    #[test]
    fn segments_must_be_in_order_and_contiguous() {
        let mut record = two_segments();
        batch_mut(&mut record).segments.swap(0, 1);
        refused_record(record, "found where position 1 was expected");
        let mut record = two_segments();
        batch_mut(&mut record).segments[1].offset = 7;
        refused_record(record, "offsets must be contiguous from 0");
        let mut record = two_segments();
        batch_mut(&mut record).size = 10;
        refused_record(record, "add up to 11, not to the batch size 10");
    }

    #[test]
    fn crc_must_match_segments() {
        let mut record = two_segments();
        batch_mut(&mut record).crc32 ^= 1;
        refused_record(record, "combined from its segments");
        let mut record = two_segments();
        batch_mut(&mut record).segments[0].crc32 ^= 1;
        refused_record(record, "does not match the CRC32");
    }

    #[test]
    fn identity_encoding_means_stored_equals_logical() {
        let mut record = two_segments();
        batch_mut(&mut record).stored.crc32 ^= 1;
        refused_record(record, "although the encoding is identity");
        let mut record = two_segments();
        let b = batch_mut(&mut record);
        b.segments[0].stored_len += 1;
        b.segments[1].offset += 1;
        b.stored.size += 1;
        refused_record(record, "although the encoding is identity");
        let mut record = two_segments();
        let b = batch_mut(&mut record);
        b.stored.encoding = Encoding::ZstdFrames;
        b.stored.size = 27;
        b.stored.crc32 = 0x1234;
        b.segments[0].stored_len = 15;
        b.segments[1].offset = 15;
        b.segments[1].stored_len = 12;
        let naming = naming();
        assert_eq!(validate_record(&record, &StreamRules::new("s", &naming)), Ok(()));
        batch_mut(&mut record).stored.size = 28;
        refused_record(record, "segments take 27 stored bytes, not the stored size 28");
    }

    /// A zstd frame is at least 9 bytes, and never larger than its
    /// segment in raw blocks under the largest header and a checksum.
    #[test]
    fn zstd_frames_have_plausible_lengths() {
        let zstd = |first: u64, second: u64| {
            let mut record = two_segments();
            let b = batch_mut(&mut record);
            b.stored = StoredObject { size: first + second, crc32: 7, encoding: Encoding::ZstdFrames };
            (b.segments[0].stored_len, b.segments[1].offset, b.segments[1].stored_len) =
                (first, first, second);
            record
        };
        let naming = naming();
        let rules = StreamRules::new("s", &naming);
        // "hello " (6 bytes) takes at most 31 bytes, "world" 30.
        assert_eq!(validate_record(&zstd(31, 9), &rules), Ok(()));
        refused_record(
            zstd(8, 12),
            "segment 1 takes 8 stored bytes; a zstd frame of its 6 bytes takes 9 to 31",
        );
        refused_record(zstd(32, 12), "takes 9 to 31");
        refused_record(zstd(12, 31), "segment 2 takes 31 stored bytes");
    }

    #[test]
    fn unsafe_names_are_refused() {
        let long = "x".repeat(256);
        for name in ["", ".", "..", ".hidden", "a/b", "a\0b", long.as_str()] {
            let mut record = two_segments();
            batch_mut(&mut record).segments[0].name = name.into();
            refused_record(record, "segment 1: ");
        }
    }

    #[test]
    fn names_must_be_the_stream_own_at_their_position() {
        let mut record = two_segments();
        batch_mut(&mut record).segments[0].name = "passwd".into();
        refused_record(record, "`passwd` is not a segment name under the stream's naming");
        let mut record = two_segments();
        batch_mut(&mut record).segments[0].name = "2".into();
        refused_record(record, "`2` stands for position 2 under the stream's naming, not 1");
        let mut record = two_segments();
        batch_mut(&mut record).segments[1].name = "01".into();
        refused_record(record, "stands for position 1");
    }

    #[test]
    fn prunes_may_delete_only_their_own_past() {
        let prune = |before, deleted: &[&str]| {
            Entry::Prune(PruneRecord {
                sequence: 1,
                before,
                deleted: deleted.iter().map(|k| k.to_string()).collect(),
            })
        };
        refused(Entry::Prune(PruneRecord { sequence: 0, before: 0, deleted: vec![] }), "start at 1");
        refused(prune(3, &["s/batches/0000000000000000-0000000000000003"]), "wholly before its mark 3");
        refused(prune(9, &["s/batches/../../etc/passwd"]), "neither a batch nor a snapshot");
        refused(prune(9, &["other/snapshots/0000000000000000"]), "neither a batch nor a snapshot");
        refused(prune(9, &["s/snapshots/0"]), "neither a batch nor a snapshot");
        let twice = "s/snapshots/0000000000000000";
        refused(prune(9, &[twice, twice]), "twice");
    }
}
