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
//! (`crate::progress`). The checks of what was listed and fetched are pure ([`check_record_objects`],
//! built on `record_check`, which compares them with the log as it
//! streams by); [`verify_stream`] does the I/O, reading the manifest in
//! passes (`reader`), and reports each finding as one line.

use std::collections::HashSet;
use std::path::Path;

use super::assemble::{self, Listing, MAX_RECORD_OBJECT, Unrecorded, UnrecordedScan};
use super::reader::{ManifestReader, Reach};
use super::record_check::{MissingCheck, ObjectCheck, check_side_objects};
use crate::error::Error;
use crate::frames::decode::{self, FrameError};
use crate::manifest::{BatchRecord, Encoding, Manifest, Record, SnapshotRecord, StoredObject, StreamRules};
use crate::progress::{Amount, Progress};
use crate::retention::DeletedBatches;
use crate::target::keys::{self, LogLevel, RecordKey};
use crate::target::{self, ObjectInfo, Target};

/// Check one stream, handing each finding to `say` as a line; returns how
/// many problems were found. The manifest is streamed ([`ManifestReader`]):
/// each check is a pass over its log.
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
    let reader = match ManifestReader::open(state_dir, target, rules, Reach::End) {
        Ok(reader) => reader,
        Err(error) => {
            problem(say, format!("manifest: {error}"));
            return problems;
        }
    };
    match reader.prune_consistency() {
        Ok(Ok(())) => {}
        Ok(Err(message)) => problem(say, format!("manifest: {message}")),
        Err(error) => problem(say, format!("manifest: {error}")),
    }
    let side = reader.side();
    // A first pass adds up what the progress line counts towards.
    let mut total = Amount { objects: 0, bytes: 0 };
    let counted = reader.each_live_record(|record| {
        if let Record::Batch(batch) = &record {
            total.objects += 1;
            total.bytes += if deep { batch.stored.size } else { 0 };
        }
        Ok(true)
    });
    if let Err(error) = counted {
        problem(say, format!("manifest: {error}"));
        return problems;
    }
    for snapshot in side.live_snapshots() {
        total.objects += 1;
        total.bytes += if deep { snapshot.stored.size } else { 0 };
    }
    let mut progress = Progress::new("verified", total);
    let mut checked = 0;
    let pass = reader.each_live_record(|record| {
        match &record {
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
        Ok(true)
    });
    if let Err(error) = pass {
        problem(say, format!("manifest: {error}"));
        return problems;
    }
    let mut snapshots = 0;
    for snapshot in side.live_snapshots() {
        snapshots += 1;
        let found = check_snapshot(target, snapshot, deep);
        progress.add(1, if deep { snapshot.stored.size } else { 0 });
        if let Some(found) = found {
            progress.clear();
            problem(say, format!("snapshot {}: {found}", snapshot.key));
        }
    }
    progress.finish();
    // One walk over the batch objects, listed page by page beside the log.
    let prunes = PruneView::new(stream, side, reader.deleted_batches());
    let (mut cut_short, mut hidden) = (Vec::new(), Vec::new());
    let walked = super::with_batch_objects(target, stream, |objects| {
        let mut objects = objects.inspect(|object| {
            if prunes.cut_short(stream, &object.key) {
                cut_short.push(object.key.clone());
            } else if let Some(before) = prunes.hidden(stream, &object.key) {
                hidden.push((object.key.clone(), before));
            }
        });
        let found = unrecorded(&reader, stream, &mut objects);
        // The rest of the listing, for the prune checks.
        objects.by_ref().for_each(drop);
        Ok(found)
    });
    match walked {
        Ok(found) => {
            match found {
                Ok(found) => {
                    for unrecorded in found {
                        say(format!("stream {stream}: {unrecorded}"));
                    }
                }
                Err(error) => problem(say, format!("manifest: {error}")),
            }
            for key in cut_short {
                say(format!(
                    "stream {stream}: {key}: deleted by a prune that was cut short, still stored; \
                     the next prune deletes it"
                ));
            }
            for (key, before) in hidden {
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
    match check_records(target, rules, &reader, deep) {
        Ok(found) => found.into_iter().for_each(|found| problem(say, found)),
        Err(error) => problem(say, error),
    }
    let mut checked = crate::human::count(checked, "batch");
    if snapshots > 0 {
        checked = format!("{checked} and {}", crate::human::count(snapshots, "snapshot"));
    }
    say(format!("stream {stream}: {checked} checked{}", if deep { " (deep)" } else { "" }));
    problems
}

/// The batch objects no record names (a pass over the log).
fn unrecorded(
    reader: &ManifestReader<'_>,
    stream: &str,
    batches: &mut dyn Iterator<Item = ObjectInfo>,
) -> Result<Vec<Unrecorded>, Error> {
    let mut scan = UnrecordedScan::new(stream, batches, reader.pruned_before());
    let mut hole = None;
    reader.each_live_record(|record| match scan.record(&record) {
        Ok(()) => Ok(true),
        Err(error) => {
            hole = Some(error);
            Ok(false)
        }
    })?;
    match hole {
        Some(error) => Err(error.into()),
        None => Ok(scan.finish()),
    }
}

/// The record objects' problems: with `deep` each is downloaded and
/// compared with the manifest (a pass over the log); then a pass finds the
/// entries no record object holds. `Err` says the listing failed. A listed
/// object gone when downloaded (a running daemon's compaction step folded
/// it meanwhile) makes it list and check again, a few times.
fn check_records(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    reader: &ManifestReader<'_>,
    deep: bool,
) -> Result<Vec<String>, String> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        let gone = std::cell::Cell::new(false);
        let found = check_records_once(target, rules, reader, deep, &gone)?;
        if !gone.get() || attempt == ATTEMPTS {
            return Ok(found);
        }
        attempt += 1;
    }
}

/// [`check_records`] over one listing; `gone` is set when a listed object
/// was not found when downloaded.
fn check_records_once(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    reader: &ManifestReader<'_>,
    deep: bool,
    gone: &std::cell::Cell<bool>,
) -> Result<Vec<String>, String> {
    let download = |target: &dyn Target, object: &ObjectInfo| {
        download(target, object).map_err(|(error, not_found)| {
            gone.set(gone.get() || not_found);
            error
        })
    };
    let listed = target
        .list(&keys::records_prefix(rules.name), None)
        .map_err(|error| format!("cannot list record objects: {error}"))?;
    let listing = assemble::classify(rules.name, listed);
    let side = reader.side();
    let manifest_error = |error: Error| format!("manifest: {error}");
    let (mut found, compacted) = if deep {
        let mut fetch = |object: &ObjectInfo| download(target, object);
        let mut objects = ObjectCheck::new(rules, &listing, reader.pruned_before(), &mut fetch);
        reader
            .each_live_record(|record| {
                objects.record(&record);
                Ok(true)
            })
            .map_err(manifest_error)?;
        let (mut found, sound) = objects.finish();
        let deleted = reader.deleted_batches();
        found.extend(check_side_objects(rules, side, deleted, &listing, &mut |object| {
            download(target, object)
        }));
        (found, sound)
    } else {
        (Vec::new(), compacted_ranges(&listing))
    };
    let mut missing = MissingCheck::new(rules.name, &listing, compacted);
    reader
        .each_live_record(|record| {
            missing.record(&record);
            Ok(true)
        })
        .map_err(manifest_error)?;
    found.extend(missing.finish(side, &listing));
    Ok(found)
}

/// A record object's bytes, refusing an absurdly large one unread; the
/// error says whether the object was not found.
fn download(target: &dyn Target, object: &ObjectInfo) -> Result<Vec<u8>, (String, bool)> {
    if object.size > MAX_RECORD_OBJECT {
        return Err((format!("{} bytes, far larger than any record", object.size), false));
    }
    let mut text = Vec::new();
    target.get(&object.key, None, &mut text).map(|_| text).map_err(|e| {
        let not_found = matches!(e, crate::target::TargetError::NotFound { .. });
        (e.to_string(), not_found)
    })
}

/// The listed compacted objects' ranges (taken to hold what their keys say).
fn compacted_ranges(listing: &Listing) -> Vec<(u64, u64)> {
    listing
        .records
        .iter()
        .filter_map(|(key, _)| match *key {
            RecordKey::Log { first, last, level: LogLevel::Compacted(_) } => Some((first, last)),
            _ => None,
        })
        .collect()
}

/// What a manifest's prunes say about a batch object: the keys they
/// delete (the batch keys as runs) and the mark.
struct PruneView<'m> {
    stream: &'m str,
    mark: Option<u64>,
    deleted: &'m DeletedBatches,
    /// The keys the prunes still hold (not as runs).
    named: HashSet<&'m str>,
}

