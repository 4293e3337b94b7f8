//! Stage 2 of the commit path: store a `PreparedBatch` on the target — or,
//! when an object with the same stored size and CRC32 is already at its key
//! (a crash between upload and commit), take it as stored without sending
//! it again. Different content at the key is a conflict: never overwritten.
//! [`store`] is that path for any object; snapshot jobs store their images
//! with it. The exists-check costs a request, so a batch's upload asks for
//! it only where the outcome is uncertain (see `Stream`'s `uncertain`).
//! After the upload, the segments must still be what was
//! checksummed; if not, what was just stored is taken back and the batch is
//! refused.
//!
//! An object that differs from the planned one may still hold exactly the
//! batch's segments: stored before the stream's `compression` setting was
//! changed, or in frames another libzstd version made. It is then compared
//! on what it holds: as is (the segments' concatenation: the logical size
//! and CRC32), or downloaded and decoded (each frame must give its
//! segment's raw length and CRC32); if it holds them, it is recorded as it
//! is stored, not sent again.

use std::time::Instant;

use super::prepare::{PreparedBatch, StoredLayout};
use crate::error::Error;
use crate::frames::decode::read_frames;
use crate::manifest::{Encoding, StreamRules};
use crate::status::StatusCell;
use crate::target::{self, Target, TargetError, Upload};

/// How an object reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uploaded {
    Sent,
    /// Found already stored, identical: recorded without re-sending.
    AlreadyStored,
}

/// What other bytes already stored at the key mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDifferent {
    /// A conflict, never overwritten (a batch: archived data).
    Conflict,
    /// Leftovers of an attempt no record describes: replaced (a snapshot
    /// whose job never got recorded; the next job at that position may
    /// produce other bytes).
    Replace,
}

/// Store `batch`'s object on `target` (see the module doc), counting the
/// upload in `status`; with `check`, first look whether it is already
/// stored.
pub(super) fn upload(
    target: &dyn Target,
    status: &StatusCell,
    rules: &StreamRules<'_>,
    batch: &mut PreparedBatch<'_>,
    check: bool,
) -> Result<Uploaded, Error> {
    let stream = rules.name;
    let (first, last, key) = (batch.first, batch.last, batch.key.clone());
    let changed = |expected: u32, actual: u32| Error::SegmentChanged {
        stream: stream.into(),
        name: format!("in positions {first}..{last}"),
        detail: format!("CRC32 {expected:08x} before upload, {actual:08x} while sending"),
    };
    let stored = batch.with_upload(stream, |body| {
        store(target, status, stream, &key, body, check.then_some(OnDifferent::Conflict), &changed)
    })?;
    let uploaded = match stored {
        Err(conflict @ Error::Conflict { .. }) => {
            let Some(found) = same_segments_stored_otherwise(target, stream, batch)? else {
                return Err(conflict);
            };
            let how = match &found {
                StoredLayout::Identity => "uncompressed".to_string(),
                StoredLayout::Frames(checked) => format!("in zstd frames of {} bytes", checked.stored_size),
            };
            log::info!(
                "stream {stream}: {key} holds these segments {how}, not as planned ({} bytes); \
                 recording it as it is stored",
                batch.stored.size
            );
            batch.adopt_layout(rules, &found)?;
            Uploaded::AlreadyStored
        }
        other => other?,
    };
    if let Err(changed) = batch.confirm_unchanged(stream) {
        if uploaded == Uploaded::Sent {
            // What was just stored is not the segment's final content and
            // is recorded nowhere: take it back so the next pass can store
            // the real bytes instead of meeting a false conflict.
            let _ = target.delete(std::slice::from_ref(&key));
        }
        return Err(changed);
    }
    Ok(uploaded)
}

/// Store `body` under `key` for `stream`, unless the key already holds
/// exactly these bytes (size and CRC32): the one store path of batches and
/// snapshots. `on_different` says what other bytes there mean (`None`: no
/// look first, the key is known to be free); `changed` makes the error for
/// bytes that changed while they were sent (expected and actual CRC32).
pub(crate) fn store(
    target: &dyn Target,
    status: &StatusCell,
    stream: &str,
    key: &str,
    body: &Upload<'_>,
    on_different: Option<OnDifferent>,
    changed: &dyn Fn(u32, u32) -> Error,
) -> Result<Uploaded, Error> {
    let look = |on_different| already_stored(target, stream, key, body.size, body.crc32, on_different);
    if on_different.map(look).transpose()? == Some(true) {
        log::info!("stream {stream}: {key} is already in the archive; recording it without re-sending");
        return Ok(Uploaded::AlreadyStored);
    }
    let started = Instant::now();
    let stored = target.put(key, body);
    status.update(|s| match &stored {
        Ok(()) => {
            s.uploads_ok += 1;
            s.uploaded_bytes += body.size;
            s.upload_seconds.observe(started.elapsed());
        }
        Err(_) => s.uploads_failed += 1,
    });
    stored.map_err(|e| match e {
        TargetError::Checksum { expected, actual, .. } => changed(expected, actual),
        other => Error::target(stream, other),
    })?;
    Ok(Uploaded::Sent)
}

/// Whether `key` already holds exactly these bytes. A different object at
/// the same key is a conflict (never overwritten), or, with
/// [`OnDifferent::Replace`], is to be replaced.
fn already_stored(
    target: &dyn Target,
    name: &str,
    key: &str,
    size: u64,
    crc32: u32,
    on_different: OnDifferent,
) -> Result<bool, Error> {
    let Some(existing) = target.head(key).map_err(|e| Error::target(name, e))? else {
        return Ok(false);
    };
    let existing_crc = match existing.crc32 {
        Some(crc) => crc,
        // The target cannot tell the whole-object CRC cheaply (e.g. a
        // multipart object): read it back. Only on this healing path.
        None => target::stored_crc32(target, key).map_err(|e| Error::target(name, e))?,
    };
    if existing.size == size && existing_crc == crc32 {
        return Ok(true);
    }
    if on_different == OnDifferent::Replace {
        log::warn!(
            "stream {name}: replacing {key} ({} bytes, CRC32 {existing_crc:08x}), left by an attempt \
             that was never recorded",
            existing.size
        );
        return Ok(false);
    }
    Err(Error::Conflict {
        stream: name.into(),
        key: key.into(),
        detail: format!(
            "stored {} bytes with CRC32 {existing_crc:08x}, local segments make {size} bytes \
             with CRC32 {crc32:08x}",
            existing.size
        ),
    })
}

/// How the object at the batch's key holds exactly the batch's segments
/// other than planned, if it does: as their concatenation, or as zstd
/// frames of them (read back whole; only on this healing path).
fn same_segments_stored_otherwise(
    target: &dyn Target,
    stream: &str,
    batch: &PreparedBatch<'_>,
) -> Result<Option<StoredLayout>, Error> {
    let Some(existing) = target.head(&batch.key).map_err(|e| Error::target(stream, e))? else {
        return Ok(None);
    };
    let (size, crc32) = batch.logical();
    if batch.stored.encoding != Encoding::Identity && existing.size == size {
        let existing_crc = match existing.crc32 {
            Some(crc) => crc,
            None => target::stored_crc32(target, &batch.key).map_err(|e| Error::target(stream, e))?,
        };
        if existing_crc == crc32 {
            return Ok(Some(StoredLayout::Identity));
        }
    }
    let expected = batch.expected_frames();
    let frames = read_frames(target, &batch.key, None, &expected, 0, &mut std::io::sink(), None);
    Ok(frames.ok().map(StoredLayout::Frames))
}
