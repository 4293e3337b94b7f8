//! The running archiver: one thread per stream (see `stream::worker`), each
//! reached through its mailbox, plus the library API an embedding program
//! uses: start, wake a stream (with Gitaly-style water marks), archive a
//! file now, take a snapshot now, read status and metrics, reload the
//! streams, stop. It serves the state directory's control socket
//! ([`crate::control`]) and answers its requests through the same
//! mailboxes.
//!
//! A reload restarts only the streams whose settings changed, starts new
//! ones and stops removed ones; the others keep running undisturbed. The
//! bandwidth and data budget settings apply in place, to the process-wide
//! throttle and ledger (`bandwidth`, `budget`), restarting nothing. A change
//! of the other global settings (target, state directory, intervals,
//! metrics) affects every stream: the daemon then restarts the whole
//! archiver.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::bandwidth::{self, Limit};
use crate::budget;
use crate::config::{Config, Global, StreamConfig};
use crate::control::server::{ControlServer, Handler};
use crate::control::{Outcome, Reply, Request};
use crate::error::Error;
use crate::fleet;
use crate::fleet::member::Member;
use crate::metrics;
use crate::retry::Backoff;
use crate::snapshot::{JobEvent, JobReport, JobState};
use crate::statedir::{self, StreamLock};
use crate::status::{ReplicaStatus, StatusCell, StreamStatus, unix_now};
use crate::stream::backlog;
use crate::stream::mailbox::{ArchiveReply, Message, PruneReply};
use crate::stream::snapshots::take_snapshot;
use crate::stream::worker::{JobLinks, StreamJob};
use crate::stream::{Hints, PassReport, Stream};
use crate::target::{self, Target};

/// Failed passes back off up to this many times `backoff_max` (5 s by
/// default, so minutes between passes of a stream that keeps failing).
const PASS_BACKOFF_FACTOR: u32 = 60;

/// How often `metrics_file` is rewritten.
const METRICS_FILE_INTERVAL: Duration = Duration::from_secs(15);

/// A running archiver. Dropping it stops it, as [`stop`](Archiver::stop) does.
pub struct Archiver {
    config: Config,
    target: Arc<dyn Target>,
    shared: Arc<Shared>,
    streams: Vec<StreamHandle>,
    metrics: MetricsOutputs,
    /// The fleet thread (heartbeats, elections), with `node_id` set.
    heartbeats: Option<JoinHandle<()>>,
    control: Option<ControlServer>,
}

/// What the metrics threads and the control socket read.
struct Shared {
    stop: AtomicBool,
    statuses: Mutex<Vec<Arc<StatusCell>>>,
    /// Every running stream's place in the fleet (for the fleet thread).
    members: Mutex<Vec<Arc<Member>>>,
    /// When a stream thread last went round its loop (seconds since epoch).
    heartbeat: Arc<AtomicU64>,
    /// Each running stream's mailbox, by name.
    mailboxes: Mutex<Vec<(String, Sender<Message>)>>,
}

impl Shared {
    /// Send `message` to the stream named `stream`; false if there is none
    /// (or it has ended).
    fn send(&self, stream: &str, message: Message) -> bool {
        let mailboxes = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        let mailbox = mailboxes.iter().find(|(name, _)| name == stream);
        mailbox.is_some_and(|(_, mailbox)| mailbox.send(message).is_ok())
    }

    /// The running streams' names, for messages.
    fn stream_names(&self) -> String {
        let mailboxes = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<&str> = mailboxes.iter().map(|(name, _)| name.as_str()).collect();
        if names.is_empty() { "none".into() } else { names.join(", ") }
    }

    fn statuses(&self) -> Vec<StreamStatus> {
        let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        statuses.iter().map(|s| s.get()).collect()
    }

    fn metrics_page(&self) -> String {
        let mut page = metrics::render(&self.statuses(), self.heartbeat.load(Ordering::SeqCst));
        page.push_str(&metrics::render_budget(crate::budget::usage()));
        page
    }
}

/// Threads serving `metrics_listen` and writing `metrics_file`.
#[derive(Default)]
struct MetricsOutputs {
    listener: Option<(SocketAddr, JoinHandle<()>)>,
    writer: Option<JoinHandle<()>>,
}

/// A running stream's thread and its mailbox.
struct StreamHandle {
    config: StreamConfig,
    mailbox: Sender<Message>,
    stop: Arc<AtomicBool>,
    status: Arc<StatusCell>,
    thread: JoinHandle<()>,
}

