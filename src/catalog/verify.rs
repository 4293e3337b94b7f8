//! `verify`: find every kind of damage in a stream's archive and say where.
//!
//! - the manifest itself: damaged or hostile journal lines and remote
//!   records, holes (a deleted journal line, a lost record object), all
//!   reported with the file and line or the object key;
//! - each batch object, and each snapshot object no prune deleted, against
//!   its record: missing, or a size or CRC32 that differs (with `deep`, the
//!   CRC32 is recomputed from the bytes, and a zstd batch's frames are
//!   decoded: each must end where recorded and hold its segment's raw
//!   length and CRC32);
//! - batch objects no record names below the log's end (lost records), and
//!   batch objects below the pruned mark that no prune record deletes (a
//!   mark that hides data the archive holds); prune records that disagree
//!   with the manifest (`retention::check_prunes`); batch objects a prune
//!   deleted that are still stored are noted (a prune cut short), not
//!   counted as problems;
//! - the remote record objects, on which a rebuild relies: every record
//!   must have one (a deleted record object is reported with its key, from
//!   the listing alone); with `deep` each is downloaded and must parse, hold
//!   what its key says and agree with the manifest (a flipped byte).
//!
//! On a terminal, checking the batch objects shows a progress line
//! (`crate::progress`). The checks of what was listed and fetched are pure ([`check_record_objects`]);
//! [`verify_stream`] does the I/O and reports each finding as one line.

use std::collections::HashSet;
use std::path::Path;

use super::assemble::{self, Listing, MAX_RECORD_OBJECT};
use super::{entry_key, load};
use crate::frames::decode::{self, FrameError};
use crate::manifest::{
    BatchRecord, Encoding, Entry, Manifest, PruneRecord, Record, Sequences, StoredObject, StreamRules,
};
use crate::progress::{Amount, Progress};
use crate::target::keys::{self, LogLevel, RecordKey};
use crate::target::{self, ObjectInfo, Target};

/// Check one stream, handing each finding to `say` as a line; returns how
/// many problems were found.
pub fn verify_stream(
    state_dir: &Path,
    target: &dyn Target,
    rules: &StreamRules<'_>,
    deep: bool,
    say: &mut dyn FnMut(String),
) -> usize {
    let stream = rules.name;
    let mut problems = 0;
    let mut problem = |say: &mut dyn FnMut(String), text: String| {
        say(format!("stream {stream}: {text}"));
        problems += 1;
    };
    let manifest = match load(state_dir, target, rules) {
        Ok(manifest) => manifest,
        Err(error) => {
            problem(say, format!("manifest: {error}"));
            return problems;
        }
    };
    if let Err(message) = crate::retention::check_prunes(&manifest) {
        problem(say, format!("manifest: {message}"));
    }
    let mut checked = 0;
    let batches = manifest.live_log().iter().filter_map(|r| match r {
        Record::Batch(batch) => Some(batch),
        Record::Gap(_) => None,
    });
    let stored: Vec<&StoredObject> =
        batches.map(|b| &b.stored).chain(manifest.live_snapshots().map(|s| &s.stored)).collect();
    let total = Amount {
        objects: stored.len() as u64,
        bytes: if deep { stored.iter().map(|s| s.size).sum() } else { 0 },
    };
    let mut progress = Progress::new("verified", total);
    for record in manifest.live_log() {
        match record {
            Record::Gap(g) => {
                progress.clear();
                say(format!("stream {stream}: gap {}..{}: {}", g.first, g.last, g.reason));
            }
            Record::Batch(batch) => {
                checked += 1;
                let found = check_batch(target, batch, deep);
                progress.add(1, if deep { batch.stored.size } else { 0 });
                if let Some(found) = found {
                    progress.clear();
                    problem(say, format!("{}: {found}", batch.key));
                }
            }
        }
    }
    let mut snapshots = 0;
    for snapshot in manifest.live_snapshots() {
        snapshots += 1;
        let found = check_object(target, &snapshot.key, &snapshot.stored, deep);
        progress.add(1, if deep { snapshot.stored.size } else { 0 });
        if let Some(found) = found {
            progress.clear();
            problem(say, format!("snapshot {}: {found}", snapshot.key));
        }
    }
    progress.finish();
    match target.list(&keys::batches_prefix(stream), None) {
        Ok(batches) => {
            match assemble::unrecorded_batches(stream, &batches, &manifest) {
                Ok(found) => {
                    for unrecorded in found {
                        say(format!("stream {stream}: {unrecorded}"));
                    }
                }
                Err(error) => problem(say, format!("manifest: {error}")),
            }
            for key in pruned_but_stored(stream, &batches, &manifest) {
                say(format!(
                    "stream {stream}: {key}: deleted by a prune that was cut short, still stored; \
                     the next prune deletes it"
                ));
            }
            for (key, before) in hidden_by_prune_mark(stream, &batches, &manifest) {
                problem(
                    say,
                    format!(
                        "{key}: below the pruned mark (positions before {before}) but no prune record \
                         deletes it: the mark hides data the archive holds; move the prune record \
                         aside if retention did not write it"
                    ),
                );
            }
        }
        Err(error) => problem(say, format!("cannot list batch objects: {error}")),
    }
    let found = if deep {
        verify_record_objects(target, rules, &manifest)
    } else {
        list_record_objects(target, stream, &manifest)
    };
    for found in found {
        problem(say, found);
    }
    let mut checked = crate::human::count(checked, "batch");
    if snapshots > 0 {
        checked = format!("{checked} and {}", crate::human::count(snapshots, "snapshot"));
    }
    say(format!("stream {stream}: {checked} checked{}", if deep { " (deep)" } else { "" }));
    problems
}

