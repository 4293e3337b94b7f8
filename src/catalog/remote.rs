//! Reading the remote records that come after what is known (the local
//! journal's ends), chunk by chunk: list once, then download the record
//! objects needed a few at a time and assemble each chunk, so a rebuild of
//! a long archive never holds more than a chunk of it.
//!
//! A chunk is at most [`CHUNK_OBJECTS`] objects or [`CHUNK_BYTES`] bytes of
//! record text; the snapshot and prune record objects come first, in
//! chunks of their own (their marks say which holes in the log are on
//! purpose; a first prune of a long history is many prune records of
//! 10,000 keys), and objects whose ranges overlap stay in one chunk, so
//! the precedence rules of `assemble` see them together. A listed object that is gone when
//! fetched, or a log that does not continue (a compaction step folded
//! records while they were listed or read), makes it list again and go on
//! from what the chunks before it gave; so does a first page that, listed
//! again, begins lower than the whole listing did, or a page after the
//! last log record object that reaches further than the log read.

use super::assemble::{self, Fetched, Listing};
use crate::error::Error;
use crate::manifest::sequence::LogSpan;
use crate::manifest::{Manifest, Sequences, StreamRules};
use crate::target::keys::{self, RecordKey};
use crate::target::{ObjectInfo, Target, TargetError};

/// Most record objects downloaded for one chunk.
pub const CHUNK_OBJECTS: usize = 1000;
/// Most bytes of record text downloaded for one chunk (a compacted object
/// counts whole, however large).
pub const CHUNK_BYTES: u64 = 4 << 20;

/// Hand the remote entries after `known` to `take`, a chunk at a time,
/// each sequence in order and the log continuing without a hole; returns
/// the listing (after `start_after`) they came from.
pub fn each_remote_chunk(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &Sequences,
    start_after: Option<&str>,
    take: &mut dyn FnMut(Manifest) -> Result<(), Error>,
) -> Result<Listing, Error> {
    const ATTEMPTS: usize = 3;
    let stream = rules.name;
    let prefix = keys::records_prefix(stream);
    // A reader that knows nothing could take a listing that missed the
    // log's first or newest records for the whole log, so it checks both
    // edges; one with a journal reads on from it, and what a listing misses
    // past the journal's end shows as a log that does not continue, or
    // comes at its next read.
    let knew_nothing = start_after.is_none() && known.log_end().is_none();
    let mut known = known.clone();
    let mut attempt = 1;
    loop {
        let listed = target.list(&prefix, start_after).map_err(|e| Error::target(stream, e))?;
        let listing = assemble::classify(stream, listed);
        if attempt == 1 {
            for key in &listing.foreign {
                log::warn!("stream {stream}: ignoring foreign object {key} among manifest records");
            }
        }
        if knew_nothing {
            let first = lowest_log_first(&listing);
            if let Some(lower) = lower_start_now(target, stream, &prefix, first)? {
                if attempt == ATTEMPTS {
                    return Err(Error::target(stream, start_kept_moving(&prefix, lower, first)));
                }
                log::debug!(
                    "stream {stream}: records from {lower} appeared below the listing's first; listing again"
                );
                attempt += 1;
                continue;
            }
        }
        let wanted = assemble::to_fetch(&listing, &known)?;
        match take_chunks(target, rules, &mut known, &wanted, take) {
            Err(Stop::Reading(error)) if attempt < ATTEMPTS && may_have_raced(&error) => {
                log::debug!(
                    "stream {stream}: {error}; listing again (a compaction step may have folded records meanwhile)"
                );
                attempt += 1;
            }
            Err(Stop::Reading(error) | Stop::Taking(error)) => return Err(*error),
            Ok(())
                if knew_nothing
                    && attempt < ATTEMPTS
                    && more_beyond(target, stream, &prefix, &listing, &known)? =>
            {
                log::debug!("stream {stream}: records beyond the listing's end appeared; listing again");
                attempt += 1;
            }
            Ok(()) => return Ok(listing),
        }
    }
}

/// Whether log records that continue past `known`'s end now follow the
/// listing's last log record object: a compaction step that folded the
/// newest records while the listing passed (written behind it, deleted
/// ahead of it) would otherwise end the log early without a sign. One
/// page listed after that key; a record committed since also shows, and
/// is then read too.
fn more_beyond(
    target: &dyn Target,
    stream: &str,
    prefix: &str,
    listing: &Listing,
    known: &Sequences,
) -> Result<bool, Error> {
    let last_log_key = listing
        .records
        .iter()
        .filter(|(key, _)| matches!(key, RecordKey::Log { .. }))
        .map(|(_, object)| object.key.as_str())
        .max();
    let Some(after) = last_log_key else { return Ok(false) };
    let mut beyond = false;
    target
        .list_pages(prefix, Some(after), &mut |page| {
            beyond = assemble::classify(stream, page).records.iter().any(|(key, _)| match *key {
                RecordKey::Log { last, .. } => known.log_end().is_none_or(|end| last > end),
                _ => false,
            });
            false
        })
        .map_err(|e| Error::target(stream, e))?;
    Ok(beyond)
}

/// Where the lowest log record object of `listing` begins.
fn lowest_log_first(listing: &Listing) -> Option<u64> {
    listing
        .records
        .iter()
        .filter_map(|(key, _)| match *key {
            RecordKey::Log { first, .. } => Some(first),
            _ => None,
        })
        .min()
}