impl StreamHandle {
    /// Stop the thread after its batch in flight, and wait for it.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.mailbox.send(Message::Stop);
        let _ = self.thread.join();
    }
}

impl Archiver {
    /// Take every stream's lock and start one thread per stream. Fails when
    /// every stream is locked by another process (nothing would ever be
    /// archived); a stream locked alone is retried by its thread.
    pub fn start(config: &Config) -> Result<Archiver, Error> {
        statedir::process_start();
        let target = target::open_shared(&config.global, config.streams.len())?;
        let locks = lock_streams(config)?;
        apply_metered(&config.global)?;
        let heartbeat = Arc::new(AtomicU64::new(unix_now()));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            statuses: Mutex::default(),
            members: Mutex::default(),
            heartbeat,
            mailboxes: Mutex::default(),
        });
        let metrics = start_metrics(&config.global, &shared)?;
        let heartbeats = start_heartbeats(&config.global, &target, &shared)?;
        let mut archiver = Archiver {
            config: config.clone(),
            target,
            shared,
            streams: Vec::new(),
            metrics,
            control: None,
            heartbeats,
        };
        for (stream, lock) in config.streams.iter().zip(locks) {
            archiver.start_stream(stream, lock)?;
        }
        // Without its socket the daemon still archives; only requests miss it.
        archiver.control = ControlServer::start(&config.global.state_dir, control_handler(&archiver.shared))
            .unwrap_or_else(|error| {
                log::error!("{error}; `walship snapshot` cannot reach this daemon");
                None
            });
        Ok(archiver)
    }

    /// Start `stream`'s thread (with its lock, when already taken).
    fn start_stream(&mut self, stream: &StreamConfig, lock: Option<StreamLock>) -> Result<(), Error> {
        let global = &self.config.global;
        let job = StreamJob {
            config: stream.clone(),
            state_root: global.state_dir.clone(),
            target: Arc::clone(&self.target),
            poll_interval: global.poll_interval,
            prune_interval: global.prune_interval,
            backoff: Backoff::new(global.backoff_min, global.backoff_max.saturating_mul(PASS_BACKOFF_FACTOR)),
            lock: lock.map(Arc::new),
        };
        let (mailbox, inbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(StatusCell::new(StreamStatus {
            stream: stream.name.clone(),
            daemon_running: true,
            ..Default::default()
        }));
        let wake = mailbox.clone();
        let member = Arc::new(
            Member::new(
                &stream.name,
                Arc::clone(&status),
                stream.replicas,
                global.node_id.clone(),
                global.heartbeat_interval,
            )
            .with_waker(move || {
                let _ = wake.send(Message::Wake { low: None, high: None });
            }),
        );
        let links = JobLinks {
            mailbox: inbox,
            stop: Arc::clone(&stop),
            status: Arc::clone(&status),
            heartbeat: Arc::clone(&self.shared.heartbeat),
            member: Arc::clone(&member),
            own_mailbox: mailbox.clone(),
        };
        let thread = thread::Builder::new()
            .name(format!("walship-{}", stream.name))
            .spawn(move || job.run(links))
            .map_err(|e| Error::local("start a thread for stream", &stream.name, e))?;
        self.shared.statuses.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&status));
        let mut mailboxes = self.shared.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        mailboxes.push((stream.name.clone(), mailbox.clone()));
        self.shared.members.lock().unwrap_or_else(|p| p.into_inner()).push(member);
        self.streams.push(StreamHandle { config: stream.clone(), mailbox, stop, status, thread });
        Ok(())
    }

    fn send(&self, stream: &str, message: Message) -> bool {
        self.shared.send(stream, message)
    }

    /// Wake `stream` now (the application just sealed a segment). Returns
    /// false for an unknown stream.
    pub fn wake(&self, stream: &str) -> bool {
        self.send(stream, Message::Wake { low: None, high: None })
    }

    /// Gitaly's `NotifyNewEntries(low, high)`: the application holds
    /// positions from `low` and has sealed every one up to `high`; wake the
    /// stream. A `low` above the next position to archive records a gap.
    /// Returns false for an unknown stream.
    pub fn notify_new_entries(&self, stream: &str, low: u64, high: u64) -> bool {
        self.send(stream, Message::Wake { low: Some(low), high: Some(high) })
    }

    /// Archive the segment file `path` of `stream` now (the caller declares
    /// it sealed), with everything before it, and wait until it is durably
    /// archived and recorded. Returns the archived position.
    pub fn archive_now(&self, stream: &str, path: &Path) -> ArchiveReply {
        let (reply, answer) = mpsc::channel();
        let request = Message::ArchiveNow { path: path.to_path_buf(), reply };
        if !self.send(stream, request) {
            return Err(Arc::new(Error::Usage(format!("no running stream named {stream}"))));
        }
        answer.recv().unwrap_or_else(|_| {
            let stopped = std::io::Error::other("the stream stopped before answering");
            Err(Arc::new(Error::local("archive", path, stopped)))
        })
    }

    /// Take a snapshot of `stream` now (as `walship snapshot` does through
    /// the control socket): the stream answers on the returned channel with
    /// the job's start and then its end, or with why no job starts. `None`
    /// for an unknown stream.
    pub fn snapshot_now(&self, stream: &str) -> Option<Receiver<JobEvent>> {
        request_snapshot(&self.shared, stream)
    }

    /// Every stream's current status.
    pub fn status(&self) -> Vec<StreamStatus> {
        self.streams.iter().map(|h| h.status.get()).collect()
    }

    /// The metrics page, as served on `metrics_listen`.
    pub fn metrics(&self) -> String {
        self.shared.metrics_page()
    }

    /// Whether `new` differs from the running config only in its streams
    /// (and `log_level`, and the bandwidth and data budget settings), so
    /// [`reload_streams`](Self::reload_streams) can apply it; otherwise
    /// every stream needs a restart.
    pub fn can_reload_streams(&self, new: &Config) -> bool {
        let old = &self.config.global;
        Global { log_level: old.log_level, metered: old.metered.clone(), ..new.global.clone() } == *old
    }

    /// Apply `new`'s streams: stop the removed ones, restart the changed
    /// ones, start the added ones; the others keep running undisturbed.
    /// Requires [`can_reload_streams`](Self::can_reload_streams).
    pub fn reload_streams(&mut self, new: &Config) -> Result<(), Error> {
        debug_assert!(self.can_reload_streams(new), "global settings changed: restart instead");
        if new.global.metered != self.config.global.metered {
            apply_metered(&new.global)?;
            log::info!("reload: the new bandwidth and data budget settings apply now");
        }
        let (kept, replaced): (Vec<StreamHandle>, Vec<StreamHandle>) =
            self.streams.drain(..).partition(|h| new.stream(&h.config.name) == Some(&h.config));
        self.streams = kept;
        for handle in replaced {
            let name = handle.config.name.clone();
            self.shared.mailboxes.lock().unwrap_or_else(|p| p.into_inner()).retain(|(n, _)| *n != name);
            let status = Arc::clone(&handle.status);
            self.shared
                .statuses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|s| !Arc::ptr_eq(s, &status));
            self.shared
                .members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|m| !Arc::ptr_eq(&m.status, &status));
            handle.stop();
            log::info!("stream {name}: stopped for the reload");
        }
        for stream in &new.streams {
            if !self.streams.iter().any(|h| h.config.name == stream.name) {
                self.start_stream(stream, None)?;
            }
        }
        // Keep the order of the new config, for status and metrics.
        self.streams.sort_by_key(|h| new.streams.iter().position(|s| s.name == h.config.name));
        self.config = new.clone();
        Ok(())
    }

    /// Stop every stream and wait for the threads. The request in flight
    /// finishes or times out; nothing is retried, a multipart upload stops
    /// after its parts in flight and is aborted (or, if that fails, at the
    /// next start); a running snapshot command is killed. Nothing half-done
    /// is recorded.
    pub fn stop(self) {
        drop(self);
    }

    fn shut_down(&mut self) {
        if let Some(control) = self.control.take() {
            control.stop();
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.target.shut_down();
        bandwidth::uploads().interrupt();
        for handle in &self.streams {
            handle.stop.store(true, Ordering::SeqCst);
            let _ = handle.mailbox.send(Message::Stop);
        }
        for handle in self.streams.drain(..) {
            let _ = handle.thread.join();
        }
        self.shared.mailboxes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if let Some((address, handle)) = self.metrics.listener.take() {
            let _ = std::net::TcpStream::connect(address); // wake its accept()
            let _ = handle.join();
        }
        for handle in [self.metrics.writer.take(), self.heartbeats.take()].into_iter().flatten() {
            handle.thread().unpark();
            let _ = handle.join();
        }
        crate::budget::close();
    }
}

