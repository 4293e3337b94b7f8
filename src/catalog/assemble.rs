//! Turning a listing of remote record objects into manifest entries: pure
//! functions, no I/O. The caller lists, asks [`to_fetch`] which objects it
//! needs, downloads them one at a time and reads each through an
//! [`Assembly`], which hands out its entries as they are parsed
//! ([`assemble`] does it for objects in memory).
//!
//! Precedence between record objects (compaction folds many level-0 record
//! objects into one object of a higher level that covers their whole range;
//! a crash mid-compaction may leave both):
//!
//! - the object covering the larger range wins: an object whose range lies
//!   inside a larger listed one is not fetched at all;
//! - when both are read anyway, identical records from two objects are the
//!   same record;
//! - records that differ, or overlap without being the same range, are a
//!   [`ManifestError::Conflict`] naming both keys.
//!
//! The records assembled must continue the local journal's log without a
//! hole (unless pruned), and every object must hold exactly what its key
//! says; anything else is an error naming the key. Keys that are not
//! record keys are foreign and left to the caller to warn about.

use std::rc::Rc;

use crate::manifest::format::{self, EntryReader};
use crate::manifest::sequence::{LogSpan, Refusal};
use crate::manifest::{Entry, Manifest, ManifestError, Record, Sequences, StreamRules};
use crate::target::ObjectInfo;
use crate::target::keys::{self, LogLevel, RecordKey};

/// A remote record object larger than this is refused as hostile: a real
/// level-0 one holds one batch's segment table, and compaction keeps its
/// objects below it.
pub const MAX_RECORD_OBJECT: u64 = 64 << 20;

/// A stream's listed record objects, each with what its key says it holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    pub records: Vec<(RecordKey, ObjectInfo)>,
    /// Objects under the records prefix whose keys are not record keys.
    pub foreign: Vec<String>,
}

/// Sort listed objects into record objects and foreign ones.
pub fn classify(stream: &str, listed: Vec<ObjectInfo>) -> Listing {
    let mut listing = Listing::default();
    for object in listed {
        match RecordKey::parse(stream, &object.key) {
            Some(key) => listing.records.push((key, object)),
            None => listing.foreign.push(object.key),
        }
    }
    listing
}

/// The record objects to download to learn what comes after `known` (the
/// local journal's ends): log objects that reach past its log, except those
/// inside a larger listed one; snapshots and prunes it does not have yet.
/// An absurdly large object is refused before anything is downloaded.
pub fn to_fetch<'a>(listing: &'a Listing, known: &Sequences) -> Result<Vec<&'a ObjectInfo>, ManifestError> {
    let ranges = listing.records.iter().filter_map(|(key, _)| match *key {
        RecordKey::Log { first, last, .. } => Some((first, last)),
        _ => None,
    });
    let inside = inside_larger(ranges.collect());
    let inside_larger = |first: u64, last: u64| inside.binary_search(&(first, last)).is_ok();
    let mut wanted = Vec::new();
    for (key, object) in &listing.records {
        let needed = match *key {
            RecordKey::Log { first, last, .. } => {
                known.log_end().is_none_or(|end| last > end) && !inside_larger(first, last)
            }
            RecordKey::Snapshot { position } => known.last_snapshot.is_none_or(|seen| position > seen),
            RecordKey::Prune { sequence } => known.last_prune.is_none_or(|(seen, _)| sequence > seen),
        };
        if needed {
            if object.size > MAX_RECORD_OBJECT {
                return Err(hostile(
                    &object.key,
                    &format!("is {} bytes, far larger than any record object", object.size),
                ));
            }
            wanted.push(object);
        }
    }
    Ok(wanted)
}

/// Positions below `start` (where the local journal's log begins) that the
/// listed log record objects hold, ignoring what lies before
/// `pruned_before`: what a journal that lost its first lines no longer
/// holds, as `(first, last, key of the lowest such object)`. The journal
/// alone cannot tell, since a stream may start above 0.
pub fn missing_before(listing: &Listing, start: u64, pruned_before: Option<u64>) -> Option<(u64, u64, &str)> {
    let floor = pruned_before.unwrap_or(0);
    listing
        .records
        .iter()
        .filter_map(|(key, object)| match *key {
            RecordKey::Log { first, last, .. } if first < start && last >= floor => {
                Some((first.max(floor), object.key.as_str()))
            }
            _ => None,
        })
        .min_by_key(|&(first, _)| first)
        .map(|(first, key)| (first, start - 1, key))
}

