//! Retention, as pure functions of a manifest: which snapshots and batches
//! a prune deletes ([`plan`]), how that is written as prune records
//! ([`Plan::records`]), and whether the prune records a manifest holds are
//! consistent with its batches and snapshots ([`check_prunes`]).
//!
//! The rule. With `keep` = `keep_snapshots`, nothing is deleted until a
//! stream holds more than `keep` live snapshots: until then the positions
//! before the first snapshot stay restorable by replaying the stream from
//! its first batch. Once a snapshot falls out of the newest `keep`, the
//! oldest kept snapshot K is the oldest position a restore can reach, and
//! every snapshot before K and every batch that ends at or before K (needed
//! by no restore of a position from K on) is deleted; the "pruned before"
//! mark becomes K + 1. K is never later than the newest snapshot at or
//! before the archive's end, so the restore of the newest archived position
//! keeps what it needs even when a snapshot was taken beyond what is
//! archived. A batch that straddles K (a manual snapshot inside a batch)
//! is kept whole. With no snapshot at all, every batch is kept. Once
//! something was pruned, replay from the first batch is impossible, so a
//! later plan also finishes an interrupted one (batches below the oldest
//! live snapshot) without waiting for another snapshot.
//!
//! Nothing here lists, reads or deletes objects: `stream::retention` does,
//! recording each prune before deleting what it names.

use std::collections::HashSet;

use crate::human::{count, human_bytes};
use crate::manifest::validate::MAX_POSITION;
use crate::manifest::{Entry, Manifest, PruneRecord, Record, SnapshotRecord};
use crate::target::keys;

/// Most keys one prune record names: a first prune of a long history is
/// recorded as several prunes, each small enough to read and write at once.
pub const KEYS_PER_PRUNE: usize = 10_000;

/// What a deleted object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// The batch object of positions `first..=last`.
    Batch { first: u64, last: u64 },
    /// The snapshot object at `position`.
    Snapshot { position: u64 },
}

/// One object a prune deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    pub key: String,
    pub object: Object,
    /// Its stored size.
    pub bytes: u64,
}

impl Doomed {
    /// Where it sorts among a prune's deletions: a batch by its last
    /// position, a snapshot by its own (after the batch ending there).
    fn order(&self) -> (u64, u8) {
        match self.object {
            Object::Batch { last, .. } => (last, 0),
            Object::Snapshot { position } => (position, 1),
        }
    }
}

/// What one prune deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The oldest snapshot kept: the oldest position restorable afterwards.
    pub oldest_kept: u64,
    /// The "pruned before" mark once the prune is recorded.
    pub before: u64,
    /// The mark before this prune (`None`: nothing pruned yet).
    pub previous_mark: Option<u64>,
    /// Every object deleted, batches and snapshots, in position order.
    pub doomed: Vec<Doomed>,
}

impl Plan {
    /// Total stored bytes deleted.
    pub fn bytes(&self) -> u64 {
        self.doomed.iter().map(|d| d.bytes).sum()
    }

    /// The prune records that carry this plan, numbered from
    /// `next_sequence`: at most [`KEYS_PER_PRUNE`] keys each, in position
    /// order. Each record's mark lies just past the last batch it or an
    /// earlier one deletes (the last record's is [`Plan::before`]), so
    /// after any prefix of them is recorded every batch below the mark is
    /// named deleted and every live snapshot lies at or after mark - 1:
    /// the manifest stays consistent ([`check_prunes`]) wherever a crash
    /// lands.
    pub fn records(&self, next_sequence: u64) -> Vec<PruneRecord> {
        let mut records = Vec::new();
        let mut mark = self.previous_mark.unwrap_or(0);
        let chunks: Vec<&[Doomed]> = self.doomed.chunks(KEYS_PER_PRUNE).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let last_batch = chunk.iter().filter_map(|d| match d.object {
                Object::Batch { last, .. } => Some(last + 1),
                Object::Snapshot { .. } => None,
            });
            mark = mark.max(last_batch.max().unwrap_or(0));
            if index + 1 == chunks.len() {
                mark = self.before;
            }
            records.push(PruneRecord {
                sequence: next_sequence + index as u64,
                before: mark,
                deleted: chunk.iter().map(|d| d.key.clone()).collect(),
            });
        }
        records
    }
}