/// The listed batch objects wholly below `manifest`'s pruned mark that no
/// prune record deletes (with the mark): retention names every batch it
/// deletes, so such a mark hides data the archive still holds.
pub fn hidden_by_prune_mark<'a>(
    stream: &str,
    batches: &'a [ObjectInfo],
    manifest: &Manifest,
) -> Vec<(&'a str, u64)> {
    let Some(before) = manifest.pruned_before() else {
        return Vec::new();
    };
    let deleted: HashSet<&str> =
        manifest.prunes.iter().flat_map(|p| p.deleted.iter().map(String::as_str)).collect();
    batches
        .iter()
        .map(|object| object.key.as_str())
        .filter(|key| {
            keys::parse_batch_key(stream, key).is_some_and(|(_, last)| last < before)
                && !deleted.contains(key)
        })
        .map(|key| (key, before))
        .collect()
}

/// The listed batch objects a prune record deleted, still stored: a prune
/// cut short between its record and its deletions.
pub fn pruned_but_stored<'a>(stream: &str, batches: &'a [ObjectInfo], manifest: &Manifest) -> Vec<&'a str> {
    let deleted: HashSet<&str> =
        manifest.prunes.iter().flat_map(|p| p.deleted.iter().map(String::as_str)).collect();
    batches
        .iter()
        .map(|object| object.key.as_str())
        .filter(|key| keys::parse_batch_key(stream, key).is_some() && deleted.contains(key))
        .collect()
}

/// What is wrong with the object stored at `key` (a batch or a snapshot),
/// if anything.
fn check_object(target: &dyn Target, key: &str, stored: &StoredObject, deep: bool) -> Option<String> {
    let info = match target.head(key) {
        Ok(Some(info)) => info,
        Ok(None) => return Some("MISSING from the archive".into()),
        Err(e) => return Some(format!("cannot check: {e}")),
    };
    if info.size != stored.size {
        return Some(format!("CORRUPT: {} bytes stored, {} recorded", info.size, stored.size));
    }
    let crc = match (info.crc32, deep) {
        (Some(crc), false) => crc,
        (None, false) => return None,
        (_, true) => match target::stored_crc32(target, key) {
            Ok(crc) => crc,
            Err(e) => return Some(format!("cannot read back: {e}")),
        },
    };
    (crc != stored.crc32).then(|| format!("CORRUPT: CRC32 {crc:08x} stored, {:08x} recorded", stored.crc32))
}

