//! Stage 2 of the commit path: store a `PreparedBatch` on the target — or,
//! when an object with the same size and CRC32 is already at its key (a crash
//! between upload and commit), take it as stored without sending it again.
//! Different content at the key is a conflict: never overwritten. The
//! exists-check costs a request, so the caller asks for it only where the
//! outcome is uncertain (see `Stream`'s `uncertain`). After the
//! upload, the segments must still be what was checksummed; if not, what was
//! just stored is taken back and the batch is refused.

use std::time::Instant;

use super::prepare::PreparedBatch;
use crate::error::Error;
use crate::status::StatusCell;
use crate::target::{self, Target, TargetError};

/// How a batch reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Uploaded {
    Sent,
    /// Found already stored, identical: recorded without re-sending.
    AlreadyStored,
}

/// Store `batch`'s object of `stream` on `target` (see the module doc),
/// counting the upload in `status`; with `check`, first look whether it is
/// already stored.
pub(super) fn upload(
    target: &dyn Target,
    status: &StatusCell,
    stream: &str,
    batch: &PreparedBatch<'_>,
    check: bool,
) -> Result<Uploaded, Error> {
    let name = stream;
    let (key, first, last) = (&batch.key, batch.first, batch.last);
    let uploaded = if check && already_stored(target, stream, key, batch.size, batch.crc32)? {
        log::info!("stream {name}: {key} is already in the archive; recording it without re-sending");
        Uploaded::AlreadyStored
    } else {
        let pieces = batch.pieces();
        let started = Instant::now();
        let stored = target.put(key, &batch.upload(&pieces));
        status.update(|s| match &stored {
            Ok(()) => {
                s.uploads_ok += 1;
                s.uploaded_bytes += batch.size;
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

/// Whether `key` already holds exactly these bytes. A different object
/// at the same key is a conflict: never overwritten.
fn already_stored(target: &dyn Target, name: &str, key: &str, size: u64, crc32: u32) -> Result<bool, Error> {
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
    Err(Error::Conflict {
        stream: name.into(),
        key: key.into(),
        detail: format!(
            "stored {} bytes with CRC32 {existing_crc:08x}, local segments are {size} bytes \
             with CRC32 {crc32:08x}",
            existing.size
        ),
    })
}
