//! The product's core rules, as pure functions of values: which present
//! segments are sealed, the committed position and the lag, which positions
//! the next batch covers, when a batch (or a short one) is ready, when a gap
//! must be recorded, where the next snapshot falls, and the config rule that
//! ties the two intervals together.
//!
//! Nothing here reads a clock, a directory or the network: callers gather the
//! facts (positions present, sealed or not, how long they have waited) and act
//! on the answer. SPEC.md's reference tables are tested verbatim below.

use std::time::Duration;

/// The positions `(first, last)` of the next batch, both inclusive.
///
/// `last_archived` is the last archived position, `None` when nothing is
/// archived yet, in which case the stream behaves as if the position before
/// its `lowest_present` segment were archived (so a stream starting at 0
/// begins with the one-segment batch `(0, 0)`). Positions beyond the
/// manifest's limit are refused at the source, but the arithmetic is checked
/// all the same: `None` when no position follows `u64::MAX`, and a batch
/// whose boundary lies beyond it ends there.
pub fn next_batch(last_archived: Option<u64>, lowest_present: u64, batch_size: u64) -> Option<(u64, u64)> {
    debug_assert!(batch_size > 0, "config::parse enforces batch_size > 0");
    let last = match (last_archived, lowest_present) {
        (Some(last), _) => last,
        (None, 0) => return Some((0, 0)),
        (None, lowest) => lowest - 1,
    };
    let first = last.checked_add(1)?;
    Some((first, (last / batch_size + 1).saturating_mul(batch_size)))
}

/// How the newest present segment becomes sealed (every older one is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sealing {
    /// Every file is sealed on sight: a spool, where files arrive by atomic
    /// rename (`seal = spool`).
    pub on_sight: bool,
    /// The newest segment is sealed once it has been idle this long
    /// (`seal_idle`).
    pub idle: Option<Duration>,
    /// Every position up to this one is sealed because the application said
    /// so: its high water mark, or "archive this file now".
    pub through: Option<u64>,
    /// Only what `through` declares is sealed (`seal = push`): a
    /// higher-numbered file proves nothing.
    pub declared_only: bool,
}

/// How many of the present segments (`positions`, sorted) are sealed: all
/// of them in a spool, every one but the newest otherwise — the newest too
/// once it has been idle long enough (`newest_age`) or the application has
/// declared it sealed; with `declared_only`, those the application declared.
/// Sealed segments are always a prefix.
pub fn sealed_count(positions: &[u64], newest_age: Duration, sealing: Sealing) -> usize {
    if sealing.declared_only {
        return positions.partition_point(|&p| sealing.through.is_some_and(|through| p <= through));
    }
    let Some(&newest) = positions.last() else { return 0 };
    let newest_idle = sealing.idle.is_some_and(|idle| newest_age >= idle);
    let declared = sealing.through.is_some_and(|through| newest <= through);
    if sealing.on_sight || newest_idle || declared { positions.len() } else { positions.len() - 1 }
}

/// The committed position: the last sealed present segment, never behind
/// what is already archived (archived segments may have been deleted, or
/// skipped by the scan).
pub fn committed_position(last_sealed: Option<u64>, archived: Option<u64>) -> Option<u64> {
    last_sealed.max(archived)
}

/// Sealed segments not yet archived: from the position after the archived
/// one (or, with nothing archived, from the lowest present segment) up to
/// the committed position.
pub fn lag_segments(committed: Option<u64>, archived: Option<u64>, lowest_present: Option<u64>) -> u64 {
    let Some(committed) = committed else { return 0 };
    let next = match (archived, lowest_present) {
        (Some(archived), _) => archived.saturating_add(1),
        (None, Some(lowest)) => lowest,
        (None, None) => return 0,
    };
    (committed + 1).saturating_sub(next)
}