/// Start the fleet thread (heartbeats, elections) when `node_id` is set.
fn start_heartbeats(
    global: &Global,
    target: &Arc<dyn Target>,
    shared: &Arc<Shared>,
) -> Result<Option<JoinHandle<()>>, Error> {
    let Some(node) = global.node_id.clone() else { return Ok(None) };
    let (members, stopping) = (Arc::clone(shared), Arc::clone(shared));
    let handle = fleet::publisher::start(
        Arc::clone(target),
        node,
        global.heartbeat_interval,
        move || members.members.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        move || stopping.stop.load(Ordering::SeqCst),
    )
    .map_err(|e| Error::local("start the heartbeat publisher for", &global.state_dir, e))?;
    Ok(Some(handle))
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Ask `stream`'s thread for a snapshot job; `None` for an unknown stream.
fn request_snapshot(shared: &Shared, stream: &str) -> Option<Receiver<JobEvent>> {
    let (reply, events) = mpsc::channel();
    shared.send(stream, Message::Snapshot { reply }).then_some(events)
}

/// The control socket's requests, answered through the streams' mailboxes.
fn control_handler(shared: &Arc<Shared>) -> Handler {
    let shared = Arc::clone(shared);
    Arc::new(move |request, info| match request {
        Request::Snapshot { stream } => snapshot_reply(&shared, &stream, info),
        Request::Prune { stream, dry_run } => prune_reply(&shared, &stream, dry_run, info),
        Request::Push { stream, path } => push_reply(&shared, &stream, &path),
    })
}

/// How many lines of a prune's answer wait for the control socket at most.
const PRUNE_LINES_IN_FLIGHT: usize = 256;

/// Ask `stream`'s thread to apply retention (or plan it) and wait: each
/// line of its answer as an info line as it comes (the summary first),
/// the summary again as the reply.
fn prune_reply(shared: &Shared, stream: &str, dry_run: bool, info: &mut dyn FnMut(&str)) -> Reply {
    let (reply, answer) = mpsc::sync_channel(PRUNE_LINES_IN_FLIGHT);
    if !shared.send(stream, Message::Prune { dry_run, reply }) {
        let names = shared.stream_names();
        return Reply::new(
            Outcome::NotHere,
            format!("the daemon serving it runs no stream named {stream} (it runs: {names})"),
        );
    }
    let mut summary = None;
    loop {
        match answer.recv() {
            Ok(PruneReply::Line(line)) => {
                info(&line);
                summary = summary.or(Some(line));
            }
            Ok(PruneReply::Done(Ok(()))) => return Reply::new(Outcome::Ok, summary.unwrap_or_default()),
            Ok(PruneReply::Done(Err(why))) => {
                return Reply::new(Outcome::Failed, format!("stream {stream}: prune failed: {why}"));
            }
            Err(_) => {
                return Reply::new(
                    Outcome::Failed,
                    format!("stream {stream} stopped before its prune ended"),
                );
            }
        }
    }
}

/// Hand the file `path` to `stream`'s thread (as [`Archiver::archive_now`]
/// does) and answer once it is archived and recorded, or why not.
fn push_reply(shared: &Shared, stream: &str, path: &Path) -> Reply {
    let (reply, answer) = mpsc::channel();
    if !shared.send(stream, Message::ArchiveNow { path: path.to_path_buf(), reply }) {
        let names = shared.stream_names();
        return Reply::new(
            Outcome::NotHere,
            format!("the daemon serving it runs no stream named {stream} (it runs: {names})"),
        );
    }
    match answer.recv() {
        Ok(Ok(archived)) => Reply::new(
            Outcome::Ok,
            format!("stream {stream}: {} archived (archived position {archived})", path.display()),
        ),
        Ok(Err(error)) => {
            let outcome = if matches!(*error, Error::Usage(_)) { Outcome::Usage } else { Outcome::Failed };
            Reply::new(outcome, error.to_string())
        }
        Err(_) => Reply::new(
            Outcome::Failed,
            format!("stream {stream} stopped before archiving {}", path.display()),
        ),
    }
}

/// Ask for a snapshot job of `stream` and wait for its end.
fn snapshot_reply(shared: &Shared, stream: &str, info: &mut dyn FnMut(&str)) -> Reply {
    let Some(events) = request_snapshot(shared, stream) else {
        let names = shared.stream_names();
        return Reply::new(
            Outcome::NotHere,
            format!("the daemon serving it runs no stream named {stream} (it runs: {names})"),
        );
    };
    for event in events {
        match event {
            JobEvent::Started(report) => info(&report.to_string()),
            JobEvent::Ended(report) => {
                let outcome = if report.state == JobState::Succeeded { Outcome::Ok } else { Outcome::Failed };
                return Reply::new(outcome, report.to_string());
            }
            JobEvent::Refused(why) => return Reply::new(Outcome::Refused, why),
        }
    }
    Reply::new(Outcome::Failed, format!("stream {stream} stopped before its snapshot job ended"))
}

/// Apply the bandwidth and data budget settings to the process's upload
/// throttle and budget ledger: at start, and on a reload, in place.
fn apply_metered(global: &Global) -> Result<(), Error> {
    let metered = &global.metered;
    let limit = Limit::from_settings(metered.bandwidth_limit, metered.bandwidth_schedule.as_ref());
    bandwidth::uploads().set_limit(limit);
    bandwidth::uploads().resume();
    budget::configure(&global.state_dir, metered.data_budget)
}

/// Take each stream's lock. A stream locked by another process gets `None`
/// (its thread retries); when that is every stream, the error names each
/// lock and its holder.
fn lock_streams(config: &Config) -> Result<Vec<Option<StreamLock>>, Error> {
    let mut locks = Vec::new();
    let mut locked = Vec::new();
    for stream in &config.streams {
        match statedir::lock_stream(&config.global.state_dir, &stream.name) {
            Ok(lock) => locks.push(Some(lock)),
            Err(error @ Error::Locked { .. }) => {
                locks.push(None);
                locked.push(error);
            }
            // Reported and retried by the stream's thread.
            Err(_) => locks.push(None),
        }
    }
    if locked.len() < config.streams.len() {
        return Ok(locks);
    }
    match locked.pop() {
        Some(last) => {
            for error in &locked {
                log::error!("{error}");
            }
            Err(last)
        }
        None => Ok(locks), // no stream configured
    }
}

/// Start the metrics listener and file writer that the config asks for.
fn start_metrics(global: &Global, shared: &Arc<Shared>) -> Result<MetricsOutputs, Error> {
    let mut outputs = MetricsOutputs::default();
    if let Some(address) = &global.metrics_listen {
        let listener = metrics::bind(address)
            .map_err(|e| Error::local("listen for metrics (metrics_listen) on", address, e))?;
        let local = listener.local_addr().map_err(|e| Error::local("listen for metrics on", address, e))?;
        let shared = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name("walship-metrics".into())
            .spawn(move || {
                for connection in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(connection) = connection {
                        metrics::serve_one(connection, &shared.metrics_page());
                    }
                }
            })
            .map_err(|e| Error::local("start the metrics listener on", address, e))?;
        outputs.listener = Some((local, handle));
    }
    if let Some(path) = global.metrics_file.clone() {
        let shared = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name("walship-metrics-file".into())
            .spawn(move || write_metrics_file_until_stopped(&path, &shared))
            .map_err(|e| Error::local("start the metrics file writer for", &global.state_dir, e))?;
        outputs.writer = Some(handle);
    }
    Ok(outputs)
}

