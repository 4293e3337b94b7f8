//! A stream's whole manifest: the local journal plus the remote records.
//!
//! Every commit writes its record twice: first as a small object of its own
//! under `STREAM/manifest/` on the target (one PUT, independent of the
//! archive's size), then to the local journal. Both writes are preceded by
//! validation: a record that breaks a rule (a position beyond the limit, a
//! segment name that is not the stream's own…) is refused before anything
//! is stored anywhere. The remote records alone are therefore enough to
//! restore and to resume: a node whose state directory was wiped lists
//! them and carries on, and the rebuild also compares the batch objects on
//! the target with the records, so a lost record object is reported, not
//! silently skipped. A node with its journal intact lists only the keys
//! after its last log record (plus the few prune and snapshot records), so
//! resuming costs one LIST request.
//!
//! Turning listed record objects into entries is the pure [`assemble`];
//! checking an archive for damage is [`verify`]. Writing compacted record
//! objects is not done yet (readers already honour them).

pub mod assemble;
pub mod verify;

use std::path::Path;

use crate::error::Error;
use crate::manifest::journal::{self, Journal};
use crate::manifest::{
    Entry, Manifest, ManifestError, Record, Sequences, StreamRules, format, validate_entry,
};
use crate::target::keys::{self, LogLevel, RecordKey};
use crate::target::{ObjectInfo, Target, Upload};

use assemble::{Fetched, Listing, Unrecorded};

/// The key of the level-0 remote object holding `entry`.
pub fn entry_key(stream: &str, entry: &Entry) -> String {
    let record_key = match entry {
        Entry::Log(record) => RecordKey::Log {
            first: record.first(),
            last: record.last(),
            level: LogLevel::Single(record.kind()),
        },
        Entry::Snapshot(snapshot) => RecordKey::Snapshot { position: snapshot.position },
        Entry::Prune(prune) => RecordKey::Prune { sequence: prune.sequence },
    };
    record_key.key(stream)
}

/// Store log `record` as its own remote object; see [`put_remote_entry`].
pub fn put_remote(target: &dyn Target, rules: &StreamRules<'_>, record: &Record) -> Result<(), Error> {
    put_remote_entry(target, rules, &Entry::Log(record.clone()))
}

/// Store `entry` as its own remote object (idempotent: the key is fixed by
/// what the entry is), after validating it: an invalid entry is refused
/// before anything is written.
pub fn put_remote_entry(target: &dyn Target, rules: &StreamRules<'_>, entry: &Entry) -> Result<(), Error> {
    let key = entry_key(rules.name, entry);
    validate_entry(entry, rules).map_err(|message| ManifestError::Refused {
        source: key.clone(),
        line: 0,
        message,
    })?;
    if let Entry::Log(Record::Gap(gap)) = entry {
        refuse_gap_over_stored_batch(target, rules.name, gap.first, gap.last)?;
    }
    let text = format::serialize(std::slice::from_ref(entry));
    let bytes = text.as_bytes();
    let pieces = [bytes];
    let body = Upload::pieces(&pieces, bytes.len() as u64, crc32fast::hash(bytes));
    target.put(&key, &body).map_err(|e| Error::target(rules.name, e))
}

/// A gap is never recorded over stored data: a batch object holding any of
/// `first..=last` stops it. Lists only the batch keys from `first` on.
fn refuse_gap_over_stored_batch(
    target: &dyn Target,
    stream: &str,
    first: u64,
    last: u64,
) -> Result<(), Error> {
    let start_after = first.checked_sub(1).map(|before| keys::batch_key(stream, before, u64::MAX));
    let listed = target
        .list(&keys::batches_prefix(stream), start_after.as_deref())
        .map_err(|e| Error::target(stream, e))?;
    match assemble::batch_object_within(stream, &listed, first, last) {
        Some(key) => {
            let (stream, key) = (stream.to_string(), key.to_string());
            Err(ManifestError::GapOverStoredBatch { stream, key, first, last }.into())
        }
        None => Ok(()),
    }
}

/// The remote entries that come after `known` (the local journal's ends),
/// each sequence in order, the log continuing `known`'s without a hole.
/// `start_after` is the key after which log objects are listed.
fn remote_after(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    known: &Sequences,
    start_after: Option<&str>,
) -> Result<Manifest, Error> {
    let stream = rules.name;
    let listed =
        target.list(&keys::records_prefix(stream), start_after).map_err(|e| Error::target(stream, e))?;
    let listing = assemble::classify(stream, listed);
    warn_foreign(stream, &listing);
    let fetched = fetch_all(target, stream, &assemble::to_fetch(&listing, known)?)?;
    Ok(assemble::assemble(rules, known, &fetched)?)
}