/// The ranges among `ranges` that lie inside another, larger one (sorted).
/// One sweep: by first position, larger ranges first, a range is inside a
/// larger one when some range before it (with another extent) reaches as far.
fn inside_larger(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    ranges.dedup();
    let mut inside = Vec::new();
    let mut reach: Option<u64> = None;
    for (first, last) in ranges {
        if reach.is_some_and(|reach| reach >= last) {
            inside.push((first, last));
        }
        reach = reach.max(Some(last));
    }
    inside.sort_unstable();
    inside
}

/// One downloaded record object.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub key: String,
    pub text: Vec<u8>,
}

/// The entries `fetched` holds beyond `known`, each sequence in order and
/// the log continuing `known`'s without a hole. Errors name the object(s).
/// (An [`Assembly`] over all of them, in the order a reader takes them:
/// prunes, snapshots, then log objects by position, larger first.)
pub fn assemble(
    rules: &StreamRules<'_>,
    known: &Sequences,
    fetched: &[Fetched],
) -> Result<Manifest, ManifestError> {
    let mut assembly = Assembly::new(known);
    let mut assembled = Manifest::default();
    for (object, next_first) in in_reading_order(rules.name, fetched, |object| &object.key) {
        let mut entries = assembly.read(rules, &object.key, &object.text, next_first)?;
        while let Some(entry) = entries.next_entry()? {
            assembled.push(entry);
        }
    }
    Ok(assembled)
}

/// `objects` (named by `key`) in the order an [`Assembly`] reads them,
/// each with where the next log object after it begins (what
/// [`Assembly::read`] is told): objects that are not this stream's first
/// (refused at once), then prunes by number, snapshots by position, and
/// log objects by first position, the larger of two with the same first
/// position first.
pub fn in_reading_order<'o, T>(
    stream: &str,
    objects: &'o [T],
    key: impl Fn(&T) -> &str,
) -> Vec<(&'o T, Option<u64>)> {
    let order_of = |key: &Option<RecordKey>| match key {
        None => (0, 0, std::cmp::Reverse(0)),
        Some(RecordKey::Prune { sequence }) => (1, *sequence, std::cmp::Reverse(0)),
        Some(RecordKey::Snapshot { position }) => (2, *position, std::cmp::Reverse(0)),
        Some(RecordKey::Log { first, last, .. }) => (3, *first, std::cmp::Reverse(*last)),
    };
    let mut order: Vec<(Option<RecordKey>, &T)> =
        objects.iter().map(|object| (RecordKey::parse(stream, key(object)), object)).collect();
    order.sort_by_key(|(key, _)| order_of(key));
    // Walked from the end: each object gets the first position of the
    // nearest log object after it.
    let mut next = None;
    let mut ordered: Vec<(&T, Option<u64>)> = order
        .into_iter()
        .rev()
        .map(|(key, object)| {
            let after = next;
            if let Some(RecordKey::Log { first, .. }) = key {
                next = Some(first);
            }
            (object, after)
        })
        .collect();
    ordered.reverse();
    ordered
}

/// Record objects read one after another ([`Assembly::read`], in
/// [`in_reading_order`]) into the entries beyond `known`, handed out one at a
/// time as they are parsed, so that no object's records are ever held
/// together: each sequence in order, the log continuing `known`'s without a
/// hole (prunes come first: their marks excuse pruned holes).
///
/// Two objects may hold the same positions (a compaction cut short leaves
/// the larger object beside the smaller ones; only objects inside no
/// larger one are read, but ranges may still overlap): records of a later
/// object that lie within what was already handed out must be the same
/// records (compared by [`Held`], kept only while a later object can reach
/// them), anything else is a [`ManifestError::Conflict`] naming both keys.
/// A reader that lists again ([`Assembly::resume`]) goes on from what it
/// handed out: records read again are passed over (compared where kept).
#[derive(Debug)]
pub struct Assembly {
    /// Where what was handed out ends.
    ends: Sequences,
    /// What not to hand out again: the caller's log (the local journal's)
    /// and the snapshots and prunes handed out before the last listing.
    known: Sequences,
    /// Where the log handed out before the last listing ends.
    resumed_through: Option<u64>,
    /// Records handed out that a later object may hold again, in order,
    /// with the key of the object they came from.
    window: std::collections::VecDeque<(Held, Rc<str>)>,
    /// The object the last log record came from (for a hole's location).
    previous_key: Option<Rc<str>>,
}

