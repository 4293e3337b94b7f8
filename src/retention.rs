//! Retention, as pure rules over a manifest that streams by: where a prune
//! cuts ([`Survey::cut`], from the snapshots, the prunes and the log's end,
//! gathered in one pass), which objects it deletes ([`DoomedScan`], in a
//! second pass over the log, in position order, never all held), how they
//! are written as prune records of bounded size ([`PruneRecords`]), and
//! whether the prune records a manifest holds are consistent with its
//! batches and snapshots ([`check_prunes`]). [`plan`] applies the same to
//! a manifest held whole.
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
//! recording each prune record before deleting what it names.

use std::collections::HashSet;

use crate::human::{count, human_bytes};
use crate::manifest::validate::MAX_POSITION;
use crate::manifest::{Entry, Manifest, PruneRecord, Record, SnapshotRecord};
use crate::target::keys;

pub mod deleted;
pub use deleted::DeletedBatches;

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

/// Where a prune cuts the archive (see the module doc for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The oldest snapshot kept: the oldest position restorable afterwards.
    pub oldest_kept: u64,
    /// The "pruned before" mark once the prune is recorded.
    pub before: u64,
    /// The mark before this prune (`None`: nothing pruned yet).
    pub previous_mark: Option<u64>,
}

/// What one prune deletes, in total: the objects themselves come from a
/// pass over the log ([`DoomedScan`]), never held all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub cut: Cut,
    /// How many objects go, batches and snapshots.
    pub objects: u64,
    /// Their total stored bytes.
    pub bytes: u64,
}

/// What retention reads of a manifest besides its batches, gathered as its
/// entries stream by ([`Survey::add`]), in journal order or a rebuilt
/// journal's (prunes first): every snapshot, the prunes with only the
/// snapshot keys they deleted but the latest whole (its deletions may need
/// finishing), and where the log ends. Memory follows the snapshots, not
/// the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// The snapshots and (condensed) prunes; no log.
    pub side: Manifest,
    /// The last position the log covers, pruned or not.
    pub end: Option<u64>,
}

impl Survey {
    /// Take in `entry` of `stream`'s manifest.
    pub fn add(&mut self, stream: &str, entry: Entry) {
        match entry {
            Entry::Log(record) => self.end = Some(record.last()),
            Entry::Prune(prune) => {
                if let Some(previous) = self.side.prunes.last_mut() {
                    previous.deleted.retain(|key| keys::parse_snapshot_key(stream, key).is_some());
                    previous.deleted.shrink_to_fit();
                }
                self.side.prunes.push(prune);
            }
            Entry::Snapshot(snapshot) => self.side.snapshots.push(snapshot),
        }
    }

    /// The survey of a manifest held whole.
    pub fn of(stream: &str, manifest: &Manifest) -> Survey {
        let mut survey = Survey::default();
        manifest.entries().for_each(|entry| survey.add(stream, entry));
        survey
    }

    /// How many snapshots no prune deleted.
    pub fn live_snapshots(&self) -> usize {
        self.side.live_snapshots().count()
    }

    /// Where a prune keeping the newest `keep` snapshots cuts now, or
    /// `None` when nothing is due (see the module doc for the rule).
    pub fn cut(&self, keep: usize) -> Option<Cut> {
        let end = self.end?;
        let live: Vec<&SnapshotRecord> = self.side.live_snapshots().collect();
        let newest_usable = live.iter().rev().find(|s| s.position <= end)?.position;
        let previous_mark = self.side.pruned_before();
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
        Some(Cut { oldest_kept, before, previous_mark })
    }
}

/// The objects a [`Cut`] deletes, found as the log streams by
/// ([`DoomedScan::record`]) and handed out in position order: every live
/// batch ending before the cut's mark that the latest prune does not
/// already name, and the live snapshots before the oldest kept one, each
/// after the batches ending before it.
#[derive(Debug)]
pub struct DoomedScan<'s> {
    cut: Cut,
    /// The doomed snapshots not handed out yet, by position.
    snapshots: std::iter::Peekable<std::vec::IntoIter<Doomed>>,
    /// The batch keys the latest prune names (deleted, or being deleted).
    named: HashSet<&'s str>,
}

