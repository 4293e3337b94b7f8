//! The `file://` target: objects are files under a root directory, keys are
//! relative paths. Every write goes through [`crate::durable`] (temp file,
//! fsync, rename, directory fsync), so an object is either absent or whole;
//! the copy starts each chunk's writeback as it goes (`sync_file_range`),
//! so that the fsync finds little left to write.
//!
//! Upload bytes are paced and counted (`bandwidth`, `budget`) as they
//! are written, downloads as they are read.
//!
//! The root must already exist: creating it would silently archive onto the
//! root filesystem when the archive volume is not mounted.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{DatedListing, DatedObject, ObjectInfo, Target, TargetError, Upload};
use crate::durable;
use smallest::{KeyTooLong, Smallest};

mod smallest;

/// Bytes copied into place before the kernel is asked to start writing
/// them to disk, so that the fsync at the end finds little left to write.
const WRITE_CHUNK: u64 = 8 << 20;

/// Keys per page of a paged listing ([`Target::list_pages`]): a multiple
/// of S3's 1,000, so that `scripts/bench` counts the LIST requests S3 would
/// take from the trace lines.
const LIST_PAGE_KEYS: usize = 4_000;

/// Bytes of keys one walk of a directory holds for a paged listing: about
/// 77,000 batch keys (each walk hands out 58,000 to 77,000 of them, so
/// 1,000,000 objects take 13 to 18 walks). 4 MiB took 12 walks but
/// brought a rebuild's peak to 14.3 MiB of the 16 MiB budget (BENCHMARKS.md).
const LIST_WALK_BYTES: usize = 3 << 20;

/// Bytes checksummed and then written in one `write` call: small enough to
/// stay in the CPU's cache between the two, so the segment's bytes are
/// read from memory once, not twice.
const CACHED_SLICE: usize = 256 << 10;

/// Objects stored as files under `root`.
pub struct FileTarget {
    root: PathBuf,
}

impl FileTarget {
    /// A target rooted at `root` (checked when used, not here).
    pub fn new(root: PathBuf) -> FileTarget {
        FileTarget { root }
    }

    /// The file holding `key`, refusing keys that could leave the root.
    fn path_of(&self, op: &str, key: &str) -> Result<PathBuf, TargetError> {
        let safe = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        if !safe {
            return Err(TargetError::Fatal {
                op: op.into(),
                key: key.into(),
                detail: "key is not a plain relative path".into(),
                fix: "this is a bug in walship; please report it".into(),
            });
        }
        Ok(self.root.join(key))
    }

