//! Writing a restored file around the page cache: its bytes gathered in an
//! aligned buffer and written with `O_DIRECT`, [`STAGE`] bytes at a time,
//! the last partial block through the page cache.
//!
//! Why: on large segments most of a restore's own CPU went into the kernel
//! copying each byte into the page cache, allocating and accounting its
//! pages, and then writing them back (BENCHMARKS.md, "Restore from S3");
//! a direct write goes from walship's buffer to the disk. Durability is
//! unchanged: nothing counts as durable before its group's `syncfs(2)`,
//! which writes the files' metadata (sizes, extents) and flushes the
//! device's cache however the data was written.
//!
//! Files shorter than [`DIRECT_FROM`] go through the page cache (small
//! direct writes each wait for the disk; buffered ones share one sync), and
//! so does any file whose filesystem refuses `O_DIRECT`, either the flag or
//! an aligned write (`EINVAL`): from that byte on, the file is written
//! normally.
//!
//! Memory: one [`STAGE`] buffer per download that meets a large segment
//! (4 MiB for a restore's [`super::PARALLEL_GETS`] downloads). Smaller
//! buffers cost more CPU per byte (a virtio request per write on the
//! test VM); larger ones would break the 16 MiB bound on anonymous memory.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// Alignment of direct writes: buffer address, file offset and length (a
/// multiple of the logical block size of common disks, 512 or 4096).
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
pub const STAGE: usize = 1 << 20;
/// Files from this size on are written directly.
pub const DIRECT_FROM: u64 = STAGE as u64;

/// What [`Stage`] needs of a file: writes at its end and the `O_DIRECT`
/// switch (`fcntl(F_SETFL)`).
pub trait DirectFile {
    fn write_some(&mut self, bytes: &[u8]) -> io::Result<usize>;
    fn set_direct(&mut self, on: bool) -> io::Result<()>;
}

