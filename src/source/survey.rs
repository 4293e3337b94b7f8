//! Sorting what a scan found against what the archive records: segments
//! waiting to be archived, segments the archive holds (to acknowledge), late
//! files (at positions the archive passed without them: warned about once
//! each, never touched) and refused entries (which hold the stream at their
//! position). Positions retention pruned on purpose are none of these.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{CachedScan, Naming, Refused, ScanError, Segment};
use crate::manifest::Record;

/// The position ranges the archive's records cover, merged: those stored
/// as batches, and those recorded as gaps; and the positions retention
/// pruned on purpose. Kept small (one range per run of adjacent batches,
/// one per run of gaps), whatever the archive's length.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchivedRanges {
    batches: Vec<(u64, u64)>,
    gaps: Vec<(u64, u64)>,
    /// The latest "pruned before P" mark.
    pruned_before: Option<u64>,
}

impl ArchivedRanges {
    /// Take in the next record (records come in position order).
    pub fn record(&mut self, record: &Record) {
        let ranges = match record {
            Record::Batch(_) => &mut self.batches,
            Record::Gap(_) => &mut self.gaps,
        };
        let (first, last) = (record.first(), record.last());
        match ranges.last_mut() {
            Some((_, end)) if end.checked_add(1) == Some(first) => *end = last,
            _ => ranges.push((first, last)),
        }
    }

    /// Take in a prune's "pruned before P" mark.
    pub fn prune(&mut self, before: u64) {
        self.pruned_before = self.pruned_before.max(Some(before));
    }

    /// Whether retention removed position `p` from the archive on purpose.
    pub fn pruned(&self, position: u64) -> bool {
        self.pruned_before.is_some_and(|before| position < before)
    }

    /// Whether the archive holds position `p` as batch content.
    pub fn holds(&self, position: u64) -> bool {
        covering(&self.batches, position).is_some()
    }

    /// The last position the records cover.
    pub fn last(&self) -> Option<u64> {
        let end = |ranges: &[(u64, u64)]| ranges.last().map(|r| r.1);
        end(&self.batches).max(end(&self.gaps))
    }

    /// What the archive says about a position it does not hold, for the
    /// warning about a late file there.
    fn describe_missing(&self, position: u64) -> String {
        if let Some((first, last)) = covering(&self.gaps, position) {
            return format!("recorded as the gap {first}..{last} when it was missing");
        }
        let starts = [self.batches.first(), self.gaps.first()];
        match starts.into_iter().flatten().map(|r| r.0).min() {
            Some(start) if position < start => format!("below position {start}, where the archive starts"),
            _ => "not in any record of the archive".into(),
        }
    }
}

/// The range of `ranges` (sorted, disjoint) that holds `position`.
fn covering(ranges: &[(u64, u64)], position: u64) -> Option<(u64, u64)> {
    let after = ranges.partition_point(|&(first, _)| first <= position);
    after.checked_sub(1).map(|i| ranges[i]).filter(|&(_, last)| position <= last)
}

/// What a [`Source`] found, sorted against what the archive records.
#[derive(Debug, Default)]
pub struct Survey {
    /// Segments after the last recorded position, sorted, and all below the
    /// first refused entry: what the planner may archive.
    pub waiting: Vec<Segment>,
    /// Segments the archive holds as batch content: what `on_archived` may
    /// delete or mark.
    pub archived: Vec<Segment>,
    /// Late files: at positions the archive passed without them (a gap, or
    /// below its start). Never archived, deleted or marked by walship.
    pub late: Vec<Segment>,
    /// Entries that cannot be archived (see [`super::scan_entries`]).
    pub refused: Vec<Refused>,
}

/// A stream's source directory as the stream sees it: read through a
/// [`CachedScan`] and sorted against the ranges the archive records. Late
/// files are warned about once each while they stay.
pub struct Source {
    stream: String,
    dir: PathBuf,
    naming: Naming,
    /// Archived segments are kept in the directory (`on_archived = keep`):
    /// they need not be looked at.
    keep_archived: bool,
    cache: CachedScan,
    archive: ArchivedRanges,
    /// Late files already warned about (pruned to those still present).
    warned_late: BTreeSet<String>,
}

