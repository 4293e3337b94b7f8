//! Reading the remote records that come after what is known (the local
//! journal's ends), one entry at a time: list once, then download the
//! record objects needed one after another and hand out each entry as it
//! is parsed ([`assemble::Assembly`]), so a reader of a long archive
//! holds one object's text (a compacted one is at most 4 MiB) and one
//! entry, never the records of a chunk. Each object is downloaded whole
//! before its entries go out, not parsed from the response as it comes:
//! a caller may take long over an entry (a restore downloading, `list`
//! writing into a pager), and a response left unread meanwhile would
//! stall.
//!
//! The snapshot and prune record objects come first (their marks say
//! which holes in the log are on purpose; a first prune of a long history
//! is many prune records of 10,000 keys, each handed out alone), then the
//! log objects by position. A listed object that is gone when fetched, or
//! a log that does not continue (a compaction step folded records while
//! they were listed or read), makes it list again and go on from the last
//! entry handed out (by position: nothing twice, nothing skipped); so
//! does a first page that, listed again, begins lower than the whole
//! listing did, or a page after the last log record object that reaches
//! further than the log read.

use super::assemble::{self, Assembly, Listing};
use crate::error::Error;
use crate::manifest::{Entry, Sequences, StreamRules};
use crate::target::keys::{self, RecordKey};
use crate::target::{ObjectInfo, Target, TargetError};

/// Hand the remote entries after `known` to `take`, one at a time (the
/// prunes and snapshots first, then the log), each sequence in order and
/// the log continuing without a hole, until `take` returns `Ok(false)`;
/// returns the listing (after `start_after`) they came from.
pub fn each_remote_entry(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &Sequences,
    start_after: Option<&str>,
    take: &mut dyn FnMut(Entry) -> Result<bool, Error>,
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
    let mut assembly = Assembly::new(known);
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
        assembly.resume();
        let wanted = assemble::to_fetch(&listing, assembly.ends())?;
        match take_entries(target, rules, &mut assembly, &wanted, take) {
            Err(Stop::Reading(error)) if attempt < ATTEMPTS && may_have_raced(&error) => {
                log::debug!(
                    "stream {stream}: {error}; listing again (a compaction step may have folded records meanwhile)"
                );
                attempt += 1;
            }
            Err(Stop::Reading(error)) => return Err(kept_folding(stream, *error)),
            Err(Stop::Taking(error)) => return Err(*error),
            Ok(Taken::Stopped) => return Ok(listing),
            Ok(Taken::All)
                if knew_nothing
                    && attempt < ATTEMPTS
                    && more_beyond(target, stream, &prefix, &listing, assembly.ends())? =>
            {
                log::debug!("stream {stream}: records beyond the listing's end appeared; listing again");
                attempt += 1;
            }
            Ok(Taken::All) => return Ok(listing),
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

/// The error when reading failed in every listing: a listed record object
/// still gone when read the last time says the records kept being folded
/// (or the store lists what it cannot serve), not that the archive lost
/// them; any other failure is reported as it is.
fn kept_folding(stream: &str, error: Error) -> Error {
    match error {
        Error::Target { source: TargetError::NotFound { key }, .. } => Error::target(
            stream,
            TargetError::Transient {
                op: "get".into(),
                key,
                detail: "listed, then gone when read, three listings in a row (a manifest compaction \
                         running against it?); try again"
                    .into(),
            },
        ),
        other => other,
    }
}

/// [`each_remote_entry`], gathered into one manifest (for tests that
/// hold it whole).
#[cfg(test)]
pub fn remote_after(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &Sequences,
    start_after: Option<&str>,
) -> Result<(crate::manifest::Manifest, Listing), Error> {
    let mut whole = crate::manifest::Manifest::default();
    let listing = each_remote_entry(target, rules, known, start_after, &mut |entry| {
        whole.push(entry);
        Ok(true)
    })?;
    Ok((whole, listing))
}

/// Why [`take_entries`] stopped early: reading the records (which a
/// compaction step running meanwhile can explain, so the caller may list
/// again), or `take` refusing an entry the assembly already counts as
/// handed out (final: listing again would skip it).
enum Stop {
    Reading(Box<Error>),
    Taking(Box<Error>),
}

/// How far [`take_entries`] went.
enum Taken {
    /// Every wanted object was read.
    All,
    /// `take` asked for no more.
    Stopped,
}

/// Whether reading the records failed in a way a compaction step running
/// meanwhile explains: an object folded (gone) or a log that no longer
/// continues.
fn may_have_raced(error: &Error) -> bool {
    matches!(error, Error::Target { source: TargetError::NotFound { .. }, .. } | Error::Manifest(_))
}

/// Download `wanted` one object at a time (prunes and snapshots first,
/// then the log objects by position) and hand each entry `assembly` has
/// not handed out yet to `take` as it is parsed.
fn take_entries(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    assembly: &mut Assembly,
    wanted: &[&ObjectInfo],
    take: &mut dyn FnMut(Entry) -> Result<bool, Error>,
) -> Result<Taken, Stop> {
    let reading = |error: Error| Stop::Reading(Box::new(error));
    for (object, next_first) in assemble::in_reading_order(rules.name, wanted, |object| &object.key) {
        let text = fetch(target, rules.name, object).map_err(reading)?;
        let mut entries =
            assembly.read(rules, &object.key, &text, next_first).map_err(|e| reading(e.into()))?;
        while let Some(entry) = entries.next_entry().map_err(|e| reading(e.into()))? {
            if !take(entry).map_err(|e| Stop::Taking(Box::new(e)))? {
                return Ok(Taken::Stopped);
            }
        }
    }
    Ok(Taken::All)
}

/// Download `object` whole.
fn fetch(target: &dyn Target, stream: &str, object: &ObjectInfo) -> Result<Vec<u8>, Error> {
    let mut text = Vec::with_capacity(object.size.min(assemble::MAX_RECORD_OBJECT) as usize);
    target.get(&object.key, None, &mut text).map_err(|e| Error::target(stream, e))?;
    Ok(text)
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