impl DirectFile for File {
    fn write_some(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write(bytes)
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        let fd = self.as_raw_fd();
        // SAFETY: fcntl on an open descriptor, no pointers involved.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The aligned buffer one download writes its files through, one file at
/// a time: [`Stage::begin`], [`Stage::write`]s, [`Stage::finish`].
#[derive(Default)]
pub struct Stage {
    /// [`STAGE`] + [`ALIGN`] bytes once a file is written directly: the
    /// aligned [`STAGE`] bytes inside are the buffer.
    storage: Vec<u8>,
    /// Bytes gathered in the buffer, not yet written.
    filled: usize,
    /// Whether the current file is being written directly.
    direct: bool,
}

impl Stage {
    /// Start a file that will hold `len` bytes: directly when that large and
    /// the filesystem takes `O_DIRECT`.
    pub fn begin(&mut self, file: &mut impl DirectFile, len: u64) {
        self.filled = 0;
        self.direct = len >= DIRECT_FROM && file.set_direct(true).is_ok();
        if self.direct && self.storage.is_empty() {
            self.storage = vec![0; STAGE + ALIGN];
        }
    }

    /// Write `bytes` after what the file holds so far (or gather them).
    pub fn write(&mut self, file: &mut impl DirectFile, mut bytes: &[u8]) -> io::Result<()> {
        if !self.direct {
            return write_all(file, bytes);
        }
        while !bytes.is_empty() {
            let filled = self.filled;
            let take = (STAGE - filled).min(bytes.len());
            self.buffer()[filled..filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == STAGE {
                self.drain(file, STAGE)?;
            }
        }
        Ok(())
    }

    /// Write what is gathered: whole blocks directly, the last partial one
    /// through the page cache. The file is then written normally.
    pub fn finish(&mut self, file: &mut impl DirectFile) -> io::Result<()> {
        if !self.direct {
            return Ok(());
        }
        self.drain(file, self.filled - self.filled % ALIGN)?;
        if self.direct {
            self.direct = false;
            file.set_direct(false)?;
            let tail = self.filled;
            self.filled = 0;
            write_all(file, &self.buffer()[..tail])?;
        }
        Ok(())
    }

    /// The aligned buffer.
    fn buffer(&mut self) -> &mut [u8] {
        let skip = self.storage.as_ptr().addr().next_multiple_of(ALIGN) - self.storage.as_ptr().addr();
        &mut self.storage[skip..skip + STAGE]
    }

    /// Write the first `len` gathered bytes (whole blocks) directly and
    /// keep the rest at the buffer's start. A refused or unaligned write
    /// ends direct writing: everything gathered is then written normally.
    fn drain(&mut self, file: &mut impl DirectFile, len: usize) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            match file.write_some(&self.buffer()[done..len]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    if done % ALIGN != 0 {
                        return self.fall_back(file, done);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return self.fall_back(file, done),
                Err(e) => return Err(e),
            }
        }
        let filled = self.filled;
        self.buffer().copy_within(len..filled, 0);
        self.filled -= len;
        Ok(())
    }

    /// Stop writing directly; write the gathered bytes from `from` on
    /// normally.
    fn fall_back(&mut self, file: &mut impl DirectFile, from: usize) -> io::Result<()> {
        self.direct = false;
        file.set_direct(false)?;
        let filled = self.filled;
        self.filled = 0;
        write_all(file, &self.buffer()[from..filled])
    }
}

fn write_all(file: &mut impl DirectFile, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match file.write_some(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that checks what the kernel would of a direct write and can
    /// refuse `O_DIRECT` or cut writes short.
    #[derive(Default)]
    struct Fake {
        bytes: Vec<u8>,
        direct: bool,
        /// Lengths of the direct writes made.
        direct_writes: Vec<usize>,
        refuse_flag: bool,
        /// Refuse direct writes (EINVAL) from this offset on.
        refuse_writes_from: Option<usize>,
        /// Write at most this many bytes per call.
        most: Option<usize>,
    }

    impl DirectFile for Fake {
        fn write_some(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let n = bytes.len().min(self.most.unwrap_or(usize::MAX));
            if self.direct {
                let aligned =
                    bytes.as_ptr().addr().is_multiple_of(ALIGN) && bytes.len().is_multiple_of(ALIGN);
                assert!(aligned && self.bytes.len().is_multiple_of(ALIGN), "unaligned direct write");
                if self.refuse_writes_from.is_some_and(|from| self.bytes.len() >= from) {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
                self.direct_writes.push(n);
            }
            self.bytes.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn set_direct(&mut self, on: bool) -> io::Result<()> {
            if on && self.refuse_flag {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            self.direct = on;
            Ok(())
        }
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Write `len` bytes in pieces of `piece` through a stage into `file`.
    fn write_through(file: &mut Fake, len: usize, piece: usize) {
        let bytes = content(len);
        let mut stage = Stage::default();
        stage.begin(file, len as u64);
        for chunk in bytes.chunks(piece) {
            stage.write(file, chunk).unwrap();
        }
        stage.finish(file).unwrap();
        assert!(!file.direct, "the file is left in normal mode");
        assert_eq!(file.bytes.len(), len);
        assert!(file.bytes == bytes, "content differs");
    }

    #[test]
    fn large_files_go_direct_in_aligned_writes_and_end_normally() {
        for (len, piece) in
            [(STAGE, 65536), (STAGE + 1, 4097), (3 * STAGE + 12345, 100_000), (5 * STAGE, STAGE)]
        {
            let mut file = Fake::default();
            write_through(&mut file, len, piece);
            let direct: usize = file.direct_writes.iter().sum();
            assert_eq!(direct, len - len % ALIGN, "{len}: all whole blocks directly");
        }
    }

    #[test]
    fn small_files_and_refusing_filesystems_are_written_normally() {
        let mut small = Fake::default();
        write_through(&mut small, STAGE - 1, 65536);
        let mut refused = Fake { refuse_flag: true, ..Fake::default() };
        write_through(&mut refused, 2 * STAGE + 5, 65536);
        assert!(small.direct_writes.is_empty() && refused.direct_writes.is_empty());
        let mut empty = Fake::default();
        write_through(&mut empty, 0, 1);
    }

    #[test]
    fn a_refused_or_short_direct_write_continues_normally() {
        let mut refused = Fake { refuse_writes_from: Some(STAGE), ..Fake::default() };
        write_through(&mut refused, 3 * STAGE + 7, 65536);
        assert_eq!(refused.direct_writes, [STAGE]);
        let mut aligned_short = Fake { most: Some(8 * ALIGN), ..Fake::default() };
        write_through(&mut aligned_short, 2 * STAGE + 100, 65536);
        assert_eq!(aligned_short.direct_writes.len(), 2 * STAGE / (8 * ALIGN));
        let mut unaligned_short = Fake { most: Some(ALIGN + 1), ..Fake::default() };
        write_through(&mut unaligned_short, 2 * STAGE, 65536);
        assert_eq!(unaligned_short.direct_writes, [ALIGN + 1]);
    }

    #[test]
    fn a_real_file_takes_direct_writes_or_falls_back() {
        let path = std::env::temp_dir().join(format!("walship-direct-{}", std::process::id()));
        let bytes = content(2 * STAGE + 4099);
        let mut file = File::create(&path).unwrap();
        let mut stage = Stage::default();
        stage.begin(&mut file, bytes.len() as u64);
        for chunk in bytes.chunks(65536) {
            stage.write(&mut file, chunk).unwrap();
        }
        stage.finish(&mut file).unwrap();
        drop(file);
        assert!(std::fs::read(&path).unwrap() == bytes);
        std::fs::remove_file(&path).unwrap();
    }
}
