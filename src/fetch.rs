//! `walship fetch -s STREAM NAME DEST` (PostgreSQL's `restore_command`):
//! where a name is looked up, cheapest first, and the prefetch it starts.
//!
//! 1. A PostgreSQL history or backup file is one object of its own
//!    ([`crate::sidefile`]): one HEAD says whether it exists, one GET
//!    brings it.
//! 2. A segment already in the stream's prefetch spool ([`crate::prefetch`])
//!    is handed over from there once its CRC32 checks: no request at all.
//! 3. The local journal, when it knows the position: the batch holding it
//!    (one ranged GET), or a gap there, which is "not in the archive" with
//!    no request; a position retention deleted is "not in the archive"
//!    too, naming the oldest archived segment.
//! 4. Otherwise the archive's records after the local journal (one LIST),
//!    streamed, then the ranged GET: a name the archive lacks costs that
//!    one request.
//!
//! Writing DEST (new file, never replacing, CRC32 before the name; devices
//! and standard output written through) is `restore::fetch`'s, for every
//! case: objects held whole (side files, spool files) are described to it
//! as one-segment batches ([`whole_object`]). After a segment is handed
//! over, a background prefetch is started (see [`crate::prefetch`]).

use crate::catalog::reader::{ManifestReader, Reach};
use crate::config::{Config, StreamConfig};
use crate::error::Error;
use crate::manifest::journal::{self, Lookup};
use crate::manifest::{BatchRecord, Encoding, Record, SegmentEntry, StoredObject, StreamRules};
use crate::prefetch;
use crate::restore::{self, FetchDest};
use crate::sidefile;
use crate::statedir;
use crate::target::{self, Target, keys};

/// Fetch `name` of `stream` into `dest` (see the module doc). Returns its
/// length.
pub fn fetch(config: &Config, stream: &StreamConfig, name: &str, dest: &FetchDest) -> Result<u64, Error> {
    let target = target::open(&config.global)?;
    if stream.naming.side_file(name).is_some() {
        return fetch_side_file(target.as_ref(), &stream.name, name, dest);
    }
    let state_dir = &config.global.state_dir;
    if stream.prefetch_segments > 0
        && let Some(len) = prefetch::Spool::at(state_dir, &stream.name).take(&stream.name, name, dest)?
    {
        return Ok(len);
    }
    let rules = StreamRules::new(&stream.name, &stream.naming);
    let pruned = |pruned_before, oldest| Error::PrunedSegment {
        stream: stream.name.clone(),
        name: name.into(),
        pruned_before,
        oldest,
    };
    let Some(position) = stream.naming.position(name) else {
        let holding = batch_holding(state_dir, target.as_ref(), &rules, name, Reach::End)?;
        return restore::fetch(holding.record.as_slice(), target.as_ref(), &stream.name, name, dest);
    };
    match journal::lookup(&statedir::journal(state_dir, &stream.name), &rules, position)? {
        Lookup::Batch(record) => restore::fetch(&[record], target.as_ref(), &stream.name, name, dest),
        Lookup::NotHeld => Err(Error::NotInArchive { stream: stream.name.clone(), name: name.into() }),
        Lookup::Pruned { before, oldest } => Err(pruned(before, oldest)),
        Lookup::Unknown => {
            let reach = Reach::Position(position);
            let holding = batch_holding(state_dir, target.as_ref(), &rules, name, reach)?;
            match holding.pruned_before {
                Some(before) if position < before && holding.record.is_none() => {
                    Err(pruned(before, holding.oldest))
                }
                _ => restore::fetch(holding.record.as_slice(), target.as_ref(), &stream.name, name, dest),
            }
        }
    }
}

/// What the archive's records say of a segment name.
struct Holding {
    /// The newest live batch record holding it.
    record: Option<Record>,
    /// Retention's mark: the positions before it are deleted.
    pruned_before: Option<u64>,
    /// The first segment a live batch holds (position, name).
    oldest: Option<(u64, String)>,
}

/// The newest live batch record holding a segment called `name`, found
/// while the manifest is opened (one pass over the archive's records when
/// the state directory has no journal, as on a machine recovering from the
/// archive alone; only that record is kept). Only a name retention deleted
/// costs a second pass, for the oldest segment archived.
fn batch_holding(
    state_dir: &std::path::Path,
    target: &dyn Target,
    rules: &StreamRules<'_>,
    name: &str,
    reach: Reach,
) -> Result<Holding, Error> {
    let mut newest: Option<Record> = None;
    let reader = ManifestReader::open_visiting(state_dir, target, rules, reach, |record| {
        if let Record::Batch(batch) = record
            && batch.segments.iter().any(|s| s.name == name)
        {
            newest = Some(record.clone());
        }
    })?;
    let pruned_before = reader.pruned_before();
    let record = newest.filter(|record| record.last() >= pruned_before.unwrap_or(0));
    let mut oldest = None;
    if record.is_none() && pruned_before.is_some() {
        reader.each_live_record(|live| {
            if let Record::Batch(batch) = &live {
                oldest = batch.segments.first().map(|s| (s.position, s.name.clone()));
            }
            Ok(oldest.is_none())
        })?;
    }
    Ok(Holding { record, pruned_before, oldest })
}

/// A history or backup file: not stored is "not in the archive".
fn fetch_side_file(target: &dyn Target, stream: &str, name: &str, dest: &FetchDest) -> Result<u64, Error> {
    let key = keys::side_file_key(stream, name);
    let Some((size, crc32)) = sidefile::stored(target, stream, &key)? else {
        return Err(Error::NotInArchive { stream: stream.into(), name: name.into() });
    };
    restore::fetch(&[whole_object(key, name, size, crc32)], target, stream, name, dest)
}

/// An object that holds one file `name` whole (`size` bytes, `crc32`),
/// described as a one-segment batch so that `restore::fetch`'s one path
/// (ranged GET, CRC32 check, safe publish) serves it too. Never recorded.
pub fn whole_object(key: String, name: &str, size: u64, crc32: u32) -> Record {
    Record::Batch(BatchRecord {
        first: 0,
        last: 0,
        key,
        size,
        crc32,
        stored: StoredObject { size, crc32, encoding: Encoding::Identity },
        segments: vec![SegmentEntry::identity(0, name.to_string(), 0, size, crc32)],
    })
}