/// Rewrite `path` every [`METRICS_FILE_INTERVAL`] and once more at stop,
/// warning once per change of error.
fn write_metrics_file_until_stopped(path: &Path, shared: &Shared) {
    let mut last_error: Option<String> = None;
    loop {
        let result = metrics::write_file(path, &shared.metrics_page()).map_err(|e| e.to_string());
        if result.as_ref().err() != last_error.as_ref() {
            if let Err(e) = &result {
                log::warn!("cannot write metrics_file {}: {e}", path.display());
            }
            last_error = result.err();
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        thread::park_timeout(METRICS_FILE_INTERVAL);
    }
}

/// What `run --once` did for one stream: its pass, then the snapshot jobs
/// that were due; with `replicas = on`, who offloads (this node, or
/// another while this one stood by for the run and only followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceReport {
    pub pass: PassReport,
    pub snapshots: Vec<JobReport>,
    /// The election's outcome (`replicas = on` only).
    pub replica: Option<ReplicaStatus>,
    /// The stream's archived position after the run.
    pub archived: Option<u64>,
}

impl OnceReport {
    /// Whether this node stood by (another node, or nobody, offloads).
    pub fn stood_by(&self) -> bool {
        self.replica.as_ref().is_some_and(|r| r.offloader.as_deref() != Some(r.node.as_str()))
    }
}

