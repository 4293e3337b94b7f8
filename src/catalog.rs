//! A stream's whole manifest: the local journal plus the remote records.
//!
//! Every commit writes its record twice: first as a small object of its own
//! under `STREAM/manifest/` on the target (one PUT, independent of the
//! archive's size), then to the local journal. The remote records alone are
//! therefore enough to restore and to resume: a node whose state directory
//! was wiped lists them and carries on. A node with its journal intact lists
//! only the keys after its last record, so resuming costs one LIST request.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::manifest::journal::{self, Journal};
use crate::manifest::{Record, format};
use crate::target::{Target, Upload, keys};

/// A remote record object larger than this is refused as hostile: a real one
/// holds one batch's segment table.
const MAX_RECORD_OBJECT: u64 = 16 << 20;

/// The stream's local journal (the layout is `statedir`'s).
pub fn journal_path(state_dir: &Path, stream: &str) -> PathBuf {
    crate::statedir::journal(state_dir, stream)
}

/// The key of the remote object holding `record`.
pub fn record_key(stream: &str, record: &Record) -> String {
    keys::record_key(stream, record.first(), record.last(), record.kind())
}

/// Store `record` as its own remote object (idempotent: the key is fixed by
/// the record's range and kind).
pub fn put_remote(target: &dyn Target, stream: &str, record: &Record) -> Result<(), Error> {
    let text = format::serialize(std::slice::from_ref(record));
    let bytes = text.as_bytes();
    let body = Upload { pieces: &[bytes], size: bytes.len() as u64, crc32: crc32fast::hash(bytes) };
    target.put(&record_key(stream, record), &body).map_err(|e| Error::target(stream, e))
}

/// The remote records that come after `after` (all of them for `None`),
/// in position order, each checked against its key.
pub fn remote_records_after(
    target: &dyn Target,
    stream: &str,
    after: Option<&Record>,
) -> Result<Vec<Record>, Error> {
    let start_after = after.map(|r| record_key(stream, r));
    let listed = target
        .list(&keys::records_prefix(stream), start_after.as_deref())
        .map_err(|e| Error::target(stream, e))?;
    let mut records: Vec<Record> = Vec::new();
    for object in listed {
        let Some((first, last, kind)) = keys::parse_record_key(stream, &object.key) else {
            log::warn!("stream {stream}: ignoring foreign object {} among manifest records", object.key);
            continue;
        };
        let record = fetch_record(target, stream, &object.key, object.size)?;
        if (record.first(), record.last(), record.kind()) != (first, last, kind.as_str()) {
            return Err(hostile(&object.key, "its record does not match its key"));
        }
        let previous_last = records.last().map(Record::last).or(after.map(Record::last));
        if previous_last.is_some_and(|prev| record.first() <= prev) {
            return Err(hostile(&object.key, "its range overlaps an earlier record"));
        }
        records.push(record);
    }
    Ok(records)
}

/// Download and parse one remote record object.
fn fetch_record(target: &dyn Target, stream: &str, key: &str, size: u64) -> Result<Record, Error> {
    if size > MAX_RECORD_OBJECT {
        return Err(hostile(key, &format!("it is {size} bytes, far larger than any record")));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    target.get(key, None, &mut bytes).map_err(|e| Error::target(stream, e))?;
    let parsed = format::parse(&bytes, key, stream)?;
    match (parsed.dropped_torn_tail, parsed.records.as_slice()) {
        (None, [record]) => Ok(record.clone()),
        _ => Err(hostile(key, "a record object must hold exactly one whole record")),
    }
}

fn hostile(key: &str, detail: &str) -> Error {
    Error::Manifest(crate::manifest::ManifestError::Invalid {
        source: key.to_string(),
        line: 0,
        message: format!(
            "remote manifest record {detail}; move the object aside or fix the target/stream name"
        ),
    })
}

/// Bring the local journal up to date with the remote records (after a wiped
/// or lost state directory, or another writer such as `push`), once `check`
/// accepts them (nothing is appended otherwise). Returns the number of
/// records adopted.
pub fn catch_up(
    journal: &mut Journal,
    target: &dyn Target,
    stream: &str,
    check: impl FnOnce(&[Record]) -> Result<(), Error>,
) -> Result<usize, Error> {
    let missing = remote_records_after(target, stream, journal.last())?;
    if !missing.is_empty() {
        check(&missing)?;
        journal.append(&missing)?;
    }
    Ok(missing.len())
}

/// The whole manifest for reading (list, restore, fetch, verify): the local
/// journal, if any, followed by the remote records after it. Writes nothing.
pub fn load(state_dir: &Path, target: &dyn Target, stream: &str) -> Result<Vec<Record>, Error> {
    let local = journal::read_all(&journal_path(state_dir, stream), stream)?;
    if let Some(line) = local.dropped_torn_tail {
        log::warn!(
            "stream {stream}: {}:{line}: torn final record ignored",
            journal_path(state_dir, stream).display()
        );
    }
    let mut records = local.records;
    let remote = remote_records_after(target, stream, records.last())?;
    records.extend(remote);
    Ok(records)
}