    fn check_root(&self) -> Result<(), TargetError> {
        let (detail, fix) = match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                ("is not a directory".to_string(), "point `target` at a directory, or move the file away")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                ("does not exist".to_string(), "create it, or mount the archive volume there")
            }
            Err(e) => (format!("cannot be read: {e}"), "check its owner and permissions"),
        };
        Err(TargetError::Unusable {
            detail: format!("target directory {} {detail}", self.root.display()),
            fix: fix.into(),
        })
    }

    /// [`Target::list_pages`] with pages of `page_keys` keys, from walks
    /// of the directory that hold at most `walk_bytes` of keys each.
    fn list_pages_of(
        &self,
        walk_bytes: usize,
        page_keys: usize,
        prefix: &str,
        start_after: Option<&str>,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> bool,
    ) -> Result<(), TargetError> {
        self.check_root()?;
        let dir_part = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut after = start_after.map(str::to_owned);
        let mut page = Vec::with_capacity(page_keys);
        let mut visited = false;
        // Only the part after the prefix is held: every kept key has it.
        let mut smallest = Smallest::new(walk_bytes);
        loop {
            smallest.clear();
            let mut too_long = None;
            walk_names(&self.root, dir_part, &mut |key: &str| {
                let wanted = key.starts_with(prefix) && after.as_deref().is_none_or(|after| key > after);
                if wanted && let Err(error) = smallest.offer(&key[prefix.len()..]) {
                    too_long.get_or_insert(error);
                }
            })
            .map_err(|e| io_error("list", prefix, &self.root, e))?;
            if let Some(KeyTooLong(len)) = too_long {
                let error = io::Error::other(format!("a key of {len} bytes is too long to list"));
                return Err(io_error("list", prefix, &self.root, error));
            }
            let complete = smallest.sort();
            log::debug!("file target: walked {dir_part}/ for {prefix}: {} keys kept", smallest.len());
            for rest in smallest.iter() {
                let key = format!("{prefix}{rest}");
                let path = self.root.join(&key);
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_file() => {
                        page.push(ObjectInfo { key, size: meta.len(), crc32: None })
                    }
                    Ok(_) => {}
                    // Deleted since the walk: it is not listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("list", &key, &path, e)),
                }
                if page.len() == page_keys {
                    visited = true;
                    log::debug!("file target: LIST {prefix}: {} keys", page.len());
                    if !visit(std::mem::replace(&mut page, Vec::with_capacity(page_keys))) {
                        return Ok(());
                    }
                }
            }
            if complete {
                break;
            }
            // Not complete: some key was dropped, so one was kept.
            after = smallest.last().map(|last| format!("{prefix}{last}"));
        }
        if !page.is_empty() || !visited {
            log::debug!("file target: LIST {prefix}: {} keys", page.len());
            visit(page);
        }
        Ok(())
    }
}

/// Map an I/O error to the target error contract, with a fix for the
/// conditions an operator must resolve.
fn io_error(op: &str, key: &str, path: &Path, err: io::Error) -> TargetError {
    let fix = match err.kind() {
        io::ErrorKind::NotFound => return TargetError::NotFound { key: key.into() },
        io::ErrorKind::PermissionDenied => "give walship's user write access to it",
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "free space on that filesystem",
        io::ErrorKind::ReadOnlyFilesystem => "remount it read-write",
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            return TargetError::Transient {
                op: op.into(),
                key: key.into(),
                detail: format!("{}: {err}", path.display()),
            };
        }
        _ => "check the filesystem holding the archive",
    };
    TargetError::Fatal {
        op: op.into(),
        key: key.into(),
        detail: format!("{}: {err}", path.display()),
        fix: fix.into(),
    }
}

impl Target for FileTarget {
    fn describe(&self) -> String {
        self.place()
    }

    fn place(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
        log::debug!("file target: PUT {key}");
        self.check_root()?;
        let path = self.path_of("put", key)?;
        let dir = path.parent().unwrap_or(&self.root);
        durable::create_dir_all(dir).map_err(|e| io_error("put", key, dir, e))?;
        let written_crc = durable::write_atomic(&path, |file| copy_checked(body, file))
            .map_err(|e| io_error("put", key, &path, e))?;
        match written_crc {
            Ok(()) => Ok(()),
            Err(actual) => {
                // The source changed between checksumming and writing; what
                // was stored does not match what we claim. Take it back.
                let _ = fs::remove_file(&path);
                Err(TargetError::Checksum { key: key.into(), expected: body.crc32, actual })
            }
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
        log::debug!("file target: HEAD {key}");
        let path = self.path_of("head", key)?;
        let file = match open_object(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("head", key, &path, e)),
        };
        let (size, crc32) = crc_of_file(file).map_err(|e| io_error("head", key, &path, e))?;
        Ok(Some(ObjectInfo { key: key.into(), size, crc32: Some(crc32) }))
    }