impl<'m> PruneView<'m> {
    /// `side`'s prunes (without their batch keys), `deleted` the batch keys.
    fn new(stream: &'m str, side: &'m Manifest, deleted: &'m DeletedBatches) -> Self {
        let named = side.prunes.iter().flat_map(|p| p.deleted.iter().map(String::as_str)).collect();
        PruneView { stream, mark: side.pruned_before(), deleted, named }
    }

    /// Whether a prune named `key`, a batch key.
    fn named(&self, key: &str) -> bool {
        self.deleted.contains_key(self.stream, key) || self.named.contains(key)
    }

    /// A batch object a prune deleted, still stored: a prune cut short
    /// between its record and its deletions.
    fn cut_short(&self, stream: &str, key: &str) -> bool {
        keys::parse_batch_key(stream, key).is_some() && self.named(key)
    }

    /// The mark, when a batch object lies wholly below it but no prune
    /// deletes it (retention names every batch it deletes, so such a mark
    /// hides data the archive still holds).
    fn hidden(&self, stream: &str, key: &str) -> Option<u64> {
        let before = self.mark?;
        let below = keys::parse_batch_key(stream, key).is_some_and(|(_, last)| last < before);
        (below && !self.named(key)).then_some(before)
    }
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
    check_stored(target, &batch.key, &batch.stored, deep, || decode::expected_of(&batch.segments))
}