impl Assembly {
    /// Read on from `known` (the local journal's ends, or nothing).
    pub fn new(known: &Sequences) -> Self {
        Assembly {
            ends: known.clone(),
            known: known.clone(),
            resumed_through: None,
            window: std::collections::VecDeque::new(),
            previous_key: None,
        }
    }

    /// Where the entries handed out so far (and `known`) end: what a new
    /// listing must reach past.
    pub fn ends(&self) -> &Sequences {
        &self.ends
    }

    /// Read the objects of a new listing from here on: what was handed out
    /// is passed over when read again.
    pub fn resume(&mut self) {
        self.known.last_snapshot = self.ends.last_snapshot;
        self.known.last_prune = self.ends.last_prune;
        self.resumed_through = self.ends.log_end();
    }

    /// The entries of the record object `key` (`text`, downloaded whole),
    /// to be taken one at a time with [`ObjectEntries::next_entry`];
    /// `next_first` is where the next log object to be read begins.
    pub fn read<'a>(
        &'a mut self,
        rules: &StreamRules<'a>,
        key: &'a str,
        text: &'a [u8],
        next_first: Option<u64>,
    ) -> Result<ObjectEntries<'a>, ManifestError> {
        let Some(record_key) = RecordKey::parse(rules.name, key) else {
            return Err(hostile(key, "is not a record object of this stream"));
        };
        if let RecordKey::Log { first, .. } = record_key {
            // Records ending before this object begins are in no later one.
            while self.window.front().is_some_and(|(held, _)| held.last < first) {
                self.window.pop_front();
            }
        }
        let entries = EntryReader::new(text, key, rules).map_err(in_remote_object)?;
        Ok(ObjectEntries { assembly: self, key, record_key, entries, next_first, tail: None, done: false })
    }

    /// Take `record` of the log object `key` next: `None` when it was
    /// handed out already (the caller's, or the same record of an earlier
    /// object).
    fn place(
        &mut self,
        record: Record,
        key: &str,
        next_first: Option<u64>,
    ) -> Result<Option<Record>, ManifestError> {
        if let Some(end) = self.known.log_end() {
            if record.last() <= end {
                return Ok(None);
            }
            if record.first() <= end {
                return Err(hostile(
                    key,
                    &format!(
                        "holds {} {}..{}, which overlaps the local journal's last position {end}",
                        record.kind(),
                        record.first(),
                        record.last()
                    ),
                ));
            }
        }
        if self.ends.log_end().is_some_and(|end| record.first() <= end) {
            let read_before_listing = self.resumed_through.is_some_and(|through| record.last() <= through);
            return match self.same_as_earlier(&record, key)? {
                true => Ok(None),
                false if read_before_listing => Ok(None),
                false => {
                    Err(hostile(key, "holds records that overlap records read before it from another object"))
                }
            };
        }
        let entry = Entry::Log(record);
        self.ends
            .admit(&entry)
            .map_err(|refusal| refusal_error(refusal, key, self.previous_key.as_deref()))?;
        let Entry::Log(record) = entry else { unreachable!("built as a log entry above") };
        let from = match &self.previous_key {
            Some(previous) if &**previous == key => previous.clone(),
            _ => Rc::from(key),
        };
        if next_first.is_some_and(|next| record.last() >= next) {
            self.window.push_back((Held::of(&record), from.clone()));
        }
        self.previous_key = Some(from);
        Ok(Some(record))
    }

    /// Whether `record` of object `key`, within what was handed out, is the
    /// record an earlier object gave for those positions (`false`: none
    /// was kept); another record there is a conflict.
    fn same_as_earlier(&self, record: &Record, key: &str) -> Result<bool, ManifestError> {
        let held = Held::of(record);
        let at = self.window.partition_point(|(earlier, _)| earlier.first <= record.first());
        let overlapping =
            at.checked_sub(1).map(|at| &self.window[at]).filter(|(h, _)| h.last >= record.first());
        let following = self.window.get(at).filter(|(h, _)| h.first <= record.last());
        let Some((existing, existing_key)) = overlapping.or(following) else {
            return Ok(false);
        };
        if *existing == held {
            return Ok(true);
        }
        let same_range = existing.first == held.first && existing.last == held.last;
        Err(ManifestError::Conflict {
            first_key: existing_key.to_string(),
            second_key: key.to_string(),
            message: format!(
                "the first records {} {}..{}, the second {} {}..{}{}",
                existing.kind,
                existing.first,
                existing.last,
                held.kind,
                held.first,
                held.last,
                if same_range { " with different content" } else { "" }
            ),
        })
    }

    /// Take the snapshot or prune `entry` next: `None` when the caller
    /// had it.
    fn place_side(&mut self, entry: Entry) -> Result<Option<Entry>, ManifestError> {
        let (known, source) = match &entry {
            Entry::Snapshot(s) => {
                (self.known.last_snapshot.is_some_and(|seen| s.position <= seen), "snapshot records")
            }
            Entry::Prune(p) => {
                (self.known.last_prune.is_some_and(|(seen, _)| p.sequence <= seen), "prune records")
            }
            Entry::Log(_) => unreachable!("log records are placed by `place`"),
        };
        if known {
            return Ok(None);
        }
        self.ends.admit(&entry).map_err(|refusal| refusal_error(refusal, source, None))?;
        Ok(Some(entry))
    }
}

