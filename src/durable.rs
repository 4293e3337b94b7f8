//! The one path for durable local writes into walship's own places: write a
//! temp file beside the destination, fsync it, rename it into place, fsync
//! the directory. The state directory's files (the binding, the journal's
//! v1 upgrade and its directory), the file target's objects and the
//! metrics textfile are written here; the status and position files, which
//! only inform and are rewritten from the journal, are replaced atomically
//! without the fsyncs ([`replace_file`]); the journal's appends fsync its
//! own file (an append is not a replacement). `restore` and `fetch` write
//! into a directory the user names, so they go through `restore::dest`
//! instead: relative to that directory's descriptor, never following a
//! link, synced in groups.
//!
//! After `write_atomic` returns, the file survives a power loss with either
//! its old or its new content, never a mix. Temp names have one shape,
//! `.NAME.PID-N.tmp` ([`is_temp_name`]): they start with '.', so directory
//! scans skip them, and each is unique, so two writers never share one. A
//! crash can leave one behind; [`remove_stale_temps`] removes those at the
//! next start (only names of that shape, only files older than the process).
//!
//! Reading walship's own files goes through [`open_regular`]: whatever else
//! sits at the path (a named pipe, a directory, a device, and with
//! [`Links::Refuse`] a planted symbolic link) is an error, never waited on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Whether [`open_regular`] follows a symbolic link at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow it to a regular file (segments, which may be links by design).
    Follow,
    /// Refuse it (walship's own files: a link there was planted).
    Refuse,
}

/// Open `path` as `options` say, as a regular file or not at all: `what`
/// (e.g. "a journal") names it in the error. Never blocks on a named pipe
/// (`O_NONBLOCK`, which has no effect on a regular file).
pub fn open_regular(path: &Path, options: &mut OpenOptions, links: Links, what: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let no_follow = if links == Links::Refuse { libc::O_NOFOLLOW } else { 0 };
    let file = options.custom_flags(no_follow | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!("it is not a regular file ({what} is a file)")));
    }
    Ok(file)
}

/// Write `path` atomically and durably; `fill` writes the content.
pub fn write_atomic<T>(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<T>) -> io::Result<T> {
    let mut temp = TempFile::create(path)?;
    let value = fill(temp.file())?;
    temp.persist(true)?;
    sync_dir(parent_dir(path))?;
    Ok(value)
}

/// Replace `path` atomically but not durably: readers see its old or its
/// new content, never half of it, but a power loss may leave the old one
/// (or, on some filesystems, an empty file). For what is rewritten from
/// durable state anyway and only informs (a stream's status and published
/// position): it saves the two fsyncs a durable write waits for.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = TempFile::create(path)?;
    temp.file().write_all(bytes)?;
    temp.persist(false)
}

/// A temp file beside its destination, filled by the caller, then fsync'd
/// and renamed over the destination by [`persist`](TempFile::persist); removed
/// if dropped before (a failed `fill` leaves nothing behind). Created
/// exclusively (`O_EXCL`): a file or link already at the temp name is never
/// opened or followed.
struct TempFile {
    file: File,
    temp: PathBuf,
    dest: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Create the temp file for `dest` (named as [`is_temp_name`] says).
    fn create(dest: &Path) -> io::Result<TempFile> {
        let temp = temp_path(dest);
        let file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        Ok(TempFile { file, temp, dest: dest.to_path_buf(), persisted: false })
    }

    /// The file to fill.
    fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flush (and with `sync`, fsync) the content, then rename it over the
    /// destination. The rename is durable once the directory is synced.
    fn persist(mut self, sync: bool) -> io::Result<()> {
        self.file.flush()?;
        if sync {
            self.file.sync_all()?;
        }
        fs::rename(&self.temp, &self.dest)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Write `bytes` to `path` atomically and durably.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |file| file.write_all(bytes))
}

/// fsync a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `dir` and its parents, making each new entry durable.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent_dir(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temp name unique within this process, hidden from scans and listings.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent_dir(path).join(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Whether `file_name` is one of the temp names [`write_atomic`] uses (`.NAME.PID-N.tmp`,
/// decimal PID and N): a write in progress, or left by a crash. Listings
/// hide exactly these, and [`remove_stale_temps`] removes only these.
pub fn is_temp_name(file_name: &str) -> bool {
    temp_name_pid(file_name, ".tmp").is_some()
}

