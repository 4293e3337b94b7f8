//! Writing files into a destination directory without ever leaving it.
//!
//! A [`DestDir`] holds the directory open and does everything relative to
//! that descriptor (`openat`, `fstatat`, `renameat2`), so no path is looked
//! up twice and no symbolic link inside the directory is ever followed:
//! temp files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` under names
//! walship picks (another one is tried if a name is taken, whatever is
//! there), and a finished file takes its final name only if that name is
//! free (`RENAME_NOREPLACE`; hard link then unlink where the filesystem
//! lacks it). Whatever occupies a name — file, directory, symlink, dangling
//! or not — is left exactly as it was.
//!
//! Temp files a killed walship left (its names only, of a process that is
//! gone, older than this one) are removed by [`DestDir::remove_stale_temps`].
//!
//! Durability is the caller's choice of when: [`DestDir::sync_filesystem`]
//! (one `syncfs(2)` for many files) and [`DestDir::sync`] (the directory's
//! entries). This module does not decide how names are chosen by a restore
//! nor check content; that is `restore`'s business.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory opened for writing files into it, by name only.
pub struct DestDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// A temp file created in a [`DestDir`], not yet under its final name.
pub struct TempFile {
    pub file: File,
    /// Its name in the directory (hidden, walship's own).
    pub name: CString,
}

