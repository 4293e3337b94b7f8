//! The layout of `state_dir`, in one place: every path under it is built
//! here and nowhere else.
//!
//! ```text
//! STATE_DIR/STREAM/manifest            the local journal (manifest::journal)
//! STATE_DIR/STREAM/manifest.v1         a v1 journal, kept after its upgrade to v2
//! STATE_DIR/STREAM/archived_position   the position published for the application
//! STATE_DIR/STREAM/status              the daemon's status, for `walship status`
//! STATE_DIR/STREAM/lock                held (flock) by the process archiving STREAM;
//!                                      holds its PID, for messages
//! STATE_DIR/STREAM/target              the archive the journal describes (its place)
//! STATE_DIR/STREAM/prefetch/          `fetch`'s prefetch spool (prefetch)
//! STATE_DIR/STREAM/backlog-dropped     segments deleted for backlog_limit, until
//!                                      their gap is recorded
//! STATE_DIR/STREAM/.NAME.PID-N.tmp     temp files of durable writes (durable)
//! STATE_DIR/STREAM/snapshot/job-N       a snapshot job's output, removed once uploaded
//! STATE_DIR/STREAM/snapshot/job-N.running  there while job N's command may run
//! STATE_DIR/.walship-check             `walship check`'s probe, removed at once
//! STATE_DIR/.walship-control           the daemon's control socket (`control`)
//! STATE_DIR/.walship-control.new       the socket while its permissions are set
//! STATE_DIR/.walship-control.lock      held (flock) by the daemon serving the socket
//! STATE_DIR/.walship-jobs              the last snapshot job id given out
//! STATE_DIR/.walship-jobs.lock         held (flock) while an id is given out
//! STATE_DIR/.data-budget               the data budget's count (budget)
//! STATE_DIR/.walship-fleet-cache        what `walship fleet` last read of the fleet
//!                                      index (fleet::index), to GET only changes
//! ```
//!
//! Names at the top level start with '.', which a stream name cannot, so
//! they never meet a stream's directory. Writes go through
//! [`crate::durable`]; this module only names and locks.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::durable;
use crate::error::Error;

/// A stream's own directory.
pub fn stream_dir(state_dir: &Path, stream: &str) -> PathBuf {
    state_dir.join(stream)
}

/// The stream's local journal.
pub fn journal(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("manifest")
}

/// The archived position published for the application: the position and a
/// newline, or empty with nothing archived.
pub fn position_file(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("archived_position")
}

/// The status the daemon mirrors for `walship status`.
pub fn status_file(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("status")
}

/// The stream's lock file.
pub fn lock_file(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("lock")
}

/// The place of the target whose archive the journal describes.
pub fn target_binding(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("target")
}

/// The spool `fetch` prefetches segments into.
pub fn prefetch_dir(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("prefetch")
}

/// Where compaction of the stream's remote records stands
/// (`catalog::compact`).
pub fn compaction(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("compaction")
}

/// The range of segments deleted for `backlog_limit` whose gap is not
/// recorded yet (`stream::backlog`).
pub fn backlog_dropped(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("backlog-dropped")
}

/// The data budget's count (`budget`).
pub fn data_budget(state_dir: &Path) -> PathBuf {
    state_dir.join(".data-budget")
}

/// What `walship fleet` last read of the fleet index (`fleet::index::Cache`).
pub fn fleet_cache(state_dir: &Path) -> PathBuf {
    state_dir.join(".walship-fleet-cache")
}

/// `walship check`'s write probe.
pub fn check_probe(state_dir: &Path) -> PathBuf {
    state_dir.join(".walship-check")
}

/// Where the stream's snapshot jobs write their output.
pub fn snapshot_dir(state_dir: &Path, stream: &str) -> PathBuf {
    stream_dir(state_dir, stream).join("snapshot")
}

/// The output file of snapshot job `job` (its `WALSHIP_OUTPUT`).
pub fn snapshot_output(state_dir: &Path, stream: &str, job: u64) -> PathBuf {
    snapshot_dir(state_dir, stream).join(format!("job-{job}"))
}

/// The marker that job `job`'s command may be running: a process that
/// died with it there left the command's processes to kill at its next
/// start.
pub fn snapshot_running_marker(state_dir: &Path, stream: &str, job: u64) -> PathBuf {
    snapshot_dir(state_dir, stream).join(format!("job-{job}.running"))
}

/// The daemon's control socket.
pub fn control_socket(state_dir: &Path) -> PathBuf {
    state_dir.join(".walship-control")
}

/// Where the socket is bound before it gets its permissions and its name.
pub fn control_socket_new(state_dir: &Path) -> PathBuf {
    state_dir.join(".walship-control.new")
}

/// The lock held by the daemon serving the control socket.
pub fn control_lock(state_dir: &Path) -> PathBuf {
    state_dir.join(".walship-control.lock")
}

/// The durable counter of snapshot job ids.
pub fn job_counter(state_dir: &Path) -> PathBuf {
    state_dir.join(".walship-jobs")
}

/// The lock held while a job id is given out.
pub fn job_counter_lock(state_dir: &Path) -> PathBuf {
    state_dir.join(".walship-jobs.lock")
}