    fn get(&self, key: &str, range: Option<(u64, u64)>, out: &mut dyn Write) -> Result<u64, TargetError> {
        log::debug!("file target: GET {key}");
        let path = self.path_of("get", key)?;
        let err = |e| io_error("get", key, &path, e);
        let mut file = open_object(&path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        let (offset, len) = range.unwrap_or((0, size));
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(TargetError::Fatal {
                op: "get".into(),
                key: key.into(),
                detail: format!("range {offset}+{len} is beyond the object's {size} bytes"),
                fix: "the archive and its manifest disagree; run `walship verify`".into(),
            });
        }
        file.seek(SeekFrom::Start(offset)).map_err(err)?;
        let mut paced = crate::bandwidth::PacedWriter { inner: out };
        let copied = io::copy(&mut file.take(len), &mut paced).map_err(err)?;
        Ok(copied)
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError> {
        self.check_root()?;
        // Walk only the directory the prefix names, not the whole archive.
        let dir_part = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let mut found = Vec::new();
        walk(&self.root, dir_part, &mut found).map_err(|e| io_error("list", prefix, &self.root, e))?;
        found.retain(|o| o.key.starts_with(prefix) && start_after.is_none_or(|after| o.key.as_str() > after));
        found.sort_by(|a, b| a.key.cmp(&b.key));
        // Counted by `scripts/bench` as the pages an S3 listing would take.
        log::debug!("file target: LIST {prefix}: {} keys", found.len());
        Ok(found)
    }

    /// A page at a time, from walks of the prefix's directory that each
    /// keep the smallest keys after the last walk's, as many as fit in
    /// [`LIST_WALK_BYTES`] (`smallest`), and stat only those: memory holds
    /// a walk's keys and a page, not a long archive's listing, at the cost
    /// of one directory read per walk.
    fn list_pages(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> bool,
    ) -> Result<(), TargetError> {
        self.list_pages_of(LIST_WALK_BYTES, LIST_PAGE_KEYS, prefix, start_after, visit)
    }

    fn list_dated(&self, prefix: &str) -> Result<DatedListing, TargetError> {
        let listed = self.list(prefix, None)?;
        let mut objects = Vec::with_capacity(listed.len());
        for object in listed {
            let path = self.path_of("list", &object.key)?;
            let modified = match fs::metadata(&path).and_then(|meta| meta.modified()) {
                Ok(modified) => modified,
                // Deleted since the listing: it is not listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("list", &object.key, &path, e)),
            };
            objects.push(DatedObject { key: object.key, size: object.size, modified, etag: None });
        }
        Ok(DatedListing { objects, store_now: SystemTime::now() })
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        self.check_root()?;
        let dir = match prefix.trim_end_matches('/') {
            "" => self.root.clone(),
            inner => self.path_of("list", inner)?,
        };
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", prefix, &dir, e)),
        };
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", prefix, &dir, e))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
                dirs.push(name.to_string());
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    fn delete(&self, keys: &[String]) -> Result<(), TargetError> {
        log::debug!("file target: DELETE {} keys", keys.len());
        // Each directory a file left is synced once, after all the removals
        // (compaction deletes a thousand record objects of one directory).
        let mut dirs: std::collections::BTreeMap<PathBuf, &str> = std::collections::BTreeMap::new();
        for key in keys {
            let path = self.path_of("delete", key)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("delete", key, &path, e)),
            }
            dirs.entry(path.parent().unwrap_or(&self.root).to_path_buf()).or_insert(key);
        }
        for (dir, key) in dirs {
            durable::sync_dir(&dir).map_err(|e| io_error("delete", key, &dir, e))?;
        }
        Ok(())
    }

    fn clean_stale_temps(&self, prefix: &str, older_than: SystemTime) -> Result<usize, TargetError> {
        let dir = self.path_of("clean", prefix.trim_end_matches('/'))?;
        durable::remove_stale_temps_in_tree(&dir, older_than)
            .map(|removed| removed.len())
            .map_err(|e| io_error("clean", prefix, &dir, e))
    }

    fn check(&self) -> Result<(), TargetError> {
        self.check_root()?;
        const PROBE: &str = ".walship-check";
        let probe = self.root.join(PROBE);
        durable::write_file(&probe, b"walship check\n").map_err(|e| io_error("check", PROBE, &probe, e))?;
        fs::remove_file(&probe).map_err(|e| io_error("check", PROBE, &probe, e))
    }
}

