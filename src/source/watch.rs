//! Change events for a stream's directory, through Linux inotify (`libc`),
//! so that a stream notices a new segment at once and need not poll.
//!
//! [`DirWatch::start`] watches one directory for entries created, written
//! and closed, renamed in or deleted, and runs one thread that blocks on
//! the events and calls `wake` when an event names a segment (any name the
//! stream's [`Naming`] does not skip), or when events were lost (the
//! kernel's queue overflowed). When the watch ends — the directory was
//! deleted, moved or unmounted — the thread calls `wake` one last time and
//! [`DirWatch::live`] turns false, so that the owner polls and watches
//! again.
//!
//! Where events cannot be trusted, [`DirWatch::start`] refuses and the
//! owner polls instead: inotify switched off (`WALSHIP_INOTIFY=off` in the
//! environment), unavailable (`inotify_init1` or `inotify_add_watch`
//! failing: no kernel support, the per-user watch or instance limit), or a
//! network or FUSE filesystem, where changes made by another host never
//! raise an event. This module decides nothing about when to poll.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::{NameMatch, Naming};

/// The environment variable that switches inotify off (`off`): every
/// stream then polls its directory.
pub const SWITCH: &str = "WALSHIP_INOTIFY";

/// The changes watched: an entry created, written and closed, renamed in,
/// or deleted; and the directory itself deleted or moved away. (Lost
/// events, unmounting and the watch's end are always reported.)
const WATCHED: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Events after which the watch no longer reports changes to the directory
/// at its path.
const ENDS_WATCH: u32 = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT;

/// Why a directory is polled instead of watched.
#[derive(Debug)]
pub enum Unwatched {
    /// `WALSHIP_INOTIFY=off`.
    SwitchedOff,
    /// A filesystem where another host's changes raise no event.
    Filesystem(&'static str),
    /// The kernel refused (no inotify, a limit reached, no such directory).
    Refused { call: &'static str, source: io::Error },
}

impl fmt::Display for Unwatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unwatched::SwitchedOff => write!(f, "inotify is switched off ({SWITCH}=off)"),
            Unwatched::Filesystem(kind) => {
                write!(f, "it is on {kind}, where changes made by another host raise no inotify event")
            }
            Unwatched::Refused { call, source } => write!(
                f,
                "{call} failed ({source}); if a limit was reached, raise \
                 fs.inotify.max_user_watches or fs.inotify.max_user_instances"
            ),
        }
    }
}

impl std::error::Error for Unwatched {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unwatched::Refused { source, .. } => Some(source),
            Unwatched::SwitchedOff | Unwatched::Filesystem(_) => None,
        }
    }
}

/// A watched directory: a thread waiting on its events. Dropping it stops
/// and joins the thread.
pub struct DirWatch {
    live: Arc<AtomicBool>,
    /// Written to, to stop the thread; its read end (shared with the
    /// thread) stays open until the thread is joined, so the write never
    /// meets a closed pipe.
    stop: (Arc<OwnedFd>, OwnedFd),
    thread: Option<JoinHandle<()>>,
}

impl DirWatch {
    /// Watch `dir`, calling `wake` when a segment (a name `naming` does not
    /// skip) appears, is closed after writing, or goes, and when events
    /// were lost. `wake` returns false when nobody listens any more, which
    /// ends the thread.
    pub fn start(
        dir: &Path,
        naming: &Naming,
        wake: impl Fn() -> bool + Send + 'static,
    ) -> Result<DirWatch, Unwatched> {
        if std::env::var_os(SWITCH).is_some_and(|v| v == "off") {
            return Err(Unwatched::SwitchedOff);
        }
        if let Some(kind) = filesystem_kind(dir).and_then(events_unreliable_on) {
            return Err(Unwatched::Filesystem(kind));
        }
        let refused = |call| move |source| Unwatched::Refused { call, source };
        let events = inotify_init().map_err(refused("inotify_init1"))?;
        add_watch(&events, dir).map_err(refused("inotify_add_watch"))?;
        let (stop_read, stop_write) = pipe().map_err(refused("pipe2"))?;
        let live = Arc::new(AtomicBool::new(true));
        let stop_read = Arc::new(stop_read);
        let (thread_live, thread_stop, naming) = (Arc::clone(&live), Arc::clone(&stop_read), naming.clone());
        let thread = std::thread::Builder::new()
            .name("walship-watch".into())
            .spawn(move || {
                read_events(&events, &thread_stop, &naming, &wake);
                thread_live.store(false, Ordering::SeqCst);
                wake();
            })
            .map_err(refused("spawn"))?;
        Ok(DirWatch { live, stop: (stop_read, stop_write), thread: Some(thread) })
    }

