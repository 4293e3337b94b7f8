//! Trust, but verify, records this node did not write: before records read
//! from the target are adopted into the local journal (after a lost state
//! directory, or when another config archives the same stream name to the
//! same target), every local segment they cover must have the size and CRC32
//! the records give it (a file at a recorded gap is a late file, never
//! acknowledged: see `source`). Once adopted, a record lets the stream
//! acknowledge (delete, mark, or count as archived) the segments it covers,
//! so a mismatch is a conflict: the stream stops loudly and nothing is adopted,
//! deleted or marked. The same check guards the acknowledgement of files
//! found at archived positions (`commit`): a file that arrived again under
//! an archived name is acknowledged only with the recorded content.

use super::confirm::file_crc32;
use crate::config::StreamConfig;
use crate::error::Error;
use crate::manifest::Record;
use crate::source;

/// Check the present segments covered by `records` (sorted, contiguous
/// ranges, as read from the target) against them.
pub(super) fn check_local_segments(config: &StreamConfig, records: &[Record]) -> Result<(), Error> {
    let (Some(first), Some(last)) = (records.first().map(Record::first), records.last().map(Record::last))
    else {
        return Ok(());
    };
    let segments = source::scan(&config.dir, &config.naming, |p| (first..=last).contains(&p))
        .map_err(|source| Error::Scan { stream: config.name.clone(), source })?;
    for seg in &segments {
        let index = records.partition_point(|r| r.last() < seg.position);
        let Some(record) = records.get(index).filter(|r| r.first() <= seg.position) else { continue };
        let conflict = |key: &str, detail: String| Error::Conflict {
            stream: config.name.clone(),
            key: key.into(),
            detail: format!("{detail}; nothing was adopted, deleted or marked"),
        };
        match record {
            // A file at a recorded gap is a late file (the source warns
            // about it and never deletes or marks it), as with the journal
            // intact: nothing to check here.
            Record::Gap(_) => continue,
            Record::Batch(batch) => {
                let Some(entry) = batch.segments.iter().find(|e| e.position == seg.position) else {
                    continue;
                };
                let (_, crc32) =
                    file_crc32(&seg.path).map_err(|e| Error::local("read segment", &seg.path, e))?;
                if (seg.len, crc32) != (entry.len, entry.crc32) {
                    return Err(conflict(
                        &batch.key,
                        format!(
                            "local segment {} is {} bytes with CRC32 {crc32:08x}, the archive's record \
                             says {} bytes with CRC32 {:08x}",
                            seg.name, seg.len, entry.len, entry.crc32
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
