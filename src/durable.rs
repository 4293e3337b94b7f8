//! The one path for durable local writes: write a temp file beside the
//! destination, fsync it, rename it into place, fsync the directory.
//!
//! After `write_atomic` returns, the file survives a power loss with either
//! its old or its new content, never a mix. Temp names start with '.', so
//! directory scans and listings skip them; a crash can leave one behind,
//! which the next write of the same name replaces.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `path` atomically and durably; `fill` writes the content.
pub fn write_atomic<T>(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<T>) -> io::Result<T> {
    let dir = parent_dir(path);
    let temp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        let value = fill(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    sync_dir(dir)?;
    result
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

/// Whether `file_name` is one of [`temp_path`]'s names (`.NAME.PID-N.tmp`):
/// a write in progress, or left by a crash. Listings hide exactly these.
pub fn is_temp_name(file_name: &str) -> bool {
    let Some(inner) = file_name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((_, unique)) = inner.rsplit_once('.') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    unique.split_once('-').is_some_and(|(pid, n)| digits(pid) && digits(n))
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
        for other in ["a.tmp", ".a.tmp", ".a.1-x.tmp", ".a.-1.tmp", "a.part", "c~", ".hidden", ".a.12-3.tmpx"]
        {
            assert!(!is_temp_name(other), "{other}");
        }
    }
}