impl<'s> DoomedScan<'s> {
    pub fn new(survey: &'s Survey, cut: Cut) -> DoomedScan<'s> {
        let snapshots: Vec<Doomed> = survey
            .side
            .live_snapshots()
            .filter(|s| s.position < cut.oldest_kept)
            .map(|s| Doomed {
                key: s.key.clone(),
                object: Object::Snapshot { position: s.position },
                bytes: s.stored.size,
            })
            .collect();
        let named = survey.side.prunes.last().map(|p| p.deleted.iter().map(String::as_str).collect());
        DoomedScan { cut, snapshots: snapshots.into_iter().peekable(), named: named.unwrap_or_default() }
    }

    /// Hand out what `record` (the log's next) dooms, with the snapshots
    /// before it.
    pub fn record(&mut self, record: &Record, doomed: &mut dyn FnMut(Doomed)) {
        let live = record.last() >= self.cut.previous_mark.unwrap_or(0);
        let Record::Batch(batch) = record else { return };
        if !live || batch.last >= self.cut.before || self.named.contains(batch.key.as_str()) {
            return;
        }
        while let Some(snapshot) = self.snapshots.next_if(|s| s.order() < (batch.last, 0)) {
            doomed(snapshot);
        }
        doomed(Doomed {
            key: batch.key.clone(),
            object: Object::Batch { first: batch.first, last: batch.last },
            bytes: batch.stored.size,
        });
    }

    /// Hand out the snapshots left once the log has gone by.
    pub fn finish(self, doomed: &mut dyn FnMut(Doomed)) {
        self.snapshots.for_each(doomed);
    }
}

/// The [`Plan`] of `cut`, from a pass over the log (`each_record` hands
/// every log record, in order, to the function it gets), or `None` when
/// it deletes nothing.
pub fn plan_from<E>(
    survey: &Survey,
    cut: Cut,
    each_record: impl FnOnce(&mut dyn FnMut(&Record)) -> Result<(), E>,
) -> Result<Option<Plan>, E> {
    let mut plan = Plan { cut, objects: 0, bytes: 0 };
    let mut count = |doomed: Doomed| {
        plan.objects += 1;
        plan.bytes += doomed.bytes;
    };
    let mut scan = DoomedScan::new(survey, cut);
    each_record(&mut |record| scan.record(record, &mut count))?;
    scan.finish(&mut count);
    Ok((plan.objects > 0).then_some(plan))
}

/// Turns a plan's doomed objects, as they come in position order, into
/// the prune records that carry it, numbered from `next_sequence`: at most
/// [`KEYS_PER_PRUNE`] keys each. Each record's mark lies just past the
/// last batch it or an earlier one deletes (the last record's is the
/// cut's mark), so after any prefix of them is recorded every batch below
/// the mark is named deleted and every live snapshot lies at or after
/// mark - 1: the manifest stays consistent ([`check_prunes`]) wherever a
/// crash lands.
#[derive(Debug)]
pub struct PruneRecords {
    plan: Plan,
    sequence: u64,
    mark: u64,
    taken: u64,
    deleted: Vec<String>,
}

impl PruneRecords {
    pub fn new(plan: Plan, next_sequence: u64) -> PruneRecords {
        let mark = plan.cut.previous_mark.unwrap_or(0);
        PruneRecords { plan, sequence: next_sequence, mark, taken: 0, deleted: Vec::new() }
    }

