//! Stage 1 of the commit path: turn the positions the plan chose into a
//! `PreparedBatch` — each segment memory-mapped (guarded against truncation,
//! see `mapguard`) and checksummed, the per-segment entries and the whole
//! object's size and CRC32 known before the first byte is sent.
//!
//! With `compression = zstd` this is the first of two passes (see
//! `frames`): each segment's frame is produced and measured, so the stored
//! offsets, lengths, size and CRC32 are in the record before the upload;
//! the upload produces the frames again into its part buffers.

use std::fs;
use std::io;

use crate::config::Compression;
use crate::crc;
use crate::error::Error;
use crate::frames::{self, FrameEncoder, FrameKind, decode::Checked, encode::FramesReader};
use crate::manifest::{
    BatchRecord, Encoding, ManifestError, Record, SegmentEntry, StoredObject, StreamRules, validate_record,
};
use crate::source::{Segment, SegmentMap};
use crate::target::{Upload, keys};

/// A batch ready to upload: positions `first..=last`, one map per segment.
pub(super) struct PreparedBatch<'a> {
    pub first: u64,
    pub last: u64,
    pub key: String,
    pub segments: Vec<&'a Segment>,
    /// One map per segment; unmapped when the batch becomes its record.
    maps: Vec<SegmentMap>,
    /// The batch's record (a `Record::Batch`), validated against the
    /// stream's rules.
    record: Record,
    /// Logical size: the segments' raw bytes.
    pub size: u64,
    /// The object as stored (the logical bytes, or the frames).
    pub stored: StoredObject,
    /// With zstd: the level and each segment's frame kind.
    frames: Option<(i32, Vec<FrameKind>)>,
}

/// How an object found stored at a batch's key holds its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StoredLayout {
    /// As their concatenation.
    Identity,
    /// As zstd frames of these lengths.
    Frames(Checked),
}