/// The PID in a temp name of the shape `.NAME.PID-N` + `suffix` (decimal
/// PID and N, NAME not empty), `None` for any other name. The one reader of
/// walship's temp names: [`write_atomic`]'s (`.tmp`) and restore's
/// (`.walship-tmp`).
pub fn temp_name_pid(file_name: &str, suffix: &str) -> Option<u64> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(suffix)?;
    let (name, unique) = inner.rsplit_once('.')?;
    let (pid, n) = unique.split_once('-')?;
    let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if name.is_empty() || !decimal(pid) || !decimal(n) {
        return None;
    }
    pid.parse().ok()
}

/// Remove the temp files of [`write_atomic`] directly in `dir` last modified
/// before `older_than` (a crash left them: a write in progress keeps its
/// file's time moving). Nothing else is touched; a missing `dir` holds none.
/// Returns the files removed.
pub fn remove_stale_temps(dir: &Path, older_than: SystemTime) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    remove_stale_temps_in(dir, older_than, false, &mut removed)?;
    Ok(removed)
}

/// [`remove_stale_temps`] in `dir` and every directory below it (not
/// through links), reading each directory once.
pub fn remove_stale_temps_in_tree(dir: &Path, older_than: SystemTime) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    remove_stale_temps_in(dir, older_than, true, &mut removed)?;
    Ok(removed)
}

fn remove_stale_temps_in(
    dir: &Path,
    older_than: SystemTime,
    tree: bool,
    removed: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut removed_here = false;
    for entry in entries {
        let entry = entry?;
        if tree && entry.file_type()?.is_dir() {
            remove_stale_temps_in(&entry.path(), older_than, tree, removed)?;
            continue;
        }
        if !entry.file_name().to_str().is_some_and(is_temp_name) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let stale = meta.modified().is_ok_and(|m| m < older_than);
        if meta.is_file() && stale {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.push(entry.path());
                    removed_here = true;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if removed_here {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leave_no_temp_files() {
        let dir = std::env::temp_dir().join(format!("walship-durable-{}", std::process::id()));
        create_dir_all(&dir.join("a/b")).unwrap();
        let path = dir.join("a/b/file");
        write_file(&path, b"one").unwrap();
        write_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let failed = write_atomic(&path, |_| Err::<(), _>(io::Error::other("boom")));
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.join("a/b")).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temp_names_are_recognized_and_nothing_else() {
        let temp = temp_path(Path::new("/archive/s/batches/0000-0001"));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(name), "{name}");
        assert!(is_temp_name(".status.123-0.tmp"));
        for other in [
            "a.tmp",
            ".a.tmp",
            ".a.1-x.tmp",
            ".a.-1.tmp",
            "a.part",
            "c~",
            ".hidden",
            ".a.12-3.tmpx",
            "status",
            "status.1-2.tmp",
            ".status.1-.tmp",
            "..1-2.tmp",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    /// Regression: a crash left `.status.*.tmp` files (and a 710 MB temp on
    /// the file target) that nothing ever removed.
    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("walship-durable-stale-{}", std::process::id()));
        create_dir_all(&dir).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        for name in [".status.1-0.tmp", "status", ".other", "keep.1-0.tmp"] {
            fs::write(dir.join(name), b"x").unwrap();
            File::options().write(true).open(dir.join(name)).unwrap().set_modified(old).unwrap();
        }
        fs::write(dir.join(".fresh.2-0.tmp"), b"in progress").unwrap();
        let started = SystemTime::now() - std::time::Duration::from_secs(60);
        let removed = remove_stale_temps(&dir, started).unwrap();
        assert_eq!(removed, vec![dir.join(".status.1-0.tmp")]);
        let mut left: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".fresh.2-0.tmp", ".other", "keep.1-0.tmp", "status"]);
        assert!(remove_stale_temps(&dir.join("missing"), started).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_temp_file_is_renamed_into_place_or_removed() {
        let dir = std::env::temp_dir().join(format!("walship-durable-excl-{}", std::process::id()));
        create_dir_all(&dir).unwrap();
        let dest = dir.join("file");
        let mut temp = TempFile::create(&dest).unwrap();
        temp.file().write_all(b"content").unwrap();
        let name = temp.temp.clone();
        assert!(is_temp_name(name.file_name().unwrap().to_str().unwrap()));
        temp.persist(true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"content");
        let dropped = TempFile::create(&dest).unwrap();
        let dropped_name = dropped.temp.clone();
        drop(dropped);
        assert!(!dropped_name.exists(), "a dropped temp file is removed");
        // Replaced without fsync: still atomic, no temp file left.
        replace_file(&dest, b"informs").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"informs");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