impl Source {
    /// The source of stream `stream`, reading `dir` through `naming`.
    pub fn new(stream: &str, dir: &Path, naming: &Naming, keep_archived: bool) -> Source {
        Source {
            stream: stream.to_string(),
            dir: dir.to_path_buf(),
            naming: naming.clone(),
            keep_archived,
            cache: CachedScan::default(),
            archive: ArchivedRanges::default(),
            warned_late: BTreeSet::new(),
        }
    }

    /// Take in the archive's next log record: at open, those of the journal
    /// and those adopted from the target; then each one committed.
    pub fn record(&mut self, record: &Record) {
        self.archive.record(record);
    }

    /// Take in the archive's "pruned before P" mark, if any.
    pub fn prune(&mut self, pruned_before: Option<u64>) {
        if let Some(before) = pruned_before {
            self.archive.prune(before);
        }
    }

    /// Read the directory and sort what is there (see [`Survey`]), warning
    /// once about each late file.
    pub fn survey(&mut self, now: SystemTime) -> Result<Survey, ScanError> {
        let archive = &self.archive;
        let last = archive.last();
        let after_archive = |p: u64| last.is_none_or(|last| p > last);
        let keep = self.keep_archived;
        let wanted = |p: u64| after_archive(p) || (!archive.pruned(p) && (!keep || !archive.holds(p)));
        let scan = self.cache.scan(&self.dir, &self.naming, wanted, now)?;
        // An entry the archive already passed holds nothing back: it is
        // warned about like a late file, not an error.
        let (refused, passed): (Vec<Refused>, Vec<Refused>) =
            scan.refused.into_iter().partition(|r| r.position.is_none_or(after_archive));
        let held_at = refused.iter().filter_map(|r| r.position).min().unwrap_or(u64::MAX);
        let mut survey = Survey { refused, ..Survey::default() };
        for segment in scan.segments {
            let position = segment.position;
            if after_archive(position) {
                if position < held_at {
                    survey.waiting.push(segment);
                }
            } else if archive.holds(position) {
                survey.archived.push(segment);
            } else if !archive.pruned(position) {
                survey.late.push(segment);
            }
        }
        self.warn_late(&survey.late, &passed);
        Ok(survey)
    }

