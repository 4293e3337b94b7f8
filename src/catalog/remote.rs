//! Reading the remote records that come after what is known (the local
//! journal's ends), chunk by chunk: list once, then download the record
//! objects needed a few at a time and assemble each chunk, so a rebuild of
//! a long archive never holds more than a chunk of it.
//!
//! A chunk is at most [`CHUNK_OBJECTS`] objects or [`CHUNK_BYTES`] bytes of
//! record text; the first holds every snapshot and prune record object
//! (few, and their marks say which holes in the log are on purpose), and
//! objects whose ranges overlap stay in one chunk, so the precedence rules
//! of `assemble` see them together. A listed object that is gone when
//! fetched (a compaction step folded it meanwhile) makes it list again
//! and go on from what the chunks before it gave.

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
    let mut known = known.clone();
    let mut attempt = 1;
    loop {
        let listed =
            target.list(&keys::records_prefix(stream), start_after).map_err(|e| Error::target(stream, e))?;
        let listing = assemble::classify(stream, listed);
        if attempt == 1 {
            for key in &listing.foreign {
                log::warn!("stream {stream}: ignoring foreign object {key} among manifest records");
            }
        }
        let wanted = assemble::to_fetch(&listing, &known)?;
        match take_chunks(target, rules, &mut known, &wanted, take) {
            Err(Error::Target { source: TargetError::NotFound { key }, .. }) if attempt < ATTEMPTS => {
                log::debug!("stream {stream}: {key} was folded by compaction while read; listing again");
                attempt += 1;
            }
            taken => return taken.map(|()| listing),
        }
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

/// Download `wanted` (in listing order) in chunks, assemble each after
/// `known`, move `known` past it and hand it to `take`.
fn take_chunks(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &mut Sequences,
    wanted: &[&ObjectInfo],
    take: &mut dyn FnMut(Manifest) -> Result<(), Error>,
) -> Result<(), Error> {
    let log_range = |object: &ObjectInfo| match RecordKey::parse(rules.name, &object.key) {
        Some(RecordKey::Log { first, last, .. }) => Some((first, last)),
        _ => None,
    };
    let (log, side): (Vec<&ObjectInfo>, Vec<&ObjectInfo>) =
        wanted.iter().partition(|object| log_range(object).is_some());
    let mut chunk = side;
    let mut bytes: u64 = chunk.iter().map(|o| o.size).sum();
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
) -> Result<(), Error> {
    let fetched = fetch_all(target, rules.name, objects)?;
    let chunk = assemble::assemble(rules, known, &fetched)?;
    drop(fetched);
    known.last = chunk.log.last().map(LogSpan::of).or(known.last);
    known.last_snapshot = chunk.snapshots.last().map(|s| s.position).or(known.last_snapshot);
    known.last_prune = chunk.prunes.last().map(|p| (p.sequence, p.before)).or(known.last_prune);
    take(chunk)
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