/// Map and checksum the present segments `first..=last` of the stream
/// (contiguous, as the plan guarantees), and validate the record they will
/// make: a record the manifest would refuse is refused before the upload.
pub(super) fn prepare<'a>(
    rules: &StreamRules<'_>,
    compression: Compression,
    first: u64,
    last: u64,
    present: &'a [Segment],
) -> Result<PreparedBatch<'a>, Error> {
    let stream = rules.name;
    let segments: Vec<&Segment> = present.iter().filter(|s| (first..=last).contains(&s.position)).collect();
    let maps = segments
        .iter()
        .map(|seg| SegmentMap::open(&seg.path, seg.len).map_err(|e| segment_error(stream, seg, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let (entries, size, crc32) = checksum_segments(&segments, &maps);
    let (batch_record, frames) = match compression {
        Compression::None => (BatchRecord::identity(stream, first, last, entries), None),
        Compression::Zstd { level } => {
            let (record, kinds) = plan_frames(stream, first, last, entries, &maps, level)?;
            (record, Some((level, kinds)))
        }
    };
    debug_assert_eq!((batch_record.size, batch_record.crc32), (size, crc32));
    let stored = batch_record.stored;
    let record = validated(rules, Record::Batch(batch_record))?;
    let batch = PreparedBatch {
        first,
        last,
        key: keys::batch_key(stream, first, last),
        segments,
        maps,
        record,
        size,
        stored,
        frames,
    };
    batch.confirm_intact(stream)?;
    Ok(batch)
}

/// `record` if the manifest would take it; refused before any byte is sent.
fn validated(rules: &StreamRules<'_>, record: Record) -> Result<Record, Error> {
    validate_record(&record, rules).map_err(|message| {
        Error::Manifest(ManifestError::Refused { source: rules.name.to_string(), line: 0, message })
    })?;
    Ok(record)
}

/// The first pass of a zstd batch: each segment's frame measured, its
/// stored offset and length set in its entry, the object's stored size and
/// CRC32 combined from the frames'.
fn plan_frames(
    stream: &str,
    first: u64,
    last: u64,
    mut entries: Vec<SegmentEntry>,
    maps: &[SegmentMap],
    level: i32,
) -> Result<(BatchRecord, Vec<FrameKind>), Error> {
    let compression_failed = |source| Error::Compression { stream: stream.into(), source };
    let mut encoder = FrameEncoder::new(level).map_err(compression_failed)?;
    let (mut offset, mut stored_crc, mut kinds) = (0u64, 0u32, Vec::with_capacity(maps.len()));
    for (entry, map) in entries.iter_mut().zip(maps) {
        let frame = frames::plan_frame(&mut encoder, map.bytes()).map_err(compression_failed)?;
        (entry.offset, entry.stored_len) = (offset, frame.stored_len);
        stored_crc = crc::combine(stored_crc, frame.crc32, frame.stored_len);
        offset += frame.stored_len;
        kinds.push(frame.kind);
    }
    // The logical size and CRC32 combine from the segments as for an
    // identity batch; what is stored is the frames.
    let mut record = BatchRecord::identity(stream, first, last, entries);
    record.stored = StoredObject { size: offset, crc32: stored_crc, encoding: Encoding::ZstdFrames };
    Ok((record, kinds))
}

impl<'a> PreparedBatch<'a> {
    /// Run `send` with the object to store: slices of the maps (no copy),
    /// or, with zstd, the frames produced again as the target reads them.
    pub fn with_upload<R>(&self, stream: &str, send: impl FnOnce(&Upload<'_>) -> R) -> Result<R, Error> {
        let pieces: Vec<&[u8]> = self.maps.iter().map(SegmentMap::bytes).collect();
        let (size, crc32) = (self.stored.size, self.stored.crc32);
        let Some((level, kinds)) = &self.frames else {
            return Ok(send(&Upload::pieces(&pieces, size, crc32)));
        };
        let encoder = FrameEncoder::new(*level)
            .map_err(|source| Error::Compression { stream: stream.into(), source })?;
        let mut reader = FramesReader::new(encoder, pieces.into_iter().zip(kinds.iter().copied()).collect());
        Ok(send(&Upload::stream(&mut reader, size, crc32)))
    }

    /// The object already stored at the key holds exactly these segments,
    /// but not as planned (stored with the other `compression` setting, or
    /// in frames another libzstd made): record it as `found` says it is.
    pub fn adopt_layout(&mut self, rules: &StreamRules<'_>, found: &StoredLayout) -> Result<(), Error> {
        let Record::Batch(planned) = &self.record else { return Ok(()) };
        let mut batch = planned.clone();
        let (stored_lens, stored): (Vec<u64>, StoredObject) = match found {
            StoredLayout::Identity => {
                let lens = batch.segments.iter().map(|s| s.len).collect();
                (lens, StoredObject { size: batch.size, crc32: batch.crc32, encoding: Encoding::Identity })
            }
            StoredLayout::Frames(checked) => {
                let stored = StoredObject {
                    size: checked.stored_size,
                    crc32: checked.stored_crc32,
                    encoding: Encoding::ZstdFrames,
                };
                (checked.stored_lens.clone(), stored)
            }
        };
        let mut offset = 0;
        for (entry, stored_len) in batch.segments.iter_mut().zip(stored_lens) {
            (entry.offset, entry.stored_len) = (offset, stored_len);
            offset += stored_len;
        }
        batch.stored = stored;
        self.stored = stored;
        self.record = validated(rules, Record::Batch(batch))?;
        Ok(())
    }

    /// The logical size and CRC32: what an identity object of the batch is.
    pub fn logical(&self) -> (u64, u32) {
        match &self.record {
            Record::Batch(batch) => (batch.size, batch.crc32),
            Record::Gap(_) => (0, 0),
        }
    }

    /// What each frame of the object must decode to (zstd batches).
    pub fn expected_frames(&self) -> Vec<frames::decode::Expected> {
        let Record::Batch(batch) = &self.record else { return Vec::new() };
        batch
            .segments
            .iter()
            .map(|s| frames::decode::Expected { len: s.len, crc32: s.crc32, stored_len: None })
            .collect()
    }

    /// Make sure no read of the maps hit a page its file no longer has.
    pub fn confirm_intact(&self, stream: &str) -> Result<(), Error> {
        match self.segments.iter().zip(&self.maps).find(|(_, map)| !map.intact()) {
            Some((seg, _)) => Err(Error::SegmentChanged {
                stream: stream.into(),
                name: seg.name.clone(),
                detail: "truncated while it was being read".into(),
            }),
            None => Ok(()),
        }
    }

    /// After upload, make sure no segment grew or shrank meanwhile (bytes
    /// appended after sealing would otherwise be silently left out).
    pub fn confirm_unchanged(&self, stream: &str) -> Result<(), Error> {
        self.confirm_intact(stream)?;
        for seg in &self.segments {
            let len = fs::metadata(&seg.path).map(|m| m.len());
            if len.as_ref().ok() != Some(&seg.len) {
                let now = len.map_or_else(|e| e.to_string(), |l| format!("now {l} bytes"));
                return Err(Error::SegmentChanged {
                    stream: stream.into(),
                    name: seg.name.clone(),
                    detail: format!("{} bytes when sealed, {now}", seg.len),
                });
            }
        }
        Ok(())
    }

    /// The batch's record, once stored; unmaps the segments and returns
    /// them for acknowledgement.
    pub fn into_record(self) -> (Record, Vec<&'a Segment>) {
        (self.record, self.segments)
    }
}

fn segment_error(stream: &str, seg: &Segment, err: io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::Other => {
            Error::SegmentChanged { stream: stream.into(), name: seg.name.clone(), detail: err.to_string() }
        }
        _ => Error::local("read segment", &seg.path, err),
    }
}

/// Per-segment entries, total size and whole-object CRC32 of a batch, the
/// whole CRC combined from the segments' so each byte is read once.
fn checksum_segments(batch: &[&Segment], maps: &[SegmentMap]) -> (Vec<SegmentEntry>, u64, u32) {
    let mut whole = 0;
    let mut entries = Vec::with_capacity(batch.len());
    let mut offset = 0u64;
    for (seg, map) in batch.iter().zip(maps) {
        let (crc32, len) = (crc32fast::hash(map.bytes()), map.bytes().len() as u64);
        whole = crc::combine(whole, crc32, len);
        entries.push(SegmentEntry::identity(seg.position, seg.name.clone(), offset, len, crc32));
        offset += len;
    }
    (entries, offset, whole)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::SystemTime;

    use super::*;
    use crate::naming::Naming;

    /// A segment whose record the manifest would refuse (here a name that
    /// is not the stream's own at its position) is refused while the batch
    /// is prepared, before any byte is sent.
    #[test]
    fn a_record_the_manifest_would_refuse_is_refused_before_upload() {
        let dir = std::env::temp_dir().join(format!("walship-prepare-refused-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        fs::write(&path, b"root:x:0:0\n").unwrap();
        let naming = Naming::from_pattern("data-{seq}.log").unwrap();
        let rules = StreamRules::new("s", &naming);
        let segment = Segment {
            position: 3,
            name: "passwd".into(),
            path,
            len: 11,
            modified: SystemTime::now(),
            file_id: (0, 0),
        };
        let refused =
            prepare(&rules, Compression::None, 3, 3, std::slice::from_ref(&segment)).err().expect("refused");
        assert!(matches!(refused, Error::Manifest(ManifestError::Refused { .. })), "{refused}");
        assert!(refused.to_string().contains("passwd"), "{refused}");
        let _ = fs::remove_dir_all(&dir);
    }
}