fn warn_foreign(stream: &str, listing: &Listing) {
    for key in &listing.foreign {
        log::warn!("stream {stream}: ignoring foreign object {key} among manifest records");
    }
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

/// The listing key after which the log objects past `last` sort.
fn start_after(stream: &str, last: Option<&Record>) -> Option<String> {
    last.map(|record| keys::record_key(stream, record.first(), record.last(), record.kind()))
}

/// Compare the target's batch objects with a manifest rebuilt from the
/// remote records alone: a lost record object is an error naming it.
fn check_rebuild(target: &dyn Target, stream: &str, manifest: &Manifest) -> Result<(), Error> {
    let batches = target.list(&keys::batches_prefix(stream), None).map_err(|e| Error::target(stream, e))?;
    let found = assemble::unrecorded_batches(stream, &batches, manifest)?;
    let pending = found.iter().filter(|f| matches!(f, Unrecorded::Pending(_))).count();
    if pending > 1 {
        // One commit cut short leaves one such object; more suggest that
        // record objects were lost (with the state directory).
        log::warn!(
            "stream {stream}: {pending} batch objects beyond the last record are stored but not \
             recorded; if their record objects were lost, restore them from a backup before \
             archiving on (the next run records only those whose segments are still present)"
        );
    }
    for found in found {
        match found {
            Unrecorded::Pending(_) => log::info!("stream {stream}: {found}"),
            Unrecorded::Orphan(_) => log::warn!("stream {stream}: {found}"),
        }
    }
    Ok(())
}

/// Bring the local journal up to date with the remote records (after a wiped
/// or lost state directory, or another writer such as `push`), once `check`
/// accepts the log records to adopt (nothing is appended otherwise).
/// Returns what was adopted, each sequence in order.
pub fn catch_up(
    journal: &mut Journal,
    target: &dyn Target,
    check: impl FnOnce(&[Record]) -> Result<(), Error>,
) -> Result<Manifest, Error> {
    let rules = journal.rules();
    let (stream, naming) = (rules.name.to_string(), rules.naming.clone());
    let rules = StreamRules::new(&stream, &naming);
    let known = journal.ends().clone();
    let missing = remote_after(target, &rules, &known, start_after(&stream, journal.last()).as_deref())?;
    if known == Sequences::default() {
        check_rebuild(target, &stream, &missing)?;
    }
    if missing.is_empty() {
        return Ok(missing);
    }
    check(&missing.log)?;
    // Prunes first: their marks allow the log to start where they say.
    let entries: Vec<Entry> = missing.entries().collect();
    journal.append_entries(&entries)?;
    Ok(missing)
}

/// The whole manifest for reading (list, restore, fetch, verify): the local
/// journal, if any, followed by the remote records after it. Writes nothing.
pub fn load(state_dir: &Path, target: &dyn Target, rules: &StreamRules<'_>) -> Result<Manifest, Error> {
    load_noting_start(state_dir, target, rules).map(|(manifest, _)| manifest)
}

/// [`load`], and whether the remote records were listed from their start
/// (the local journal held no log record).
fn load_noting_start(
    state_dir: &Path,
    target: &dyn Target,
    rules: &StreamRules<'_>,
) -> Result<(Manifest, bool), Error> {
    let stream = rules.name;
    let path = crate::statedir::journal(state_dir, stream);
    let local = journal::read_all(&path, rules)?;
    if let Some(line) = local.dropped_torn_tail {
        log::warn!("stream {stream}: {}:{line}: torn final record ignored", path.display());
    }
    let mut manifest = local.manifest;
    let known = ends_of(&manifest);
    let listed_from_start = manifest.log.is_empty();
    let remote = remote_after(target, rules, &known, start_after(stream, manifest.log.last()).as_deref())?;
    if manifest.is_empty() {
        check_rebuild(target, stream, &remote)?;
    }
    manifest.log.extend(remote.log);
    manifest.snapshots.extend(remote.snapshots);
    manifest.prunes.extend(remote.prunes);
    Ok((manifest, listed_from_start))
}

/// [`load`], for the commands that read the whole manifest anyway (`list`,
/// `restore`): when the log begins above the pruned mark (or above 0), the
/// remote log records are also listed from the start, so a local journal
/// that lost its first records is a hole naming them, not a later start.
pub fn load_whole(state_dir: &Path, target: &dyn Target, rules: &StreamRules<'_>) -> Result<Manifest, Error> {
    let (manifest, listed_from_start) = load_noting_start(state_dir, target, rules)?;
    if !listed_from_start {
        check_start(state_dir, target, rules, &manifest)?;
    }
    Ok(manifest)
}

/// [`load`], for `fetch` of the segment at `position`: only when the log
/// begins above it (and above the pruned mark) are the remote log records
/// listed from the start, so that a journal that lost its first records is
/// a hole, never "not in the archive".
pub fn load_reaching(
    state_dir: &Path,
    target: &dyn Target,
    rules: &StreamRules<'_>,
    position: u64,
) -> Result<Manifest, Error> {
    let (manifest, listed_from_start) = load_noting_start(state_dir, target, rules)?;
    if !listed_from_start && manifest.log.first().is_some_and(|first| position < first.first()) {
        check_start(state_dir, target, rules, &manifest)?;
    }
    Ok(manifest)
}

/// A hole when the remote log records reach below where `manifest`'s log
/// begins (above its pruned mark): a journal that lost its first records.
fn check_start(
    state_dir: &Path,
    target: &dyn Target,
    rules: &StreamRules<'_>,
    manifest: &Manifest,
) -> Result<(), Error> {
    let Some(start) = manifest.log.first().map(Record::first) else {
        return Ok(());
    };
    let pruned_before = manifest.pruned_before();
    if start <= pruned_before.unwrap_or(0) {
        return Ok(());
    }
    let stream = rules.name;
    let listed = target.list(&keys::records_prefix(stream), None).map_err(|e| Error::target(stream, e))?;
    let listing = assemble::classify(stream, listed);
    if let Some((first, last, key)) = assemble::missing_before(&listing, start, pruned_before) {
        let journal = crate::statedir::journal(state_dir, stream);
        let location = format!("{} (the archive holds {key} before its first record)", journal.display());
        return Err(ManifestError::Hole { location, first, last }.into());
    }
    Ok(())
}

/// Where each sequence of `manifest` ends.
fn ends_of(manifest: &Manifest) -> Sequences {
    Sequences {
        last: manifest.log.last().map(crate::manifest::sequence::LogSpan::of),
        last_snapshot: manifest.snapshots.last().map(|s| s.position),
        last_prune: manifest.prunes.last().map(|p| (p.sequence, p.before)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::validate::tests::{batch, naming};
    use crate::manifest::{GapRecord, validate::MAX_POSITION};
    use crate::target::fs::FileTarget;
    use std::path::PathBuf;

    fn temp_target(test: &str) -> (PathBuf, FileTarget) {
        let dir = std::env::temp_dir().join(format!("walship-catalog-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        (dir.clone(), FileTarget::new(dir))
    }

    #[test]
    fn an_invalid_record_is_refused_before_anything_is_stored() {
        let (dir, target) = temp_target("refused");
        let naming = naming();
        let rules = StreamRules::new("s", &naming);
        let beyond = Record::Gap(GapRecord { first: 5, last: MAX_POSITION + 1, reason: "r".into() });
        let mut passwd = batch("s", 0, &[b"root"]);
        if let Record::Batch(b) = &mut passwd {
            b.segments[0].name = "passwd".into();
        }
        for (record, needle) in
            [(beyond, "beyond the limit 2^62"), (passwd, "`passwd` is not a segment name")]
        {
            let error = put_remote(&target, &rules, &record).expect_err("refused");
            assert!(error.to_string().contains(needle), "{error}");
            assert!(error.to_string().contains("refusing to store this record"), "{error}");
        }
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0, "something was stored");
        put_remote(&target, &rules, &batch("s", 0, &[b"ok"])).expect("a valid record is stored");
        let manifest = load(&dir.join("state"), &target, &rules).expect("loads");
        assert_eq!(manifest.log, [batch("s", 0, &[b"ok"])]);
    }

    #[test]
    fn catch_up_adopts_only_what_check_accepts() {
        let (dir, target) = temp_target("catch-up");
        let naming = naming();
        let rules = StreamRules::new("s", &naming);
        let records = [batch("s", 0, &[b"a"]), batch("s", 1, &[b"b"])];
        for record in &records {
            put_remote(&target, &rules, record).expect("stored");
        }
        let path = dir.join("journal");
        let (mut journal, _) = Journal::open(&path, &rules, |_| {}).expect("opens");
        let refused = catch_up(&mut journal, &target, |_| Err(Error::Usage("no".into())));
        assert!(refused.is_err());
        assert_eq!(journal.last(), None, "nothing may be appended when the check refuses");
        let adopted = catch_up(&mut journal, &target, |seen| {
            assert_eq!(seen, records);
            Ok(())
        })
        .expect("adopted");
        assert_eq!((adopted.log, journal.last()), (records.to_vec(), records.last()));
        assert!(catch_up(&mut journal, &target, |_| Ok(())).expect("nothing new").is_empty());
    }
}
