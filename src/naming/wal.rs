//! PostgreSQL WAL file names (`naming = postgres`): which names in `pg_wal`
//! are WAL segments and the position each stands for, and which are the
//! small files PostgreSQL archives beside them (timeline `.history` files
//! and `.backup` labels).
//!
//! A WAL segment's name is 24 upper-case hex digits, `TTTTTTTTLLLLLLLLSSSSSSSS`:
//! the timeline, then the segment number split in a "log" part and a
//! "segment" part, with `2^32 / wal_segment_size` segments per log (256 with
//! the 16 MiB default, so the last part runs `00000000`..`000000FF`). The
//! segment number is `log × segments_per_log + segment`.
//!
//! The position scheme: `position = timeline × 2^40 + segment number`. In
//! hex a position reads as the timeline followed by ten digits of segment
//! number (`0x0000020000000030` is timeline 2, segment 0x30), so:
//!
//! - positions follow the order PostgreSQL writes in: within a timeline,
//!   one position per segment, consecutive; a later timeline (PostgreSQL
//!   only ever creates a timeline numbered above every one it knows of)
//!   always sorts after an earlier one, so two timelines never share a
//!   position, a key or a record;
//! - the batch rule works within a timeline as for any stream (batches of
//!   `batch_size` consecutive segments; with a power of two `batch_size`
//!   the boundaries fall on segment numbers that are multiples of it, since
//!   2^40 is a multiple of every power of two up to it);
//! - a timeline switch is a gap in the log: the positions after the last
//!   segment of the old timeline and before the first of the new one are
//!   never written, and are recorded as one gap like any other range that
//!   will never come.
//!
//! Limits: timelines 1 to 2^22 - 1 and segment numbers below 2^40 (with
//! 16 MiB segments, every segment PostgreSQL can name; with 1 MiB ones,
//! the first exbibyte of WAL). A name beyond them is refused, not wrapped.
//! Timeline 0 and lower-case names are not PostgreSQL's and are not
//! segments.
//!
//! `TTTTTTTT.history` (a timeline's history) and
//! `TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup` (a base backup's label) are
//! not WAL positions: PostgreSQL archives the history file before the new
//! timeline's first segment, and a backup label after segments that may
//! already be archived. They are [`SideFile`]s, stored once each under
//! their own key, outside the log. `.partial` files (a timeline's last,
//! incomplete segment) and anything else are not archived.

use super::NameMatch;

/// Smallest and largest `wal_segment_size` PostgreSQL accepts.
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// The segment number takes the low 40 bits of a position.
const SEGMENT_BITS: u32 = 40;
const SEGMENT_MASK: u64 = (1 << SEGMENT_BITS) - 1;
/// The largest timeline a position can hold (22 bits above the segment's 40).
pub const MAX_TIMELINE: u32 = (1 << 22) - 1;

/// The WAL naming of a cluster whose segments are `segment_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalNaming {
    segment_size: u64,
}

/// A file PostgreSQL archives that is not a WAL segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideFile {
    /// `TTTTTTTT.history`: how `timeline` branched from its parents.
    History { timeline: u32 },
    /// `…SEGMENT.OFFSET.backup`: the label of a base backup that started in
    /// that segment.
    Backup { timeline: u32, segment: u64, offset: u32 },
}

impl WalNaming {
    /// The one validator of `wal_segment_size`: a power of two from 1 MiB
    /// to 1 GiB, as `initdb --wal-segsize` allows.
    pub fn new(segment_size: u64) -> Result<WalNaming, String> {
        if !segment_size.is_power_of_two() || !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(format!(
                "expected a power of two from 1MiB to 1GiB (PostgreSQL's --wal-segsize; the \
                 cluster's own is shown by `SHOW wal_segment_size`), got {segment_size} bytes"
            ));
        }
        Ok(WalNaming { segment_size })
    }

    /// Bytes per WAL segment file.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    fn segments_per_log(&self) -> u64 {
        (1u64 << 32) / self.segment_size
    }

    /// What `file_name` is: a WAL segment at its position, or not one.
    pub fn classify(&self, file_name: &str) -> NameMatch {
        let Some([timeline, log, segment]) = hex_fields(file_name) else {
            return NameMatch::NotASegment;
        };
        if timeline == 0 || segment >= self.segments_per_log() {
            return NameMatch::NotASegment;
        }
        let segment_number = log * self.segments_per_log() + segment;
        if timeline > MAX_TIMELINE as u64 || segment_number > SEGMENT_MASK {
            return NameMatch::Overflow;
        }
        NameMatch::Position(timeline << SEGMENT_BITS | segment_number)
    }

    /// The segment file name for `position` (timeline 0 gives a name that
    /// is no segment's: no WAL position lies below 2^40).
    pub fn name(&self, position: u64) -> String {
        let (timeline, segment_number) = (position >> SEGMENT_BITS, position & SEGMENT_MASK);
        let per_log = self.segments_per_log();
        format!("{timeline:08X}{:08X}{:08X}", segment_number / per_log, segment_number % per_log)
    }

    /// Why a name shaped like a WAL segment's is not one under this segment
    /// size, when that is the likely reason (a `wal_segment_size` that is
    /// not the cluster's).
    pub fn size_hint(&self, file_name: &str) -> Option<String> {
        let [_, _, segment] = hex_fields(file_name)?;
        (segment >= self.segments_per_log()).then(|| {
            format!(
                "its last 8 digits ({segment:08X}) go beyond {:08X}, the last segment of a log with \
                 wal_segment_size = {}MiB: set wal_segment_size to the cluster's (`SHOW \
                 wal_segment_size`)",
                self.segments_per_log() - 1,
                self.segment_size >> 20
            )
        })
    }
}