/// What is wrong with a stored batch, if anything: with `deep`, a zstd
/// batch's frames are decoded and checked (one download for both).
fn check_batch(target: &dyn Target, batch: &BatchRecord, deep: bool) -> Option<String> {
    match (deep, batch.stored.encoding) {
        (true, Encoding::ZstdFrames) => {
            check_object(target, &batch.key, &batch.stored, false).or_else(|| check_frames(target, batch))
        }
        _ => check_object(target, &batch.key, &batch.stored, deep),
    }
}

/// What is wrong with a zstd batch's frames or its stored bytes, if
/// anything (downloads it whole).
fn check_frames(target: &dyn Target, batch: &BatchRecord) -> Option<String> {
    let expected = decode::expected_of(&batch.segments);
    let whole = Some((batch.stored.size, batch.stored.crc32));
    match decode::read_frames(target, &batch.key, None, &expected, 0, &mut std::io::sink(), whole) {
        Ok(_) => None,
        Err(decode::ReadError::Frames(FrameError::Stored { crc32, recorded_crc32, .. })) => {
            Some(format!("CORRUPT: CRC32 {crc32:08x} stored, {recorded_crc32:08x} recorded"))
        }
        Err(decode::ReadError::Frames(damage)) => Some(format!("CORRUPT: {damage}")),
        Err(decode::ReadError::Target(e)) => Some(format!("cannot read back: {e}")),
    }
}

/// Without downloading: the manifest's entries whose record object the
/// listing lacks (a compacted object is taken to hold what its key says).
fn list_record_objects(target: &dyn Target, stream: &str, manifest: &Manifest) -> Vec<String> {
    let listed = match target.list(&keys::records_prefix(stream), None) {
        Ok(listed) => listed,
        Err(error) => return vec![format!("cannot list record objects: {error}")],
    };
    let listing = assemble::classify(stream, listed);
    let compacted = listing
        .records
        .iter()
        .filter_map(|(key, _)| match *key {
            RecordKey::Log { first, last, level: LogLevel::Compacted(_) } => Some((first, last)),
            _ => None,
        })
        .collect();
    missing_record_objects(stream, manifest, &listing, compacted)
}

/// A record object's key and its bytes, or why they could not be read.
pub type Downloaded = (String, Result<Vec<u8>, String>);

/// List and download every record object of the stream, then check them.
fn verify_record_objects(target: &dyn Target, rules: &StreamRules<'_>, manifest: &Manifest) -> Vec<String> {
    let stream = rules.name;
    let listed = match target.list(&keys::records_prefix(stream), None) {
        Ok(listed) => listed,
        Err(error) => return vec![format!("cannot list record objects: {error}")],
    };
    let listing = assemble::classify(stream, listed);
    let fetched: Vec<Downloaded> = listing
        .records
        .iter()
        .map(|(_, object)| {
            if object.size > MAX_RECORD_OBJECT {
                return (
                    object.key.clone(),
                    Err(format!("{} bytes, far larger than any record", object.size)),
                );
            }
            let mut text = Vec::new();
            let got = target.get(&object.key, None, &mut text).map(|_| text).map_err(|e| e.to_string());
            (object.key.clone(), got)
        })
        .collect();
    check_record_objects(rules, manifest, &listing, &fetched)
}