/// What `walship prune` prints for a stream: with a plan, a header (what
/// goes, in total, and from which position on restores stay possible) and
/// one line per object (kind, positions, size, key), the same lines for a
/// dry run as for the real one; without, why nothing goes.
pub fn render(
    stream: &str,
    plan: Option<&Plan>,
    live_snapshots: usize,
    keep: usize,
    dry_run: bool,
) -> String {
    let Some(plan) = plan else {
        return format!(
            "stream {stream}: nothing to prune ({} kept, keep_snapshots = {keep})\n",
            count(live_snapshots as u64, "snapshot")
        );
    };
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut out = format!(
        "stream {stream}: {verb} {} ({}); restorable from position {} on, positions before {} pruned\n",
        count(plan.doomed.len() as u64, "object"),
        human_bytes(plan.bytes()),
        plan.oldest_kept,
        plan.before
    );
    for doomed in &plan.doomed {
        let (kind, positions) = match doomed.object {
            Object::Batch { first, last } => ("batch", format!("{first}..{last}")),
            Object::Snapshot { position } => ("snapshot", position.to_string()),
        };
        out.push_str(&format!(
            "  {kind:<8}  {positions:<23} {:>11}  {}\n",
            human_bytes(doomed.bytes),
            doomed.key
        ));
    }
    out
}

/// Add `entry` (of `stream`'s manifest, in journal order, or a rebuilt
/// journal's: prunes first) to `view`, the part of the manifest retention
/// needs, kept small: the log records from the pruned-before mark on,
/// without their segment lists (a batch's range, key and size are all
/// [`plan`] reads); every snapshot; the prunes with only the snapshot keys
/// they deleted, but the latest whole (its deletions may need finishing).
/// Memory follows what retention keeps, not the pruned history; [`plan`]
/// of the view is [`plan`] of the whole manifest.
pub fn add_to_view(view: &mut Manifest, stream: &str, entry: Entry) {
    match entry {
        Entry::Log(mut record) => {
            if record.last() >= view.pruned_before().unwrap_or(0) {
                if let Record::Batch(batch) = &mut record {
                    batch.segments = Vec::new();
                }
                view.log.push(record);
            }
        }
        Entry::Prune(prune) => {
            if let Some(previous) = view.prunes.last_mut() {
                previous.deleted.retain(|key| keys::parse_snapshot_key(stream, key).is_some());
            }
            let below = view.log.partition_point(|r| r.last() < prune.before);
            view.log.drain(..below);
            view.prunes.push(prune);
        }
        Entry::Snapshot(snapshot) => view.snapshots.push(snapshot),
    }
}

/// Every key the manifest's prunes have deleted.
fn deleted_keys(manifest: &Manifest) -> HashSet<&str> {
    manifest.prunes.iter().flat_map(|p| p.deleted.iter().map(String::as_str)).collect()
}

/// What a prune keeping the newest `keep` snapshots deletes now, or
/// `None` when it deletes nothing (see the module doc for the rule).
pub fn plan(manifest: &Manifest, keep: usize) -> Option<Plan> {
    let end = manifest.log.last()?.last();
    let live: Vec<&SnapshotRecord> = manifest.live_snapshots().collect();
    let newest_usable = live.iter().rev().find(|s| s.position <= end)?.position;
    let previous_mark = manifest.pruned_before();
    let oldest_kept = if live.len() > keep.max(1) {
        live[live.len() - keep.max(1)].position
    } else if previous_mark.is_some() {
        live.first()?.position
    } else {
        return None;
    }
    .min(newest_usable);
    if oldest_kept >= MAX_POSITION {
        return None;
    }
    let before = previous_mark.unwrap_or(0).max(oldest_kept + 1);
    let deleted = deleted_keys(manifest);
    let mut doomed: Vec<Doomed> = manifest
        .live_log()
        .iter()
        .take_while(|record| record.last() < before)
        .filter_map(|record| match record {
            Record::Batch(batch) if !deleted.contains(batch.key.as_str()) => Some(Doomed {
                key: batch.key.clone(),
                object: Object::Batch { first: batch.first, last: batch.last },
                bytes: batch.stored.size,
            }),
            _ => None,
        })
        .collect();
    doomed.extend(live.iter().filter(|s| s.position < oldest_kept).map(|s| Doomed {
        key: s.key.clone(),
        object: Object::Snapshot { position: s.position },
        bytes: s.stored.size,
    }));
    if doomed.is_empty() {
        return None;
    }
    doomed.sort_by_key(Doomed::order);
    Some(Plan { oldest_kept, before, previous_mark, doomed })
}

