//! The rules between entries: each of a manifest's three sequences in its
//! own order, and the log contiguous.
//!
//! - Log (batches and gaps): each record starts right after the previous one
//!   ends. A record that starts later leaves a hole, which is refused as
//!   [`Refusal::Hole`] naming the missing range, unless the whole range lies
//!   below the "pruned before" mark (retention removed it on purpose). A
//!   record that starts at or before the previous one's end overlaps. The
//!   first log record may start anywhere (a stream need not start at 0; a
//!   lost first record is found by comparing with the batch objects).
//! - Snapshots: strictly increasing positions. A snapshot at P and the
//!   batch ending at P are in different sequences and coexist.
//! - Prunes: numbered 1, 2, 3… with no number missing, and the mark never
//!   moves back.
//!
//! Entries of different sequences may interleave freely (a journal holds
//! them in the order they were committed).

use super::{Entry, Record};

/// The range and kind of a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSpan {
    pub first: u64,
    pub last: u64,
    /// `"batch"` or `"gap"`.
    pub kind: &'static str,
}

impl LogSpan {
    pub fn of(record: &Record) -> LogSpan {
        LogSpan { first: record.first(), last: record.last(), kind: record.kind() }
    }
}

/// Where each sequence of a manifest read so far ends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sequences {
    /// The last log record (batch or gap).
    pub last: Option<LogSpan>,
    /// The last snapshot's position.
    pub last_snapshot: Option<u64>,
    /// The last prune's sequence number and pruned-before mark.
    pub last_prune: Option<(u64, u64)>,
}

/// Why an entry may not follow the ones before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Positions `first..=last` would be missing from the log.
    Hole { first: u64, last: u64 },
    /// Out of order, overlapping, or otherwise misplaced.
    Invalid(String),
}

impl Sequences {
    /// The last position the log covers.
    pub fn log_end(&self) -> Option<u64> {
        self.last.map(|span| span.last)
    }

    /// The "pruned before" mark, if anything was pruned.
    pub fn pruned_before(&self) -> Option<u64> {
        self.last_prune.map(|(_, before)| before)
    }

    /// Check that `entry` may come next, and take it as the new end of its
    /// sequence. On refusal nothing changes.
    pub fn admit(&mut self, entry: &Entry) -> Result<(), Refusal> {
        self.check(entry)?;
        match entry {
            Entry::Log(record) => self.last = Some(LogSpan::of(record)),
            Entry::Snapshot(snapshot) => self.last_snapshot = Some(snapshot.position),
            Entry::Prune(prune) => self.last_prune = Some((prune.sequence, prune.before)),
        }
        Ok(())
    }

    /// Check that `entry` may come next, changing nothing.
    pub fn check(&self, entry: &Entry) -> Result<(), Refusal> {
        match entry {
            Entry::Log(record) => self.check_log(record),
            Entry::Snapshot(snapshot) => match self.last_snapshot {
                Some(previous) if snapshot.position <= previous => Err(Refusal::Invalid(format!(
                    "snapshot at position {} does not come after the previous snapshot at {previous}",
                    snapshot.position
                ))),
                _ => Ok(()),
            },
            Entry::Prune(prune) => match self.last_prune {
                Some((sequence, _)) if prune.sequence <= sequence => Err(Refusal::Invalid(format!(
                    "prune {} does not come after prune {sequence}",
                    prune.sequence
                ))),
                Some((sequence, _)) if prune.sequence > sequence + 1 => Err(Refusal::Invalid(format!(
                    "prunes {}..{} are missing before prune {}",
                    sequence + 1,
                    prune.sequence - 1,
                    prune.sequence
                ))),
                Some((_, before)) if prune.before < before => Err(Refusal::Invalid(format!(
                    "prune {} moves the pruned-before mark back from {before} to {}",
                    prune.sequence, prune.before
                ))),
                _ => Ok(()),
            },
        }
    }