/// The position of the next snapshot: the next interval boundary after the
/// last snapshot, or, when that is far behind, the latest boundary the
/// committed position has reached (a lagging snapshot jumps instead of
/// walking every interval). `None` when the next boundary after the last
/// snapshot lies beyond `u64::MAX`: there is no further snapshot.
pub fn next_snapshot(last_snapshot: Option<u64>, committed: u64, interval: u64) -> Option<u64> {
    debug_assert!(interval > 0, "callers only plan snapshots when they are on");
    let next_for_storage = match last_snapshot {
        Some(last) => (last / interval + 1).checked_mul(interval)?,
        None => 0,
    };
    let last_for_source = committed / interval * interval;
    Some(next_for_storage.max(last_for_source))
}

/// The next snapshot position if one is due now (`committed` has reached it).
pub fn snapshot_due(last_snapshot: Option<u64>, committed: u64, interval: u64) -> Option<u64> {
    next_snapshot(last_snapshot, committed, interval).filter(|&next| committed >= next)
}

/// The configuration rule: `batch_size > 0`, and, with snapshots on
/// (`snapshot_interval > 0`), `snapshot_interval` a multiple of `batch_size`.
/// The error says why, for the config error message.
pub fn check_rules(batch_size: u64, snapshot_interval: u64) -> Result<(), String> {
    if batch_size == 0 {
        return Err("batch_size must be greater than 0".into());
    }
    if snapshot_interval > 0 && !snapshot_interval.is_multiple_of(batch_size) {
        return Err(format!(
            "snapshot_interval ({snapshot_interval}) must be a multiple of batch_size \
             ({batch_size}): otherwise a snapshot can fall at a position no batch ends on, \
             and a restore from it would have to replay the stream from its beginning"
        ));
    }
    Ok(())
}

/// What the planner knows of one present segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFact {
    pub position: u64,
    pub sealed: bool,
    /// How long ago it was last modified (its wait for archiving).
    pub age: Duration,
}

/// What a stream should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Archive positions `first..=last` as one batch. `short` when it ends
    /// before the batch boundary (delay expired, flush, or a hole follows).
    Upload { first: u64, last: u64, short: bool },
    /// Positions `first..=last` are gone from the source and will never come:
    /// record a gap and move on.
    Gap { first: u64, last: u64 },
    /// Nothing to do until more segments are sealed.
    Wait,
}

/// Inputs of [`next_step`] that come from configuration and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub batch_size: u64,
    /// Upload a sealed prefix as a short batch once its oldest segment has
    /// waited this long.
    pub max_batch_delay: Option<Duration>,
    /// Upload every sealed segment now, short batch included (`run --once`,
    /// shutdown).
    pub flush: bool,
    /// Upload a short batch once its run of sealed segments reaches this
    /// position ("archive this file now").
    pub flush_through: Option<u64>,
    /// The application's low water mark: the oldest position it still
    /// holds. Positions below it that are neither archived nor present will
    /// never come.
    pub low_water_mark: Option<u64>,
}