/// Check downloaded record objects against `manifest`: each must parse,
/// match its key and agree with the manifest; each of the manifest's live
/// entries must be held by a sound object. One line per problem, naming
/// the key.
pub fn check_record_objects(
    rules: &StreamRules<'_>,
    manifest: &Manifest,
    listing: &Listing,
    fetched: &[Downloaded],
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut compacted_ranges = Vec::new();
    for (key, got) in fetched {
        let checked = got.clone().and_then(|text| {
            let object = assemble::Fetched { key: key.clone(), text };
            let content = assemble::assemble(rules, &Sequences::default(), std::slice::from_ref(&object))
                .map_err(|e| e.to_string())?;
            agrees(manifest, &content)
        });
        match (checked, RecordKey::parse(rules.name, key)) {
            (Ok(()), Some(RecordKey::Log { first, last, level: LogLevel::Compacted(_) })) => {
                compacted_ranges.push((first, last))
            }
            (Ok(()), _) => {}
            (Err(why), _) => problems.push(format!("{key}: CORRUPT record object: {why}")),
        }
    }
    problems.extend(missing_record_objects(rules.name, manifest, listing, compacted_ranges));
    problems
}

/// The manifest's live entries that no listed record object holds: neither
/// its own level-0 object nor one of the `compacted_ranges` (the compacted
/// objects taken as sound). One line per entry, naming the missing key.
pub fn missing_record_objects(
    stream: &str,
    manifest: &Manifest,
    listing: &Listing,
    compacted_ranges: Vec<(u64, u64)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let listed: HashSet<&str> = listing.records.iter().map(|(_, o)| o.key.as_str()).collect();
    let covered_by_compacted = covering(compacted_ranges);
    let live_log = manifest.live_log().iter().cloned().map(Entry::Log);
    let others = manifest.snapshots.iter().cloned().map(Entry::Snapshot);
    for entry in live_log.chain(others).chain(manifest.prunes.iter().cloned().map(Entry::Prune)) {
        let key = entry_key(stream, &entry);
        let covered = match &entry {
            Entry::Log(record) => covered_by_compacted(record.first(), record.last()),
            _ => false,
        };
        if !covered && !listed.contains(key.as_str()) {
            problems.push(format!("{key}: MISSING record object (a rebuild from the archive would lack it)"));
        }
    }
    problems
}