/// A stream's name and how its pass went.
pub type StreamOutcome = (String, Result<OnceReport, Error>);

/// One full pass over every stream, in parallel (one thread each), short
/// final batches included, then every snapshot due, then retention: `run
/// --once`. With `node_id`, a `replicas = on` stream takes part in the
/// election first (`fleet::once`): a standby follows the offloader's
/// records instead of its pass; and every stream's heartbeat and the
/// node's fleet index are written at the end. Returns each stream's
/// outcome.
pub fn run_once(config: &Config) -> Result<Vec<StreamOutcome>, Error> {
    statedir::process_start();
    let target = target::open_shared(&config.global, config.streams.len())?;
    apply_metered(&config.global)?;
    let statuses: Vec<Arc<StatusCell>> = config
        .streams
        .iter()
        .map(|s| Arc::new(StatusCell::new(StreamStatus { stream: s.name.clone(), ..Default::default() })))
        .collect();
    let outcomes: Vec<StreamOutcome> = thread::scope(|scope| {
        let handles: Vec<_> = config
            .streams
            .iter()
            .zip(&statuses)
            .map(|(stream_config, status)| {
                let target = Arc::clone(&target);
                scope.spawn(move || {
                    let outcome = once_stream(config, stream_config, target, status);
                    if let Err(error) = &outcome {
                        status.update(|s| s.last_error = Some(error.to_string()));
                    }
                    outcome
                })
            })
            .collect();
        config
            .streams
            .iter()
            .zip(handles)
            .map(|(s, h)| (s.name.clone(), h.join().unwrap_or_else(|_| Err(panicked(&s.name)))))
            .collect()
    });
    if let Some(node) = &config.global.node_id
        && let Err(error) = fleet::once::publish_heartbeats(target.as_ref(), node, &statuses)
    {
        log::warn!("node {node}: cannot write heartbeats: {error}");
    }
    budget::close();
    Ok(outcomes)
}