    /// Whether the watch still reports changes (false once the directory
    /// was deleted, moved, unmounted, or reading events failed).
    pub fn live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        // SAFETY: writes one byte from a valid buffer to a pipe we own.
        unsafe { libc::write(self.stop.1.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Block on `events` until stopped (through `stop`), calling `wake` for
/// the events that matter. Returns when the watch ended, reading failed,
/// `stop` became readable, or `wake` found nobody listening.
fn read_events(events: &OwnedFd, stop: &OwnedFd, naming: &Naming, wake: &dyn Fn() -> bool) {
    // inotify_event is 4-byte aligned; u32 storage keeps reads aligned.
    let mut buffer = [0u32; 1024];
    loop {
        let mut fds = [
            libc::pollfd { fd: events.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let bytes = std::mem::size_of_val(&buffer);
        // SAFETY: reads at most `bytes` into the buffer we own.
        let read = unsafe { libc::read(events.as_raw_fd(), buffer.as_mut_ptr().cast(), bytes) };
        let Ok(read) = usize::try_from(read) else {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        };
        // SAFETY: the first `read` bytes of the buffer were just filled.
        let filled = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), read) };
        let seen = Seen::of(filled, naming);
        if seen.ended {
            return;
        }
        if seen.wake && !wake() {
            return;
        }
    }
}

/// What a read of events says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// A segment changed, or events were lost.
    wake: bool,
    /// The watch no longer reports the directory's changes.
    ended: bool,
}

impl Seen {
    /// Read the `inotify_event` records in `bytes` (as the kernel returns
    /// them: each header followed by its NUL-padded name).
    fn of(bytes: &[u8], naming: &Naming) -> Seen {
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut seen = Seen::default();
        let mut at = 0;
        while at + header <= bytes.len() {
            // SAFETY: `header` bytes are in bounds; read_unaligned needs no
            // alignment.
            let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr().cast()) };
            let name_end = (at + header + event.len as usize).min(bytes.len());
            let name = &bytes[at + header..name_end];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            at = name_end;
            if event.mask & ENDS_WATCH != 0 {
                seen.ended = true;
            }
            if event.mask & libc::IN_Q_OVERFLOW != 0 {
                seen.wake = true;
            } else if !name.is_empty() {
                let name = String::from_utf8_lossy(name);
                seen.wake |= !matches!(naming.classify(&name), NameMatch::NotASegment);
            }
        }
        seen
    }
}

/// The kind of filesystem `dir` is on (`statfs`'s `f_type`), when known.
fn filesystem_kind(dir: &Path) -> Option<i64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `stat` is written by statfs before it is read; the path is
    // NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let done = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between targets
    (done == 0).then_some(stat.f_type as i64)
}

/// The filesystems (by `statfs` magic number) where another host, or a
/// FUSE server, can change a directory without any inotify event: their
/// names, for the log.
fn events_unreliable_on(kind: i64) -> Option<&'static str> {
    Some(match kind {
        0x6969 => "NFS",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x517B => "SMB",
        0x6573_5546 => "a FUSE filesystem",
        0x0102_1997 => "9p",
        0x00C3_6400 => "CephFS",
        0x5346_414F => "AFS",
        0x0116_1970 => "GFS2",
        0x7461_636F => "OCFS2",
        0x0BD0_0BD0 => "Lustre",
        _ => return None,
    })
}

fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the fd returned is owned from here on.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    owned(fd)
}

fn add_watch(events: &OwnedFd, dir: &Path) -> io::Result<()> {
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid inotify fd and a NUL-terminated path.
    let watch = unsafe { libc::inotify_add_watch(events.as_raw_fd(), path.as_ptr(), WATCHED) };
    if watch < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A pipe (read end, write end), close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((owned(fds[0])?, owned(fds[1])?))
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::test_support::TempDir;

    /// One `inotify_event` record with `name` padded as the kernel pads it.
    fn event(mask: u32, name: &str) -> Vec<u8> {
        let padded = if name.is_empty() { 0 } else { (name.len() + 1).div_ceil(4) * 4 };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1i32.to_ne_bytes());
        bytes.extend_from_slice(&mask.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&(padded as u32).to_ne_bytes());
        let mut name = name.as_bytes().to_vec();
        name.resize(padded, 0);
        bytes.extend_from_slice(&name);
        bytes
    }

    #[test]
    fn events_wake_for_segments_and_lost_events_and_end_with_the_watch() {
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        let seen = |events: &[Vec<u8>]| Seen::of(&events.concat(), &naming);
        let wake = Seen { wake: true, ended: false };
        assert_eq!(seen(&[event(libc::IN_MOVED_TO, "12.log")]), wake);
        assert_eq!(seen(&[event(libc::IN_CREATE, "notes.txt"), event(libc::IN_CLOSE_WRITE, "3.log")]), wake);
        assert_eq!(seen(&[event(libc::IN_DELETE, "3.log.archived")]), Seen::default());
        assert_eq!(seen(&[event(libc::IN_CREATE, "notes.txt")]), Seen::default());
        assert_eq!(seen(&[event(libc::IN_Q_OVERFLOW, "")]), wake);
        let ended = seen(&[event(libc::IN_DELETE_SELF, ""), event(libc::IN_IGNORED, "")]);
        assert_eq!(ended, Seen { wake: false, ended: true });
        // A read cut inside a header stops before it.
        let mut torn = event(libc::IN_MOVED_TO, "12.log");
        torn.truncate(10);
        assert_eq!(Seen::of(&torn, &naming), Seen::default());
    }

    #[test]
    fn network_and_fuse_filesystems_are_polled() {
        assert_eq!(events_unreliable_on(0x6969), Some("NFS"));
        assert_eq!(events_unreliable_on(0x6573_5546), Some("a FUSE filesystem"));
        assert_eq!(events_unreliable_on(0xEF53), None, "ext4");
        assert_eq!(events_unreliable_on(0x0102_1994), None, "tmpfs");
    }

    #[test]
    fn a_watch_wakes_on_a_segment_renamed_in_and_ends_when_the_directory_goes() {
        let dir = TempDir::new("watch");
        let watched = dir.0.join("d");
        std::fs::create_dir(&watched).unwrap();
        let naming = Naming::from_pattern("{seq}.log").unwrap();
        let (tx, rx) = mpsc::channel();
        let watch = DirWatch::start(&watched, &naming, move || tx.send(()).is_ok()).unwrap();
        std::fs::write(watched.join("tmp"), b"x").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "not a segment");
        std::fs::rename(watched.join("tmp"), watched.join("1.log")).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).expect("woken by the rename");
        assert!(watch.live());
        std::fs::rename(&watched, dir.0.join("moved")).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).expect("woken when the directory moved");
        for _ in 0..100 {
            if !watch.live() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!watch.live());
        drop(watch);
        let err = DirWatch::start(&watched, &naming, || true).err().unwrap();
        assert!(err.to_string().starts_with("inotify_add_watch failed"), "{err}");
    }
}
