//! `fetch`: one archived segment by name, to a new file, through an
//! existing device or FIFO, or to standard output (see the parent module's
//! doc for the rules: no replacing, CRC32 before the name, written-through
//! bytes and a mismatch). Also how restore downloads batches in parallel
//! and takes them in order ([`in_order`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::dest::DestDir;
use super::read_error;
use crate::error::Error;
use crate::frames::decode;
use crate::manifest::{BatchRecord, Encoding, Record, SegmentEntry};
use crate::target::{CrcWriter, Target, TargetError};

/// Where `fetch` writes the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchDest {
    /// `-`: standard output.
    Stdout,
    /// A path: a new file, or an existing device or FIFO written through
    /// (`/dev/stdout` too, whatever stdout is).
    Path(PathBuf),
}

/// Fetch one segment by `name` into `dest`. The newest copy wins if a name
/// appears twice. Not archived → `Error::NotInArchive`. Returns its length.
pub fn fetch(
    records: &[Record],
    target: &dyn Target,
    stream: &str,
    name: &str,
    dest: &FetchDest,
) -> Result<u64, Error> {
    let found = records.iter().rev().find_map(|r| match r {
        Record::Batch(b) => b.segments.iter().find(|s| s.name == name).map(|s| (b, s)),
        Record::Gap(_) => None,
    });
    let Some((batch, seg)) = found else {
        return Err(Error::NotInArchive { stream: stream.into(), name: name.into() });
    };
    let segment = Segment { target, stream, batch, seg };
    let to_stdout = || segment.write_through(&mut io::stdout().lock(), "standard output");
    match dest {
        FetchDest::Stdout => to_stdout(),
        FetchDest::Path(path) => match open_existing(path)? {
            Existing::Nothing => segment.write_new_file(path),
            Existing::WriteThrough(mut file) => segment.write_through(&mut file, &path.display().to_string()),
            Existing::Stdout => to_stdout(),
        },
    }
}

/// What an existing DEST is, for writing.
enum Existing {
    /// Nothing has that name: a new file.
    Nothing,
    /// A device, FIFO or socket, opened: written through.
    WriteThrough(fs::File),
    /// A link to the very file that is walship's standard output
    /// (`/dev/stdout` redirected to a file): written as for `-`.
    Stdout,
}

/// What has DEST's name. An existing regular file (unless reached through a
/// link to walship's own stdout), directory or dangling symlink is refused.
fn open_existing(path: &Path) -> Result<Existing, Error> {
    let refuse = |detail: &str| Err(Error::UnsafeRestore { path: path.to_path_buf(), detail: detail.into() });
    let is_link = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(Error::local("read", path, e)),
        Ok(meta) if meta.is_file() => return refuse(EXISTING_DEST),
        Ok(meta) if meta.is_dir() => return refuse("it is a directory; DEST is the file to write"),
        Ok(meta) => meta.is_symlink(),
    };
    // A symlink, device, FIFO or socket: opened for writing, never created
    // or truncated, then checked for what it really is.
    let file = match OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return refuse("it is a symlink to nothing"),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            return refuse("it leads to a directory; DEST is the file to write");
        }
        Err(e) => return Err(Error::local("open", path, e)),
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() && is_link && is_stdout(&meta) => Ok(Existing::Stdout),
        Ok(meta) if meta.is_file() => refuse(EXISTING_DEST),
        Ok(_) => Ok(Existing::WriteThrough(file)),
        Err(e) => Err(Error::local("read", path, e)),
    }
}

/// Whether `meta` describes the file open as this process's stdout.
fn is_stdout(meta: &fs::Metadata) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let stdout = io::stdout().as_fd().try_clone_to_owned().map(fs::File::from);
    stdout.and_then(|f| f.metadata()).is_ok_and(|own| (own.dev(), own.ino()) == (meta.dev(), meta.ino()))
}