/// What is wrong with a stored snapshot, if anything: with `deep`, a zstd
/// snapshot's frame is decoded and checked.
fn check_snapshot(target: &dyn Target, snapshot: &SnapshotRecord, deep: bool) -> Option<String> {
    let image = || {
        vec![decode::Expected {
            len: snapshot.size,
            crc32: snapshot.crc32,
            stored_len: Some(snapshot.stored.size),
        }]
    };
    check_stored(target, &snapshot.key, &snapshot.stored, deep, image)
}

/// [`check_object`], or with `deep` for zstd frames (each holding what
/// `expected` says), one download that checks both the frames and the
/// stored bytes.
fn check_stored(
    target: &dyn Target,
    key: &str,
    stored: &StoredObject,
    deep: bool,
    expected: impl FnOnce() -> Vec<decode::Expected>,
) -> Option<String> {
    match (deep, stored.encoding) {
        (true, Encoding::ZstdFrames) => check_object(target, key, stored, false)
            .or_else(|| check_frames(target, key, stored, &expected())),
        _ => check_object(target, key, stored, deep),
    }
}

/// What is wrong with zstd frames or their stored bytes, if anything
/// (downloads the object whole).
fn check_frames(
    target: &dyn Target,
    key: &str,
    stored: &StoredObject,
    expected: &[decode::Expected],
) -> Option<String> {
    let whole = Some((stored.size, stored.crc32));
    match decode::read_frames(target, key, None, expected, 0, &mut std::io::sink(), whole) {
        Ok(_) => None,
        Err(decode::ReadError::Frames(FrameError::Stored { crc32, recorded_crc32, .. })) => {
            Some(format!("CORRUPT: CRC32 {crc32:08x} stored, {recorded_crc32:08x} recorded"))
        }
        Err(decode::ReadError::Frames(damage)) => Some(format!("CORRUPT: {damage}")),
        Err(decode::ReadError::Target(e)) => Some(format!("cannot read back: {e}")),
    }
}

/// A record object's key and its bytes, or why they could not be read.
pub type Downloaded = (String, Result<Vec<u8>, String>);

