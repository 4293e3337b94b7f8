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
//! after its last log record, or from where the records not yet in
//! level-2 objects start if that comes first (plus the few prune and
//! snapshot records), so resuming costs one LIST request or a few.
//!
//! Turning listed record objects into entries is the pure [`assemble`];
//! reading them an entry at a time as they are downloaded is `remote` (a
//! rebuild, [`catch_up`]);
//! reading a whole manifest in passes, for the commands, is [`reader`];
//! folding record objects into larger ones is [`compact`]; checking an
//! archive for damage is [`verify`] (its record-object checks in
//! `record_check`).

pub mod assemble;
pub mod compact;
#[cfg(test)]
mod hooked;
pub mod reader;
mod record_check;
mod remote;
pub mod verify;

use std::path::Path;

use crate::error::Error;
use crate::manifest::journal::Journal;
use crate::manifest::{
    Entry, Manifest, ManifestError, Record, Sequences, StreamRules, format, validate_entry,
};
use crate::target::keys::{self, LogLevel, RecordKey};
use crate::target::{ObjectInfo, Target, Upload};

use assemble::{Listing, Unrecorded};
use remote::each_remote_entry;
#[cfg(test)]
use remote::remote_after;

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

/// The listing key after which the log objects past `last` sort, or
/// those from position `from` on when that comes first (where compaction
/// stands: a compacted object there may reach past `last`).
fn start_after(stream: &str, last: Option<&Record>, from: Option<u64>) -> Option<String> {
    let after_last =
        last.map(|record| keys::record_key(stream, record.first(), record.last(), record.kind()));
    // Every log key of a range starting at `from` sorts after this one.
    let before_from = from.map(|from| format!("{}{from:016x}", keys::records_prefix(stream)));
    match (after_last, before_from) {
        (Some(after_last), Some(before_from)) => Some(after_last.min(before_from)),
        (after_last, _) => after_last,
    }
}

/// Run `walk` over `stream`'s batch objects in key order, listed a page at
/// a time by a helper thread as `walk` reads them ([`Target::list_pages`]):
/// memory holds a page or two, not the listing of a long archive.
pub(crate) fn with_batch_objects<T>(
    target: &dyn Target,
    stream: &str,
    walk: impl FnOnce(&mut dyn Iterator<Item = ObjectInfo>) -> Result<T, Error>,
) -> Result<T, Error> {
    std::thread::scope(|scope| {
        let (pages, received) = std::sync::mpsc::sync_channel(1);
        let prefix = keys::batches_prefix(stream);
        let lister = scope.spawn(move || {
            let listed = target.list_pages(&prefix, None, &mut |page| pages.send(Ok(page)).is_ok());
            if let Err(error) = listed {
                let _ = pages.send(Err(error));
            }
        });
        let mut failure = None;
        let mut objects = received
            .into_iter()
            .map_while(|page: Result<Vec<ObjectInfo>, crate::target::TargetError>| match page {
                Ok(page) => Some(page),
                Err(error) => {
                    failure = Some(error);
                    None
                }
            })
            .flatten();
        let walked = walk(&mut objects);
        // Dropping the receiver ends a listing the walk stopped reading.
        drop(objects);
        if lister.join().is_err() {
            log::error!("stream {stream}: the batch listing's thread panicked");
        }
        match failure {
            Some(error) => Err(Error::target(stream, error)),
            None => walked,
        }
    })
}

/// A rebuild's comparison of the batch objects with the records, entry by
/// entry as they arrive (the prune and snapshot records come before any
/// log record, so the mark is final when the log starts): a batch object
/// below the first live record is a hole.
pub(crate) struct RebuildScan<'a> {
    stream: &'a str,
    /// The batch objects, until the first log record starts the scan.
    objects: Option<&'a mut dyn Iterator<Item = ObjectInfo>>,
    scan: Option<assemble::UnrecordedScan<'a>>,
    /// The pruned mark of the prunes seen so far.
    mark: Option<u64>,
}