const EXISTING_DEST: &str = "it already exists; fetch never replaces a file (PostgreSQL removes %p \
                             before it runs restore_command): remove it, choose another DEST, or \
                             give - for standard output";

/// One archived segment, to write somewhere.
struct Segment<'a> {
    target: &'a dyn Target,
    stream: &'a str,
    batch: &'a BatchRecord,
    seg: &'a SegmentEntry,
}

impl Segment<'_> {
    /// Download the segment's stored bytes (one ranged GET; a zstd frame is
    /// decoded and checked on the way) into `out`, checksumming the raw
    /// bytes; returns their CRC32. Errors of `out` are reported as writing
    /// `shown`.
    fn download(&self, out: &mut dyn Write, shown: &str) -> Result<u32, Error> {
        let mut local = LocalWriter { inner: out, failure: None };
        let mut checked = CrcWriter::new(&mut local);
        let (key, range) = (&self.batch.key, Some((self.seg.offset, self.seg.stored_len)));
        let got = match self.batch.stored.encoding {
            Encoding::Identity => {
                self.target.get(key, range, &mut checked).map(|_| ()).map_err(decode::ReadError::Target)
            }
            Encoding::ZstdFrames => {
                let expected = decode::expected_of(std::slice::from_ref(self.seg));
                decode::read_frames(self.target, key, range, &expected, 1, &mut checked, None).map(|_| ())
            }
        };
        let crc = checked.hasher.finalize();
        let flushed = got.map_err(|e| match local.failure.take() {
            Some(io) => Error::local("write", shown, io),
            None => read_error(self.stream, key, e),
        });
        flushed?;
        local.inner.flush().map_err(|e| Error::local("write", shown, e))?;
        Ok(crc)
    }

    fn mismatch(&self, actual: u32) -> TargetError {
        TargetError::Checksum {
            key: format!("{} (segment {})", self.batch.key, self.seg.name),
            expected: self.seg.crc32,
            actual,
        }
    }

    /// Write through `out`: the bytes go out as they arrive.
    fn write_through(&self, out: &mut dyn Write, shown: &str) -> Result<u64, Error> {
        let actual = self.download(out, shown)?;
        if actual != self.seg.crc32 {
            return Err(Error::CorruptOutput { dest: shown.to_string(), source: self.mismatch(actual) });
        }
        Ok(self.seg.len)
    }

    /// Write a new file at `path`: temp name, verify, fsync, take the name
    /// only if still free, sync the directory.
    fn write_new_file(&self, path: &Path) -> Result<u64, Error> {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(Error::UnsafeRestore {
                path: path.to_path_buf(),
                detail: "DEST must end with a file name (UTF-8)".into(),
            });
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = DestDir::open(parent).map_err(|e| Error::local("open", parent, e))?;
        let mut temp = dir.create_temp(name).map_err(|e| Error::local("create a file in", parent, e))?;
        let written = self.download(&mut temp.file, &path.display().to_string()).and_then(|actual| {
            if actual != self.seg.crc32 {
                return Err(Error::target(self.stream, self.mismatch(actual)));
            }
            temp.file.sync_all().map_err(|e| Error::local("sync", path, e))?;
            match dir.publish(&temp.name, name) {
                Ok(()) => Ok(self.seg.len),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(Error::UnsafeRestore { path: path.to_path_buf(), detail: EXISTING_DEST.into() })
                }
                Err(e) => Err(Error::local("rename into", path, e)),
            }
        });
        if written.is_err() {
            let _ = dir.remove(&temp.name);
            return written;
        }
        dir.sync().map_err(|e| Error::local("sync", parent, e))?;
        written
    }
}

/// A writer that remembers its own failure, so that a download failing
/// because of the local side is reported as such, not as the target's.
struct LocalWriter<'a> {
    inner: &'a mut dyn Write,
    failure: Option<io::Error>,
}