/// A history or backup file's name, if `file_name` is one.
pub fn side_file(file_name: &str) -> Option<SideFile> {
    if let Some(timeline) = file_name.strip_suffix(".history") {
        let timeline = upper_hex(timeline, 8)? as u32;
        return (timeline > 0).then_some(SideFile::History { timeline });
    }
    let (segment, offset) = file_name.strip_suffix(".backup")?.split_once('.')?;
    let [timeline, log, segment] = hex_fields(segment)?;
    let offset = upper_hex(offset, 8)? as u32;
    (timeline > 0).then_some(SideFile::Backup {
        timeline: timeline as u32,
        segment: log << 32 | segment,
        offset,
    })
}

/// The timeline of a WAL position.
pub fn timeline_of(position: u64) -> u64 {
    position >> SEGMENT_BITS
}

/// The three 8-digit fields of a 24-digit upper-case hex name.
fn hex_fields(name: &str) -> Option<[u64; 3]> {
    // ASCII first: 24 bytes of other characters cannot be cut at 8 and 16.
    if name.len() != 24 || !name.is_ascii() {
        return None;
    }
    Some([upper_hex(&name[..8], 8)?, upper_hex(&name[8..16], 8)?, upper_hex(&name[16..], 8)?])
}

/// Exactly `digits` upper-case hex digits (PostgreSQL's spelling, so that
/// one file has one name).
fn upper_hex(text: &str, digits: usize) -> Option<u64> {
    let canonical = text.len() == digits && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
    canonical.then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn wal(size: u64) -> WalNaming {
        WalNaming::new(size).unwrap()
    }

    #[test]
    fn segment_sizes_are_powers_of_two_from_1mib_to_1gib() {
        for size in [MIB, 2 * MIB, 16 * MIB, 64 * MIB, 1 << 30] {
            assert_eq!(WalNaming::new(size).map(|w| w.segment_size()), Ok(size));
        }
        for size in [0, 1, MIB / 2, 3 * MIB, 16 * MIB + 1, 2 << 30, u64::MAX] {
            let err = WalNaming::new(size).unwrap_err();
            assert!(err.contains("power of two from 1MiB to 1GiB"), "{size}: {err}");
        }
    }

    /// Every part of a name: timeline, log, segment, with 16 MiB segments
    /// (256 per log) and 1 MiB ones (4096 per log).
    #[test]
    fn every_part_of_a_name_counts() {
        let w16 = wal(16 * MIB);
        let at = |tl: u64, segno: u64| NameMatch::Position(tl << 40 | segno);
        assert_eq!(w16.classify("000000010000000000000001"), at(1, 1));
        assert_eq!(w16.classify("0000000100000000000000FF"), at(1, 0xFF));
        assert_eq!(w16.classify("000000010000000100000000"), at(1, 0x100));
        assert_eq!(w16.classify("0000000100000002000000A0"), at(1, 0x2A0));
        assert_eq!(w16.classify("000000020000000000000030"), at(2, 0x30));
        assert_eq!(w16.classify("0000ABCD0000000000000030"), at(0xABCD, 0x30));
        assert_eq!(w16.classify("00000001FFFFFFFF000000FF"), at(1, 0xFF_FFFF_FFFF));
        let w1 = wal(MIB);
        assert_eq!(w1.classify("000000010000000100000000"), at(1, 0x1000));
        assert_eq!(w1.classify("000000010000000000000FFF"), at(1, 0xFFF));
        // The segment part beyond the last of a log is not this cluster's.
        assert_eq!(w16.classify("000000010000000000000100"), NameMatch::NotASegment);
        assert!(w16.size_hint("000000010000000000000100").unwrap().contains("000000FF"));
        assert_eq!(w1.size_hint("000000010000000000000100"), None);
        // Positions read as timeline then segment number, in hex.
        assert_eq!(w16.classify("000000020000000000000030"), NameMatch::Position(0x0000_0200_0000_0030));
    }

    #[test]
    fn names_round_trip_and_timelines_never_collide() {
        for size in [MIB, 16 * MIB, 1 << 30] {
            let w = wal(size);
            for name in [
                "000000010000000000000001",
                "000000020000000000000001",
                "003FFFFF0000000000000002",
                "000000010000001200000003",
            ] {
                let NameMatch::Position(p) = w.classify(name) else { panic!("{name}") };
                assert_eq!(w.name(p), name, "{size}");
            }
            // The same segment number on two timelines: two positions.
            let a = w.classify("000000010000000000000003");
            let b = w.classify("000000020000000000000003");
            assert_ne!(a, b);
            let (NameMatch::Position(a), NameMatch::Position(b)) = (a, b) else { panic!() };
            assert!(a < b && timeline_of(a) == 1 && timeline_of(b) == 2);
        }
        // The highest segment of timeline 1 sorts before timeline 2's lowest.
        let w = wal(16 * MIB);
        let position = |name| match w.classify(name) {
            NameMatch::Position(p) => p,
            other => panic!("{name}: {other:?}"),
        };
        assert!(position("00000001FFFFFFFF000000FF") < position("000000020000000000000000"));
    }

    #[test]
    fn limits_are_refused_not_wrapped() {
        let w1 = wal(MIB);
        // 2^40 segments of 1 MiB: log 0x10000000 is the first beyond.
        assert_eq!(w1.classify("000000010FFFFFFF00000FFF"), NameMatch::Position(1 << 40 | SEGMENT_MASK));
        assert_eq!(w1.classify("000000011000000000000000"), NameMatch::Overflow);
        assert_eq!(wal(16 * MIB).classify("00400000000000000000000A"), NameMatch::Overflow);
        assert_eq!(
            wal(16 * MIB).classify("003FFFFF000000000000000A"),
            NameMatch::Position(0x3F_FFFF << 40 | 10)
        );
        let highest = wal(16 * MIB).classify("003FFFFFFFFFFFFF000000FF");
        assert_eq!(highest, NameMatch::Position((1 << 62) - 1), "within the manifest's 2^62");
    }

    #[test]
    fn hostile_and_foreign_names_are_not_segments() {
        let w = wal(16 * MIB);
        for name in [
            "",
            "00000001000000000000001",   // 23 digits
            "0000000100000000000000010", // 25
            "00000001000000000000000a",  // lower case
            "000000000000000000000001",  // timeline 0
            "000000010000000000000001.partial",
            "000000010000000000000001.ready",
            "000000010000000000000001.done",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "archive_status",
            "RECOVERYXLOG",
            "xlogtemp.1234",
            ".000000010000000000000001",
            "+00000010000000000000001",
            "0x000001000000000000000001",
            "00000001000000000000000１", // a full-width digit
            "../00000001000000000000001",
            "00000001/0000000000000001",
            // 24 bytes, a two-byte character across the first cut (found
            // by the fuzzer: slicing it panicked).
            "0000000é000000000000000",
            "0000000é000000000000000.00000028.backup",
        ] {
            assert_eq!(w.classify(name), NameMatch::NotASegment, "{name:?}");
        }
    }

    #[test]
    fn history_and_backup_files() {
        assert_eq!(side_file("00000002.history"), Some(SideFile::History { timeline: 2 }));
        assert_eq!(side_file("0000ABCD.history"), Some(SideFile::History { timeline: 0xABCD }));
        assert_eq!(
            side_file("000000010000000000000002.00000028.backup"),
            Some(SideFile::Backup { timeline: 1, segment: 2, offset: 0x28 })
        );
        for name in [
            "00000000.history",
            "0000002.history",
            "000000002.history",
            "0000000a.history",
            "00000002.history.partial",
            "00000002.HISTORY",
            ".history",
            "x/00000002.history",
            "000000010000000000000002.backup",
            "000000010000000000000002.0000028.backup",
            "000000010000000000000002.00000028.backup.tmp",
            "000000000000000000000002.00000028.backup",
            "00000001000000000000000200000028.backup",
            "000000010000000000000002",
        ] {
            assert_eq!(side_file(name), None, "{name:?}");
        }
    }
}