    fn check_log(&self, record: &Record) -> Result<(), Refusal> {
        let mark = self.pruned_before().unwrap_or(0);
        let expected = match self.last {
            Some(previous) if record.first() <= previous.last => {
                return Err(Refusal::Invalid(format!(
                    "{} {}..{} overlaps or comes before the previous {} {}..{} (records must be in \
                     increasing, non-overlapping order)",
                    record.kind(),
                    record.first(),
                    record.last(),
                    previous.kind,
                    previous.first,
                    previous.last
                )));
            }
            // `previous.last` is below `record.first()`, so this cannot overflow.
            Some(previous) => previous.last + 1,
            None => record.first(),
        };
        let missing_from = expected.max(mark);
        if record.first() > missing_from {
            return Err(Refusal::Hole { first: missing_from, last: record.first() - 1 });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Encoding, GapRecord, PruneRecord, SnapshotRecord, StoredObject};

    fn gap(first: u64, last: u64) -> Entry {
        Entry::Log(Record::Gap(GapRecord { first, last, reason: "r".into() }))
    }

    fn snapshot(position: u64) -> Entry {
        let stored = StoredObject { size: 0, crc32: 0, encoding: Encoding::Identity };
        Entry::Snapshot(SnapshotRecord { position, key: String::new(), size: 0, crc32: 0, stored })
    }

    fn prune(sequence: u64, before: u64) -> Entry {
        Entry::Prune(PruneRecord { sequence, before, deleted: Vec::new() })
    }

    /// Admit `entries` in order; the first refusal, with its index.
    fn run(entries: &[Entry]) -> Result<Sequences, (usize, Refusal)> {
        let mut sequences = Sequences::default();
        for (i, entry) in entries.iter().enumerate() {
            sequences.admit(entry).map_err(|refusal| (i, refusal))?;
        }
        Ok(sequences)
    }

    #[test]
    fn contiguous_log_with_interleaved_snapshots_and_prunes() {
        let entries =
            [gap(5, 9), snapshot(9), gap(10, 10), prune(1, 10), snapshot(10), gap(11, 20), prune(2, 11)];
        let sequences = run(&entries).expect("valid");
        assert_eq!(sequences.log_end(), Some(20));
        assert_eq!((sequences.last_snapshot, sequences.pruned_before()), (Some(10), Some(11)));
    }

    #[test]
    fn table_of_refusals() {
        let hole = |first, last| Refusal::Hole { first, last };
        let cases: Vec<(Vec<Entry>, usize, Option<Refusal>)> = vec![
            (vec![gap(0, 3), gap(7, 9)], 1, Some(hole(4, 6))),
            (vec![gap(0, 3), gap(5, 5)], 1, Some(hole(4, 4))),
            (vec![gap(0, 3), gap(3, 5)], 1, None),
            (vec![gap(10, 12), gap(0, 3)], 1, None),
            (vec![snapshot(5), snapshot(5)], 1, None),
            (vec![prune(1, 0), prune(1, 0)], 1, None),
            (vec![prune(1, 0), prune(3, 0)], 1, None),
            (vec![prune(1, 10), prune(2, 9)], 1, None),
            // A hole partly below the mark: only the part above is missing.
            (vec![gap(0, 3), prune(1, 6), gap(9, 9)], 2, Some(hole(6, 8))),
        ];
        for (entries, at, expected) in cases {
            let (index, refusal) = run(&entries).expect_err("refused");
            assert_eq!(index, at, "{entries:?}");
            match expected {
                Some(expected) => assert_eq!(refusal, expected, "{entries:?}"),
                None => assert!(matches!(refusal, Refusal::Invalid(_)), "{entries:?}: {refusal:?}"),
            }
        }
    }

    #[test]
    fn holes_wholly_below_the_mark_are_pruned_not_missing() {
        run(&[gap(0, 3), prune(1, 10), gap(10, 12)]).expect("[4, 10) was pruned");
        run(&[prune(1, 10), gap(4, 12)]).expect("a record may straddle the mark");
        run(&[prune(1, 10), gap(12, 20)]).expect("the first record may start anywhere");
        run(&[gap(5, 5)]).expect("a log may start anywhere");
    }

    #[test]
    fn refused_entry_changes_nothing() {
        let mut sequences = run(&[gap(0, 3)]).expect("valid");
        let before = sequences.clone();
        assert!(sequences.admit(&gap(9, 9)).is_err());
        assert_eq!(sequences, before);
    }
}
