//! Turning a listing of remote record objects into manifest entries: pure
//! functions, no I/O. The caller lists, asks [`to_fetch`] which objects it
//! needs, downloads them, and hands the texts to [`assemble`].
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

use std::collections::BTreeMap;

use crate::manifest::sequence::{LogSpan, Refusal};
use crate::manifest::{Entry, Manifest, ManifestError, Record, Sequences, StreamRules, format};
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
pub fn assemble(
    rules: &StreamRules<'_>,
    known: &Sequences,
    fetched: &[Fetched],
) -> Result<Manifest, ManifestError> {
    let mut log_objects = Vec::new();
    let mut assembled = Manifest::default();
    for object in fetched {
        let Some(record_key) = RecordKey::parse(rules.name, &object.key) else {
            return Err(hostile(&object.key, "is not a record object of this stream"));
        };
        let content = format::parse_object(&object.text, &object.key, rules).map_err(in_remote_object)?;
        match record_key {
            RecordKey::Log { first, last, level } => {
                check_log_object(&object.key, &content, first, last, level)?;
                log_objects.push((object.key.as_str(), content.log));
            }
            RecordKey::Snapshot { position } => {
                match (&content.snapshots[..], content.log.len() + content.prunes.len()) {
                    ([snapshot], 0) if snapshot.position == position => {
                        assembled.snapshots.push(snapshot.clone())
                    }
                    _ => {
                        return Err(hostile(
                            &object.key,
                            "does not hold exactly the snapshot record its key names",
                        ));
                    }
                }
            }
            RecordKey::Prune { sequence } => {
                match (&content.prunes[..], content.log.len() + content.snapshots.len()) {
                    ([prune], 0) if prune.sequence == sequence => assembled.prunes.push(prune.clone()),
                    _ => {
                        return Err(hostile(
                            &object.key,
                            "does not hold exactly the prune record its key names",
                        ));
                    }
                }
            }
        }
    }
    let log = merge_log(log_objects)?;
    assembled.snapshots.sort_by_key(|s| s.position);
    assembled.snapshots.retain(|s| known.last_snapshot.is_none_or(|seen| s.position > seen));
    assembled.prunes.sort_by_key(|p| p.sequence);
    assembled.prunes.retain(|p| known.last_prune.is_none_or(|(seen, _)| p.sequence > seen));

    // Prunes first: their mark says which holes in the log are on purpose.
    let mut ends = known.clone();
    for entry in assembled.prunes.iter().cloned().map(Entry::Prune) {
        ends.admit(&entry).map_err(|refusal| refusal_error(refusal, "prune records", None))?;
    }
    for entry in assembled.snapshots.iter().cloned().map(Entry::Snapshot) {
        ends.admit(&entry).map_err(|refusal| refusal_error(refusal, "snapshot records", None))?;
    }
    let mut previous_key: Option<&str> = None;
    for (record, key) in log {
        if known.log_end().is_some_and(|end| record.last() <= end) {
            continue;
        }
        if let Some(end) = known.log_end().filter(|&end| record.first() <= end) {
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
        let entry = Entry::Log(record);
        ends.admit(&entry).map_err(|refusal| refusal_error(refusal, key, previous_key))?;
        let Entry::Log(record) = entry else { unreachable!("built as a log entry above") };
        assembled.log.push(record);
        previous_key = Some(key);
    }
    Ok(assembled)
}

/// A level-0 object holds exactly its one record; a compacted one the
/// records covering exactly its range (contiguity within the object was
/// checked when it was parsed).
fn check_log_object(
    key: &str,
    content: &Manifest,
    first: u64,
    last: u64,
    level: LogLevel,
) -> Result<(), ManifestError> {
    let only_log = content.snapshots.is_empty() && content.prunes.is_empty();
    let matches = match (level, &content.log[..], content.log.first(), content.log.last()) {
        (LogLevel::Single(kind), [record], _, _) => LogSpan::of(record) == LogSpan { first, last, kind },
        (LogLevel::Compacted(_), _, Some(head), Some(tail)) => head.first() == first && tail.last() == last,
        _ => false,
    };
    if only_log && matches {
        Ok(())
    } else {
        Err(hostile(
            key,
            "does not match its key (it must hold exactly the records of the range its key names)",
        ))
    }
}

/// The log records of all objects, by position, larger objects first so
/// that their records win; identical records are one, differing or
/// overlapping ones a conflict naming both objects.
fn merge_log(mut objects: Vec<(&str, Vec<Record>)>) -> Result<Vec<(Record, &str)>, ManifestError> {
    let span = |records: &[Record]| match (records.first(), records.last()) {
        (Some(head), Some(tail)) => tail.last() - head.first(),
        _ => 0,
    };
    objects.sort_by(|(a_key, a), (b_key, b)| span(b).cmp(&span(a)).then(a_key.cmp(b_key)));
    let mut merged: BTreeMap<u64, (Record, &str)> = BTreeMap::new();
    for (key, records) in objects {
        for record in records {
            let overlapping =
                merged.range(..=record.last()).next_back().filter(|(_, (r, _))| r.last() >= record.first());
            match overlapping {
                None => {
                    merged.insert(record.first(), (record, key));
                }
                Some((_, (existing, _))) if *existing == record => {}
                Some((_, (existing, existing_key))) => {
                    return Err(ManifestError::Conflict {
                        first_key: existing_key.to_string(),
                        second_key: key.to_string(),
                        message: format!(
                            "the first records {} {}..{}, the second {} {}..{}",
                            existing.kind(),
                            existing.first(),
                            existing.last(),
                            record.kind(),
                            record.first(),
                            record.last()
                        ) + if existing.first() == record.first() && existing.last() == record.last()
                        {
                            " with different content"
                        } else {
                            ""
                        },
                    });
                }
            }
        }
    }
    Ok(merged.into_values().collect())
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