impl<'a> RebuildScan<'a> {
    pub(crate) fn new(stream: &'a str, objects: &'a mut dyn Iterator<Item = ObjectInfo>) -> Self {
        RebuildScan { stream, objects: Some(objects), scan: None, mark: None }
    }

    /// Compare the next `entry`.
    pub(crate) fn entry(&mut self, entry: &Entry) -> Result<(), Error> {
        let record = match entry {
            Entry::Log(record) => record,
            Entry::Prune(prune) => {
                self.mark = Some(prune.before);
                return Ok(());
            }
            Entry::Snapshot(_) => return Ok(()),
        };
        if let Some(objects) = self.objects.take() {
            self.scan = Some(assemble::UnrecordedScan::new(self.stream, objects, self.mark));
        }
        if let Some(scan) = &mut self.scan {
            scan.record(record)?;
        }
        Ok(())
    }

    /// Log the batch objects the rebuilt manifest does not record.
    pub(crate) fn report(self) {
        let scan = match (self.scan, self.objects) {
            (Some(scan), _) => scan,
            (None, Some(objects)) => assemble::UnrecordedScan::new(self.stream, objects, self.mark),
            (None, None) => return,
        };
        report_found(self.stream, scan.finish());
    }
}

/// Log what a rebuild found unrecorded.
fn report_found(stream: &str, found: Vec<Unrecorded>) {
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
}

/// The key of a record object on the target holding `record` (its range,
/// of its kind): its level-0 object (one HEAD), or a compacted object
/// covering it, listed from `listing_start` and, failing that, from the
/// start. Used to recognise an archive under a new address.
pub fn record_holding(
    target: &dyn Target,
    stream: &str,
    record: &Record,
    listing_start: Option<u64>,
) -> Result<Option<String>, Error> {
    let key = entry_key(stream, &Entry::Log(record.clone()));
    if target.head(&key).map_err(|e| Error::target(stream, e))?.is_some() {
        return Ok(Some(key));
    }
    let covering = |listed: Vec<ObjectInfo>| {
        assemble::classify(stream, listed).records.into_iter().find_map(|(key, object)| match key {
            RecordKey::Log { first, last, level: LogLevel::Compacted(_) }
                if first <= record.first() && record.last() <= last =>
            {
                Some(object.key)
            }
            _ => None,
        })
    };
    let prefix = keys::records_prefix(stream);
    for from in [listing_start, None] {
        let after = from.map(|from| format!("{prefix}{from:016x}"));
        let listed = target.list(&prefix, after.as_deref()).map_err(|e| Error::target(stream, e))?;
        if let Some(found) = covering(listed) {
            return Ok(Some(found));
        }
        if from.is_none() {
            break;
        }
    }
    Ok(None)
}

/// What [`catch_up`] adopted.
#[derive(Debug, Default)]
pub struct CaughtUp {
    /// How many entries were adopted.
    pub adopted: usize,
    /// Where compaction stands on the target, when the journal was empty
    /// (a rebuild lists every record object anyway).
    pub compaction: Option<compact::Progress>,
}

/// How much [`catch_up`] gathers before checking and appending it: log
/// records weigh their segments, a prune its batch keys.
pub(crate) const ADOPT_WEIGHT: usize = 1024;