/// The entries of one record object, parsed one at a time from its text
/// and placed by their [`Assembly`]; the object must hold exactly what its
/// key says (checked as far as read: a compacted object's last record at
/// its end).
pub struct ObjectEntries<'a> {
    assembly: &'a mut Assembly,
    key: &'a str,
    record_key: RecordKey,
    entries: EntryReader<'a, &'a [u8]>,
    next_first: Option<u64>,
    /// The last record read, of a compacted object.
    tail: Option<LogSpan>,
    /// Whether the one entry of a level-0 object was read.
    done: bool,
}

impl ObjectEntries<'_> {
    /// The next entry to hand out, or `None` at the object's end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ManifestError> {
        match self.record_key {
            RecordKey::Log { first, last, level: LogLevel::Compacted(_) } => loop {
                let Some(entry) = self.parse_next()? else {
                    return match self.tail {
                        Some(tail) if tail.last == last => Ok(None),
                        _ => Err(self.not_its_key()),
                    };
                };
                let Entry::Log(record) = entry else { return Err(self.not_its_key()) };
                if self.tail.is_none() && record.first() != first {
                    return Err(self.not_its_key());
                }
                self.tail = Some(LogSpan::of(&record));
                if let Some(record) = self.assembly.place(record, self.key, self.next_first)? {
                    return Ok(Some(Entry::Log(record)));
                }
            },
            _ if self.done => Ok(None),
            record_key => {
                self.done = true;
                let (entry, more) = (self.parse_next()?, self.parse_next()?.is_some());
                match (record_key, entry) {
                    (
                        RecordKey::Log { first, last, level: LogLevel::Single(kind) },
                        Some(Entry::Log(record)),
                    ) if !more && LogSpan::of(&record) == (LogSpan { first, last, kind }) => {
                        Ok(self.assembly.place(record, self.key, self.next_first)?.map(Entry::Log))
                    }
                    (RecordKey::Log { .. }, _) => Err(self.not_its_key()),
                    (RecordKey::Snapshot { position }, Some(Entry::Snapshot(s)))
                        if !more && s.position == position =>
                    {
                        self.assembly.place_side(Entry::Snapshot(s))
                    }
                    (RecordKey::Snapshot { .. }, _) => {
                        Err(hostile(self.key, "does not hold exactly the snapshot record its key names"))
                    }
                    (RecordKey::Prune { sequence }, Some(Entry::Prune(p)))
                        if !more && p.sequence == sequence =>
                    {
                        self.assembly.place_side(Entry::Prune(p))
                    }
                    (RecordKey::Prune { .. }, _) => {
                        Err(hostile(self.key, "does not hold exactly the prune record its key names"))
                    }
                }
            }
        }
    }

    /// The next entry of the text; a torn final line is damage here (an
    /// object is written whole).
    fn parse_next(&mut self) -> Result<Option<Entry>, ManifestError> {
        let entry = self.entries.next_entry().map_err(in_remote_object)?;
        match (entry, self.entries.dropped_torn_tail()) {
            (None, Some(line)) => Err(in_remote_object(ManifestError::Damaged {
                source: self.key.to_string(),
                line,
                message: "incomplete or corrupt final line in an object that is written whole".into(),
            })),
            (entry, _) => Ok(entry),
        }
    }

    fn not_its_key(&self) -> ManifestError {
        hostile(
            self.key,
            "does not match its key (it must hold exactly the records of the range its key names)",
        )
    }
}

