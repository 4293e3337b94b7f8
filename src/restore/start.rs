//! Where a restore starts, as a pure function of the manifest's snapshots
//! and prunes and where its log ends: up to which position, from which
//! snapshot, through which log records ([`Start::wants`], asked of each
//! as the log streams by).
//!
//! A restore up to P (default: the newest archived position) takes the
//! newest snapshot at or before P that no prune deleted, then the log
//! records after the snapshot's position up to P. With no such snapshot it
//! replays the log from its first record — unless retention pruned the
//! stream's beginning: then P lies before the oldest position that can
//! still be restored, and the error names that position.

use crate::error::Error;
use crate::manifest::{Manifest, Record, SnapshotRecord};
use crate::retention;

/// What a restore goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start<'m> {
    /// The last position restored.
    pub limit: u64,
    /// The snapshot restored first, if any.
    pub snapshot: Option<&'m SnapshotRecord>,
    /// The pruned mark (0 with nothing pruned): records below it are gone.
    mark: u64,
}

impl Start<'_> {
    /// The first position restored from the log.
    pub fn first_position(&self) -> u64 {
        self.snapshot.map_or(0, |s| s.position + 1)
    }

    /// Whether the restore goes through `record` of the log: a live record
    /// holding positions after the snapshot (or from the log's start) up to
    /// the limit. The first such may also hold positions at or before the
    /// snapshot's, which are not restored.
    pub fn wants(&self, record: &Record) -> bool {
        record.last() >= self.mark
            && self.snapshot.is_none_or(|s| record.last() > s.position)
            && record.first() <= self.limit
    }
}

/// Where the restore of `stream` up to `position` starts, from `side` (the
/// manifest's snapshots and prunes) and `end` (the last position its log
/// covers).
pub fn start<'m>(
    stream: &str,
    side: &'m Manifest,
    end: Option<u64>,
    position: Option<u64>,
) -> Result<Start<'m>, Error> {
    let limit = match (position, end) {
        (Some(asked), Some(end)) if asked > end => {
            return Err(Error::ArchiveEnds { stream: stream.into(), end: Some(end), asked: Some(asked) });
        }
        (_, None) => return Err(Error::ArchiveEnds { stream: stream.into(), end: None, asked: position }),
        (asked, Some(end)) => asked.unwrap_or(end),
    };
    let snapshot = side.live_snapshots().take_while(|s| s.position <= limit).last();
    if let (None, Some(pruned_before)) = (snapshot, side.pruned_before()) {
        return Err(Error::Pruned {
            stream: stream.into(),
            asked: limit,
            pruned_before,
            oldest: retention::oldest_restorable(side),
        });
    }
    Ok(Start { limit, snapshot, mark: side.pruned_before().unwrap_or(0) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{BatchRecord, Encoding, GapRecord, PruneRecord, SegmentEntry, StoredObject};
    use crate::target::keys;

    fn batch(first: u64, last: u64) -> Record {
        let segments =
            (first..=last).map(|p| SegmentEntry::identity(p, p.to_string(), p - first, 1, 0)).collect();
        Record::Batch(BatchRecord::identity("s", first, last, segments))
    }

    fn snapshot(position: u64) -> SnapshotRecord {
        let stored = StoredObject { size: 1, crc32: 0, encoding: Encoding::Identity };
        SnapshotRecord { position, key: keys::snapshot_key("s", position), size: 1, crc32: 0, stored }
    }

    fn manifest() -> Manifest {
        Manifest {
            log: vec![
                batch(0, 0),
                batch(1, 10),
                batch(11, 20),
                Record::Gap(GapRecord { first: 21, last: 30, reason: "lost".into() }),
                batch(31, 40),
            ],
            snapshots: vec![snapshot(10), snapshot(25)],
            prunes: vec![],
        }
    }

    /// Where the restore of `m` up to `position` starts.
    fn start<'m>(stream: &str, m: &'m Manifest, position: Option<u64>) -> Result<Start<'m>, Error> {
        super::start(stream, m, m.log.last().map(Record::last), position)
    }

    /// (snapshot position, record ranges, limit) of a start in `m`.
    fn shape(m: &Manifest, start: &Start<'_>) -> (Option<u64>, Vec<(u64, u64)>, u64) {
        let ranges = m.log.iter().filter(|r| start.wants(r)).map(|r| (r.first(), r.last())).collect();
        (start.snapshot.map(|s| s.position), ranges, start.limit)
    }

    #[test]
    fn newest_snapshot_at_or_before_the_position_then_the_records_after_it() {
        let m = manifest();
        let at = |p| shape(&m, &start("s", &m, p).expect("starts"));
        assert_eq!(at(None), (Some(25), vec![(21, 30), (31, 40)], 40), "newest position");
        assert_eq!(at(Some(10)), (Some(10), vec![], 10), "at a snapshot");
        assert_eq!(at(Some(15)), (Some(10), vec![(11, 20)], 15), "between snapshots");
        assert_eq!(at(Some(25)), (Some(25), vec![(21, 30)], 25), "snapshot inside a gap");
        assert_eq!(at(Some(5)), (None, vec![(0, 0), (1, 10)], 5), "before the first snapshot");
        assert_eq!(start("s", &m, Some(15)).expect("starts").first_position(), 11);
    }

    #[test]
    fn a_pruned_position_names_the_oldest_restorable_one() {
        let mut m = manifest();
        m.prunes.push(PruneRecord {
            sequence: 1,
            before: 11,
            deleted: vec![keys::batch_key("s", 0, 0), keys::batch_key("s", 1, 10)],
        });
        let error = start("s", &m, Some(5)).expect_err("pruned");
        assert!(
            matches!(error, Error::Pruned { asked: 5, pruned_before: 11, oldest: Some(10), .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("the oldest position that can still be restored is 10"),
            "{error}"
        );
        assert_eq!(shape(&m, &start("s", &m, Some(10)).expect("at the kept snapshot")).0, Some(10));
        // A snapshot a prune deleted is not used.
        m.prunes[0].deleted.push(keys::snapshot_key("s", 10));
        let error = start("s", &m, Some(12)).expect_err("snapshot deleted");
        assert!(matches!(error, Error::Pruned { oldest: Some(25), .. }), "{error}");
    }

    #[test]
    fn beyond_the_end_or_nothing_archived() {
        let error = start("s", &manifest(), Some(41)).expect_err("beyond");
        assert!(error.to_string().contains("ends at position 40"), "{error}");
        let error = start("s", &Manifest::default(), None).expect_err("empty");
        assert!(error.to_string().contains("nothing is archived"), "{error}");
    }
}
