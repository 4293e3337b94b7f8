//! The records a manifest holds, as values: the log (batches and gaps),
//! snapshots and prunes, and what a stored object's bytes are.
//!
//! Nothing here parses, validates or stores: [`super::format`] spells these
//! values as text, [`super::validate`] says whether one is acceptable and
//! [`super::sequence`] whether it may follow the ones before it.

use crate::crc;
use crate::target::keys;

/// How a stored object's bytes encode the logical bytes they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The stored object is the logical bytes themselves.
    Identity,
    /// Each segment is its own zstd frame, frames stored one after another.
    ZstdFrames,
}

impl Encoding {
    /// The spelling used in the text format.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::ZstdFrames => "zstd-frames",
        }
    }

    /// The encoding spelled `text`, if any.
    pub fn from_name(text: &str) -> Option<Encoding> {
        [Encoding::Identity, Encoding::ZstdFrames].into_iter().find(|e| e.as_str() == text)
    }
}

/// The bytes as stored on the target: what `verify` and a download check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredObject {
    /// Object size in bytes.
    pub size: u64,
    /// CRC32 of the whole object.
    pub crc32: u32,
    pub encoding: Encoding,
}

/// One segment inside a batch object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    /// The segment's position in the stream.
    pub position: u64,
    /// Its original file name (restored under this name).
    pub name: String,
    /// Its raw length in bytes.
    pub len: u64,
    /// CRC32 of its raw bytes.
    pub crc32: u32,
    /// Where its stored bytes start inside the stored object.
    pub offset: u64,
    /// How many stored bytes it takes there (`len` with identity encoding).
    pub stored_len: u64,
}

impl SegmentEntry {
    /// A segment stored as itself at `offset` of an identity-encoded object.
    pub fn identity(position: u64, name: String, offset: u64, len: u64, crc32: u32) -> SegmentEntry {
        SegmentEntry { position, name, len, crc32, offset, stored_len: len }
    }
}

/// A batch: positions `first..=last` stored as one object under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub first: u64,
    pub last: u64,
    /// Object key, always `keys::batch_key(stream, first, last)`.
    pub key: String,
    /// Logical size: the sum of the segments' raw lengths.
    pub size: u64,
    /// CRC32 of the segments' raw bytes concatenated.
    pub crc32: u32,
    /// The object as stored.
    pub stored: StoredObject,
    /// One entry per position, in position order.
    pub segments: Vec<SegmentEntry>,
}

impl BatchRecord {
    /// The record of `stream`'s batch `first..=last` stored as the plain
    /// concatenation of `segments` (made with [`SegmentEntry::identity`]):
    /// size and CRC32 are combined from the segments'. A record built from
    /// wrong segments is still refused by validation before it is stored.
    pub fn identity(stream: &str, first: u64, last: u64, segments: Vec<SegmentEntry>) -> BatchRecord {
        let (size, crc32) =
            crc::concatenation(segments.iter().map(|s| (s.crc32, s.len))).unwrap_or((u64::MAX, 0));
        BatchRecord {
            first,
            last,
            key: keys::batch_key(stream, first, last),
            size,
            crc32,
            stored: StoredObject { size, crc32, encoding: Encoding::Identity },
            segments,
        }
    }
}

/// A gap: positions `first..=last` were never archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRecord {
    pub first: u64,
    pub last: u64,
    /// Why, for the operator (e.g. "segment removed before archiving").
    pub reason: String,
}

/// A log record: what became of a contiguous range of positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Batch(BatchRecord),
    Gap(GapRecord),
}

impl Record {
    /// First position the record covers.
    pub fn first(&self) -> u64 {
        match self {
            Record::Batch(b) => b.first,
            Record::Gap(g) => g.first,
        }
    }

    /// Last position the record covers (inclusive).
    pub fn last(&self) -> u64 {
        match self {
            Record::Batch(b) => b.last,
            Record::Gap(g) => g.last,
        }
    }

    /// `"batch"` or `"gap"`, as in the text format and in record keys.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Batch(_) => "batch",
            Record::Gap(_) => "gap",
        }
    }
}

/// A snapshot: the application's state at `position`, stored under `key`.
/// A snapshot at P may coexist with the batch that ends at P.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub position: u64,
    /// Object key, always `keys::snapshot_key(stream, position)`.
    pub key: String,
    /// Logical size of the snapshot image.
    pub size: u64,
    /// CRC32 of the image.
    pub crc32: u32,
    /// The object as stored.
    pub stored: StoredObject,
}

/// A prune: retention deleting objects, recorded before they go. Prunes
/// are numbered 1, 2, 3… by `sequence`; `before` says that every position
/// below it was removed on purpose, so readers check contiguity from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRecord {
    pub sequence: u64,
    /// The "pruned before P" mark; never decreases from one prune to the next.
    pub before: u64,
    /// The keys of the batch and snapshot objects this prune deletes.
    pub deleted: Vec<String>,
}

/// One line of a manifest: an entry of one of its three sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Log(Record),
    Snapshot(SnapshotRecord),
    Prune(PruneRecord),
}

impl Entry {
    /// The record kind as written first on its line.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::Log(record) => record.kind(),
            Entry::Snapshot(_) => "snapshot",
            Entry::Prune(_) => "prune",
        }
    }
}

/// A whole manifest in memory, each sequence in its order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Batches and gaps, contiguous from [`Manifest::live_log`]'s start.
    pub log: Vec<Record>,
    /// Snapshots by increasing position.
    pub snapshots: Vec<SnapshotRecord>,
    /// Prunes by sequence.
    pub prunes: Vec<PruneRecord>,
}

impl Manifest {
    /// Add `entry` to its sequence (the caller has checked the order).
    pub fn push(&mut self, entry: Entry) {
        match entry {
            Entry::Log(record) => self.log.push(record),
            Entry::Snapshot(snapshot) => self.snapshots.push(snapshot),
            Entry::Prune(prune) => self.prunes.push(prune),
        }
    }

    /// The "pruned before P" mark of the latest prune.
    pub fn pruned_before(&self) -> Option<u64> {
        self.prunes.last().map(|p| p.before)
    }

    /// The log records retention has not removed: those ending at or after
    /// the pruned-before mark (all of them when nothing was pruned).
    pub fn live_log(&self) -> &[Record] {
        let before = self.pruned_before().unwrap_or(0);
        let start = self.log.partition_point(|r| r.last() < before);
        &self.log[start..]
    }

    /// The snapshots retention has not deleted (no prune names their key),
    /// by position.
    pub fn live_snapshots(&self) -> impl Iterator<Item = &SnapshotRecord> + '_ {
        let deleted: std::collections::HashSet<&str> =
            self.prunes.iter().flat_map(|p| p.deleted.iter().map(String::as_str)).collect();
        self.snapshots.iter().filter(move |s| !deleted.contains(s.key.as_str()))
    }

    /// Every entry in an order a journal accepts: prunes first (their mark
    /// says which holes in the log are on purpose), then snapshots, then
    /// the log.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let prunes = self.prunes.iter().cloned().map(Entry::Prune);
        let snapshots = self.snapshots.iter().cloned().map(Entry::Snapshot);
        prunes.chain(snapshots).chain(self.log.iter().cloned().map(Entry::Log))
    }

    /// Whether the manifest holds nothing.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.snapshots.is_empty() && self.prunes.is_empty()
    }
}