/// Copy the upload into `file` in chunks, computing the CRC32 on the way
/// and starting each chunk's writeback. The outer error is I/O; the inner
/// one carries the CRC actually written when it differs from the one
/// promised.
fn copy_checked(body: &Upload<'_>, file: &mut File) -> io::Result<Result<(), u32>> {
    let mut hasher = crc32fast::Hasher::new();
    let mut offset = 0;
    let mut buffer = Vec::new();
    while offset < body.size {
        let len = crate::bandwidth::uploads().chunk_len(WRITE_CHUNK as usize) as u64;
        let len = len.min(body.size - offset);
        crate::bandwidth::pace_upload(len as usize)?;
        for slice in body.part(offset, len, &mut buffer)? {
            for cached in slice.chunks(CACHED_SLICE) {
                hasher.update(cached);
                file.write_all(cached)?;
            }
        }
        start_writeback(file, offset, len);
        offset += len;
    }
    let actual = hasher.finalize();
    Ok(if actual == body.crc32 { Ok(()) } else { Err(actual) })
}

/// Ask the kernel to start writing `len` bytes at `offset` of `file` to
/// disk without waiting (`sync_file_range`): the device works while the
/// next chunk is copied. Only a hint: durability still comes from the fsync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: a valid descriptor; the call only schedules writeback.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Size and CRC32 of a whole file, read in chunks.
fn crc_of_file(mut file: File) -> io::Result<(u64, u32)> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Open a stored object for reading. Whatever else sits at its path (a
/// named pipe, a directory, a device) is refused, never waited on.
fn open_object(path: &Path) -> io::Result<File> {
    durable::open_regular(path, File::options().read(true), durable::Links::Follow, "an object")
}

/// Hand the key of every object file under `root/rel` to `found` (keys
/// relative to `root`, in directory order), as [`walk`] finds them, but
/// without holding them or reading their metadata (the entry's type, from
/// the directory itself where the filesystem gives it).
fn walk_names(root: &Path, rel: &str, found: &mut dyn FnMut(&str)) -> io::Result<()> {
    let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut key = String::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else { continue };
        if durable::is_temp_name(name) {
            continue;
        }
        key.clear();
        if !rel.is_empty() {
            key.push_str(rel);
            key.push('/');
        }
        key.push_str(name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk_names(root, &key, found)?;
        } else if kind.is_file() {
            found(&key);
        }
    }
    Ok(())
}