/// A record as kept to be compared later without holding it: its span,
/// kind and a hash of its text (a compacted object holds some 16,000
/// records; held whole they took 20 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) kind: &'static str,
    pub(crate) hash: u64,
}

impl Held {
    pub(crate) fn of(record: &Record) -> Held {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        format::serialize_entry(&Entry::Log(record.clone())).hash(&mut hasher);
        Held { first: record.first(), last: record.last(), kind: record.kind(), hash: hasher.finish() }
    }
}

fn refusal_error(refusal: Refusal, key: &str, previous_key: Option<&str>) -> ManifestError {
    match refusal {
        Refusal::Hole { first, last } => ManifestError::Hole {
            location: match previous_key {
                Some(previous) => format!("between {previous} and {key}"),
                None => format!("before {key} (the remote records start after the local journal ends)"),
            },
            first,
            last,
        },
        Refusal::Invalid(message) => hostile(key, &message),
    }
}

/// A parse error of a remote record object, with the remedy that fits an
/// object on the target rather than a local file.
pub(crate) fn in_remote_object(error: ManifestError) -> ManifestError {
    match error {
        ManifestError::Damaged { source, line, message } => ManifestError::Damaged {
            source: format!("{source}:{line}"),
            line: 0,
            message: format!(
                "damaged remote manifest record ({message}); restore the object from a backup \
                 (`walship verify --deep` lists every damaged record object)"
            ),
        },
        ManifestError::Invalid { source, line, message } if line > 0 => ManifestError::Invalid {
            source: format!("{source}:{line}"),
            line: 0,
            message: format!(
                "invalid remote manifest record: {message}; move the object aside or fix the \
                 target/stream name"
            ),
        },
        other => other,
    }
}

/// An error about one remote record object.
pub fn hostile(key: &str, detail: &str) -> ManifestError {
    ManifestError::Invalid {
        source: key.to_string(),
        line: 0,
        message: format!(
            "remote manifest record {detail}; move the object aside or fix the target/stream name"
        ),
    }
}

/// A batch object on the target that no record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrecorded {
    /// Beyond the log's end: uploaded, then the commit did not happen (a
    /// crash). The next `run` records it without sending it again.
    Pending(String),
    /// Inside the log, whose records (a gap, other batches) cover its
    /// positions otherwise: it is not used.
    Orphan(String),
}

impl std::fmt::Display for Unrecorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unrecorded::Pending(key) => write!(
                f,
                "{key} is stored but not recorded yet (a commit cut short, or its record object \
                 lost); the next run records it without sending it again if its segments are still \
                 in the stream directory, and otherwise stops: then restore its record object from \
                 a backup"
            ),
            Unrecorded::Orphan(key) => write!(
                f,
                "{key} is stored but no record uses it (its positions are recorded otherwise, e.g. as \
                 a gap); it is kept and ignored"
            ),
        }
    }
}

/// The first of the listed `objects` that is a batch object of `stream`
/// holding any of `first..=last`.
pub fn batch_object_within<'a>(
    stream: &str,
    objects: &'a [ObjectInfo],
    first: u64,
    last: u64,
) -> Option<&'a str> {
    objects.iter().map(|object| object.key.as_str()).find(|key| {
        keys::parse_batch_key(stream, key).is_some_and(|(low, high)| low <= last && high >= first)
    })
}

/// Compare a stream's batch objects with its log (a rebuild, `verify`) as
/// the log streams by: the batch objects (sorted by key, as listed) are
/// walked beside the records, one record at a time. A batch object whose
/// positions no record covers, below the log's end and not pruned, means
/// records were lost: a [`ManifestError::Hole`] naming the object. Others
/// without a record are reported, not refused.
pub struct UnrecordedScan<'a> {
    objects: std::iter::Peekable<Box<dyn Iterator<Item = (u64, u64, String)> + 'a>>,
    mark: u64,
    started: bool,
    found: Vec<Unrecorded>,
}

impl<'a> UnrecordedScan<'a> {
    /// `batch_objects` as listed (in key order, may be read lazily, page by
    /// page); `pruned_before` the log's final mark.
    pub fn new(
        stream: &'a str,
        batch_objects: impl Iterator<Item = ObjectInfo> + 'a,
        pruned_before: Option<u64>,
    ) -> Self {
        let ranges = batch_objects.filter_map(move |object| {
            keys::parse_batch_key(stream, &object.key).map(|(first, last)| (first, last, object.key))
        });
        let objects: Box<dyn Iterator<Item = (u64, u64, String)> + 'a> = Box::new(ranges);
        UnrecordedScan {
            objects: objects.peekable(),
            mark: pruned_before.unwrap_or(0),
            started: false,
            found: Vec::new(),
        }
    }