/// `run --once` for one stream (see [`run_once`]).
fn once_stream(
    config: &Config,
    stream_config: &StreamConfig,
    target: Arc<dyn Target>,
    status: &Arc<StatusCell>,
) -> Result<OnceReport, Error> {
    let state_dir = &config.global.state_dir;
    let name = &stream_config.name;
    let lock = Arc::new(statedir::lock_stream(state_dir, name)?);
    let opened =
        Stream::open(stream_config.clone(), state_dir, Arc::clone(&target), Arc::clone(status), lock);
    let mut stream = opened.inspect_err(|_| {
        // The spool still fills while the stream cannot open.
        if let Err(e) = backlog::enforce_unopened(stream_config, state_dir, status) {
            log::error!("{e}");
        }
    })?;
    let mut replica = None;
    if let (Some(node), Some(replicas)) = (&config.global.node_id, stream_config.replicas) {
        // The heartbeat tells what this node's copy holds: scan first.
        stream.follow(false)?;
        let member = fleet::once::elect(target.as_ref(), &config.global, node, replicas, status)
            .map_err(|e| Error::target(name, e))?;
        replica = status.get().replica;
        if !member.may_upload() {
            let pass = stream.follow(true)?;
            return Ok(OnceReport { pass, snapshots: Vec::new(), replica, archived: stream.archived() });
        }
        // Where the last offloader's compaction stands, as a takeover does.
        stream.take_over()?;
    }
    let pass = stream.pass(true, Hints::default(), &|| false)?;
    let snapshots = take_due_snapshots(&mut stream, state_dir)?;
    stream.apply_retention(&|| false)?;
    Ok(OnceReport { pass, snapshots, replica, archived: stream.archived() })
}

/// Take the snapshots due now, one after the other, until none is due or
/// one fails (its report is the last).
fn take_due_snapshots(stream: &mut Stream, state_dir: &Path) -> Result<Vec<JobReport>, Error> {
    let mut reports = Vec::new();
    let interval = stream.config().snapshot_interval;
    if interval == 0 {
        return Ok(reports);
    }
    while let Some(position) =
        stream.committed().and_then(|c| crate::plan::snapshot_due(stream.last_snapshot(), c, interval))
    {
        crate::snapshot::admit(stream.name(), None, stream.snapshot_count())
            .map_err(|refusal| Error::Snapshot(refusal.to_string()))?;
        let report = take_snapshot(stream, state_dir, position, &|| false)?;
        let failed = report.state != JobState::Succeeded;
        reports.push(report);
        if failed {
            break;
        }
    }
    Ok(reports)
}

fn panicked(stream: &str) -> Error {
    Error::local(
        "archive stream",
        stream,
        std::io::Error::other("its thread panicked; this is a bug, please report it"),
    )
}