    /// Warn about each late file, and each refused entry at a position the
    /// archive passed, once while it stays in the directory.
    fn warn_late(&mut self, late: &[Segment], passed: &[Refused]) {
        let present: BTreeSet<&str> =
            late.iter().map(|s| s.name.as_str()).chain(passed.iter().map(|r| r.name.as_str())).collect();
        self.warned_late.retain(|name| present.contains(name.as_str()));
        for segment in late {
            if self.warned_late.insert(segment.name.clone()) {
                log::warn!(
                    "stream {}: {} arrived late: its position {} is {}, so it will not be archived; \
                     walship leaves it untouched. Keep it elsewhere if its data matters (the \
                     archive will not hold it), then remove it from {}",
                    self.stream,
                    segment.name,
                    segment.position,
                    self.archive.describe_missing(segment.position),
                    self.dir.display(),
                );
            }
        }
        for entry in passed {
            if self.warned_late.insert(entry.name.clone()) {
                log::warn!(
                    "stream {}: in {}: {entry} (its position is one the archive already passed, \
                     so nothing waits on it)",
                    self.stream,
                    self.dir.display(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;
    use crate::manifest::{BatchRecord, SegmentEntry};
    use crate::test_support::TempDir;

    fn positions(segments: &[Segment]) -> Vec<u64> {
        segments.iter().map(|s| s.position).collect()
    }

    fn batch(first: u64, last: u64) -> Record {
        let segments = (first..=last)
            .map(|position| SegmentEntry::identity(position, format!("{position}.log"), 0, 0, 0))
            .collect();
        Record::Batch(BatchRecord::identity("s", first, last, segments))
    }

    fn gap(first: u64, last: u64) -> Record {
        Record::Gap(crate::manifest::GapRecord { first, last, reason: String::new() })
    }

    #[test]
    fn archived_ranges_merge_and_tell_batches_from_gaps() {
        let mut ranges = ArchivedRanges::default();
        assert_eq!(ranges.last(), None);
        for record in [batch(10, 10), batch(11, 20), gap(21, 22), gap(23, 23), batch(24, 30)] {
            ranges.record(&record);
        }
        assert_eq!(ranges.batches, [(10, 20), (24, 30)]);
        assert_eq!(ranges.gaps, [(21, 23)]);
        assert_eq!(ranges.last(), Some(30));
        let held: Vec<u64> = (8..=32).filter(|&p| ranges.holds(p)).collect();
        assert_eq!(held, [10..=20, 24..=30].into_iter().flatten().collect::<Vec<_>>());
        assert_eq!(ranges.describe_missing(22), "recorded as the gap 21..23 when it was missing");
        assert_eq!(ranges.describe_missing(3), "below position 10, where the archive starts");
        let mut gap_first = ArchivedRanges::default();
        gap_first.record(&gap(5, 6));
        assert_eq!(gap_first.describe_missing(1), "below position 5, where the archive starts");
    }

    #[test]
    fn survey_sorts_waiting_archived_and_late_and_holds_at_a_refused_entry() {
        let dir = TempDir::new("survey");
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        for p in [1, 2, 3, 6, 7, 9, 11, 12] {
            fs::write(dir.0.join(format!("{p}.log")), b"x").unwrap();
        }
        fs::create_dir(dir.0.join("10.log")).unwrap();
        let mut source = Source::new("s", &dir.0, &naming, false);
        for record in [batch(2, 5), gap(6, 6), batch(7, 8)] {
            source.record(&record);
        }
        let survey = source.survey(SystemTime::now()).unwrap();
        assert_eq!(positions(&survey.waiting), [9], "held below the directory at 10");
        assert_eq!(positions(&survey.archived), [2, 3, 7]);
        assert_eq!(positions(&survey.late), [1, 6]);
        assert_eq!(survey.refused.len(), 1);
        assert_eq!(
            survey.refused[0].to_string().split(';').next(),
            Some("10.log is a directory, not a segment file")
        );
        assert_eq!(source.warned_late.len(), 2);

        // An entry refused at a position the archive passed holds nothing.
        fs::remove_dir(dir.0.join("10.log")).unwrap();
        fs::remove_file(dir.0.join("3.log")).unwrap();
        fs::create_dir(dir.0.join("3.log")).unwrap();
        let survey = source.survey(SystemTime::now() + Duration::from_secs(60)).unwrap();
        assert_eq!(positions(&survey.waiting), [9, 11, 12]);
        assert!(survey.refused.is_empty());
        assert!(source.warned_late.contains("3.log"));

        // Archived segments kept in place are not even looked at; late ones are.
        fs::remove_dir(dir.0.join("3.log")).unwrap();
        let mut keeping = Source::new("s", &dir.0, &naming, true);
        for record in [batch(2, 5), gap(6, 6), batch(7, 8)] {
            keeping.record(&record);
        }
        let survey = keeping.survey(SystemTime::now()).unwrap();
        assert_eq!(positions(&survey.waiting), [9, 11, 12]);
        assert!(survey.archived.is_empty());
        assert_eq!(positions(&survey.late), [1, 6]);
        // Once a late file is gone it is forgotten (warned again if it returns).
        fs::remove_file(dir.0.join("6.log")).unwrap();
        keeping.survey(SystemTime::now() + Duration::from_secs(60)).unwrap();
        assert_eq!(keeping.warned_late.iter().collect::<Vec<_>>(), ["1.log"]);
    }

    /// Positions retention pruned are neither late nor archived content:
    /// a node that rebuilt its manifest after a prune has no record of them.
    #[test]
    fn pruned_positions_are_left_alone_quietly() {
        let dir = TempDir::new("survey-pruned");
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        for p in [3, 12, 13] {
            fs::write(dir.0.join(format!("{p}.log")), b"x").unwrap();
        }
        let mut source = Source::new("s", &dir.0, &naming, false);
        source.prune(Some(10));
        source.record(&batch(10, 12));
        let survey = source.survey(SystemTime::now()).unwrap();
        assert_eq!(positions(&survey.waiting), [13]);
        assert_eq!(positions(&survey.archived), [12]);
        assert!(survey.late.is_empty() && source.warned_late.is_empty());
    }
}