/// Bring the local journal up to date with the remote records (after a wiped
/// or lost state directory, or another writer such as `push`), as they
/// stream in (see `remote`): gathered up to [`ADOPT_WEIGHT`], each group's
/// log records are adopted once `check` accepts them (nothing of a
/// refused group is appended), then each adopted entry goes to `adopted`.
/// A rebuild (an empty journal) also compares the batch objects with the
/// records as they come: a batch object below the first live record means
/// lost record objects, an error before that record is adopted.
/// `compacted_from` is where the records not yet folded into level-2
/// objects start ([`compact::Compactor::listing_start`]): the listing
/// starts there at the latest.
pub fn catch_up(
    journal: &mut Journal,
    target: &dyn Target,
    compacted_from: Option<u64>,
    mut check: impl FnMut(&[Record]) -> Result<(), Error>,
    mut adopted: impl FnMut(&Entry),
) -> Result<CaughtUp, Error> {
    let rules = journal.rules();
    let (stream, naming) = (rules.name.to_string(), rules.naming.clone());
    let rules = StreamRules::new(&stream, &naming);
    let known = journal.ends().clone();
    let after = start_after(&stream, journal.last(), compacted_from);
    let mut append = |rebuild: Option<&mut RebuildScan<'_>>| -> Result<(Listing, usize), Error> {
        let mut rebuild = rebuild;
        let (mut count, mut group, mut weight) = (0, Manifest::default(), 0);
        let mut adopt = |group: &mut Manifest| -> Result<(), Error> {
            check(&group.log)?;
            // Prunes first: their marks allow the log to start where they say.
            let Manifest { log, snapshots, prunes } = std::mem::take(group);
            let prunes = prunes.into_iter().map(Entry::Prune);
            let snapshots = snapshots.into_iter().map(Entry::Snapshot);
            let entries: Vec<Entry> =
                prunes.chain(snapshots).chain(log.into_iter().map(Entry::Log)).collect();
            journal.append_entries(&entries)?;
            entries.iter().for_each(&mut adopted);
            count += entries.len();
            Ok(())
        };
        let listing = each_remote_entry(target, &rules, &known, after.as_deref(), &mut |entry| {
            if let Some(rebuild) = rebuild.as_deref_mut() {
                rebuild.entry(&entry)?;
            }
            weight += match &entry {
                Entry::Log(Record::Batch(batch)) => batch.segments.len(),
                Entry::Prune(prune) => prune.deleted.len(),
                _ => 1,
            };
            group.push(entry);
            if weight >= ADOPT_WEIGHT {
                adopt(&mut group)?;
                weight = 0;
            }
            Ok(true)
        })?;
        if !group.is_empty() {
            adopt(&mut group)?;
        }
        Ok((listing, count))
    };
    if known != Sequences::default() {
        let (_, count) = append(None)?;
        return Ok(CaughtUp { adopted: count, compaction: None });
    }
    let (listing, count) = with_batch_objects(target, &stream, |objects| {
        let mut rebuild = RebuildScan::new(&stream, objects);
        let appended = append(Some(&mut rebuild))?;
        rebuild.report();
        Ok(appended)
    })?;
    let records = listing.records.iter().map(|(key, object)| (key, object));
    let caught_up = CaughtUp { adopted: count, compaction: Some(compact::Progress::from_listing(records)) };
    Ok(caught_up)
}

/// A hole when the remote log records reach below `start`, where the
/// log read so far begins (above `pruned_before`, its pruned mark): a
/// journal that lost its first records.
fn check_start(
    state_dir: &Path,
    target: &dyn Target,
    rules: &StreamRules<'_>,
    start: Option<u64>,
    pruned_before: Option<u64>,
) -> Result<(), Error> {
    let Some(start) = start else {
        return Ok(());
    };
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
        let (manifest, _) = remote_after(&target, &rules, &Sequences::default(), None).expect("loads");
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
        let refused = catch_up(&mut journal, &target, None, |_| Err(Error::Usage("no".into())), |_| {});
        assert!(refused.is_err());
        assert_eq!(journal.last(), None, "nothing may be appended when the check refuses");
        let mut seen_entries = Vec::new();
        let adopted = catch_up(
            &mut journal,
            &target,
            None,
            |seen| {
                assert_eq!(seen, records);
                Ok(())
            },
            |entry| seen_entries.push(entry.clone()),
        )
        .expect("adopted");
        let expected: Vec<Entry> = records.iter().cloned().map(Entry::Log).collect();
        assert_eq!((adopted.adopted, seen_entries, journal.last()), (2, expected, records.last()));
        let again = catch_up(&mut journal, &target, None, |_| Ok(()), |_| {}).expect("nothing new");
        assert_eq!(again.adopted, 0);
    }
}
