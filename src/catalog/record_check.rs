//! `verify`'s check of the remote record objects, on which a rebuild
//! relies, against the manifest as its log streams by (one record at a
//! time, in order), so that no long manifest is held:
//!
//! - [`ObjectCheck`] (`--deep`): each log record object is downloaded
//!   when the log reaches its first position, must parse and hold what its
//!   key says, and each of its records must be the manifest's record of
//!   those positions (pruned ones aside); its records wait only until the
//!   log passes them. Snapshot and prune record objects are checked against
//!   the manifest's snapshots and prunes ([`check_side_objects`]).
//! - [`MissingCheck`]: every live record, snapshot and prune must have a
//!   record object: its own level-0 one, or a compacted one (taken as
//!   sound without `--deep`; only those [`ObjectCheck`] found sound with
//!   it). The listing and the log are both in position order, so one walks
//!   beside the other.
//!
//! Each finding is one line naming the object's key.

use std::collections::{BTreeMap, HashSet};

use super::assemble::{self, Assembly, Fetched, Held, Listing};
use super::entry_key;
use crate::manifest::{Entry, Manifest, PruneRecord, Record, Sequences, StreamRules};
use crate::retention::DeletedBatches;
use crate::target::ObjectInfo;
use crate::target::keys::{LogLevel, RecordKey};

/// Downloads a record object: its bytes, or why they could not be read.
pub type Download<'d> = dyn FnMut(&ObjectInfo) -> Result<Vec<u8>, String> + 'd;

/// The deep check of the log record objects of `listing`, fed the log.
pub struct ObjectCheck<'a, 'd> {
    rules: StreamRules<'a>,
    download: &'a mut Download<'d>,
    /// The listed log record objects, in listing (position) order.
    objects: Vec<(u64, u64, &'a ObjectInfo, bool)>,
    /// How many of them were downloaded.
    opened: usize,
    /// Records of downloaded objects not yet compared (as [`Held`]), by
    /// first position and the object's index.
    pending: BTreeMap<(u64, usize), Held>,
    /// What is wrong with each object, once found.
    verdicts: Vec<Option<String>>,
    mark: u64,
}

impl<'a, 'd> ObjectCheck<'a, 'd> {
    /// Check the log record objects of `listing`; `pruned_before` is the
    /// manifest's mark (records below it are not compared).
    pub fn new(
        rules: &StreamRules<'a>,
        listing: &'a Listing,
        pruned_before: Option<u64>,
        download: &'a mut Download<'d>,
    ) -> Self {
        let objects: Vec<(u64, u64, &ObjectInfo, bool)> = listing
            .records
            .iter()
            .filter_map(|(key, object)| match *key {
                RecordKey::Log { first, last, level } => {
                    Some((first, last, object, matches!(level, LogLevel::Compacted(_))))
                }
                _ => None,
            })
            .collect();
        let verdicts = vec![None; objects.len()];
        ObjectCheck {
            rules: *rules,
            download,
            objects,
            opened: 0,
            pending: BTreeMap::new(),
            verdicts,
            mark: pruned_before.unwrap_or(0),
        }
    }

    /// The next live record of the manifest's log, in order.
    pub fn record(&mut self, record: &Record) {
        self.open_through(record.last());
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > record.last() {
                break;
            }
            let ((_, index), held) = entry.remove_entry();
            if held.last >= self.mark && held != Held::of(record) {
                self.differs(index, &held);
            }
        }
    }

    /// Compare what is left (records beyond the log's end differ), and the
    /// findings in listing order, with the ranges of the compacted objects
    /// found sound.
    pub fn finish(mut self) -> (Vec<String>, Vec<(u64, u64)>) {
        self.open_through(u64::MAX);
        for ((_, index), held) in std::mem::take(&mut self.pending) {
            if held.last >= self.mark {
                self.differs(index, &held);
            }
        }
        let mut problems = Vec::new();
        let mut sound = Vec::new();
        for (&(first, last, object, compacted), verdict) in self.objects.iter().zip(&self.verdicts) {
            match verdict {
                Some(why) => problems.push(format!("{}: CORRUPT record object: {why}", object.key)),
                None if compacted => sound.push((first, last)),
                None => {}
            }
        }
        (problems, sound)
    }

    /// Download and parse the objects that start at or before `position`.
    fn open_through(&mut self, position: u64) {
        while let Some(&(first, _, object, _)) = self.objects.get(self.opened) {
            if first > position {
                break;
            }
            let index = self.opened;
            self.opened += 1;
            let rules = self.rules;
            let parsed = (self.download)(object).and_then(|text| held_records(&rules, &object.key, &text));
            match parsed {
                Ok(records) => {
                    // Pruned records are not compared: not kept either.
                    for held in records.into_iter().filter(|held| held.last >= self.mark) {
                        self.pending.insert((held.first, index), held);
                    }
                }
                Err(why) => self.verdicts[index] = Some(why),
            }
        }
    }

    fn differs(&mut self, index: usize, held: &Held) {
        self.verdicts[index].get_or_insert_with(|| {
            format!(
                "its {} {}..{} differs from the manifest's record of those positions",
                held.kind, held.first, held.last
            )
        });
    }
}

/// The records of the log record object `key`, parsed from `text` one at
/// a time (an [`Assembly`] of that object alone: it must parse whole and
/// hold exactly the records of the range its key names) and kept as
/// [`Held`].
fn held_records(rules: &StreamRules<'_>, key: &str, text: &[u8]) -> Result<Vec<Held>, String> {
    if !matches!(RecordKey::parse(rules.name, key), Some(RecordKey::Log { .. })) {
        return Err(assemble::hostile(key, "is not a record object of this stream").to_string());
    }
    let mut assembly = Assembly::new(&Sequences::default());
    let mut entries = assembly.read(rules, key, text, None).map_err(|e| e.to_string())?;
    let mut held = Vec::new();
    while let Some(entry) = entries.next_entry().map_err(|e| e.to_string())? {
        if let Entry::Log(record) = entry {
            held.push(Held::of(&record));
        }
    }
    Ok(held)
}

