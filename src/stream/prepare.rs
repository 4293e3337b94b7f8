//! Stage 1 of the commit path: turn the positions the plan chose into a
//! `PreparedBatch` — each segment memory-mapped (guarded against truncation,
//! see `mapguard`) and checksummed, the per-segment entries and the whole
//! object's size and CRC32 known before the first byte is sent.

use std::fs;
use std::io;

use crate::crc;
use crate::error::Error;
use crate::manifest::{BatchRecord, ManifestError, Record, SegmentEntry, StreamRules, validate_record};
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
    pub size: u64,
    pub crc32: u32,
}

/// Map and checksum the present segments `first..=last` of the stream
/// (contiguous, as the plan guarantees), and validate the record they will
/// make: a record the manifest would refuse is refused before the upload.
pub(super) fn prepare<'a>(
    rules: &StreamRules<'_>,
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
    let batch_record = BatchRecord::identity(stream, first, last, entries);
    debug_assert_eq!((batch_record.size, batch_record.crc32), (size, crc32));
    let record = Record::Batch(batch_record);
    validate_record(&record, rules).map_err(|message| {
        Error::Manifest(ManifestError::Refused { source: stream.to_string(), line: 0, message })
    })?;
    let batch = PreparedBatch {
        first,
        last,
        key: keys::batch_key(stream, first, last),
        segments,
        maps,
        record,
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
        let refused = prepare(&rules, 3, 3, std::slice::from_ref(&segment)).err().expect("refused");
        assert!(matches!(refused, Error::Manifest(ManifestError::Refused { .. })), "{refused}");
        assert!(refused.to_string().contains("passwd"), "{refused}");
        let _ = fs::remove_dir_all(&dir);
    }
}