/// When this process started archiving (the first call wins). Temp files
/// older than this were left by an earlier process.
pub fn process_start() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// Remove the temp files a crash left in the stream's state directory.
/// Call only while holding the stream's lock.
pub fn clean_stale_temps(state_dir: &Path, stream: &str) -> Result<usize, Error> {
    let dir = stream_dir(state_dir, stream);
    let removed = durable::remove_stale_temps(&dir, process_start())
        .map_err(|e| Error::local("remove stale temp files in", &dir, e))?;
    for path in &removed {
        log::info!("stream {stream}: removed {}, left by an interrupted write", path.display());
    }
    Ok(removed.len())
}

/// The stream's lock, held while this process archives it; released on drop.
#[derive(Debug)]
pub struct StreamLock {
    _file: File,
}

/// How often, and how far apart, a held lock is tried again before giving
/// up: `walship status` takes it for an instant to see whether a daemon runs.
const LOCK_TRIES: u32 = 3;
const LOCK_RETRY: Duration = Duration::from_millis(30);

/// Take the stream's lock so two processes never archive it at once; the
/// lock file then holds this process's PID. Creates the stream's directory.
/// A lock held elsewhere is [`Error::Locked`], naming the holder's PID.
pub fn lock_stream(state_dir: &Path, stream: &str) -> Result<StreamLock, Error> {
    let dir = stream_dir(state_dir, stream);
    durable::create_dir_all(&dir).map_err(|e| Error::local("create state directory", &dir, e))?;
    let path = lock_file(state_dir, stream);
    let file = take_lock(&path)?.map_err(|holder| Error::Locked { stream: stream.into(), path, holder })?;
    Ok(StreamLock { _file: file })
}

/// The lock of the control socket, held by the daemon that serves it;
/// released on drop.
#[derive(Debug)]
pub struct ControlLock {
    _file: File,
}

/// Take the control socket's lock (creating the state directory), or the
/// PID of the process that holds it.
pub fn lock_control(state_dir: &Path) -> Result<Result<ControlLock, Option<u32>>, Error> {
    durable::create_dir_all(state_dir).map_err(|e| Error::local("create state directory", state_dir, e))?;
    Ok(take_lock(&control_lock(state_dir))?.map(|file| ControlLock { _file: file }))
}

/// Hold `path`'s lock while `work` runs (waiting for it if another process
/// holds it): for short critical sections such as giving out a job id.
pub fn with_lock<T>(path: &Path, work: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let file = open_lock_file(path)?;
    file.lock().map_err(|e| Error::local("lock", path, e))?;
    let result = work();
    let _ = file.unlock();
    result
}

fn open_lock_file(path: &Path) -> Result<File, Error> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW) // never write through a link planted there
        .open(path)
        .map_err(|e| Error::local("open lock file", path, e))
}

/// Take the lock file at `path`, writing this process's PID into it, or
/// return the holder's PID (as far as the file tells) once a few brief
/// retries failed.
fn take_lock(path: &Path) -> Result<Result<File, Option<u32>>, Error> {
    let mut file = open_lock_file(path)?;
    let mut attempt = 1;
    loop {
        match file.try_lock() {
            Ok(()) => {
                let pid = std::process::id().to_string();
                file.set_len(0)
                    .and_then(|()| file.write_all(pid.as_bytes()))
                    .map_err(|e| Error::local("write lock file", path, e))?;
                return Ok(Ok(file));
            }
            Err(fs::TryLockError::WouldBlock) if attempt < LOCK_TRIES => {
                attempt += 1;
                std::thread::sleep(LOCK_RETRY);
            }
            Err(fs::TryLockError::WouldBlock) => return Ok(Err(read_pid(&mut file))),
            Err(fs::TryLockError::Error(e)) => return Err(Error::local("lock", path, e)),
        }
    }
}

/// Who archives the stream now, as far as its lock tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// No process holds the lock: no daemon archives the stream.
    Free,
    /// A process holds it (its PID, when the lock file tells).
    Held(Option<u32>),
}

/// Whether a process archives the stream, without creating anything. Takes
/// the lock for an instant when it is free (the daemon retries briefly).
pub fn lock_state(state_dir: &Path, stream: &str) -> io::Result<LockState> {
    let path = lock_file(state_dir, stream);
    // Never through a link, never waiting on a named pipe put there.
    let mut file =
        match File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockState::Free),
            Err(e) => return Err(e),
        };
    match file.try_lock_shared() {
        Ok(()) => Ok(LockState::Free),
        Err(fs::TryLockError::WouldBlock) => Ok(LockState::Held(read_pid(&mut file))),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    use std::io::Seek;
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_and_frees_on_drop() {
        let root = std::env::temp_dir().join(format!("walship-statedir-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        assert_eq!(lock_state(&root, "s").unwrap(), LockState::Free);
        let lock = lock_stream(&root, "s").unwrap();
        assert_eq!(lock_state(&root, "s").unwrap(), LockState::Held(Some(std::process::id())));
        match lock_stream(&root, "s") {
            Err(Error::Locked { holder, path, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
                assert_eq!(path, lock_file(&root, "s"));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(lock);
        assert_eq!(lock_state(&root, "s").unwrap(), LockState::Free);
        fs::remove_dir_all(&root).unwrap();
    }
}