    /// The next record of the log, in order (those below the mark are
    /// passed over).
    pub fn record(&mut self, record: &Record) -> Result<(), ManifestError> {
        if record.last() < self.mark {
            return Ok(());
        }
        if !std::mem::replace(&mut self.started, true) {
            // Before the log's start: records were lost, unless pruned.
            while let Some((first, last, key)) = self.objects.next_if(|&(first, ..)| first < record.first()) {
                if last >= self.mark {
                    let last = last.min(record.first() - 1);
                    return Err(ManifestError::Hole { location: key, first, last });
                }
            }
        }
        while let Some((_, last, key)) = self.objects.next_if(|&(first, ..)| first <= record.last()) {
            let recorded = matches!(record, Record::Batch(batch) if batch.key == key);
            if last >= self.mark && !recorded {
                self.found.push(Unrecorded::Orphan(key));
            }
        }
        Ok(())
    }

    /// What remains beyond the log's end is pending; everything found.
    pub fn finish(self) -> Vec<Unrecorded> {
        let mark = self.mark;
        let mut found = self.found;
        found.extend(
            self.objects.filter(|&(_, last, _)| last >= mark).map(|(_, _, key)| Unrecorded::Pending(key)),
        );
        found
    }
}

/// For the fuzzer: `data` is a listing of record objects, each `KEY LF
/// TEXT`, separated by NUL bytes (KEY is relative to the fuzz stream's
/// records prefix; foreign keys are left out, as the caller would).
/// Planning and assembling must not panic, whatever the
/// input; an assembled log must be one that a journal accepts (valid and
/// contiguous entries, in order), and assembling it again from the level-0
/// objects of its own records must give it back. Returns what assembling
/// gave, for the seed tests.
pub fn check_assemble(data: &[u8]) -> Result<Manifest, ManifestError> {
    use crate::manifest::check::{FUZZ_PATTERN, FUZZ_STREAM};
    let naming = crate::naming::Naming::from_pattern(FUZZ_PATTERN).unwrap_or_else(|why| panic!("{why}"));
    let rules = StreamRules::new(FUZZ_STREAM, &naming);
    let prefix = keys::records_prefix(FUZZ_STREAM);
    let fetched: Vec<Fetched> = data
        .split(|&byte| byte == 0)
        .map(|object| {
            let (key, text) = match object.iter().position(|&byte| byte == b'\n') {
                Some(end) => (&object[..end], &object[end + 1..]),
                None => (object, &[][..]),
            };
            Fetched { key: format!("{prefix}{}", String::from_utf8_lossy(key)), text: text.to_vec() }
        })
        .collect();
    let listed = fetched
        .iter()
        .map(|f| ObjectInfo { key: f.key.clone(), size: f.text.len() as u64, crc32: None })
        .collect();
    let listing = classify(FUZZ_STREAM, listed);
    let _ = to_fetch(&listing, &Sequences::default());
    // Every record object, not only those the plan fetches: conflicts too.
    let fetched: Vec<Fetched> = fetched.into_iter().filter(|f| !listing.foreign.contains(&f.key)).collect();
    let assembled = assemble(&rules, &Sequences::default(), &fetched)?;
    let mut ends = Sequences::default();
    for entry in assembled.entries() {
        crate::manifest::validate_entry(&entry, &rules)
            .unwrap_or_else(|why| panic!("assembled invalid entry: {why}"));
        ends.admit(&entry).unwrap_or_else(|refusal| panic!("assembled entries out of order: {refusal:?}"));
    }
    let again: Vec<Fetched> = assembled
        .entries()
        .map(|entry| Fetched {
            key: super::entry_key(FUZZ_STREAM, &entry),
            text: format::serialize(std::slice::from_ref(&entry)).into_bytes(),
        })
        .collect();
    let reassembled = assemble(&rules, &Sequences::default(), &again)
        .unwrap_or_else(|error| panic!("level-0 objects of an assembled manifest do not assemble: {error}"));
    assert_eq!(reassembled, assembled, "reassembling changed the manifest");
    Ok(assembled)
}

#[cfg(test)]
#[path = "assemble_tests.rs"]
mod tests;