/// Decide the next step from the last archived position and the present
/// segments (sorted by position, unique).
///
/// A position missing while a higher-numbered segment exists will never
/// arrive (names are sequential), so it becomes a gap; so does one below the
/// application's low water mark. A batch whose range has such a hole is
/// shipped up to the hole first.
pub fn next_step(last_archived: Option<u64>, present: &[SegmentFact], policy: BatchPolicy) -> Step {
    let waiting: Vec<&SegmentFact> =
        present.iter().filter(|s| last_archived.is_none_or(|last| s.position > last)).collect();
    if let (Some(last), Some(low)) = (last_archived, policy.low_water_mark) {
        let first = last.saturating_add(1);
        if low > first && waiting.first().is_none_or(|s| s.position >= low) {
            return Step::Gap { first, last: low - 1 };
        }
    }
    let Some(lowest) = waiting.first() else {
        return Step::Wait;
    };
    // `waiting` holds a position after `last_archived`, so one follows it.
    let Some((first, boundary)) = next_batch(last_archived, lowest.position, policy.batch_size) else {
        return Step::Wait;
    };
    if lowest.position > first {
        return Step::Gap { first, last: lowest.position - 1 };
    }

    // The contiguous run of sealed segments from `first`, up to the boundary.
    let mut run_last = None;
    let mut hole_follows = false;
    for (expected, seg) in (first..=boundary).zip(waiting.iter()) {
        if seg.position != expected {
            hole_follows = true;
            break;
        }
        if !seg.sealed {
            break;
        }
        run_last = Some(seg.position);
    }
    let Some(run_last) = run_last else {
        return Step::Wait;
    };
    if run_last == boundary {
        return Step::Upload { first, last: run_last, short: false };
    }
    let delay_expired = policy.max_batch_delay.is_some_and(|delay| lowest.age >= delay);
    let asked_for = policy.flush_through.is_some_and(|through| (first..=run_last).contains(&through));
    if hole_follows || policy.flush || delay_expired || asked_for {
        return Step::Upload { first, last: run_last, short: true };
    }
    Step::Wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_batch_matches_the_spec_reference_table() {
        let table = [
            (None, 100, (0, 0)),
            (Some(0), 100, (1, 100)),
            (Some(100), 50, (101, 150)),
            (Some(150), 100, (151, 200)),
            (Some(200), 100, (201, 300)),
        ];
        for (last, b, expected) in table {
            assert_eq!(next_batch(last, 0, b), Some(expected), "last={last:?} B={b}");
        }
    }

    #[test]
    fn next_batch_sequence_and_late_start() {
        assert_eq!(next_batch(Some(0), 0, 10), Some((1, 10)));
        assert_eq!(next_batch(Some(10), 0, 10), Some((11, 20)));
        // A stream whose lowest segment is s > 0 behaves as if s-1 were archived.
        assert_eq!(next_batch(None, 5, 10), Some((5, 10)));
        assert_eq!(next_batch(None, 10, 10), Some((10, 10)));
        assert_eq!(next_batch(None, 11, 10), Some((11, 20)));
        // After a short batch the rule re-aligns to the boundary by itself.
        assert_eq!(next_batch(Some(37), 0, 10), Some((38, 40)));
        assert_eq!(next_batch(Some(7), 0, 1), Some((8, 8)));
    }

    #[test]
    fn next_snapshot_matches_the_spec_reference_table() {
        let table = [
            (None, 90, 0),
            (Some(0), 90, 100),
            (Some(0), 190, 100),
            (Some(0), 200, 200),
            (Some(0), 250, 200),
            (Some(200), 250, 300),
        ];
        for (last, committed, expected) in table {
            assert_eq!(
                next_snapshot(last, committed, 100),
                Some(expected),
                "last={last:?} committed={committed}"
            );
        }
    }

    #[test]
    fn snapshot_is_due_only_once_committed_reaches_it() {
        assert_eq!(snapshot_due(None, 90, 100), Some(0));
        assert_eq!(snapshot_due(Some(0), 90, 100), None);
        assert_eq!(snapshot_due(Some(0), 190, 100), Some(100));
        assert_eq!(snapshot_due(Some(0), 200, 100), Some(200));
        assert_eq!(snapshot_due(Some(0), 250, 100), Some(200));
        assert_eq!(snapshot_due(Some(200), 250, 100), None);
    }

    #[test]
    fn config_rule() {
        assert!(check_rules(100, 0).is_ok());
        assert!(check_rules(100, 200).is_ok());
        assert!(check_rules(100, 100).is_ok());
        assert!(check_rules(0, 0).unwrap_err().contains("batch_size"));
        let err = check_rules(100, 150).unwrap_err();
        assert!(err.contains("multiple of batch_size"), "{err}");
        assert!(err.contains("replay"), "{err}");
    }

    fn sealed(positions: std::ops::RangeInclusive<u64>) -> Vec<SegmentFact> {
        positions.map(|position| SegmentFact { position, sealed: true, age: Duration::ZERO }).collect()
    }

    const B10: BatchPolicy = BatchPolicy {
        batch_size: 10,
        max_batch_delay: None,
        flush: false,
        flush_through: None,
        low_water_mark: None,
    };

    #[test]
    fn full_batches_upload_and_partial_ones_wait() {
        assert_eq!(next_step(None, &sealed(0..=3), B10), Step::Upload { first: 0, last: 0, short: false });
        assert_eq!(
            next_step(Some(0), &sealed(0..=10), B10),
            Step::Upload { first: 1, last: 10, short: false }
        );
        assert_eq!(next_step(Some(0), &sealed(0..=9), B10), Step::Wait);
        assert_eq!(
            next_step(Some(10), &sealed(0..=25), B10),
            Step::Upload { first: 11, last: 20, short: false }
        );
        assert_eq!(next_step(Some(10), &[], B10), Step::Wait);
        assert_eq!(next_step(Some(10), &sealed(0..=10), B10), Step::Wait);
    }

    #[test]
    fn unsealed_segment_stops_the_run() {
        let mut segs = sealed(1..=10);
        segs[9].sealed = false;
        assert_eq!(next_step(Some(0), &segs, B10), Step::Wait);
        let flush = BatchPolicy { flush: true, ..B10 };
        assert_eq!(next_step(Some(0), &segs, flush), Step::Upload { first: 1, last: 9, short: true });
    }

    #[test]
    fn short_batch_after_max_batch_delay() {
        let policy = BatchPolicy { max_batch_delay: Some(Duration::from_secs(60)), ..B10 };
        let mut segs = sealed(1..=4);
        assert_eq!(next_step(Some(0), &segs, policy), Step::Wait);
        segs[0].age = Duration::from_secs(61);
        assert_eq!(next_step(Some(0), &segs, policy), Step::Upload { first: 1, last: 4, short: true });
        // The next batch re-aligns: (5, 10).
        assert_eq!(
            next_step(Some(4), &sealed(5..=10), policy),
            Step::Upload { first: 5, last: 10, short: false }
        );
    }

    #[test]
    fn missing_segments_become_gaps() {
        // 1..=4 removed before archiving; 5 onwards present.
        assert_eq!(next_step(Some(0), &sealed(5..=12), B10), Step::Gap { first: 1, last: 4 });
        // A hole inside the batch range: ship up to the hole, then the gap.
        let mut segs = sealed(1..=12);
        segs.remove(4); // position 5
        assert_eq!(next_step(Some(0), &segs, B10), Step::Upload { first: 1, last: 4, short: true });
        assert_eq!(next_step(Some(4), &segs, B10), Step::Gap { first: 5, last: 5 });
        assert_eq!(next_step(Some(5), &segs, B10), Step::Upload { first: 6, last: 10, short: false });
    }

    #[test]
    fn stream_starting_late_needs_no_gap() {
        assert_eq!(
            next_step(None, &sealed(42..=60), B10),
            Step::Upload { first: 42, last: 50, short: false }
        );
    }

    #[test]
    fn low_water_mark_above_the_next_position_is_a_gap() {
        let policy = BatchPolicy { low_water_mark: Some(8), ..B10 };
        // Nothing present yet: the application no longer holds 5..=7.
        assert_eq!(next_step(Some(4), &[], policy), Step::Gap { first: 5, last: 7 });
        assert_eq!(next_step(Some(4), &sealed(8..=9), policy), Step::Gap { first: 5, last: 7 });
        // Segments below the mark still present are archived, not skipped.
        assert_eq!(
            next_step(Some(4), &sealed(6..=9), policy),
            Step::Gap { first: 5, last: 5 },
            "the lowest present segment decides first"
        );
        assert_eq!(next_step(Some(4), &sealed(5..=9), policy), Step::Wait);
        // A mark at or below the next position says nothing new.
        assert_eq!(next_step(Some(7), &[], policy), Step::Wait);
        // With nothing archived, the stream simply starts at the mark.
        assert_eq!(next_step(None, &[], policy), Step::Wait);
    }

    #[test]
    fn flush_through_ships_a_short_batch_up_to_the_file_asked_for() {
        let policy = BatchPolicy { flush_through: Some(3), ..B10 };
        assert_eq!(
            next_step(Some(0), &sealed(1..=3), policy),
            Step::Upload { first: 1, last: 3, short: true }
        );
        assert_eq!(next_step(Some(0), &sealed(1..=2), policy), Step::Wait);
        assert_eq!(next_step(Some(3), &sealed(4..=5), policy), Step::Wait);
    }

    #[test]
    fn sealing_rules() {
        let (old, new) = (Duration::from_secs(60), Duration::ZERO);
        let next = Sealing::default();
        assert_eq!(sealed_count(&[1, 2, 3], new, next), 2);
        assert_eq!(sealed_count(&[1, 2, 3], new, Sealing { on_sight: true, ..next }), 3);
        let idle = Sealing { idle: Some(Duration::from_secs(30)), ..next };
        assert_eq!(sealed_count(&[1, 2, 3], new, idle), 2);
        assert_eq!(sealed_count(&[1, 2], old, idle), 2);
        assert_eq!(sealed_count(&[1, 2], old, next), 1);
        assert_eq!(sealed_count(&[], old, Sealing { on_sight: true, ..next }), 0);
        // The application's high water mark seals the newest segment.
        assert_eq!(sealed_count(&[1, 2, 3], new, Sealing { through: Some(3), ..next }), 3);
        assert_eq!(sealed_count(&[1, 2, 3], new, Sealing { through: Some(2), ..next }), 2);
        // seal = push: only what was declared, whatever follows it or its age.
        let push = Sealing { declared_only: true, ..next };
        assert_eq!(sealed_count(&[1, 2, 3], old, push), 0);
        assert_eq!(sealed_count(&[1, 2, 3], old, Sealing { through: Some(1), ..push }), 1);
        assert_eq!(sealed_count(&[1, 2, 9], old, Sealing { through: Some(5), ..push }), 2);
        assert_eq!(sealed_count(&[1, 2, 3], old, Sealing { through: Some(7), ..push }), 3);
    }

    #[test]
    fn committed_position_is_the_last_sealed_and_never_behind_archived() {
        assert_eq!(committed_position(Some(5), None), Some(5));
        assert_eq!(committed_position(Some(5), Some(3)), Some(5));
        assert_eq!(committed_position(None, None), None);
        assert_eq!(committed_position(None, Some(9)), Some(9));
    }

    /// Regression: a stream whose first segment is 1001 showed a lag of
    /// 1002 with two sealed segments waiting.
    #[test]
    fn lag_counts_from_the_lowest_present_segment_when_nothing_is_archived() {
        assert_eq!(lag_segments(Some(1002), None, Some(1001)), 2);
        assert_eq!(lag_segments(Some(0), None, Some(0)), 1);
        assert_eq!(lag_segments(Some(120), Some(99), Some(50)), 21);
        assert_eq!(lag_segments(Some(99), Some(99), None), 0);
        assert_eq!(lag_segments(None, None, Some(3)), 0);
        assert_eq!(lag_segments(None, Some(4), None), 0);
    }

    /// `data-18446744073709551615.log` made `(last / B + 1) * B` overflow
    /// (a panic in debug builds, a wrapped batch range in release).
    #[test]
    fn plan_does_not_overflow_at_the_top_of_the_position_range() {
        let max = u64::MAX;
        assert_eq!(next_batch(Some(max), 0, 10), None);
        assert_eq!(next_batch(Some(max - 1), 0, 10), Some((max, max)));
        assert_eq!(next_batch(None, max, 100_000), Some((max, max)));
        assert_eq!(next_batch(Some(max - 20), 0, 1), Some((max - 19, max - 19)));
        // The last batch ends at u64::MAX, where the next boundary would be.
        assert_eq!(
            next_step(Some(max - 1), &sealed(max..=max), B10),
            Step::Upload { first: max, last: max, short: false }
        );
        assert_eq!(
            next_step(None, &sealed(max - 2..=max), B10),
            Step::Upload { first: max - 2, last: max, short: false }
        );
        assert_eq!(next_step(Some(max), &sealed(max - 2..=max), B10), Step::Wait);
        assert_eq!(next_snapshot(Some(max - 5), max, 100), None);
        assert_eq!(snapshot_due(Some(max - 5), max, 100), None);
        assert_eq!(next_snapshot(None, max, 100), Some(max / 100 * 100));
    }
}