/// The oldest position a restore can reach: with nothing pruned, the
/// log's first position; after a prune, the oldest live snapshot (`None`
/// when nothing is archived, or when a prune left no snapshot, which
/// [`check_prunes`] refuses).
pub fn oldest_restorable(manifest: &Manifest) -> Option<u64> {
    match manifest.pruned_before() {
        None => manifest.log.first().map(Record::first),
        Some(_) => manifest.live_snapshots().next().map(|s| s.position),
    }
}

/// Whether the manifest's prune records agree with what retention does:
/// every batch below the latest mark is named deleted by some prune, every
/// snapshot below the mark (but the one at mark - 1) is deleted, and a
/// snapshot remains to restore from. A forged or damaged prune record that
/// would hide archived data from `list` and `restore` fails here; the error
/// names the prune and what it hides.
pub fn check_prunes(manifest: &Manifest) -> Result<(), String> {
    check_pruned_batches(manifest, &manifest.log)?;
    check_prune_snapshots(manifest)
}

/// The latest prune's sequence number and mark, when it has one above 0.
fn latest_mark(manifest: &Manifest) -> Option<(u64, u64)> {
    manifest.prunes.last().map(|p| (p.sequence, p.before)).filter(|&(_, before)| before > 0)
}

/// The part of [`check_prunes`] about the log: every batch among `log`
/// (the log, in order, or its start) that lies below the latest mark of
/// `manifest`'s prunes is named deleted by one of them.
pub fn check_pruned_batches<'a>(
    manifest: &Manifest,
    log: impl IntoIterator<Item = &'a Record>,
) -> Result<(), String> {
    let Some((sequence, before)) = latest_mark(manifest) else { return Ok(()) };
    let deleted = deleted_keys(manifest);
    let hidden = log.into_iter().take_while(|r| r.last() < before).find_map(|record| match record {
        Record::Batch(batch) if !deleted.contains(batch.key.as_str()) => Some(batch),
        _ => None,
    });
    match hidden {
        Some(batch) => Err(format!(
            "prune {sequence} marks the positions before {before} as pruned, but no prune deleted \
             {}, which lies below that mark",
            batch.key
        )),
        None => Ok(()),
    }
}