/// Check downloaded record objects against `manifest`: each must parse,
/// match its key and agree with the manifest; each of the manifest's live
/// entries must be held by a sound object. One line per problem, naming
/// the key. (What `verify --deep` does as the log streams by, for a
/// manifest in memory.)
pub fn check_record_objects(
    rules: &StreamRules<'_>,
    manifest: &Manifest,
    listing: &Listing,
    fetched: &[Downloaded],
) -> Vec<String> {
    let mut download = |object: &ObjectInfo| {
        fetched
            .iter()
            .find(|(key, _)| *key == object.key)
            .map_or_else(|| Err(format!("{} was not downloaded", object.key)), |(_, got)| got.clone())
    };
    let mut objects = ObjectCheck::new(rules, listing, manifest.pruned_before(), &mut download);
    manifest.live_log().iter().for_each(|record| objects.record(record));
    let (mut found, sound) = objects.finish();
    let mut side = Manifest { log: Vec::new(), ..manifest.clone() };
    let mut deleted = DeletedBatches::default();
    side.prunes.iter_mut().for_each(|prune| deleted.take_from(rules.name, prune));
    found.extend(check_side_objects(rules, &side, &deleted, listing, &mut download));
    found.extend(missing_record_objects(rules.name, manifest, listing, sound));
    found
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
    let mut missing = MissingCheck::new(stream, listing, compacted_ranges);
    manifest.live_log().iter().for_each(|record| missing.record(record));
    missing.finish(manifest, listing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::validate::tests::{batch, naming};
    use crate::manifest::{GapRecord, PruneRecord, format};
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
        let listed = |first, last| keys::batch_key(STREAM, first, last);
        let batches = [listed(0, 0), listed(1, 3), listed(4, 6), listed(7, 9)];
        let hidden = |manifest: &Manifest| {
            let mut side = Manifest { log: Vec::new(), ..manifest.clone() };
            let mut deleted = DeletedBatches::default();
            side.prunes.iter_mut().for_each(|p| deleted.take_from(STREAM, p));
            let view = PruneView::new(STREAM, &side, &deleted);
            let found: Vec<(String, u64)> =
                batches.iter().filter_map(|key| view.hidden(STREAM, key).map(|b| (key.clone(), b))).collect();
            let cut_short: Vec<String> =
                batches.iter().filter(|key| view.cut_short(STREAM, key)).cloned().collect();
            (found, cut_short)
        };
        let mut manifest = manifest();
        assert_eq!(hidden(&manifest), (vec![], vec![]));
        manifest.prunes.push(PruneRecord { sequence: 1, before: 5, deleted: vec![batches[0].clone()] });
        assert_eq!(hidden(&manifest), (vec![(batches[1].clone(), 5)], vec![batches[0].clone()]));
        manifest.prunes.push(PruneRecord { sequence: 2, before: 7, deleted: vec![batches[1].clone()] });
        let (found, cut_short) = hidden(&manifest);
        assert_eq!(found, [(batches[2].clone(), 7)], "4..6 is below the mark; 7..9 is live");
        assert_eq!(cut_short, [batches[0].clone(), batches[1].clone()]);
    }

    #[test]
    fn a_record_object_cut_short_or_not_matching_its_key_is_reported() {
        let compacted = RecordKey::Log { first: 0, last: 5, level: LogLevel::Compacted(1) }.key(STREAM);
        let short = (compacted, format::serialize_log(&manifest().log[..2]).into_bytes());
        let found = check(&manifest(), &[short]);
        assert!(
            found[0].contains("CORRUPT record object") && found[0].contains("does not match its key"),
            "{found:?}"
        );
        let mut torn = level0(&manifest().log[0]);
        torn.1.truncate(torn.1.len() - 3);
        let found = check(&manifest(), &[torn]);
        assert!(found[0].contains("incomplete or corrupt final line"), "{found:?}");
    }

    #[test]
    fn a_record_object_that_disagrees_with_the_manifest_is_reported() {
        let mut objects: Vec<_> = manifest().log.iter().map(level0).collect();
        objects[1] = level0(&Record::Gap(GapRecord { first: 1, last: 4, reason: "other".into() }));
        let found = check(&manifest(), &objects);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("differs from the manifest's record of those positions"), "{found:?}");
    }
}