/// A listing is not a snapshot: a compaction step can write its larger
/// object where the listing has already passed and delete the smaller ones
/// before it reaches them, so the records it folded are missed both ways.
/// Past the journal's end the log's continuity shows such a miss; where
/// nothing is known, a stream's first position can be anything, so the
/// first page is listed again (every larger object is written before the
/// smaller ones go, so records that existed are still covered): a log
/// record object beginning below `first` means the listing missed some.
/// Returns where that lower one begins.
fn lower_start_now(
    target: &dyn Target,
    stream: &str,
    prefix: &str,
    first: Option<u64>,
) -> Result<Option<u64>, Error> {
    let mut lowest = None;
    target
        .list_pages(prefix, None, &mut |page| {
            lowest = lowest_log_first(&assemble::classify(stream, page));
            false
        })
        .map_err(|e| Error::target(stream, e))?;
    Ok(lowest.filter(|&lower| first.is_none_or(|first| lower < first)))
}

/// The error when the start of the log kept changing between listings.
fn start_kept_moving(prefix: &str, lower: u64, first: Option<u64>) -> TargetError {
    let listed = first.map_or("no log records".to_string(), |first| format!("a log starting at {first}"));
    TargetError::Transient {
        op: "LIST".into(),
        key: prefix.into(),
        detail: format!(
            "listed {listed}, then records from {lower} below it, three times over \
             (a manifest compaction running against it?); try again"
        ),
    }
}

/// [`each_remote_chunk`], gathered into one manifest (for readers that
/// hold it whole).
pub fn remote_after(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &Sequences,
    start_after: Option<&str>,
) -> Result<(Manifest, Listing), Error> {
    let mut whole = Manifest::default();
    let listing = each_remote_chunk(target, rules, known, start_after, &mut |chunk| {
        whole.log.extend(chunk.log);
        whole.snapshots.extend(chunk.snapshots);
        whole.prunes.extend(chunk.prunes);
        Ok(())
    })?;
    Ok((whole, listing))
}

/// Why [`take_chunks`] stopped: reading the records (which a compaction
/// step running meanwhile can explain, so the caller may list again), or
/// `take` refusing a chunk already counted in `known` (final: listing
/// again would skip it).
enum Stop {
    Reading(Box<Error>),
    Taking(Box<Error>),
}

/// Whether reading the records failed in a way a compaction step running
/// meanwhile explains: an object folded (gone) or a log that no longer
/// continues.
fn may_have_raced(error: &Error) -> bool {
    matches!(error, Error::Target { source: TargetError::NotFound { .. }, .. } | Error::Manifest(_))
}

/// Download `wanted` (in listing order) in chunks, assemble each after
/// `known`, move `known` past it and hand it to `take`.
fn take_chunks(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &mut Sequences,
    wanted: &[&ObjectInfo],
    take: &mut dyn FnMut(Manifest) -> Result<(), Error>,
) -> Result<(), Stop> {
    let log_range = |object: &ObjectInfo| match RecordKey::parse(rules.name, &object.key) {
        Some(RecordKey::Log { first, last, .. }) => Some((first, last)),
        _ => None,
    };
    let (log, side): (Vec<&ObjectInfo>, Vec<&ObjectInfo>) =
        wanted.iter().partition(|object| log_range(object).is_some());
    let (mut chunk, mut bytes) = (Vec::new(), 0);
    for object in side {
        if !chunk.is_empty() && (chunk.len() >= CHUNK_OBJECTS || bytes >= CHUNK_BYTES) {
            take_chunk(target, rules, known, &std::mem::take(&mut chunk), take)?;
            bytes = 0;
        }
        chunk.push(object);
        bytes += object.size;
    }
    if !chunk.is_empty() {
        take_chunk(target, rules, known, &std::mem::take(&mut chunk), take)?;
        bytes = 0;
    }
    let mut reach: Option<u64> = None;
    for object in log {
        let Some((first, last)) = log_range(object) else { continue };
        let overlaps = reach.is_some_and(|reach| first <= reach);
        if !overlaps && !chunk.is_empty() && (chunk.len() >= CHUNK_OBJECTS || bytes >= CHUNK_BYTES) {
            take_chunk(target, rules, known, &std::mem::take(&mut chunk), take)?;
            bytes = 0;
        }
        chunk.push(object);
        bytes += object.size;
        reach = reach.max(Some(last));
    }
    if !chunk.is_empty() {
        take_chunk(target, rules, known, &chunk, take)?;
    }
    Ok(())
}

fn take_chunk(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &mut Sequences,
    objects: &[&ObjectInfo],
    take: &mut dyn FnMut(Manifest) -> Result<(), Error>,
) -> Result<(), Stop> {
    let fetched = fetch_all(target, rules.name, objects).map_err(|e| Stop::Reading(Box::new(e)))?;
    let chunk = assemble::assemble(rules, known, &fetched).map_err(|e| Stop::Reading(Box::new(e.into())))?;
    drop(fetched);
    known.last = chunk.log.last().map(LogSpan::of).or(known.last);
    known.last_snapshot = chunk.snapshots.last().map(|s| s.position).or(known.last_snapshot);
    known.last_prune = chunk.prunes.last().map(|p| (p.sequence, p.before)).or(known.last_prune);
    take(chunk).map_err(|e| Stop::Taking(Box::new(e)))
}

/// Download `objects` whole.
pub(crate) fn fetch_all(
    target: &dyn Target,
    stream: &str,
    objects: &[&ObjectInfo],
) -> Result<Vec<Fetched>, Error> {
    objects
        .iter()
        .map(|object| {
            let mut text = Vec::with_capacity(object.size.min(assemble::MAX_RECORD_OBJECT) as usize);
            target.get(&object.key, None, &mut text).map_err(|e| Error::target(stream, e))?;
            Ok(Fetched { key: object.key.clone(), text })
        })
        .collect()
}