/// Collect every object file under `root/rel` into `found`, keys relative
/// to `root`. Only the temp files of writes in progress (or left by a
/// crash) are skipped: every other name is a key. A missing directory is
/// empty.
fn walk(root: &Path, rel: &str, found: &mut Vec<ObjectInfo>) -> io::Result<()> {
    let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if durable::is_temp_name(&name) {
            continue;
        }
        let key = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Deleted since the directory was read (a compaction step of
            // another process folded it): not listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            walk(root, &key, found)?;
        } else if meta.is_file() {
            found.push(ObjectInfo { key, size: meta.len(), crc32: None });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_hides_only_in_flight_temp_files() {
        let root = std::env::temp_dir().join(format!("walship-fs-list-{}", std::process::id()));
        fs::create_dir_all(root.join("s")).unwrap();
        fs::write(root.join("s/.0001.4242-7.tmp"), b"half written").unwrap();
        fs::write(root.join("s/0001.tmp"), b"a key").unwrap();
        let target = FileTarget::new(root.clone());
        let keys: Vec<String> = target.list("s/", None).unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["s/0001.tmp"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn paged_listing_is_the_listing_in_pages() {
        let root = std::env::temp_dir().join(format!("walship-fs-pages-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("s/batches/sub")).unwrap();
        for i in (0..50).rev() {
            fs::write(root.join(format!("s/batches/{i:04}")), vec![0u8; i]).unwrap();
        }
        fs::write(root.join("s/batches/sub/0025x"), b"nested").unwrap();
        fs::write(root.join("s/batches/.0007.99-1.tmp"), b"half written").unwrap();
        fs::write(root.join("s/other"), b"outside the prefix").unwrap();
        let target = FileTarget::new(root.clone());
        // Walks that hold 1 key (each walk then keeps one), a few, or all.
        let cases = [(None, 1, 7), (None, 100, 7), (None, 1 << 20, 7), (None, 100, 51), (None, 1 << 20, 52)];
        for (after, walk_bytes, page_keys) in cases.into_iter().chain([(Some("s/batches/0030"), 60, 4)]) {
            let whole = target.list("s/batches/", after).unwrap();
            let mut pages = Vec::new();
            target
                .list_pages_of(walk_bytes, page_keys, "s/batches/", after, &mut |page| {
                    assert!(page.len() <= page_keys);
                    pages.push(page);
                    true
                })
                .unwrap();
            let case = format!("{after:?}, walks of {walk_bytes} bytes, pages of {page_keys}");
            assert_eq!(pages.concat(), whole, "{case}");
            assert!(
                pages[..pages.len() - 1].iter().all(|page| page.len() == page_keys),
                "{case}: full pages"
            );
        }
        let mut first = Vec::new();
        target
            .list_pages_of(100, 7, "s/batches/", None, &mut |page| {
                first.extend(page);
                false
            })
            .unwrap();
        assert_eq!(first.len(), 7, "the listing stops when the visitor does");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_object_deleted_after_the_walk_is_not_listed() {
        let root = std::env::temp_dir().join(format!("walship-fs-gone-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("s")).unwrap();
        for i in 0..10 {
            fs::write(root.join(format!("s/{i:02}")), b"x").unwrap();
        }
        let target = FileTarget::new(root.clone());
        // One walk holds every key; the first page's visitor deletes a key
        // of the second page before it is stat'ed.
        let mut listed = Vec::new();
        target
            .list_pages_of(1 << 20, 3, "s/", None, &mut |page| {
                if listed.is_empty() {
                    fs::remove_file(root.join("s/04")).unwrap();
                }
                listed.extend(page.into_iter().map(|o| o.key));
                true
            })
            .unwrap();
        let expected: Vec<String> = [0, 1, 2, 3, 5, 6, 7, 8, 9].iter().map(|i| format!("s/{i:02}")).collect();
        assert_eq!(listed, expected);
        fs::remove_dir_all(&root).unwrap();
    }

    /// Pieces of uneven sizes around the cached slice and the write chunk,
    /// so the copy crosses every boundary it has.
    fn uneven_pieces() -> Vec<Vec<u8>> {
        let sizes = [1, CACHED_SLICE - 1, CACHED_SLICE + 3, 0, WRITE_CHUNK as usize + 17, 5];
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (j.wrapping_mul(31) ^ i) as u8).collect())
            .collect()
    }

    #[test]
    fn a_put_stores_the_exact_concatenation_and_checks_its_crc() {
        let root = std::env::temp_dir().join(format!("walship-fs-put-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let target = FileTarget::new(root.clone());
        let owned = uneven_pieces();
        let pieces: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let whole = owned.concat();
        let crc = crc32fast::hash(&whole);
        target.put("s/whole", &Upload::pieces(&pieces, whole.len() as u64, crc)).unwrap();
        assert!(fs::read(root.join("s/whole")).unwrap() == whole, "stored bytes differ");

        // A CRC that the bytes do not make: refused, and nothing left at the key.
        let wrong = Upload::pieces(&pieces, whole.len() as u64, crc ^ 1);
        match target.put("s/wrong", &wrong) {
            Err(TargetError::Checksum { expected, actual, .. }) => {
                assert_eq!((expected, actual), (crc ^ 1, crc))
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
        assert!(!root.join("s/wrong").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