/// Whether `first..=last` lies inside one of `ranges`: sorted by first
/// position with the farthest reach so far, answered by binary search.
fn covering(mut ranges: Vec<(u64, u64)>) -> impl Fn(u64, u64) -> bool {
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

/// Whether the entries of one record object are the manifest's own.
fn agrees(manifest: &Manifest, content: &Manifest) -> Result<(), String> {
    for record in &content.log {
        let index = manifest.log.partition_point(|r| r.last() < record.first());
        if manifest.log.get(index) != Some(record) && record.last() >= manifest.pruned_before().unwrap_or(0) {
            return Err(format!(
                "its {} {}..{} differs from the manifest's record of those positions",
                record.kind(),
                record.first(),
                record.last()
            ));
        }
    }
    if content.snapshots.iter().any(|s| !manifest.snapshots.contains(s)) {
        return Err("its snapshot record differs from the manifest's".into());
    }
    let known_prune = |p: &PruneRecord| {
        manifest
            .prunes
            .binary_search_by_key(&p.sequence, |q| q.sequence)
            .is_ok_and(|i| manifest.prunes[i] == *p)
    };
    if !content.prunes.iter().all(known_prune) {
        return Err("its prune record differs from the manifest's".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::validate::tests::{batch, naming};
    use crate::manifest::{GapRecord, format};
    use crate::target::ObjectInfo;

    const STREAM: &str = "s";

    fn gap(first: u64, last: u64) -> Record {
        Record::Gap(GapRecord { first, last, reason: "r".into() })
    }

    /// The listing and downloads of record objects holding `objects`.
    fn remote(objects: &[(String, Vec<u8>)]) -> (Listing, Vec<Downloaded>) {
        let listed = objects
            .iter()
            .map(|(key, text)| ObjectInfo { key: key.clone(), size: text.len() as u64, crc32: None })
            .collect();
        let fetched = objects.iter().map(|(key, text)| (key.clone(), Ok(text.clone()))).collect();
        (assemble::classify(STREAM, listed), fetched)
    }

    fn level0(record: &Record) -> (String, Vec<u8>) {
        let key = keys::record_key(STREAM, record.first(), record.last(), record.kind());
        (key, format::serialize_log(std::slice::from_ref(record)).into_bytes())
    }

    fn check(manifest: &Manifest, objects: &[(String, Vec<u8>)]) -> Vec<String> {
        let naming = naming();
        let (listing, fetched) = remote(objects);
        check_record_objects(&StreamRules::new(STREAM, &naming), manifest, &listing, &fetched)
    }

    fn manifest() -> Manifest {
        Manifest {
            log: vec![batch(STREAM, 0, &[b"a"]), gap(1, 4), batch(STREAM, 5, &[b"b"])],
            ..Manifest::default()
        }
    }

    #[test]
    fn sound_record_objects_pass() {
        let objects: Vec<_> = manifest().log.iter().map(level0).collect();
        assert_eq!(check(&manifest(), &objects), Vec::<String>::new());
        let compacted = RecordKey::Log { first: 0, last: 5, level: LogLevel::Compacted(1) }.key(STREAM);
        let whole = (compacted, format::serialize_log(&manifest().log).into_bytes());
        assert_eq!(check(&manifest(), &[whole]), Vec::<String>::new());
    }

    #[test]
    fn flipped_byte_and_missing_object_are_reported_with_their_keys() {
        let mut objects: Vec<_> = manifest().log.iter().map(level0).collect();
        let lost = objects.remove(1).0;
        let flipped = &mut objects[0].1;
        let at = flipped.len() - 5;
        flipped[at] ^= 0x01;
        let found = check(&manifest(), &objects);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with(&format!("{}: CORRUPT record object", objects[0].0)), "{found:?}");
        assert!(found[1].starts_with(&format!("{lost}: MISSING record object")), "{found:?}");
    }

    #[test]
    fn missing_objects_are_found_from_the_listing_alone() {
        let mut objects: Vec<_> = manifest().log.iter().map(level0).collect();
        let lost = objects.remove(2).0;
        let (listing, _) = remote(&objects);
        let found = missing_record_objects(STREAM, &manifest(), &listing, Vec::new());
        assert_eq!(
            found,
            [format!("{lost}: MISSING record object (a rebuild from the archive would lack it)")]
        );
        assert_eq!(missing_record_objects(STREAM, &manifest(), &listing, vec![(4, 5)]), Vec::<String>::new());
    }

    #[test]
    fn batches_below_the_mark_that_no_prune_deletes_are_hidden() {
        let listed =
            |first, last| ObjectInfo { key: keys::batch_key(STREAM, first, last), size: 1, crc32: None };
        let batches = [listed(0, 0), listed(1, 3), listed(4, 6), listed(7, 9)];
        let mut manifest = manifest();
        assert_eq!(hidden_by_prune_mark(STREAM, &batches, &manifest), []);
        manifest.prunes.push(PruneRecord { sequence: 1, before: 5, deleted: vec![batches[0].key.clone()] });
        assert_eq!(hidden_by_prune_mark(STREAM, &batches, &manifest), [(batches[1].key.as_str(), 5)]);
        manifest.prunes.push(PruneRecord { sequence: 2, before: 7, deleted: vec![batches[1].key.clone()] });
        let hidden = hidden_by_prune_mark(STREAM, &batches, &manifest);
        assert_eq!(hidden, [(batches[2].key.as_str(), 7)], "4..6 is below the mark; 7..9 is live");
    }

    #[test]
    fn a_record_object_that_disagrees_with_the_manifest_is_reported() {
        let mut objects: Vec<_> = manifest().log.iter().map(level0).collect();
        objects[1] = level0(&Record::Gap(GapRecord { first: 1, last: 4, reason: "other".into() }));
        let found = check(&manifest(), &objects);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("differs from the manifest's record of those positions"), "{found:?}");
    }

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
