//! The batch keys a stream's prune records delete, held small: a first
//! prune of a long history names a million batch keys, but a stream's
//! batches are mostly of one length and follow each other, so they are
//! held as runs (a first position, a batch length, a count), a few of them
//! whatever the history's length. Exact: a key is held only if a prune
//! named exactly that batch.

use std::collections::BTreeMap;

use crate::manifest::PruneRecord;
use crate::target::keys;

/// Batches `start + i * width ..= start + (i + 1) * width - 1` for `i` in
/// `0..count`, keyed by `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    width: u64,
    count: u64,
}

/// The deleted batches of one stream, as runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedBatches {
    runs: BTreeMap<u64, Run>,
}

impl DeletedBatches {
    /// Move `prune`'s batch keys of `stream` into the runs; the other keys
    /// (snapshots, and any batch key the runs cannot hold) stay in it.
    pub fn take_from(&mut self, stream: &str, prune: &mut PruneRecord) {
        prune.deleted.retain(|key| match keys::parse_batch_key(stream, key) {
            Some((first, last)) => !self.insert(first, last),
            None => true,
        });
        // Held long: not the room of the keys that went.
        prune.deleted.shrink_to_fit();
    }

    /// Whether `key` is one of `stream`'s deleted batches.
    pub fn contains_key(&self, stream: &str, key: &str) -> bool {
        keys::parse_batch_key(stream, key).is_some_and(|(first, last)| self.contains(first, last))
    }

    /// Whether the batch `first..=last` is held.
    pub fn contains(&self, first: u64, last: u64) -> bool {
        let Some((&start, run)) = self.runs.range(..=first).next_back() else { return false };
        let offset = first - start;
        offset.is_multiple_of(run.width)
            && offset / run.width < run.count
            && last.checked_sub(first) == Some(run.width - 1)
    }

    /// How many runs are held (what memory follows).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Hold the batch `first..=last`: the run it follows grows, or a new
    /// run starts. `false` when it cannot be held (an inverted range, or a
    /// run already starting there).
    fn insert(&mut self, first: u64, last: u64) -> bool {
        let Some(width) = last.checked_sub(first).and_then(|w| w.checked_add(1)) else { return false };
        if self.contains(first, last) {
            return true;
        }
        if let Some((&start, run)) = self.runs.range_mut(..=first).next_back() {
            let end = run.width.checked_mul(run.count).and_then(|len| start.checked_add(len));
            if run.width == width && end == Some(first) {
                run.count += 1;
                return true;
            }
        }
        if self.runs.contains_key(&first) {
            return false;
        }
        self.runs.insert(first, Run { width, count: 1 });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "s";

    fn prune(batches: &[(u64, u64)], snapshots: &[u64]) -> PruneRecord {
        let mut deleted: Vec<String> = batches.iter().map(|&(a, b)| keys::batch_key(S, a, b)).collect();
        deleted.extend(snapshots.iter().map(|&p| keys::snapshot_key(S, p)));
        PruneRecord { sequence: 1, before: 1, deleted }
    }

    #[test]
    fn a_long_history_takes_few_runs_and_only_named_batches_are_held() {
        let mut held = DeletedBatches::default();
        let mut batches = vec![(0, 0)];
        batches.extend((0..200_000u64).map(|i| (1 + i * 10, 10 + i * 10)));
        // A short batch (max_batch_delay), realigned after it.
        batches.extend([(2_000_001, 2_000_004), (2_000_005, 2_000_010), (2_000_011, 2_000_020)]);
        let mut record = prune(&batches, &[10, 20]);
        held.take_from(S, &mut record);
        assert_eq!(record.deleted, [keys::snapshot_key(S, 10), keys::snapshot_key(S, 20)]);
        assert!(held.runs() <= 5, "{} runs", held.runs());
        for &(first, last) in &batches {
            assert!(held.contains(first, last), "{first}..{last}");
            assert!(held.contains_key(S, &keys::batch_key(S, first, last)));
        }
        for (first, last) in [(1, 20), (2, 11), (1, 9), (2_000_021, 2_000_030), (2_000_001, 2_000_010)] {
            assert!(!held.contains(first, last), "{first}..{last} was never named");
        }
        assert!(!held.contains_key(S, &keys::batch_key("other", 0, 0)), "another stream's key");
    }

    #[test]
    fn keys_out_of_order_or_inverted_are_still_exact() {
        let mut held = DeletedBatches::default();
        let mut record = prune(&[(50, 59), (0, 9), (10, 19), (30, 39), (5, 1)], &[]);
        held.take_from(S, &mut record);
        assert_eq!(record.deleted, [keys::batch_key(S, 5, 1)], "an inverted range stays a key");
        for (first, last) in [(0, 9), (10, 19), (30, 39), (50, 59)] {
            assert!(held.contains(first, last), "{first}..{last}");
        }
        assert!(!held.contains(20, 29));
        assert!(!held.contains(40, 49));
    }
}
