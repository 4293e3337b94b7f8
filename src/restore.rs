//! Getting data back: `restore` recreates a stream's original files up to a
//! position, `fetch` returns one segment by name.
//!
//! Both read the manifest (local journal plus remote records, see
//! `catalog::load`), download with one request per batch (or one ranged
//! request per fetched segment), verify every segment's CRC32 on the way,
//! and write through temp files renamed into place, so a file with the final
//! name is always complete and verified. Names come from the manifest, whose
//! parser refuses anything but plain file names; restore checks again and
//! never writes outside the destination directory, nor over existing files.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::durable;
use crate::error::Error;
use crate::manifest::{BatchRecord, Encoding, ManifestError, Record, SegmentEntry};
use crate::target::{CrcWriter, Target};

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub segments: u64,
    pub bytes: u64,
    /// The last position restored.
    pub last_position: Option<u64>,
    /// Gaps passed over with `--allow-gaps`.
    pub gaps_skipped: Vec<(u64, u64)>,
}

/// What to restore.
pub struct RestoreRequest<'a> {
    pub stream: &'a str,
    pub to: &'a Path,
    /// Restore up to and including this position (default: everything).
    pub position: Option<u64>,
    pub allow_gaps: bool,
}

/// Restore `request.stream` from `records` into `request.to`.
pub fn restore(
    records: &[Record],
    target: &dyn Target,
    request: &RestoreRequest<'_>,
) -> Result<RestoreReport, Error> {
    let stream = request.stream;
    let archive_end = records.last().map(Record::last);
    let limit = match (request.position, archive_end) {
        (_, None) => return Err(nothing_archived(stream)),
        (Some(p), Some(end)) if p > end => {
            return Err(Error::Usage(format!(
                "stream {stream}: the archive ends at position {end}; cannot restore up to {p}"
            )));
        }
        (p, Some(end)) => p.unwrap_or(end),
    };
    durable::create_dir_all(request.to).map_err(|e| Error::local("create", request.to, e))?;

    let mut report = RestoreReport::default();
    let mut progress = Progress::new(records.iter().filter(|r| r.first() <= limit).count());
    for record in records.iter().take_while(|r| r.first() <= limit) {
        match record {
            Record::Gap(gap) if !request.allow_gaps => {
                return Err(Error::Gap {
                    stream: stream.into(),
                    first: gap.first,
                    last: gap.last,
                    reason: gap.reason.clone(),
                    restored_to: report.last_position,
                });
            }
            Record::Gap(gap) => {
                log::warn!("stream {stream}: skipping gap {}..{} ({})", gap.first, gap.last, gap.reason);
                report.gaps_skipped.push((gap.first, gap.last));
            }
            Record::Batch(batch) => {
                let wanted: Vec<&SegmentEntry> =
                    batch.segments.iter().filter(|s| s.position <= limit).collect();
                restore_batch(target, stream, batch, &wanted, request.to)?;
                report.segments += wanted.len() as u64;
                report.bytes += wanted.iter().map(|s| s.len).sum::<u64>();
                report.last_position = wanted.last().map(|s| s.position);
            }
        }
        progress.step();
    }
    durable::sync_dir(request.to).map_err(|e| Error::local("sync", request.to, e))?;
    Ok(report)
}

/// Download the prefix of `batch` that holds `wanted` and split it into files.
fn restore_batch(
    target: &dyn Target,
    stream: &str,
    batch: &BatchRecord,
    wanted: &[&SegmentEntry],
    dir: &Path,
) -> Result<(), Error> {
    let Some(last) = wanted.last() else { return Ok(()) };
    readable(batch)?;
    for seg in wanted {
        let path = destination(dir, &seg.name)?;
        if path.exists() {
            return Err(Error::UnsafeRestore {
                path,
                detail: "it already exists; restore into an empty directory".into(),
            });
        }
    }
    let mut splitter = Splitter::new(dir, wanted, stream, &batch.key);
    let range = (0, last.offset + last.len);
    let fetched = target.get(&batch.key, Some(range), &mut splitter);
    let finished = fetched.map_err(|e| Error::target(stream, e)).and_then(|_| splitter.finish());
    if let Err(e) = finished {
        splitter.discard();
        return Err(splitter.failure.take().unwrap_or(e));
    }
    Ok(())
}

/// Fetch one segment by `name` into `dest` (a file path). The newest copy
/// wins if a name appears twice. Not archived → `Error::NotInArchive`.
pub fn fetch(
    records: &[Record],
    target: &dyn Target,
    stream: &str,
    name: &str,
    dest: &Path,
) -> Result<u64, Error> {
    let found = records.iter().rev().find_map(|r| match r {
        Record::Batch(b) => b.segments.iter().find(|s| s.name == name).map(|s| (b, s)),
        Record::Gap(_) => None,
    });
    let Some((batch, seg)) = found else {
        return Err(Error::NotInArchive { stream: stream.into(), name: name.into() });
    };
    readable(batch)?;
    let written = durable::write_atomic(dest, |file| {
        let mut checked = CrcWriter::new(file);
        let got = target.get(&batch.key, Some((seg.offset, seg.len)), &mut checked);
        got.map_err(|e| io::Error::other(Error::target(stream, e)))?;
        let actual = checked.hasher.finalize();
        if actual != seg.crc32 {
            return Err(io::Error::other(crc_mismatch(stream, &batch.key, seg, actual)));
        }
        Ok(seg.len)
    });
    written.map_err(|e| match e.downcast::<Error>() {
        Ok(inner) => inner,
        Err(e) => Error::local("write", dest, e),
    })
}

