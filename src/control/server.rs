//! The daemon's side of the control socket: take its lock, bind it owner-
//! only, accept connections on a thread, check each client's user, read
//! one request, let the handler answer it, write the reply.
//!
//! Only the daemon holding `STATE_DIR/.walship-control.lock` serves the
//! socket: a socket file left by a daemon that was killed is replaced at
//! the next start (nobody holds the lock any more), and a second daemon on
//! the same state directory serves nothing (it warns; its streams' locks
//! already keep it from archiving the first one's streams). The socket is
//! bound under a temporary name, given mode 0600, then renamed into place,
//! so it is never reachable with wider permissions.
//!
//! Each connection gets its own thread (a snapshot request waits for its
//! job), up to [`MAX_CONNECTIONS`] at once; more are answered `refused`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{MAX_REQUEST_LEN, Outcome, Reply, Request, info_line, peer_allowed};
use crate::error::Error;
use crate::statedir::{self, ControlLock};

/// Answers one request; may send progress lines through its second argument.
pub type Handler = Arc<dyn Fn(Request, &mut dyn FnMut(&str)) -> Reply + Send + Sync>;

/// Connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 32;

/// How long to wait before accepting again after accept failed.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A served control socket; stopped (and its file removed) by [`stop`](ControlServer::stop).
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    _lock: ControlLock,
}

impl ControlServer {
    /// Serve the control socket of `state_dir` with `handler`, or return
    /// `None` (with a warning) when another daemon serves it.
    pub fn start(state_dir: &Path, handler: Handler) -> Result<Option<ControlServer>, Error> {
        let lock = match statedir::lock_control(state_dir)? {
            Ok(lock) => lock,
            Err(holder) => {
                let holder =
                    holder.map_or("another walship process".into(), |pid| format!("walship PID {pid}"));
                log::warn!(
                    "the control socket {} is served by {holder}, which uses the same state_dir; \
                     `walship snapshot` reaches only its streams",
                    statedir::control_socket(state_dir).display()
                );
                return Ok(None);
            }
        };
        let path = statedir::control_socket(state_dir);
        let listener = bind_owner_only(state_dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("walship-control".into())
                .spawn(move || accept_until_stopped(&listener, &handler, &stop))
                .map_err(|e| Error::local("start the control socket thread for", &path, e))?
        };
        log::debug!("serving the control socket {}", path.display());
        Ok(Some(ControlServer { path, stop, thread, _lock: lock }))
    }

    /// Stop accepting, wait for the accept thread, remove the socket file.
    /// Requests in flight finish on their own threads.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wake accept()
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind the socket under its temporary name, make it owner-only, and move
/// it into place over whatever an earlier daemon left (we hold the lock).
fn bind_owner_only(state_dir: &Path) -> Result<UnixListener, Error> {
    let (path, new) = (statedir::control_socket(state_dir), statedir::control_socket_new(state_dir));
    remove_left_socket(&new)?;
    let listener = UnixListener::bind(&new).map_err(|e| Error::local("bind the control socket", &new, e))?;
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::local("set owner-only permissions on", &new, e))?;
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            let _ = std::fs::remove_file(&new);
            let what = io::Error::other("something other than a socket is there; move it aside");
            return Err(Error::local("serve the control socket at", &path, what));
        }
        log::info!("replacing the control socket {} left by a daemon that is gone", path.display());
    }
    std::fs::rename(&new, &path).map_err(|e| Error::local("put the control socket in place at", &path, e))?;
    Ok(listener)
}

/// Remove a socket file an interrupted start left at `path`.
fn remove_left_socket(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| Error::local("remove the stale socket", path, e))
        }
        Ok(_) => Err(Error::local(
            "bind the control socket at",
            path,
            io::Error::other("something other than a socket is there; move it aside"),
        )),
        Err(_) => Ok(()),
    }
}

fn accept_until_stopped(listener: &UnixListener, handler: &Handler, stop: &AtomicBool) {
    let busy = Arc::new(AtomicUsize::new(0));
    let owner = effective_uid();
    for connection in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let connection = match connection {
            Ok(connection) => connection,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                log::debug!("control socket: accept failed: {e}");
                thread::sleep(ACCEPT_RETRY);
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::SeqCst);
            let reply = Reply::new(Outcome::Refused, "the daemon is answering too many requests; try again");
            let _ = writeln!(&connection, "{}", reply.to_line());
            continue;
        }
        let (handler, busy_here) = (Arc::clone(handler), Arc::clone(&busy));
        let spawned = thread::Builder::new().name("walship-control-request".into()).spawn(move || {
            serve(connection, &handler, owner);
            busy_here.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::SeqCst);
            log::error!("control socket: cannot start a thread for a request: {e}");
        }
    }
}

/// Answer one connection: read its request (first, so that even a refusal
/// reaches a client still sending), check the client's user, let the
/// handler answer.
fn serve(connection: UnixStream, handler: &Handler, owner: u32) {
    let write_line = |line: &str| {
        let _ = (&connection).write_all(format!("{line}\n").as_bytes());
    };
    let request = match read_request(&connection) {
        Ok(line) => Request::parse(&line),
        Err(e) => {
            log::debug!("control socket: no request read: {e}");
            return;
        }
    };
    match peer_uid(&connection) {
        Ok(uid) if peer_allowed(uid, owner) => {}
        Ok(uid) => {
            log::warn!(
                "control socket: refused a client running as uid {uid} (only uid {owner} and root may)"
            );
            write_line(
                &Reply::new(
                    Outcome::Refused,
                    format!("only uid {owner} and root may use this daemon's control socket"),
                )
                .to_line(),
            );
            return;
        }
        Err(e) => {
            log::warn!("control socket: cannot tell who the client is ({e}); refused");
            return;
        }
    }
    let reply = match request {
        Ok(request) => handler(request, &mut |text| write_line(&info_line(text))),
        Err(why) => Reply::new(Outcome::Usage, why),
    };
    write_line(&reply.to_line());
}

/// The request line, without its newline: at most [`MAX_REQUEST_LEN`]
/// bytes, within [`REQUEST_TIMEOUT`].
fn read_request(connection: &UnixStream) -> io::Result<String> {
    connection.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(connection.take(MAX_REQUEST_LEN as u64)).read_line(&mut line)?;
    match line.strip_suffix('\n') {
        Some(request) => Ok(request.to_string()),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "no complete request line")),
    }
}

/// The user id of the process at the other end (`SO_PEERCRED`).
pub fn peer_uid(connection: &UnixStream) -> io::Result<u32> {
    let mut credentials = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `credentials` and `len` are valid for writes and `len` holds
    // the size of the buffer, as getsockopt(SO_PEERCRED) requires.
    let result = unsafe {
        libc::getsockopt(
            connection.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &raw mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(credentials.uid)
}

/// This process's effective user id: the socket's owner.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
