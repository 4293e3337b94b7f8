//! Splitting a batch's bytes, as they arrive, into its segments' files:
//! each segment to a temp file of its own (written through
//! [`direct::Stage`], around the page cache when large), checked against
//! its CRC32 before it counts as written; a failure removes the file it
//! was writing.

use std::ffi::CString;
use std::io::{self, Write};

use super::dest::{DestDir, TempFile};
use super::direct;
use crate::error::Error;
use crate::manifest::SegmentEntry;
use crate::target::TargetError;

/// A segment downloaded and verified under its temp name.
pub type Written<'r> = (CString, &'r SegmentEntry);

/// Splits a batch's bytes into its segment files: each segment goes to a
/// temp file, is checked against its CRC32, and joins `written`.
pub struct Splitter<'p, 'r> {
    dir: &'p DestDir,
    written: Vec<Written<'r>>,
    segments: &'p [&'r SegmentEntry],
    index: usize,
    current: Option<(TempFile, crc32fast::Hasher, u64)>,
    /// How the current file's bytes are written (directly, when large).
    stage: direct::Stage,
    /// The error this writer caused, reported instead of the target's.
    failure: Option<Error>,
    stream: &'p str,
    key: &'p str,
}

impl<'p, 'r> Splitter<'p, 'r> {
    /// Split into `segments` (consecutive, as stored), files in `dir`; for
    /// messages, the object `key` of `stream`.
    pub fn new(dir: &'p DestDir, segments: &'p [&'r SegmentEntry], stream: &'p str, key: &'p str) -> Self {
        Splitter {
            dir,
            written: Vec::new(),
            segments,
            index: 0,
            current: None,
            stage: direct::Stage::default(),
            failure: None,
            stream,
            key,
        }
    }

    /// End the batch after its download returned `fetched`: the verified
    /// files, in order, and why it stopped before the last one, if it did
    /// (this writer's own failure rather than the target's). A file left
    /// half-written is removed.
    pub fn end(mut self, fetched: Result<(), Error>) -> (Vec<Written<'r>>, Option<Error>) {
        let finished = match fetched {
            Ok(()) => self.finish(),
            Err(e) => Err(self.failure.take().unwrap_or(e)),
        };
        if finished.is_err() {
            self.discard_current();
        }
        (self.written, finished.err())
    }

    fn fail(&mut self, error: Error) -> io::Error {
        let shown = io::Error::other(error.to_string());
        self.failure = Some(error);
        shown
    }

    /// Open the file for the current segment if none is open.
    fn open_current(&mut self) -> io::Result<()> {
        if self.current.is_none() && self.index < self.segments.len() {
            let seg = self.segments[self.index];
            match self.dir.create_temp(&seg.name) {
                Ok(mut temp) => {
                    self.stage.begin(&mut temp.file, seg.len);
                    self.current = Some((temp, crc32fast::Hasher::new(), 0));
                }
                Err(e) => {
                    let path = self.dir.path().join(&seg.name);
                    return Err(self.fail(Error::local("create a temp file for", path, e)));
                }
            }
        }
        Ok(())
    }

    /// Verify and hand over the current segment if it is complete.
    fn close_if_complete(&mut self) -> io::Result<()> {
        let seg = self.segments[self.index];
        let Some((mut temp, hasher, written)) = self.current.take() else { return Ok(()) };
        if written < seg.len {
            self.current = Some((temp, hasher, written));
            return Ok(());
        }
        let actual = hasher.finalize();
        if actual != seg.crc32 {
            let _ = self.dir.remove(&temp.name);
            let mismatch = TargetError::Checksum {
                key: format!("{} (segment {})", self.key, seg.name),
                expected: seg.crc32,
                actual,
            };
            return Err(self.fail(Error::target(self.stream, mismatch)));
        }
        if let Err(e) = self.stage.finish(&mut temp.file) {
            let _ = self.dir.remove(&temp.name);
            return Err(self.fail(Error::local("write", self.dir.path().join(&seg.name), e)));
        }
        self.written.push((temp.name, seg));
        self.index += 1;
        Ok(())
    }

    /// Complete trailing empty segments and check everything arrived.
    fn finish(&mut self) -> Result<(), Error> {
        while self.index < self.segments.len() {
            let before = self.index;
            let step = self.open_current().and_then(|()| self.close_if_complete());
            if let Err(e) = step {
                return Err(self.failure.take().unwrap_or_else(|| Error::local("write", self.dir.path(), e)));
            }
            if self.index == before {
                let early = TargetError::Fatal {
                    op: "get".into(),
                    key: self.key.into(),
                    detail: "the object ended before its last recorded segment".into(),
                    fix: "run `walship verify --deep`; the object is damaged".into(),
                };
                return Err(Error::target(self.stream, early));
            }
        }
        Ok(())
    }

    /// Remove a half-written temp file after a failure.
    fn discard_current(&mut self) {
        if let Some((temp, _, _)) = self.current.take() {
            let _ = self.dir.remove(&temp.name);
        }
    }
}

impl Write for Splitter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.index >= self.segments.len() {
                return Err(io::Error::other("more bytes than the manifest records"));
            }
            self.open_current()?;
            let seg_len = self.segments[self.index].len;
            if let Some((temp, hasher, written)) = self.current.as_mut() {
                let take = ((seg_len - *written) as usize).min(rest.len());
                if let Err(e) = self.stage.write(&mut temp.file, &rest[..take]) {
                    let path = self.dir.path().join(&self.segments[self.index].name);
                    return Err(self.fail(Error::local("write", path, e)));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("walship-split-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// Two segments, the second large enough to be written directly: its
    /// bytes as (first segment, second segment).
    fn two_segments() -> (Vec<u8>, Vec<u8>, [SegmentEntry; 2]) {
        let small: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        let large: Vec<u8> = (0..(2 * direct::STAGE as u32 + 4097)).map(|i| (i % 251) as u8).collect();
        let entries = [
            SegmentEntry::identity(1, "a".into(), 0, small.len() as u64, crc32fast::hash(&small)),
            SegmentEntry::identity(
                2,
                "b".into(),
                small.len() as u64,
                large.len() as u64,
                crc32fast::hash(&large),
            ),
        ];
        (small, large, entries)
    }

    /// Feed `bytes` to a splitter in 64 KiB pieces, then end it as a
    /// download that returned `Ok`.
    fn split<'r>(
        dir: &DestDir,
        wanted: &[&'r SegmentEntry],
        bytes: &[u8],
    ) -> (Vec<Written<'r>>, Option<Error>) {
        let mut splitter = Splitter::new(dir, wanted, "s", "s/batches/1-2");
        let mut fed = Ok(());
        for piece in bytes.chunks(65536) {
            if let Err(e) = splitter.write_all(piece) {
                fed = Err(Error::local("write", dir.path(), e));
                break;
            }
        }
        splitter.end(fed)
    }

    #[test]
    fn whole_segments_are_exact_and_verified() {
        let path = scratch("whole");
        let dir = DestDir::open(&path).unwrap();
        let (small, large, entries) = two_segments();
        let wanted: Vec<&SegmentEntry> = entries.iter().collect();
        let (files, failure) = split(&dir, &wanted, &[small.clone(), large.clone()].concat());
        assert!(failure.is_none(), "{failure:?}");
        assert_eq!(files.len(), 2);
        for ((temp, _), bytes) in files.iter().zip([&small, &large]) {
            assert!(fs::read(path.join(temp.to_str().unwrap())).unwrap() == *bytes);
        }
        fs::remove_dir_all(&path).unwrap();
    }

    /// The large segment's body ends 1.5 MiB in, after a direct write: the
    /// batch fails loudly, the first segment is kept, no half file stays.
    #[test]
    fn a_large_segment_cut_short_fails_and_leaves_no_file() {
        let path = scratch("short");
        let dir = DestDir::open(&path).unwrap();
        let (small, large, entries) = two_segments();
        let wanted: Vec<&SegmentEntry> = entries.iter().collect();
        let cut = [small.as_slice(), &large[..3 * direct::STAGE / 2]].concat();
        let (files, failure) = split(&dir, &wanted, &cut);
        let failure = failure.expect("a short body fails").to_string();
        assert!(failure.contains("ended before its last recorded segment"), "{failure}");
        assert_eq!(files.len(), 1, "the verified first segment is kept");
        assert_eq!(names(&path), [files[0].0.to_str().unwrap()]);
        fs::remove_dir_all(&path).unwrap();
    }

    /// A byte damaged past the first direct write: CRC32 mismatch, no file.
    #[test]
    fn a_damaged_large_segment_fails_and_leaves_no_file() {
        let path = scratch("damaged");
        let dir = DestDir::open(&path).unwrap();
        let (small, mut large, entries) = two_segments();
        large[direct::STAGE + 10] ^= 1;
        let wanted: Vec<&SegmentEntry> = entries.iter().collect();
        let (files, failure) = split(&dir, &wanted, &[small, large].concat());
        let failure = failure.expect("a damaged segment fails").to_string();
        assert!(failure.contains("CRC32 mismatch"), "{failure}");
        assert_eq!(files.len(), 1);
        assert_eq!(names(&path), [files[0].0.to_str().unwrap()]);
        fs::remove_dir_all(&path).unwrap();
    }
}