/// Refuse a batch whose stored bytes are not its segments as they are:
/// this walship reads only identity-encoded batches back.
fn readable(batch: &BatchRecord) -> Result<(), Error> {
    match batch.stored.encoding {
        Encoding::Identity => Ok(()),
        other => Err(Error::Manifest(ManifestError::Invalid {
            source: batch.key.clone(),
            line: 0,
            message: format!(
                "this batch is stored with encoding {}, which this walship cannot decode; restore with \
                 a walship release that reads it",
                other.as_str()
            ),
        })),
    }
}

/// `dir/name`, refusing any name that is not a plain file name.
fn destination(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).components().count() == 1;
    if !plain {
        return Err(Error::UnsafeRestore {
            path: dir.join(name),
            detail: "the manifest names a path that is not a plain file name".into(),
        });
    }
    Ok(dir.join(name))
}

fn nothing_archived(stream: &str) -> Error {
    Error::Usage(format!("stream {stream}: nothing is archived yet; there is nothing to restore"))
}

fn crc_mismatch(stream: &str, key: &str, seg: &SegmentEntry, actual: u32) -> Error {
    Error::target(
        stream,
        crate::target::TargetError::Checksum {
            key: format!("{key} (segment {})", seg.name),
            expected: seg.crc32,
            actual,
        },
    )
}

/// Splits a batch's bytes into its segment files: each segment goes to a
/// hidden temp file, is checked against its CRC32, synced, and renamed.
struct Splitter<'a> {
    dir: &'a Path,
    segments: &'a [&'a SegmentEntry],
    index: usize,
    current: Option<(File, PathBuf, crc32fast::Hasher, u64)>,
    failure: Option<Error>,
    stream: &'a str,
    key: &'a str,
}

impl<'a> Splitter<'a> {
    fn new(dir: &'a Path, segments: &'a [&'a SegmentEntry], stream: &'a str, key: &'a str) -> Splitter<'a> {
        Splitter { dir, segments, index: 0, current: None, failure: None, stream, key }
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.restore.tmp"))
    }

    /// Open the file for the current segment if none is open.
    fn open_current(&mut self) -> io::Result<()> {
        if self.current.is_none() && self.index < self.segments.len() {
            let temp = self.temp_path(&self.segments[self.index].name);
            let file = File::create(&temp)?;
            self.current = Some((file, temp, crc32fast::Hasher::new(), 0));
        }
        Ok(())
    }

    /// Close, verify and rename the current segment if it is complete.
    fn close_if_complete(&mut self) -> io::Result<()> {
        let seg = self.segments[self.index];
        let Some((file, temp, hasher, written)) = self.current.take() else { return Ok(()) };
        if written < seg.len {
            self.current = Some((file, temp, hasher, written));
            return Ok(());
        }
        let actual = hasher.finalize();
        if actual != seg.crc32 {
            let _ = fs::remove_file(&temp);
            self.failure = Some(crc_mismatch(self.stream, self.key, seg, actual));
            return Err(io::Error::other("segment CRC32 mismatch"));
        }
        file.sync_all()?;
        fs::rename(&temp, self.dir.join(&seg.name))?;
        self.index += 1;
        Ok(())
    }

    /// Complete trailing empty segments and check everything arrived.
    fn finish(&mut self) -> Result<(), Error> {
        let result = (|| {
            while self.index < self.segments.len() {
                self.open_current()?;
                let before = self.index;
                self.close_if_complete()?;
                if self.index == before {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the object ended early"));
                }
            }
            Ok(())
        })();
        result.map_err(|e| self.failure.take().unwrap_or_else(|| Error::local("restore into", self.dir, e)))
    }

    /// Remove a half-written temp file after a failure.
    fn discard(&mut self) {
        if let Some((_, temp, _, _)) = self.current.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

impl Write for Splitter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.index >= self.segments.len() {
                return Err(io::Error::other("more bytes than the manifest records"));
            }
            self.open_current()?;
            let seg_len = self.segments[self.index].len;
            if let Some((file, _, hasher, written)) = self.current.as_mut() {
                let take = ((seg_len - *written) as usize).min(rest.len());
                file.write_all(&rest[..take])?;
                hasher.update(&rest[..take]);
                *written += take as u64;
                rest = &rest[take..];
            }
            self.close_if_complete()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// "restored N/M batches" on a terminal; silent otherwise.
struct Progress {
    total: usize,
    done: usize,
    visible: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress { total, done: 0, visible: io::stderr().is_terminal() && total > 1 }
    }

    fn step(&mut self) {
        self.done += 1;
        if self.visible {
            eprint!("\rrestored {}/{} records", self.done, self.total);
            if self.done == self.total {
                eprintln!();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::validate::tests::batch;

    #[test]
    fn only_identity_encoded_batches_are_read_back() {
        let Record::Batch(mut record) = batch("s", 0, &[b"abc"]) else { unreachable!("a batch") };
        assert!(readable(&record).is_ok());
        record.stored.encoding = Encoding::ZstdFrames;
        let error = readable(&record).expect_err("cannot decode");
        assert!(error.to_string().contains("stored with encoding zstd-frames"), "{error}");
    }
}
