//! `walship push -s STREAM FILE`: archive one file now and return only once
//! it is durably stored and recorded — PostgreSQL's `archive_command`.
//!
//! A segment goes through the stream's one commit path (`stream`: prepare,
//! upload, commit), by the one process holding the stream's lock, never a
//! second path. With the daemon running on the stream, `push` hands the
//! file to the stream's thread through the control socket (`push STREAM
//! PATH`, see [`crate::control`]) and waits for its durable answer. With no
//! daemon, `push` takes the lock itself (waiting while another `push` or a
//! `run --once` holds it, so concurrent pushes run one after the other),
//! opens the stream and runs a pass that seals every position up to the
//! file's and ships them as a short batch. Either way the stream's thread
//! then checks that the archive holds exactly this file at its position
//! (`Stream::confirm_archived`): the same bytes pushed again succeed, other
//! bytes under an archived name fail with both CRCs. A PostgreSQL history
//! or backup file is stored beside the log ([`crate::sidefile`]) and needs
//! no lock; a `.partial` file (which PostgreSQL also hands to
//! `archive_command` when a timeline ends) succeeds without being archived.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, StreamConfig};
use crate::control::client::{self as control_client, Answer};
use crate::control::{Outcome, Reply, Request};
use crate::error::Error;
use crate::naming::NameMatch;
use crate::sidefile;
use crate::statedir;
use crate::status::{StatusCell, StreamStatus};
use crate::stream::confirm::requested_position;
use crate::stream::{Hints, Stream};
use crate::target::{self, Target};

/// How long `push` waits for the stream's lock held by another process
/// that serves no control socket (another `push`, `run --once`) before
/// failing.
const LOCK_WAIT: Duration = Duration::from_secs(120);
/// Pause between two tries of a held lock.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// What `push` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// A PostgreSQL `.partial` file: the last, incomplete segment of a
    /// timeline that ended. Its content is in the new timeline's first
    /// segment; it is not archived, and PostgreSQL must not be blocked on it.
    IgnoredPartial,
    /// The segment is archived; the stream's archived position is at
    /// least this.
    Segment { archived: u64 },
    /// A history or backup file is stored beside the log.
    SideFile(sidefile::Stored),
}

/// Archive the file at `path` of `stream` (see the module doc).
pub fn push(config: &Config, stream: &StreamConfig, path: &Path) -> Result<Pushed, Error> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if let Some(wal) = stream.naming.wal()
        && name
            .strip_suffix(".partial")
            .is_some_and(|segment| wal.classify(segment) != NameMatch::NotASegment)
    {
        log::info!("stream {}: {name} ignored: .partial files are not archived", stream.name);
        return Ok(Pushed::IgnoredPartial);
    }
    if stream.naming.side_file(name).is_some() {
        let target = target::open(&config.global)?;
        return sidefile::push(target.as_ref(), &stream.name, name, path).map(Pushed::SideFile);
    }
    let position = requested_position(stream, path)?;
    let target = target::open(&config.global)?;
    let archived = archive_segment(config, stream, target, position, path)?;
    Ok(Pushed::Segment { archived })
}

/// Through the daemon when one serves the stream; otherwise under the
/// stream's lock (waiting up to [`LOCK_WAIT`] while another process holds
/// it), through the stream's pass.
fn archive_segment(
    config: &Config,
    stream: &StreamConfig,
    target: Arc<dyn Target>,
    position: u64,
    path: &Path,
) -> Result<u64, Error> {
    let state_dir = &config.global.state_dir;
    let absolute =
        std::path::absolute(path).map_err(|e| Error::local("find the absolute path of", path, e))?;
    let request = Request::Push { stream: stream.name.clone(), path: absolute };
    let started = Instant::now();
    let lock = loop {
        let why = match control_client::ask(state_dir, &request, &mut |info| log::info!("{info}"))? {
            // A daemon that does not run the stream: as if there were none
            // (the stream's lock tells whether another process runs it).
            Answer::Reply(reply) if reply.outcome == Outcome::NotHere => reply.message,
            Answer::Reply(reply) => return daemon_answer(reply, position),
            Answer::NoDaemon(why) => why,
        };
        match statedir::lock_stream(state_dir, &stream.name) {
            Ok(lock) => break lock,
            Err(Error::Locked { .. }) if started.elapsed() < LOCK_WAIT => std::thread::sleep(LOCK_RETRY),
            Err(Error::Locked { holder, .. }) => {
                return Err(Error::DaemonUnreachable { stream: stream.name.clone(), holder, why });
            }
            Err(error) => return Err(error),
        }
    };
    statedir::process_start();
    let status =
        Arc::new(StatusCell::new(StreamStatus { stream: stream.name.clone(), ..Default::default() }));
    let mut open = Stream::open(stream.clone(), state_dir, target, status, Arc::new(lock))?;
    if open.archived().is_none_or(|archived| archived < position) {
        let hints =
            Hints { sealed_through: Some(position), low_water_mark: None, flush_through: Some(position) };
        open.pass(false, hints, &|| false)?;
    }
    open.confirm_archived(position, path)
}

/// What the daemon's reply means for `push` (the archived position is
/// only in its message: `position` stands for it).
fn daemon_answer(reply: Reply, position: u64) -> Result<u64, Error> {
    match reply.outcome {
        Outcome::Ok => {
            log::info!("{}", reply.message);
            Ok(position)
        }
        Outcome::Usage => Err(Error::Usage(reply.message)),
        // (NotHere is taken as "no daemon" before this is asked.)
        Outcome::Failed | Outcome::Refused | Outcome::NotHere => Err(Error::PushFailed(reply.message)),
    }
}
