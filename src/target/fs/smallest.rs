//! The smallest keys offered, within a byte budget: one walk of a
//! directory yields the next page of a sorted listing (pure, no I/O).
//!
//! Keys are held back to back in one buffer with a span each (8 bytes),
//! not as a `String` each (24 bytes and an allocation): a batch key takes
//! 41 bytes here against about 190 in the heap of `String`s and the page
//! of `ObjectInfo`s this replaced, so a walk of a long directory keeps
//! about four times as many keys in the same memory (62 walks of a
//! 1,000,000-batch directory became 16).
//! When the budget is reached, the largest quarter is dropped and every
//! later key at or above the kept ones' largest is refused.

use std::borrow::Cow;
use std::cmp::Ordering;

/// Bytes of bookkeeping per kept key (its span), counted in the budget.
const SPAN_BYTES: usize = std::mem::size_of::<Span>();

/// Where one kept key lies in the buffer.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

/// The smallest of the keys offered so far, in at most `budget` bytes
/// (more only while it holds a single key longer than that).
pub(super) struct Smallest {
    budget: usize,
    bytes: Vec<u8>,
    spans: Vec<Span>,
    /// Once a key was dropped: the largest kept key. Every dropped key
    /// sorts after it; every key offered since that sorts before it is kept.
    bound: Option<Vec<u8>>,
}

impl Smallest {
    /// Nothing offered yet; keys will take at most `budget` bytes.
    ///
    /// The memory is taken at once, so that it is never copied to grow
    /// (touched only as keys fill it): growing a buffer by doubling leaves
    /// the memory of the smaller ones resident, with the allocator.
    pub(super) fn new(budget: usize) -> Smallest {
        let budget = budget.min(u32::MAX as usize / 2);
        Smallest {
            budget,
            // Room for one key past the budget, the longest a path can be.
            bytes: Vec::with_capacity(budget + 4096),
            spans: Vec::with_capacity(budget / SPAN_BYTES + 1),
            bound: None,
        }
    }

    /// Keep `key` if it is among the smallest so far (keys are distinct).
    /// Fails only for a key of 4 GiB or more, which no path is.
    pub(super) fn offer(&mut self, key: &str) -> Result<(), KeyTooLong> {
        let key = key.as_bytes();
        if self.refuses(key) {
            return Ok(());
        }
        // The buffer holds at most the budget and one key (clamped in `new`).
        let start = u32::try_from(self.bytes.len()).map_err(|_| KeyTooLong(key.len()))?;
        let len = u32::try_from(key.len()).map_err(|_| KeyTooLong(key.len()))?;
        self.bytes.extend_from_slice(key);
        self.spans.push(Span { start, len });
        if self.bytes.len() + self.spans.len() * SPAN_BYTES > self.budget && self.spans.len() > 1 {
            self.drop_largest_quarter();
        }
        Ok(())
    }

    fn refuses(&self, key: &[u8]) -> bool {
        self.bound.as_deref().is_some_and(|bound| key >= bound)
    }

    /// Keep the smallest three quarters of the keys (at least one), moved
    /// to the front of the buffer. (Keeping more would drop more often;
    /// keeping fewer would hand out fewer keys per walk.)
    fn drop_largest_quarter(&mut self) {
        let keep = (self.spans.len() - self.spans.len() / 4).min(self.spans.len() - 1);
        let bytes = &self.bytes;
        self.spans.select_nth_unstable_by(keep - 1, |a, b| compare(bytes, *a, *b));
        self.spans.truncate(keep);
        let largest = self.spans.iter().copied().max_by(|a, b| compare(bytes, *a, *b));
        self.bound = largest.map(|span| bytes[span.range()].to_vec());
        // Moved down in buffer order, each key lands at or before where it
        // was, after every key already moved: nothing is overwritten.
        self.spans.sort_unstable_by_key(|span| span.start);
        let mut end = 0;
        for span in &mut self.spans {
            self.bytes.copy_within(span.range(), end);
            span.start = end as u32;
            end += span.len as usize;
        }
        self.bytes.truncate(end);
    }

    /// Sort the kept keys; `true` when they are every key offered
    /// (`false` when some were dropped: larger ones remain for a next walk).
    pub(super) fn sort(&mut self) -> bool {
        let bytes = &self.bytes;
        self.spans.sort_unstable_by(|a, b| compare(bytes, *a, *b));
        self.bound.is_none()
    }

    /// Forget every key, keeping the memory for the next walk.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.bound = None;
    }

    /// The kept keys, in order once [`Smallest::sort`] ran (offered as
    /// `&str`, so never lossy).
    pub(super) fn iter(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.spans.iter().map(|span| String::from_utf8_lossy(&self.bytes[span.range()]))
    }

    /// The largest key, once sorted.
    pub(super) fn last(&self) -> Option<Cow<'_, str>> {
        self.spans.last().map(|span| String::from_utf8_lossy(&self.bytes[span.range()]))
    }

    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }
}

/// A key too long for a span: [`Smallest::offer`]'s only failure.
#[derive(Debug)]
pub(super) struct KeyTooLong(pub(super) usize);

fn compare(bytes: &[u8], a: Span, b: Span) -> Ordering {
    bytes[a.range()].cmp(&bytes[b.range()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(mut smallest: Smallest) -> (Vec<String>, bool) {
        let complete = smallest.sort();
        (smallest.iter().map(Cow::into_owned).collect(), complete)
    }

    #[test]
    fn under_the_budget_every_key_is_kept_in_order() {
        let mut smallest = Smallest::new(1 << 20);
        for key in ["b", "a", "c/d", "ab"] {
            smallest.offer(key).unwrap();
        }
        assert_eq!(kept(smallest), (vec!["a".into(), "ab".into(), "b".into(), "c/d".into()], true));
    }

    #[test]
    fn over_the_budget_the_smallest_keys_are_kept() {
        // Keys of uneven lengths in a scrambled order; each budget keeps
        // some of them, always the smallest, and says that some were dropped.
        let keys: Vec<String> =
            (0..500u32).map(|i| format!("{:0w$}", (i * 7919) % 500, w = 3 + (i % 5) as usize)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        for budget in [1, 20, 64, 100, 1000, 4096] {
            let mut smallest = Smallest::new(budget);
            for key in &keys {
                smallest.offer(key).unwrap();
            }
            let (got, complete) = kept(smallest);
            assert!(!complete, "budget {budget}");
            assert!(!got.is_empty(), "budget {budget}: at least one key");
            assert_eq!(got, sorted[..got.len()], "budget {budget}");
            let held: usize = got.iter().map(|k| k.len() + SPAN_BYTES).sum();
            assert!(held <= budget.max(got[0].len() + SPAN_BYTES), "budget {budget}: {held} bytes");
        }
    }

    #[test]
    fn a_budget_that_fits_them_all_drops_none() {
        let keys: Vec<String> = (0..100).rev().map(|i| format!("k{i:03}")).collect();
        let exact = keys.iter().map(|k| k.len() + SPAN_BYTES).sum();
        let mut smallest = Smallest::new(exact);
        for key in &keys {
            smallest.offer(key).unwrap();
        }
        let (got, complete) = kept(smallest);
        assert!(complete);
        assert_eq!(got.len(), 100);
    }
}
