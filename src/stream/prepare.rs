//! Stage 1 of the commit path: turn the positions the plan chose into a
//! `PreparedBatch` — each segment memory-mapped (guarded against truncation,
//! see `mapguard`) and checksummed, the per-segment entries and the whole
//! object's size and CRC32 known before the first byte is sent.

use std::fs;
use std::io;

use crate::crc;
use crate::error::Error;
use crate::manifest::{BatchRecord, SegmentEntry};
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
    pub entries: Vec<SegmentEntry>,
    pub size: u64,
    pub crc32: u32,
}

/// Map and checksum the present segments `first..=last` of `stream`
/// (contiguous, as the plan guarantees).
pub(super) fn prepare<'a>(
    stream: &str,
    first: u64,
    last: u64,
    present: &'a [Segment],
) -> Result<PreparedBatch<'a>, Error> {
    let segments: Vec<&Segment> = present.iter().filter(|s| (first..=last).contains(&s.position)).collect();
    let maps = segments
        .iter()
        .map(|seg| SegmentMap::open(&seg.path, seg.len).map_err(|e| segment_error(stream, seg, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let (entries, size, crc32) = checksum_segments(&segments, &maps);
    let batch = PreparedBatch {
        first,
        last,
        key: keys::batch_key(stream, first, last),
        segments,
        maps,
        entries,
        size,
        crc32,
    };
    batch.confirm_intact(stream)?;
    Ok(batch)
}

impl<'a> PreparedBatch<'a> {
    /// The object's bytes, as slices of the maps (no copy).
    pub fn pieces(&self) -> Vec<&[u8]> {
        self.maps.iter().map(SegmentMap::bytes).collect()
    }

    /// The upload body for `pieces`.
    pub fn upload<'p>(&self, pieces: &'p [&'p [u8]]) -> Upload<'p> {
        Upload { pieces, size: self.size, crc32: self.crc32 }
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

    /// The record of `stream`'s batch, once stored; unmaps the segments and
    /// returns them for acknowledgement.
    pub fn into_record(self, stream: &str) -> (BatchRecord, Vec<&'a Segment>) {
        let record = BatchRecord::identity(stream, self.first, self.last, self.entries);
        debug_assert_eq!((record.size, record.crc32), (self.size, self.crc32));
        (record, self.segments)
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