impl DestDir {
    /// Open `path`, which must be a directory (it may itself be reached
    /// through a symlink: that is the caller's choice of destination).
    pub fn open(path: &Path) -> io::Result<DestDir> {
        let c_path = c_string(path.as_os_str())?;
        // SAFETY: a valid NUL-terminated path; the returned descriptor is
        // checked and then owned by `OwnedFd`.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(DestDir { path: path.to_path_buf(), fd })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether anything (of any type, a dangling symlink included) has
    /// `name` in the directory. Nothing is followed.
    pub fn is_taken(&self, name: &str) -> io::Result<bool> {
        let c_name = c_string(OsStr::new(name))?;
        // SAFETY: `stat` is plain old data that fstatat fills; the name is
        // NUL-terminated and the descriptor is open.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::fstatat(self.fd.as_raw_fd(), c_name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW)
        };
        if rc == 0 {
            return Ok(true);
        }
        match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::NotFound => Ok(false),
            e => Err(e),
        }
    }

    /// Create a new, empty temp file for the content of `final_name`. Its
    /// name is walship's (`.FINAL.PID-N.walship-tmp`); a name already taken
    /// by anything is skipped, never opened (after 1,000 taken names in a
    /// row, the `AlreadyExists` error is returned).
    pub fn create_temp(&self, final_name: &str) -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = c_string(OsStr::new(&temp_name(final_name, std::process::id(), n)))?;
            let flags = libc::O_WRONLY
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC
                | libc::O_NOCTTY;
            // SAFETY: a NUL-terminated name relative to an open directory
            // descriptor; the result is checked before it is owned.
            let fd = unsafe { libc::openat(self.fd.as_raw_fd(), name.as_ptr(), flags, 0o666) };
            if fd >= 0 {
                // SAFETY: `fd` is a fresh descriptor that nothing else owns.
                let file = unsafe { File::from_raw_fd(fd) };
                return Ok(TempFile { file, name });
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::AlreadyExists || attempts >= 1000 {
                return Err(error);
            }
        }
    }

    /// Give the temp file `temp` its final `name`, only if nothing has that
    /// name; `AlreadyExists` otherwise, and both names are left as they were.
    pub fn publish(&self, temp: &CString, name: &str) -> io::Result<()> {
        let final_name = c_string(OsStr::new(name))?;
        let dir = self.fd.as_raw_fd();
        // SAFETY: renameat2 with NUL-terminated names relative to an open
        // directory descriptor; no memory is shared.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                dir,
                temp.as_ptr(),
                dir,
                final_name.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // The kernel or the filesystem lacks RENAME_NOREPLACE: a hard
            // link refuses an existing name just the same.
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                // SAFETY: as above; flags 0 means the temp name (never a
                // symlink: we created it) is not followed either way.
                if unsafe { libc::linkat(dir, temp.as_ptr(), dir, final_name.as_ptr(), 0) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                self.remove(temp)
            }
            _ => Err(error),
        }
    }

    /// Remove the temp file `temp` (never a final name).
    pub fn remove(&self, temp: &CString) -> io::Result<()> {
        // SAFETY: a NUL-terminated name relative to an open directory.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), temp.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Remove the temp files a killed walship left here: names of
    /// [`temp_name`]'s shape only, regular files only, last modified before
    /// `older_than`, and only when the process named in them is gone (a
    /// restore running beside this one keeps its files). Returns the names
    /// removed.
    pub fn remove_stale_temps(&self, older_than: std::time::SystemTime) -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let name = entry?.file_name();
            let Some(pid) = name.to_str().and_then(temp_name_pid) else { continue };
            let c_name = c_string(&name)?;
            // SAFETY: `stat` is plain old data that fstatat fills; the name
            // is NUL-terminated and the descriptor is open.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::fstatat(self.fd.as_raw_fd(), c_name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW)
            };
            let regular = rc == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFREG;
            let modified =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(stat.st_mtime.max(0) as u64);
            if regular && modified < older_than && !process_alive(pid) {
                self.remove(&c_name)?;
                removed.push(name.to_string_lossy().into_owned());
            }
        }
        Ok(removed)
    }

    /// Make every file written so far on this directory's filesystem
    /// durable: one `syncfs(2)`, however many files. (Linux reports a
    /// write-back error of any of them here since 5.8.)
    pub fn sync_filesystem(&self) -> io::Result<()> {
        // SAFETY: syncfs on an open descriptor.
        if unsafe { libc::syncfs(self.fd.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Make the directory's entries (creations, renames) durable.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: fsync on an open descriptor.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The PID in a name of [`temp_name`]'s shape (`.FINAL.PID-N.walship-tmp`),
/// `None` for any other name.
fn temp_name_pid(name: &str) -> Option<u64> {
    crate::durable::temp_name_pid(name, TEMP_SUFFIX)
}

/// Whether a process with `pid` exists (signal 0 only checks).
fn process_alive(pid: u64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 sends nothing; it only checks the PID.
    unsafe { libc::kill(pid, 0) == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) }
}

/// What every restore temp name ends with.
const TEMP_SUFFIX: &str = ".walship-tmp";

/// The temp name for `final_name`: hidden (scans and listings skip it) and
/// recognisably walship's, unique per process and call.
pub fn temp_name(final_name: &str, pid: u32, n: u64) -> String {
    format!(".{final_name}.{pid}-{n}{TEMP_SUFFIX}")
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a file name contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_walship_temp_names_give_a_pid() {
        assert_eq!(temp_name_pid(&temp_name("data-7.log", 4242, 3)), Some(4242));
        for other in [
            ".notes.walship-tmp",
            ".x.12-.walship-tmp",
            ".x.-1.walship-tmp",
            "..12-3.walship-tmp",
            ".x.12-3.tmp",
            "x.12-3.walship-tmp",
        ] {
            assert_eq!(temp_name_pid(other), None, "{other}");
        }
    }

    #[test]
    fn stale_temps_of_gone_processes_are_removed_and_nothing_else() {
        let path = scratch("stale");
        let dir = DestDir::open(&path).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let gone = temp_name("a.log", 4_194_303, 0);
        let alive = temp_name("b.log", std::process::id(), 0);
        for name in [&gone, &alive, &".notes.walship-tmp".to_string()] {
            let file = fs::File::create(path.join(name)).unwrap();
            file.set_modified(old).unwrap();
        }
        let removed = dir.remove_stale_temps(std::time::SystemTime::now()).unwrap();
        assert_eq!(removed, vec![gone.clone()]);
        assert!(path.join(&alive).exists() && path.join(".notes.walship-tmp").exists());
        let _ = fs::remove_dir_all(&path);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("walship-dest-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn publish_refuses_any_existing_name_and_follows_nothing() {
        let dir = scratch("publish");
        let outside = dir.join("outside");
        let inside = dir.join("in");
        fs::create_dir(&inside).unwrap();
        let dest = DestDir::open(&inside).unwrap();
        symlink(&outside, inside.join("dangling")).unwrap();
        fs::write(inside.join("file"), b"old").unwrap();
        for taken in ["dangling", "file"] {
            assert!(dest.is_taken(taken).unwrap());
            let mut temp = dest.create_temp(taken).unwrap();
            temp.file.write_all(b"new").unwrap();
            let refused = dest.publish(&temp.name, taken).unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists, "{taken}");
            dest.remove(&temp.name).unwrap();
        }
        assert!(!outside.exists());
        assert!(fs::symlink_metadata(inside.join("dangling")).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(inside.join("file")).unwrap(), b"old");

        assert!(!dest.is_taken("fresh").unwrap());
        let mut temp = dest.create_temp("fresh").unwrap();
        temp.file.write_all(b"content").unwrap();
        dest.publish(&temp.name, "fresh").unwrap();
        dest.sync_filesystem().unwrap();
        dest.sync().unwrap();
        assert_eq!(fs::read(inside.join("fresh")).unwrap(), b"content");
        let mut names: Vec<String> =
            fs::read_dir(&inside).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["dangling", "file", "fresh"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_temp_name_taken_by_a_symlink_is_skipped_not_followed() {
        let dir = scratch("temp");
        let outside = dir.join("outside");
        fs::write(&outside, b"keep").unwrap();
        let inside = dir.join("in");
        fs::create_dir(&inside).unwrap();
        // Plant links at the next few names this process could pick.
        let base = {
            let probe = DestDir::open(&inside).unwrap().create_temp("x").unwrap();
            let name = probe.name.to_str().unwrap().to_string();
            fs::remove_file(inside.join(&name)).unwrap();
            name.strip_suffix(".walship-tmp").unwrap().rsplit_once('-').unwrap().1.parse::<u64>().unwrap()
        };
        for n in base + 1..base + 50 {
            symlink(&outside, inside.join(temp_name("x", std::process::id(), n))).unwrap();
        }
        let dest = DestDir::open(&inside).unwrap();
        let mut temp = dest.create_temp("x").unwrap();
        temp.file.write_all(b"mine").unwrap();
        dest.publish(&temp.name, "x").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert_eq!(fs::read(inside.join("x")).unwrap(), b"mine");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_refuses_a_file() {
        let dir = scratch("notdir");
        fs::write(dir.join("f"), b"").unwrap();
        let error = DestDir::open(&dir.join("f")).err().unwrap();
        assert_eq!(error.raw_os_error(), Some(libc::ENOTDIR));
        fs::remove_dir_all(&dir).unwrap();
    }
}