    /// Take the next doomed object; a record once it completes one.
    pub fn push(&mut self, doomed: Doomed) -> Option<PruneRecord> {
        if let Object::Batch { last, .. } = doomed.object {
            self.mark = self.mark.max(last + 1);
        }
        self.deleted.push(doomed.key);
        self.taken += 1;
        let done = self.taken == self.plan.objects;
        if self.deleted.len() < KEYS_PER_PRUNE && !done {
            return None;
        }
        if done {
            self.mark = self.plan.cut.before;
        }
        let record = PruneRecord {
            sequence: self.sequence,
            before: self.mark,
            deleted: std::mem::take(&mut self.deleted),
        };
        self.sequence += 1;
        Some(record)
    }
}

/// What `walship prune` prints first for a stream: with a plan, what goes
/// in total and from which position on restores stay possible (the same
/// for a dry run as for the real one, but for its verb); without, why
/// nothing goes. One line, '\n' included.
pub fn render_header(
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
    format!(
        "stream {stream}: {verb} {} ({}); restorable from position {} on, positions before {} pruned\n",
        count(plan.objects, "object"),
        human_bytes(plan.bytes),
        plan.cut.oldest_kept,
        plan.cut.before
    )
}

/// The line `walship prune` prints for each object it deletes (kind,
/// positions, size, key), '\n' included.
pub fn render_doomed(doomed: &Doomed) -> String {
    let (kind, positions) = match doomed.object {
        Object::Batch { first, last } => ("batch", format!("{first}..{last}")),
        Object::Snapshot { position } => ("snapshot", position.to_string()),
    };
    format!("  {kind:<8}  {positions:<23} {:>11}  {}\n", human_bytes(doomed.bytes), doomed.key)
}

/// What a prune keeping the newest `keep` snapshots of `manifest`, held
/// whole, deletes now: the plan and its objects in order (`None` when it
/// deletes nothing). The same rule as a stream's, for tests and small
/// manifests.
pub fn plan(stream: &str, manifest: &Manifest, keep: usize) -> Option<(Plan, Vec<Doomed>)> {
    let survey = Survey::of(stream, manifest);
    let cut = survey.cut(keep)?;
    let each = |visit: &mut dyn FnMut(&Record)| -> Result<(), ()> {
        manifest.log.iter().for_each(visit);
        Ok(())
    };
    let plan = plan_from(&survey, cut, each).ok()??;
    let mut doomed = Vec::new();
    let mut scan = DoomedScan::new(&survey, cut);
    manifest.log.iter().for_each(|record| scan.record(record, &mut |d| doomed.push(d)));
    scan.finish(&mut |d| doomed.push(d));
    Some((plan, doomed))
}

/// The prune records of `plan`, whose objects are `doomed`, numbered from
/// `next_sequence` ([`PruneRecords`]).
pub fn records(plan: Plan, doomed: &[Doomed], next_sequence: u64) -> Vec<PruneRecord> {
    let mut records = PruneRecords::new(plan, next_sequence);
    doomed.iter().filter_map(|d| records.push(d.clone())).collect()
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

/// Whether the prune records of `stream`'s `manifest` (held whole) agree
/// with what retention does: every batch below the latest mark is named
/// deleted by some prune, every snapshot below the mark (but the one at
/// mark - 1) is deleted, and a snapshot remains to restore from. A forged
/// or damaged prune record that would hide archived data from `list` and
/// `restore` fails here; the error names the prune and what it hides.
/// (`ManifestReader` checks the same as the log streams by.)
pub fn check_prunes(stream: &str, manifest: &Manifest) -> Result<(), String> {
    let mut side = Manifest { log: Vec::new(), ..manifest.clone() };
    let mut deleted = DeletedBatches::default();
    side.prunes.iter_mut().for_each(|prune| deleted.take_from(stream, prune));
    let check = PrunedLogCheck::new(stream, &side, &deleted);
    for record in &manifest.log {
        if !check.record(record)? {
            break;
        }
    }
    check_prune_snapshots(&side)
}

/// The latest prune's sequence number and mark, when it has one above 0.
fn latest_mark(manifest: &Manifest) -> Option<(u64, u64)> {
    manifest.prunes.last().map(|p| (p.sequence, p.before)).filter(|&(_, before)| before > 0)
}

/// The part of [`check_prunes`] about the log, as it streams by: every
/// batch below the latest mark of `side`'s prunes is named deleted (held
/// in `deleted`, or one of the keys its prunes still hold).
#[derive(Debug)]
pub struct PrunedLogCheck<'a> {
    stream: &'a str,
    mark: Option<(u64, u64)>,
    deleted: &'a DeletedBatches,
    named: HashSet<&'a str>,
}

impl<'a> PrunedLogCheck<'a> {
    pub fn new(stream: &'a str, side: &'a Manifest, deleted: &'a DeletedBatches) -> PrunedLogCheck<'a> {
        let named = side.prunes.iter().flat_map(|p| p.deleted.iter().map(String::as_str)).collect();
        PrunedLogCheck { stream, mark: latest_mark(side), deleted, named }
    }

    /// Check the log's next record; `Ok(false)` once the log has passed
    /// the mark (nothing after it needs checking).
    pub fn record(&self, record: &Record) -> Result<bool, String> {
        let Some((sequence, before)) = self.mark else { return Ok(false) };
        if record.last() >= before {
            return Ok(false);
        }
        match record {
            Record::Batch(batch)
                if !self.deleted.contains_key(self.stream, &batch.key)
                    && !self.named.contains(batch.key.as_str()) =>
            {
                Err(format!(
                    "prune {sequence} marks the positions before {before} as pruned, but no prune \
                     deleted {}, which lies below that mark",
                    batch.key
                ))
            }
            _ => Ok(true),
        }
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

    /// Every key the manifest's prunes have deleted.
    fn deleted_keys(manifest: &Manifest) -> HashSet<&str> {
        manifest.prunes.iter().flat_map(|p| p.deleted.iter().map(String::as_str)).collect()
    }

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

    /// The plan of `manifest` and its objects.
    type Planned = (Plan, Vec<Doomed>);

    fn plan(manifest: &Manifest, keep: usize) -> Option<Planned> {
        super::plan(S, manifest, keep)
    }

    fn applied(mut manifest: Manifest, (plan, doomed): &Planned) -> Manifest {
        let next = manifest.prunes.last().map_or(1, |p| p.sequence + 1);
        manifest.prunes.extend(records(*plan, doomed, next));
        manifest
    }

    fn batches((_, doomed): &Planned) -> Vec<(u64, u64)> {
        doomed
            .iter()
            .filter_map(|d| match d.object {
                Object::Batch { first, last } => Some((first, last)),
                Object::Snapshot { .. } => None,
            })
            .collect()
    }

    fn snapshots((_, doomed): &Planned) -> Vec<u64> {
        doomed
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
            let got = plan.as_ref().map(|p| (p.0.cut.oldest_kept, p.0.cut.before, batches(p), snapshots(p)));
            assert_eq!(got, expected, "{what}");
            if let Some(plan) = plan {
                let after = applied(manifest.clone(), &plan);
                assert_eq!(check_prunes(S, &after), Ok(()), "{what}");
                assert_eq!(self::plan(&after, keep), None, "{what}: a second prune deletes nothing");
                assert_eq!(oldest_restorable(&after), Some(plan.0.cut.oldest_kept), "{what}");
                assert_eq!(plan.0.bytes, plan.1.iter().map(|d| d.bytes).sum::<u64>());
                assert_eq!(plan.0.objects, plan.1.len() as u64);
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
        assert_eq!(plan2.0.cut, Cut { oldest_kept: 30, before: 31, previous_mark: Some(21) });
        assert_eq!(batches(&plan2), [(21, 30)]);
        assert_eq!(snapshots(&plan2), [20]);
        assert_eq!(records(plan2.0, &plan2.1, 2)[0].sequence, 2);
        let after = applied(later, &plan2);
        assert_eq!(check_prunes(S, &after), Ok(()));
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
        let records = records(plan.0, &plan.1, 1);
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.deleted.len() <= KEYS_PER_PRUNE));
        assert_eq!(records[1].before, end + 1);
        // A crash after the first record: consistent, and the next plan
        // finishes the rest although no snapshot is added meanwhile.
        let mut crashed = whole.clone();
        crashed.prunes.push(records[0].clone());
        assert_eq!(check_prunes(S, &crashed), Ok(()));
        let rest = self::plan(&crashed, 1).expect("finishes");
        let mut finished = crashed.clone();
        finished.prunes.extend(super::records(rest.0, &rest.1, 2));
        assert_eq!(check_prunes(S, &finished), Ok(()));
        assert_eq!(self::plan(&finished, 1), None);
        let all = |m: &Manifest| -> HashSet<String> {
            m.prunes.iter().flat_map(|p| p.deleted.iter().cloned()).collect()
        };
        assert_eq!(all(&finished), all(&applied(whole, &plan)));
    }

    /// A log record can complete two prune records: its snapshot ends one
    /// (the 10,000th key) and it, the last doomed object, the next; the
    /// stream carries out both (it once kept only the first).
    #[test]
    fn one_log_record_can_complete_two_prune_records() {
        let end = 10 * KEYS_PER_PRUNE as u64 - 20;
        let whole = manifest(end + 10, &[end, end + 10]);
        let (plan, doomed) = plan(&whole, 1).expect("prunes");
        assert_eq!(
            plan.objects as usize,
            KEYS_PER_PRUNE + 1,
            "batches up to {}, the snapshot at {end}",
            end + 10
        );
        let mut records = PruneRecords::new(plan, 1);
        let mut completed_by = Vec::new();
        for (index, d) in doomed.into_iter().enumerate() {
            if let Some(record) = records.push(d) {
                completed_by.push((index, record.sequence, record.before, record.deleted.len()));
            }
        }
        assert_eq!(
            completed_by,
            [(KEYS_PER_PRUNE - 1, 1, end + 1, KEYS_PER_PRUNE), (KEYS_PER_PRUNE, 2, end + 11, 1)]
        );
    }

    #[test]
    fn forged_or_inconsistent_prune_marks_are_refused() {
        let base = manifest(50, &[10, 20, 30]);
        let forged = |before: u64, deleted: Vec<String>| {
            let mut m = base.clone();
            m.prunes.push(PruneRecord { sequence: 1, before, deleted });
            check_prunes(S, &m)
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
        assert_eq!(check_prunes(S, &base), Ok(()));
    }

    #[test]
    fn dry_run_and_real_run_print_the_same_objects() {
        let (plan, doomed) = plan(&manifest(30, &[10, 20]), 1).expect("prunes");
        let render = |dry_run| {
            let lines = doomed.iter().map(render_doomed);
            render_header(S, Some(&plan), 2, 1, dry_run) + &lines.collect::<String>()
        };
        let (dry, real) = (render(true), render(false));
        assert_eq!(dry.lines().skip(1).collect::<Vec<_>>(), real.lines().skip(1).collect::<Vec<_>>());
        assert!(dry.starts_with("stream s: would delete 4 objects (1.2 KiB); restorable from position 20 on, positions before 21 pruned\n"), "{dry}");
        assert!(real.starts_with("stream s: deleted 4 objects"), "{real}");
        assert!(dry.contains("  batch     11..20                        100 B  s/batches/000000000000000b-0000000000000014\n"), "{dry}");
        assert!(
            dry.contains("  snapshot  10                           1000 B  s/snapshots/000000000000000a\n"),
            "{dry}"
        );
        assert_eq!(
            render_header(S, None, 2, 7, true),
            "stream s: nothing to prune (2 snapshots kept, keep_snapshots = 7)\n"
        );
    }

    /// The survey of `manifest` read with its prunes after its log (as a
    /// journal holds them once retention ran).
    fn survey_in_journal_order(manifest: &Manifest) -> Survey {
        let mut survey = Survey::default();
        let log = manifest.log.iter().cloned().map(Entry::Log);
        let snapshots = manifest.snapshots.iter().cloned().map(Entry::Snapshot);
        let prunes = manifest.prunes.iter().cloned().map(Entry::Prune);
        log.chain(snapshots).chain(prunes).for_each(|entry| survey.add(S, entry));
        survey
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
                let whole = Survey::of(S, &manifest);
                assert_eq!(survey_in_journal_order(&manifest).cut(keep), whole.cut(keep), "{manifest:?}");
                let Some(planned) = plan(&manifest, keep) else { continue };
                let plan = planned.0.cut;
                prunes += 1;
                manifest = applied(manifest, &planned);
                assert_eq!(check_prunes(S, &manifest), Ok(()), "{before:?}");
                assert_eq!(self::plan(&manifest, keep), None, "{before:?}");
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
                    let start = crate::restore::start::start("s", &manifest, Some(end), Some(position))
                        .unwrap_or_else(|e| panic!("{position}: {e}: {before:?}"));
                    let from = start.first_position();
                    let first = manifest.log.iter().find(|r| start.wants(r));
                    let covered = first.is_none_or(|r| r.first() <= from);
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