/// The snapshot and prune record objects of `listing` against `side` (the
/// manifest's snapshots and prunes): each must parse, hold what its key
/// says and be the manifest's own. One line per problem, in listing order.
pub fn check_side_objects(
    rules: &StreamRules<'_>,
    side: &Manifest,
    deleted: &DeletedBatches,
    listing: &Listing,
    download: &mut Download<'_>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, object) in &listing.records {
        if matches!(key, RecordKey::Log { .. }) {
            continue;
        }
        let checked = download(object).and_then(|text| {
            let fetched = Fetched { key: object.key.clone(), text };
            let content = assemble::assemble(rules, &Sequences::default(), std::slice::from_ref(&fetched))
                .map_err(|e| e.to_string())?;
            side_agrees(rules.name, side, deleted, &content)
        });
        if let Err(why) = checked {
            problems.push(format!("{}: CORRUPT record object: {why}", object.key));
        }
    }
    problems
}

/// Whether the snapshots and prunes of one record object are the
/// manifest's own (`side`, whose prunes' batch keys are in `deleted`).
fn side_agrees(
    stream: &str,
    side: &Manifest,
    deleted: &DeletedBatches,
    content: &Manifest,
) -> Result<(), String> {
    if content.snapshots.iter().any(|s| !side.snapshots.contains(s)) {
        return Err("its snapshot record differs from the manifest's".into());
    }
    let known_prune = |p: &PruneRecord| {
        let mut rest = p.clone();
        let mut own = DeletedBatches::default();
        own.take_from(stream, &mut rest);
        let batches_known =
            p.deleted.iter().all(|key| !own.contains_key(stream, key) || deleted.contains_key(stream, key));
        let same = side
            .prunes
            .binary_search_by_key(&p.sequence, |q| q.sequence)
            .is_ok_and(|i| side.prunes[i] == rest);
        same && batches_known
    };
    if !content.prunes.iter().all(known_prune) {
        return Err("its prune record differs from the manifest's".into());
    }
    Ok(())
}

/// The manifest's entries that no record object holds, found beside the
/// listing as the live log streams by.
pub struct MissingCheck<'a> {
    stream: &'a str,
    /// The listed log keys, in listing order, and how far the walk got.
    log_keys: Vec<&'a str>,
    next: usize,
    covered: Box<dyn Fn(u64, u64) -> bool + 'a>,
    problems: Vec<String>,
}

impl<'a> MissingCheck<'a> {
    /// `compacted` are the compacted objects' ranges taken as sound.
    pub fn new(stream: &'a str, listing: &'a Listing, compacted: Vec<(u64, u64)>) -> Self {
        let log_keys = listing
            .records
            .iter()
            .filter(|(key, _)| matches!(key, RecordKey::Log { .. }))
            .map(|(_, object)| object.key.as_str())
            .collect();
        MissingCheck {
            stream,
            log_keys,
            next: 0,
            covered: Box::new(covering(compacted)),
            problems: Vec::new(),
        }
    }

    /// The next live record, in order.
    pub fn record(&mut self, record: &Record) {
        if (self.covered)(record.first(), record.last()) {
            return;
        }
        let key = entry_key(self.stream, &Entry::Log(record.clone()));
        while self.log_keys.get(self.next).is_some_and(|listed| *listed < key.as_str()) {
            self.next += 1;
        }
        if self.log_keys.get(self.next) != Some(&key.as_str()) {
            self.problems.push(missing(&key));
        }
    }

    /// What was missing: the log's records, then `side`'s snapshots and
    /// prunes whose objects `listing` lacks.
    pub fn finish(mut self, side: &Manifest, listing: &Listing) -> Vec<String> {
        let listed: HashSet<&str> = listing
            .records
            .iter()
            .filter(|(key, _)| !matches!(key, RecordKey::Log { .. }))
            .map(|(_, object)| object.key.as_str())
            .collect();
        let snapshots = side.snapshots.iter().cloned().map(Entry::Snapshot);
        for entry in snapshots.chain(side.prunes.iter().cloned().map(Entry::Prune)) {
            let key = entry_key(self.stream, &entry);
            if !listed.contains(key.as_str()) {
                self.problems.push(missing(&key));
            }
        }
        self.problems
    }
}

fn missing(key: &str) -> String {
    format!("{key}: MISSING record object (a rebuild from the archive would lack it)")
}

/// Whether `first..=last` lies inside one of `ranges`: sorted by first
/// position with the farthest reach so far, answered by binary search.
pub fn covering(mut ranges: Vec<(u64, u64)>) -> impl Fn(u64, u64) -> bool {
    ranges.sort_unstable();
    let mut reach = 0;
    let reaches: Vec<(u64, u64)> = ranges
        .into_iter()
        .map(|(first, last)| {
            reach = reach.max(last);
            (first, reach)
        })
        .collect();
    move |first, last| {
        let before = reaches.partition_point(|&(start, _)| start <= first);
        before > 0 && reaches[before - 1].1 >= last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_finds_the_range_that_holds_a_span() {
        let covered = covering(vec![(100, 199), (0, 99), (150, 300), (500, 500)]);
        for (first, last, expected) in [
            (0, 99, true),
            (5, 7, true),
            (90, 110, false),
            (160, 300, true),
            (301, 301, false),
            (500, 500, true),
        ] {
            assert_eq!(covered(first, last), expected, "{first}..{last}");
        }
        assert!(!covering(Vec::new())(0, 0));
    }
}
