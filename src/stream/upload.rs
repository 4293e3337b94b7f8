//! Stage 2 of the commit path: store a `PreparedBatch` on the target — or,
//! when an object with the same stored size and CRC32 is already at its key
//! (a crash between upload and commit), take it as stored without sending
//! it again. Different content at the key is a conflict: never overwritten.
//! After the upload, the segments must still be what was checksummed; if
//! not, what was just stored is taken back and the batch is refused.
//!
//! A zstd batch stored by another libzstd version (whose frames differ from
//! the ones this one makes) is compared on what it holds instead: it is
//! downloaded, each frame must decode to its segment's raw length and CRC32,
//! and then it is recorded with the layout it has, not sent again.

use std::time::Instant;

use super::prepare::PreparedBatch;
use crate::error::Error;
use crate::frames::decode::{Checked, read_frames};
use crate::manifest::{Encoding, StreamRules};
use crate::status::StatusCell;
use crate::target::{self, ObjectInfo, Target, TargetError};

/// How a batch reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Uploaded {
    Sent,
    /// Found already stored, identical: recorded without re-sending.
    AlreadyStored,
}

/// Store `batch`'s object of `stream` on `target` (see the module doc),
/// counting the upload in `status`.
pub(super) fn upload(
    target: &dyn Target,
    status: &StatusCell,
    rules: &StreamRules<'_>,
    batch: &mut PreparedBatch<'_>,
) -> Result<Uploaded, Error> {
    let name = rules.name;
    let (key, first, last) = (batch.key.clone(), batch.first, batch.last);
    let key = &key;
    let uploaded = if already_stored(target, rules, batch)? {
        log::info!("stream {name}: {key} is already in the archive; recording it without re-sending");
        Uploaded::AlreadyStored
    } else {
        let started = Instant::now();
        let stored = batch.with_upload(name, |upload| target.put(key, upload))?;
        status.update(|s| match &stored {
            Ok(()) => {
                s.uploads_ok += 1;
                s.uploaded_bytes += batch.stored.size;
                s.upload_seconds.observe(started.elapsed());
            }
            Err(_) => s.uploads_failed += 1,
        });
        stored.map_err(|e| match e {
            TargetError::Checksum { expected, actual, .. } => Error::SegmentChanged {
                stream: name.into(),
                name: format!("in positions {first}..{last}"),
                detail: format!("CRC32 {expected:08x} before upload, {actual:08x} while sending"),
            },
            other => Error::target(name, other),
        })?;
        Uploaded::Sent
    };
    if let Err(changed) = batch.confirm_unchanged(name) {
        if uploaded == Uploaded::Sent {
            // What was just stored is not the segment's final content and
            // is recorded nowhere: take it back so the next pass can store
            // the real bytes instead of meeting a false conflict.
            let _ = target.delete(std::slice::from_ref(key));
        }
        return Err(changed);
    }
    Ok(uploaded)
}

/// Whether the batch's key already holds exactly its stored bytes, or (zstd)
/// frames holding exactly its segments, whose layout `batch` then takes. A
/// different object at the same key is a conflict: never overwritten.
fn already_stored(
    target: &dyn Target,
    rules: &StreamRules<'_>,
    batch: &mut PreparedBatch<'_>,
) -> Result<bool, Error> {
    let (name, key) = (rules.name, batch.key.as_str());
    let Some(existing) = target.head(key).map_err(|e| Error::target(name, e))? else {
        return Ok(false);
    };
    let (size, crc32) = (batch.stored.size, batch.stored.crc32);
    let existing_crc = match existing.crc32 {
        Some(crc) => crc,
        // The target cannot tell the whole-object CRC cheaply (e.g. a
        // multipart object): read it back. Only on this healing path.
        None => target::stored_crc32(target, key).map_err(|e| Error::target(name, e))?,
    };
    if existing.size == size && existing_crc == crc32 {
        return Ok(true);
    }
    if batch.stored.encoding == Encoding::ZstdFrames
        && let Some(found) = same_segments_in_other_frames(target, batch, &existing)
    {
        log::info!(
            "stream {name}: {key} holds these segments in frames another zstd made ({} bytes stored \
             instead of {size}); recording its own layout",
            found.stored_size
        );
        batch.adopt_layout(rules, &found)?;
        return Ok(true);
    }
    let local = match batch.stored.encoding {
        Encoding::Identity => "local segments are",
        Encoding::ZstdFrames => "local segments compress to",
    };
    Err(Error::Conflict {
        stream: name.into(),
        key: key.into(),
        detail: format!(
            "stored {} bytes with CRC32 {existing_crc:08x}, {local} {size} bytes with CRC32 \
             {crc32:08x}",
            existing.size
        ),
    })
}

/// The layout of `existing` when it is a sequence of frames holding exactly
/// the batch's segments (read back whole; only on the healing path).
fn same_segments_in_other_frames(
    target: &dyn Target,
    batch: &PreparedBatch<'_>,
    existing: &ObjectInfo,
) -> Option<Checked> {
    let expected = batch.expected_frames();
    let checked = read_frames(target, &batch.key, None, &expected, 0, &mut std::io::sink(), None).ok()?;
    (checked.stored_size == existing.size).then_some(checked)
}