impl Write for LocalWriter<'_> {
    /// On failure, keeps the error and hands the target a stand-in.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).map_err(|e| {
            let stand_in = io::Error::new(e.kind(), "the local destination refused the bytes");
            self.failure = Some(e);
            stand_in
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Downloads a restore runs at once: each one ranged GET of a batch into
/// its segments' files.
pub const PARALLEL_GETS: usize = 4;

/// Run `work` on `items` with up to `parallel` at once, never more than
/// `parallel` items ahead of the one `take` waits for, and hand each result
/// to `take` in item order on the calling thread. Once `take` says stop
/// (false), no further item starts, and the results of those already
/// started past it go to `discard`. How restore downloads batches in
/// parallel and still makes their files durable in position order.
pub(super) fn in_order<I: Sync, T: Send>(
    items: &[I],
    parallel: usize,
    work: impl Fn(&I) -> T + Sync,
    mut take: impl FnMut(&I, T) -> bool,
    discard: impl Fn(T),
) {
    use std::sync::{Condvar, Mutex, PoisonError};
    struct Shared<T> {
        /// Results by item index, until taken.
        done: Vec<Option<T>>,
        /// The next item to start, and the next to take.
        next: usize,
        taken: usize,
        stopped: bool,
    }
    let parallel = parallel.max(1);
    let shared =
        Mutex::new(Shared { done: items.iter().map(|_| None).collect(), next: 0, taken: 0, stopped: false });
    let changed = Condvar::new();
    let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
    let worker = || {
        loop {
            let index = {
                let mut state = lock();
                while !state.stopped && state.next < items.len() && state.next >= state.taken + parallel {
                    state = changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                if state.stopped || state.next >= items.len() {
                    return;
                }
                state.next += 1;
                state.next - 1
            };
            let result = work(&items[index]);
            lock().done[index] = Some(result);
            changed.notify_all();
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(items.len()) {
            scope.spawn(worker);
        }
        for (index, item) in items.iter().enumerate() {
            let result = {
                let mut state = lock();
                loop {
                    if let Some(result) = state.done[index].take() {
                        state.taken = index + 1;
                        break result;
                    }
                    state = changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
            };
            changed.notify_all();
            if !take(item, result) {
                lock().stopped = true;
                changed.notify_all();
                break;
            }
        }
    });
    // Every worker has ended: what was done and not taken is discarded.
    let leftovers = shared.into_inner().unwrap_or_else(PoisonError::into_inner).done;
    leftovers.into_iter().flatten().for_each(discard);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn results_are_taken_in_order_with_bounded_parallelism() {
        let items: Vec<u64> = (0..40).collect();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut taken = Vec::new();
        in_order(
            &items,
            4,
            |&i| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Later items finish first, so order is the taker's doing.
                std::thread::sleep(Duration::from_millis(10 - i % 10));
                running.fetch_sub(1, Ordering::SeqCst);
                i * 2
            },
            |&i, doubled| {
                assert_eq!(doubled, i * 2);
                taken.push(i);
                true
            },
            |_| panic!("nothing to discard"),
        );
        assert_eq!(taken, items);
        let most = most.load(Ordering::SeqCst);
        assert!(most > 1 && most <= 4, "{most} at once");
    }

    #[test]
    fn a_stop_starts_nothing_more_and_discards_what_ran_ahead() {
        let items: Vec<u64> = (0..100).collect();
        let started = AtomicUsize::new(0);
        let discarded = Mutex::new(Vec::new());
        let mut taken = Vec::new();
        in_order(
            &items,
            3,
            |&i| {
                started.fetch_add(1, Ordering::SeqCst);
                i
            },
            |&i, _| {
                taken.push(i);
                i < 5
            },
            |i| discarded.lock().unwrap().push(i),
        );
        assert_eq!(taken, [0, 1, 2, 3, 4, 5]);
        let discarded = discarded.into_inner().unwrap();
        assert!(discarded.iter().all(|&i| i > 5 && i <= 8), "{discarded:?}");
        assert_eq!(started.load(Ordering::SeqCst), 6 + discarded.len(), "no item started past the window");
    }
}