/// The part of [`check_prunes`] that needs only the snapshots and the
/// prunes: every snapshot below the latest mark (but the one at mark - 1)
/// is deleted, and one remains.
pub fn check_prune_snapshots(manifest: &Manifest) -> Result<(), String> {
    let Some((sequence, before)) = latest_mark(manifest) else { return Ok(()) };
    let live: Vec<&SnapshotRecord> = manifest.live_snapshots().collect();
    if let Some(snapshot) = live.iter().find(|s| s.position < before - 1) {
        return Err(format!(
            "prune {sequence} marks the positions before {before} as pruned, but the snapshot at \
             {} below that mark was not deleted",
            snapshot.position
        ));
    }
    if live.is_empty() {
        return Err(format!(
            "prune {sequence} marks the positions before {before} as pruned, but no snapshot \
             remains to restore from (retention always keeps one)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{BatchRecord, Encoding, GapRecord, SegmentEntry, SnapshotRecord, StoredObject};
    use crate::target::keys;

    const S: &str = "s";

    fn batch(first: u64, last: u64) -> Record {
        let segments = (first..=last)
            .map(|p| SegmentEntry::identity(p, p.to_string(), (p - first) * 10, 10, 0))
            .collect();
        Record::Batch(BatchRecord::identity(S, first, last, segments))
    }

    fn gap(first: u64, last: u64) -> Record {
        Record::Gap(GapRecord { first, last, reason: "lost".into() })
    }

    fn snapshot(position: u64) -> SnapshotRecord {
        let stored = StoredObject { size: 1000, crc32: 0, encoding: Encoding::Identity };
        SnapshotRecord { position, key: keys::snapshot_key(S, position), size: 1000, crc32: 0, stored }
    }

    /// Batches of 10 from `(0,0), (1,10)…` up to `end`, and snapshots.
    fn manifest(end: u64, snapshots: &[u64]) -> Manifest {
        let mut log = vec![batch(0, 0)];
        let mut first = 1;
        while first <= end {
            log.push(batch(first, first + 9));
            first += 10;
        }
        Manifest { log, snapshots: snapshots.iter().map(|&p| snapshot(p)).collect(), prunes: vec![] }
    }

    fn applied(mut manifest: Manifest, plan: &Plan) -> Manifest {
        let next = manifest.prunes.last().map_or(1, |p| p.sequence + 1);
        manifest.prunes.extend(plan.records(next));
        manifest
    }

    fn batches(plan: &Plan) -> Vec<(u64, u64)> {
        plan.doomed
            .iter()
            .filter_map(|d| match d.object {
                Object::Batch { first, last } => Some((first, last)),
                Object::Snapshot { .. } => None,
            })
            .collect()
    }

    fn snapshots(plan: &Plan) -> Vec<u64> {
        plan.doomed
            .iter()
            .filter_map(|d| match d.object {
                Object::Snapshot { position } => Some(position),
                Object::Batch { .. } => None,
            })
            .collect()
    }

    /// (what, manifest, keep, expected: None or (oldest kept, mark, batch
    /// ranges deleted, snapshots deleted)).
    type Case = (&'static str, Manifest, usize, Option<(u64, u64, Vec<(u64, u64)>, Vec<u64>)>);

    #[test]
    fn table_of_what_a_prune_deletes() {
        let mut straddling = manifest(40, &[20, 25, 30]);
        // A batch 21..30 split as 21..27, 28..30 does not matter: make one
        // straddle the snapshot at 25 (a manual snapshot inside a batch).
        straddling.log = vec![batch(0, 0), batch(1, 10), batch(11, 20), batch(21, 30), batch(31, 40)];
        let mut at_gap = manifest(20, &[]);
        at_gap.log = vec![batch(0, 0), batch(1, 10), gap(11, 20), batch(21, 30)];
        at_gap.snapshots = vec![snapshot(10), snapshot(15), snapshot(30)];
        let beyond_end = manifest(30, &[10, 20, 30, 40, 50]);
        let cases: Vec<Case> = vec![
            ("no snapshots: keep every batch", manifest(100, &[]), 1, None),
            ("fewer than keep", manifest(100, &[10, 20]), 3, None),
            ("exactly keep", manifest(100, &[10, 20, 30]), 3, None),
            ("nothing archived", Manifest { snapshots: vec![snapshot(0)], ..Manifest::default() }, 1, None),
            (
                "snapshot at a batch end",
                manifest(50, &[10, 20, 30]),
                2,
                Some((20, 21, vec![(0, 0), (1, 10), (11, 20)], vec![10])),
            ),
            (
                "keep 1 of many",
                manifest(50, &[10, 20, 30, 40]),
                1,
                Some((40, 41, vec![(0, 0), (1, 10), (11, 20), (21, 30), (31, 40)], vec![10, 20, 30])),
            ),
            (
                "batch straddling the oldest kept snapshot is kept",
                straddling,
                2,
                Some((25, 26, vec![(0, 0), (1, 10), (11, 20)], vec![20])),
            ),
            (
                "snapshot inside a gap: the gap straddles and stays",
                at_gap,
                2,
                Some((15, 16, vec![(0, 0), (1, 10)], vec![10])),
            ),
            (
                "snapshots beyond the archive's end: the newest restore keeps its snapshot",
                beyond_end,
                1,
                Some((30, 31, vec![(0, 0), (1, 10), (11, 20), (21, 30)], vec![10, 20])),
            ),
        ];
        for (what, manifest, keep, expected) in cases {
            let plan = plan(&manifest, keep);
            let got = plan.as_ref().map(|p| (p.oldest_kept, p.before, batches(p), snapshots(p)));
            assert_eq!(got, expected, "{what}");
            if let Some(plan) = plan {
                let after = applied(manifest.clone(), &plan);
                assert_eq!(check_prunes(&after), Ok(()), "{what}");
                assert_eq!(super::plan(&after, keep), None, "{what}: a second prune deletes nothing");
                assert_eq!(oldest_restorable(&after), Some(plan.oldest_kept), "{what}");
                assert_eq!(plan.bytes(), plan.doomed.iter().map(|d| d.bytes).sum::<u64>());
            }
        }
    }

    #[test]
    fn already_pruned_state_deletes_only_what_is_new() {
        let first = manifest(50, &[10, 20, 30]);
        let plan1 = plan(&first, 2).expect("prunes");
        let mut later = applied(first, &plan1);
        later.log.extend([batch(51, 60), batch(61, 70)]);
        later.snapshots.push(snapshot(60));
        let plan2 = plan(&later, 2).expect("prunes again");
        assert_eq!((plan2.oldest_kept, plan2.before, plan2.previous_mark), (30, 31, Some(21)));
        assert_eq!(batches(&plan2), [(21, 30)]);
        assert_eq!(snapshots(&plan2), [20]);
        assert_eq!(plan2.records(2)[0].sequence, 2);
        let after = applied(later, &plan2);
        assert_eq!(check_prunes(&after), Ok(()));
        assert_eq!(plan(&after, 2), None);
        // Raising keep brings nothing back and deletes nothing.
        assert_eq!(plan(&after, 100), None);
    }

    #[test]
    fn an_interrupted_long_prune_is_recorded_in_consistent_steps_and_finished_later() {
        let end = 10 * (KEYS_PER_PRUNE as u64 + 5);
        let mut snapshots: Vec<u64> = vec![40_000, 80_000];
        snapshots.push(end);
        let whole = manifest(end, &snapshots);
        let plan = plan(&whole, 1).expect("prunes");
        let records = plan.records(1);
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.deleted.len() <= KEYS_PER_PRUNE));
        assert_eq!(records[1].before, end + 1);
        // A crash after the first record: consistent, and the next plan
        // finishes the rest although no snapshot is added meanwhile.
        let mut crashed = whole.clone();
        crashed.prunes.push(records[0].clone());
        assert_eq!(check_prunes(&crashed), Ok(()));
        let rest = super::plan(&crashed, 1).expect("finishes");
        let mut finished = crashed.clone();
        finished.prunes.extend(rest.records(2));
        assert_eq!(check_prunes(&finished), Ok(()));
        assert_eq!(super::plan(&finished, 1), None);
        let all = |m: &Manifest| -> HashSet<String> {
            m.prunes.iter().flat_map(|p| p.deleted.iter().cloned()).collect()
        };
        assert_eq!(all(&finished), all(&applied(whole, &plan)));
    }

    #[test]
    fn forged_or_inconsistent_prune_marks_are_refused() {
        let base = manifest(50, &[10, 20, 30]);
        let forged = |before: u64, deleted: Vec<String>| {
            let mut m = base.clone();
            m.prunes.push(PruneRecord { sequence: 1, before, deleted });
            check_prunes(&m)
        };
        let hides = forged(21, vec![]).expect_err("names nothing");
        assert!(hides.contains("no prune deleted s/batches/0000000000000000-0000000000000000"), "{hides}");
        let batch_keys: Vec<String> =
            [(0, 0), (1, 10), (11, 20)].iter().map(|&(a, b)| keys::batch_key(S, a, b)).collect();
        let snapshot_left = forged(21, batch_keys.clone()).expect_err("snapshot 10 kept");
        assert!(snapshot_left.contains("snapshot at 10 below that mark"), "{snapshot_left}");
        let mut all = batch_keys.clone();
        all.extend([10, 20, 30].map(|p| keys::snapshot_key(S, p)));
        let none_left = forged(21, all).expect_err("no snapshot left");
        assert!(none_left.contains("no snapshot remains"), "{none_left}");
        let mut legit = batch_keys;
        legit.push(keys::snapshot_key(S, 10));
        assert_eq!(forged(21, legit), Ok(()));
        assert_eq!(check_prunes(&base), Ok(()));
    }

    #[test]
    fn dry_run_and_real_run_print_the_same_objects() {
        let plan = plan(&manifest(30, &[10, 20]), 1).expect("prunes");
        let dry = render(S, Some(&plan), 2, 1, true);
        let real = render(S, Some(&plan), 2, 1, false);
        assert_eq!(dry.lines().skip(1).collect::<Vec<_>>(), real.lines().skip(1).collect::<Vec<_>>());
        assert!(dry.starts_with("stream s: would delete 4 objects (1.2 KiB); restorable from position 20 on, positions before 21 pruned\n"), "{dry}");
        assert!(real.starts_with("stream s: deleted 4 objects"), "{real}");
        assert!(dry.contains("  batch     11..20                        100 B  s/batches/000000000000000b-0000000000000014\n"), "{dry}");
        assert!(
            dry.contains("  snapshot  10                           1000 B  s/snapshots/000000000000000a\n"),
            "{dry}"
        );
        assert_eq!(
            render(S, None, 2, 7, true),
            "stream s: nothing to prune (2 snapshots kept, keep_snapshots = 7)\n"
        );
    }

    /// The view of `manifest` read with its prunes after its log (as a
    /// journal holds them once retention ran).
    fn view_in_journal_order(manifest: &Manifest) -> Manifest {
        let mut view = Manifest::default();
        let log = manifest.log.iter().cloned().map(Entry::Log);
        let snapshots = manifest.snapshots.iter().cloned().map(Entry::Snapshot);
        let prunes = manifest.prunes.iter().cloned().map(Entry::Prune);
        log.chain(snapshots).chain(prunes).for_each(|entry| add_to_view(&mut view, S, entry));
        view
    }

    /// The view of `manifest` read as a rebuilt journal holds it (prunes
    /// first).
    fn view_in_rebuilt_order(manifest: &Manifest) -> Manifest {
        let mut view = Manifest::default();
        manifest.entries().for_each(|entry| add_to_view(&mut view, S, entry));
        view
    }

    /// Random archives (batches of any length, gaps, snapshots at batch
    /// ends, inside batches and beyond the end), pruned again and again as
    /// they grow: every prune leaves a consistent manifest, deletes nothing
    /// a position from the oldest kept snapshot on needs, keeps the newest
    /// position restorable, and a second prune deletes nothing.
    #[test]
    fn random_archives_keep_everything_still_needed() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let mut prunes = 0;
        for _ in 0..300 {
            let keep = 1 + next(4) as usize;
            let mut manifest = Manifest::default();
            let mut end = next(3);
            manifest.log.push(batch(end, end));
            for _ in 0..1 + next(6) {
                for _ in 0..1 + next(8) {
                    let (first, last) = (end + 1, end + 1 + next(12));
                    manifest.log.push(if next(7) == 0 { gap(first, last) } else { batch(first, last) });
                    end = last;
                }
                let beyond = if next(6) == 0 { 1 + next(5) } else { 0 };
                let at = end - next(3).min(end) + beyond;
                if manifest.snapshots.last().is_none_or(|s| s.position < at) {
                    manifest.snapshots.push(snapshot(at));
                }
                let before = manifest.clone();
                for order in [view_in_journal_order(&manifest), view_in_rebuilt_order(&manifest)] {
                    assert_eq!(super::plan(&order, keep), plan(&manifest, keep), "{manifest:?}");
                }
                let Some(plan) = plan(&manifest, keep) else { continue };
                prunes += 1;
                manifest = applied(manifest, &plan);
                assert_eq!(check_prunes(&manifest), Ok(()), "{before:?}");
                assert_eq!(super::plan(&manifest, keep), None, "{before:?}");
                let deleted = deleted_keys(&manifest);
                for record in &before.log {
                    if let Record::Batch(b) = record {
                        let gone = deleted.contains(b.key.as_str());
                        assert_eq!(
                            gone,
                            b.last <= plan.oldest_kept,
                            "batch {}..{}: {before:?}",
                            b.first,
                            b.last
                        );
                    }
                }
                let live: Vec<u64> = manifest.live_snapshots().map(|s| s.position).collect();
                let newest_usable = before.snapshots.iter().rev().find(|s| s.position <= end);
                assert!(newest_usable.is_none_or(|s| live.contains(&s.position)), "{before:?}");
                assert_eq!(live.first(), Some(&plan.oldest_kept), "{before:?}");
                for position in plan.oldest_kept..=end {
                    let start = crate::restore::start::start("s", &manifest, Some(position))
                        .unwrap_or_else(|e| panic!("{position}: {e}: {before:?}"));
                    let from = start.first_position();
                    let covered = start.records.first().is_none_or(|r| r.first() <= from);
                    assert!(covered, "{position}: the records after the snapshot start at {from}");
                }
            }
        }
        assert!(prunes > 200, "only {prunes} prunes: the generator does not exercise retention");
    }

    #[test]
    fn oldest_restorable_position() {
        assert_eq!(oldest_restorable(&Manifest::default()), None);
        let mut late = manifest(30, &[20]);
        late.log.remove(0);
        assert_eq!(oldest_restorable(&late), Some(1), "nothing pruned: the log's start");
    }
}
