//! A stream's thread: wait for mail or the poll interval, run a pass, back
//! off after a failure, answer "archive this file now" requests once their
//! file is committed, start and record snapshot jobs (`snapshots`), and
//! apply retention every `prune_interval` and on request (`retention`).
//!
//! The mailbox is the thread's one wait point. While the stream's directory
//! is watched (`source::watch`), its changes arrive there as `Wake` mail
//! and the thread polls only while segments wait on time (to seal, or to
//! fill a batch) and otherwise once every `WATCHED_POLL`; where the
//! directory cannot be watched, it polls every `poll_interval`, and tries
//! to watch it again before each pass. A standby of a replicated stream
//! also wakes when the offloader's records are due to be followed (once
//! per heartbeat interval), and its fleet thread wakes it when it is
//! elected or steps down.
//!
//! Failures never end the thread (retrying never gives up on data), except
//! a conflict — different content already archived at a position — which
//! parks the stream loudly until an operator intervenes. Each error is
//! logged once when it first appears and once when it clears.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::Duration;

use super::backlog;
use super::confirm::requested_position;
use super::mailbox::{ArchiveReply, Message, PruneReply};
use super::retention::PruneSchedule;
use super::snapshots::SnapshotJobs;
use super::{Hints, PassReport, Stream};
use crate::config::StreamConfig;
use crate::error::Error;
use crate::fleet::member::Member;
use crate::manifest::SnapshotRecord;
use crate::retry::Backoff;
use crate::snapshot::JobEvent;
use crate::source::watch::DirWatch;
use crate::statedir::{self, StreamLock};
use crate::status::{StatusCell, unix_now};
use crate::target::Target;

/// Why a standby of a replicated stream (`replicas = on`, another node
/// elected) answers no snapshot or prune request.
const STANDBY: &str = "this node stands by for the replicated stream: its elected offloader takes \
                       snapshots and prunes";

/// Everything one stream's thread owns.
pub struct StreamJob {
    pub config: StreamConfig,
    pub state_root: PathBuf,
    pub target: Arc<dyn Target>,
    pub poll_interval: Duration,
    /// How often retention applies (`prune_interval`).
    pub prune_interval: Duration,
    /// Between failed passes, and (a copy) between failed scheduled
    /// snapshot jobs.
    pub backoff: Backoff,
    /// The stream's lock, once taken (by the starter, or by the thread);
    /// held until the thread ends.
    pub lock: Option<Arc<StreamLock>>,
}

/// What the thread shares with the outside.
pub struct JobLinks {
    pub mailbox: Receiver<Message>,
    /// The sending end of the same mailbox, for the stream's snapshot jobs
    /// to report their end.
    pub own_mailbox: Sender<Message>,
    /// Set (with a `Stop` message) to stop between batches.
    pub stop: Arc<AtomicBool>,
    pub status: Arc<StatusCell>,
    /// When a stream thread last went round its loop (seconds since epoch).
    pub heartbeat: Arc<AtomicU64>,
    /// The stream's place in the fleet: with `replicas = on`, whether this
    /// node is the elected offloader or a standby.
    pub member: Arc<Member>,
}

/// An "archive this file now" request waiting for its commit.
struct Request {
    position: u64,
    path: PathBuf,
    reply: Sender<ArchiveReply>,
}

/// The thread's state between passes.
struct Inbox {
    hints: Hints,
    requests: Vec<Request>,
    /// `walship snapshot` requests, answered after the next pass.
    snapshot_requests: Vec<Sender<JobEvent>>,
    /// `walship prune` requests, answered after the next pass.
    prune_requests: Vec<(bool, SyncSender<PruneReply>)>,
    /// Snapshot jobs that ended, recorded once the stream is open.
    snapshots_finished: Vec<(u64, Result<SnapshotRecord, String>)>,
    stop: bool,
}

impl StreamJob {
    /// The thread's body: until stopped, pass, then wait for mail or the
    /// poll interval (or the backoff delay after a failure).
    pub fn run(mut self, links: JobLinks) {
        let name = self.config.name.clone();
        log::info!("stream {name}: started");
        let stopped = || links.stop.load(Ordering::SeqCst);
        let mut inbox = Inbox {
            hints: Hints::default(),
            requests: Vec::new(),
            snapshot_requests: Vec::new(),
            prune_requests: Vec::new(),
            snapshots_finished: Vec::new(),
            stop: false,
        };
        let mut stream: Option<Stream> = None;
        let mut snapshots = SnapshotJobs::new(
            self.state_root.clone(),
            Arc::clone(&self.target),
            links.own_mailbox.clone(),
            self.backoff.clone(),
        );
        let mut last_error: Option<String> = None;
        let mut watching = Watching::default();
        let mut prunes = PruneSchedule::new(self.prune_interval, Arc::clone(&links.stop));
        while !stopped() && !inbox.stop {
            // Watched before the pass reads the directory, so nothing that
            // arrives after its read goes unnoticed.
            watching.ensure(&self.config, &links.own_mailbox, self.poll_interval);
            let result = self.attempt(&mut stream, last_error.is_some(), inbox.hints, &links, &stopped);
            let delay = match result {
                Ok(report) => {
                    if last_error.take().is_some() && !stopped() {
                        log::info!("stream {name}: recovered; archiving again");
                    }
                    self.backoff.succeeded();
                    self.set_error(&links, None);
                    let held = links.status.get().held;
                    inbox.answer(stream.as_ref(), stopped(), held.as_deref());
                    if let Some(open) = stream.as_mut().filter(|_| !stopped() && links.member.may_upload()) {
                        prunes.run_if_due(open);
                    }
                    // Nor past the next prune.
                    // Compaction left for later comes back at the poll interval.
                    // A standby of a replicated stream wakes to follow the
                    // offloader's records when due (its fleet thread wakes it
                    // when it is elected).
                    let watched = watching.live() && !report.compacting;
                    let idle = idle_delay(self.poll_interval, watched, report.waiting);
                    let member = &links.member;
                    let standby = (!member.may_upload()).then(|| member.follow_in());
                    next_wait(idle, self.poll_interval, prunes.due_in(), standby)
                }
                Err(error) if stopped() => {
                    log::info!(
                        "stream {name}: stopped in the middle of a batch ({error}); it resumes at the next start"
                    );
                    inbox.fail(&Arc::new(error));
                    break;
                }
                Err(error) => {
                    let error = Arc::new(error);
                    inbox.fail(&error);
                    let message = error.to_string();
                    if last_error.as_ref() != Some(&message) {
                        log::error!("{message}");
                    }
                    last_error = Some(message.clone());
                    if matches!(*error, Error::Conflict { .. }) {
                        log::error!(
                            "stream {name}: stopped until the conflict is resolved and walship restarted"
                        );
                        self.set_error(&links, Some(message));
                        snapshots.stop();
                        park(&links, &error, &self.config);
                        break;
                    }
                    if matches!(*error, Error::Manifest(_) | Error::Local { .. } | Error::Locked { .. }) {
                        stream = None; // reopen from disk on the next attempt
                    }
                    let delay = self.backoff.failed();
                    self.set_error(&links, Some(message));
                    links.status.update(|s| s.retries += 1);
                    delay
                }
            };
            inbox.snapshot_work(&mut snapshots, stream.as_mut(), stopped(), links.member.may_upload());
            if links.member.may_upload() {
                prunes.answer(inbox.prune_requests.drain(..), stream.as_mut(), last_error.as_deref());
            } else {
                prunes.answer(inbox.prune_requests.drain(..), None, Some(STANDBY));
            }
            // A watched stream sleeps long: not past a snapshot job's retry.
            let delay = snapshots.retry_in().map_or(delay, |retry| delay.min(retry));
            links.heartbeat.store(unix_now(), Ordering::SeqCst);
            inbox.wait(&links.mailbox, delay, &self.config, stream.as_ref().and_then(Stream::archived));
            // A job's end or a request is dealt with at once, not after
            // the next pass (which a backlog can make long).
            if !inbox.stop && !stopped() {
                inbox.snapshot_work(&mut snapshots, stream.as_mut(), false, links.member.may_upload());
            }
        }
        snapshots.stop();
        inbox.snapshot_work(&mut snapshots, None, true, false);
        prunes.answer(inbox.prune_requests.drain(..), None, Some("walship is stopping"));
        inbox.answer(None, true, None);
    }

    /// Open the stream if needed (or, after a failure, clear uploads the
    /// failed attempt left open), then run one pass.
    fn attempt(
        &mut self,
        stream: &mut Option<Stream>,
        after_failure: bool,
        hints: Hints,
        links: &JobLinks,
        stopped: &dyn Fn() -> bool,
    ) -> Result<PassReport, Error> {
        let open = match stream {
            Some(open) => {
                if after_failure {
                    // The last attempt failed: an upload it could not abort
                    // may still be open on the target; clear it first.
                    open.abort_stale_uploads()?;
                }
                open
            }
            None => {
                let lock = match &self.lock {
                    Some(lock) => Arc::clone(lock),
                    None => Arc::clone(
                        self.lock
                            .insert(Arc::new(statedir::lock_stream(&self.state_root, &self.config.name)?)),
                    ),
                };
                let opened = Stream::open(
                    self.config.clone(),
                    &self.state_root,
                    Arc::clone(&self.target),
                    Arc::clone(&links.status),
                    lock,
                );
                match opened {
                    Ok(opened) => stream.insert(opened),
                    Err(error) => {
                        // The spool still fills while the stream cannot open.
                        let status = &links.status;
                        if let Err(e) = backlog::enforce_unopened(&self.config, &self.state_root, status) {
                            log::error!("{e}");
                        }
                        return Err(error);
                    }
                }
            }
        };
        // replicas = on: a standby follows the offloader's records; a node
        // that stops being elected ends its pass after the batch in flight.
        let member = &links.member;
        if !member.may_upload() {
            return open.follow(member.follow_due());
        }
        if member.take_takeover() {
            open.take_over()?;
        }
        open.pass(false, hints, &|| stopped() || !member.may_upload())
    }

    fn set_error(&self, links: &JobLinks, error: Option<String>) {
        let backoff_ms = self.backoff.current().map(|d| d.as_millis() as u64);
        links.status.update(|status| {
            status.backoff_ms = backoff_ms;
            status.last_error = error;
        });
    }
}

impl Inbox {
    /// Between passes: record the snapshot jobs that ended (once the stream
    /// is open), answer snapshot requests, start a scheduled job if due.
    /// While stopping, only refuse the requests; a standby of a replicated
    /// stream (`!may_start`) starts none: its offloader takes them.
    fn snapshot_work(
        &mut self,
        jobs: &mut SnapshotJobs,
        stream: Option<&mut Stream>,
        stopping: bool,
        may_start: bool,
    ) {
        if stopping {
            for reply in self.snapshot_requests.drain(..) {
                let _ = reply.send(JobEvent::Refused("walship is stopping".into()));
            }
            return;
        }
        let Some(stream) = stream else {
            for reply in self.snapshot_requests.drain(..) {
                jobs.request(None, reply);
            }
            return;
        };
        for (id, result) in self.snapshots_finished.drain(..) {
            jobs.finished(stream, id, result);
        }
        if !may_start {
            for reply in self.snapshot_requests.drain(..) {
                let _ = reply.send(JobEvent::Refused(STANDBY.into()));
            }
            return;
        }
        for reply in self.snapshot_requests.drain(..) {
            jobs.request(Some(stream), reply);
        }
        stream.request_snapshot_after_drop(jobs);
        jobs.start_due(stream);
    }

    /// Wait up to `timeout` for mail, then take whatever else is queued.
    fn wait(
        &mut self,
        mailbox: &Receiver<Message>,
        timeout: Duration,
        config: &StreamConfig,
        archived: Option<u64>,
    ) {
        match mailbox.recv_timeout(timeout) {
            Ok(message) => self.take(message, config, archived),
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                self.stop = true;
                return;
            }
        }
        while let Ok(message) = mailbox.try_recv() {
            self.take(message, config, archived);
        }
    }

    fn take(&mut self, message: Message, config: &StreamConfig, archived: Option<u64>) {
        match message {
            Message::Stop => self.stop = true,
            Message::Snapshot { reply } => self.snapshot_requests.push(reply),
            Message::Prune { dry_run, reply } => self.prune_requests.push((dry_run, reply)),
            Message::SnapshotFinished { id, result } => self.snapshots_finished.push((id, result)),
            Message::Wake { low, high } => {
                self.hints.merge(Hints { sealed_through: high, low_water_mark: low, flush_through: None });
            }
            Message::ArchiveNow { path, reply } => match requested_position(config, &path) {
                Err(error) => {
                    let _ = reply.send(Err(Arc::new(error)));
                }
                // Already archived: the pass that follows does nothing for
                // it, and the answer compares the file with the archive's.
                Ok(position) if archived.is_some_and(|a| a >= position) => {
                    self.requests.push(Request { position, path, reply });
                }
                Ok(position) => {
                    self.hints.merge(Hints {
                        sealed_through: Some(position),
                        low_water_mark: None,
                        flush_through: Some(position),
                    });
                    self.requests.push(Request { position, path, reply });
                }
            },
        }
    }

    /// After a pass: answer each request with whether the archive now
    /// holds its file (`Stream::confirm_archived`); one the pass did not
    /// reach because walship is stopping, or because uploads are `held` by
    /// the bandwidth schedule or the data budget, is told so.
    fn answer(&mut self, stream: Option<&Stream>, stopping: bool, held: Option<&str>) {
        for request in self.requests.drain(..) {
            let reached = stream.and_then(Stream::archived).is_some_and(|a| a >= request.position);
            let answer = match stream {
                Some(stream) if reached || (!stopping && held.is_none()) => {
                    stream.confirm_archived(request.position, &request.path).map_err(Arc::new)
                }
                _ => {
                    let why = if stopping {
                        "walship is stopping; it is archived at the next start".to_string()
                    } else if let Some(held) = held {
                        format!("uploads are held ({held}); it is archived once they go")
                    } else {
                        "it is no longer in the stream's directory".to_string()
                    };
                    Err(Arc::new(Error::local("archive", &request.path, io::Error::other(why))))
                }
            };
            let _ = request.reply.send(answer);
        }
        self.hints.flush_through = None;
    }

    /// A pass failed: every waiting request gets the error.
    fn fail(&mut self, error: &Arc<Error>) {
        for request in self.requests.drain(..) {
            let _ = request.reply.send(Err(Arc::clone(error)));
        }
        self.hints.flush_through = None;
    }
}

/// How long a watched stream with nothing waiting on time sleeps between
/// looks at its directory (a safety net: every change wakes it at once).
const WATCHED_POLL: Duration = Duration::from_secs(60);

/// How long to wait for mail after a successful pass that left `waiting`
/// segments in the directory: a watched directory is polled only while
/// segments wait on time (sealing by age, a batch's delay).
fn idle_delay(poll_interval: Duration, watched: bool, waiting: u64) -> Duration {
    if watched && waiting == 0 { WATCHED_POLL.max(poll_interval) } else { poll_interval }
}

/// How long to wait after a successful pass: `idle` (see [`idle_delay`]),
/// but not past the next prune; a standby (`Some`: when it should follow
/// the offloader's records next) prunes nothing, so it waits until then
/// instead, and no less than a poll.
fn next_wait(
    idle: Duration,
    poll_interval: Duration,
    prune_due_in: Duration,
    standby: Option<Duration>,
) -> Duration {
    match standby {
        None => idle.min(prune_due_in),
        Some(follow_in) => idle.min(follow_in.max(poll_interval)),
    }
}

/// The stream directory's watch, or why it is polled instead (each change
/// between the two logged once).
#[derive(Default)]
struct Watching {
    watch: Option<DirWatch>,
    /// Why the directory is polled, as last logged.
    polled_because: Option<String>,
}

impl Watching {
    /// Watch the directory unless a live watch already does.
    fn ensure(&mut self, config: &StreamConfig, mailbox: &Sender<Message>, poll_interval: Duration) {
        if self.live() {
            return;
        }
        self.watch = None;
        let mailbox = mailbox.clone();
        let send = move || mailbox.send(Message::Wake { low: None, high: None }).is_ok();
        let name = &config.name;
        match DirWatch::start(&config.dir, &config.naming, send) {
            Ok(watch) => {
                self.watch = Some(watch);
                if self.polled_because.take().is_some() {
                    log::info!("stream {name}: watching {} for changes again", config.dir.display());
                }
            }
            Err(why) => {
                let why = why.to_string();
                if self.polled_because.as_ref() != Some(&why) {
                    log::info!(
                        "stream {name}: looking at {} every {poll_interval:?} instead of watching it: {why}",
                        config.dir.display(),
                    );
                    self.polled_because = Some(why);
                }
            }
        }
    }

    fn live(&self) -> bool {
        self.watch.as_ref().is_some_and(DirWatch::live)
    }
}

/// A conflict parks the stream: it answers requests with the conflict
/// until it is stopped.
fn park(links: &JobLinks, conflict: &Arc<Error>, config: &StreamConfig) {
    while !links.stop.load(Ordering::SeqCst) {
        match links.mailbox.recv() {
            Ok(Message::Stop) | Err(_) => return,
            Ok(Message::ArchiveNow { reply, .. }) => {
                let _ = reply.send(Err(Arc::clone(conflict)));
            }
            Ok(Message::Prune { reply, .. }) => {
                let _ = reply.send(PruneReply::Done(Err(conflict.to_string())));
            }
            Ok(Message::Snapshot { reply }) => {
                let _ = reply.send(JobEvent::Refused(conflict.to_string()));
            }
            Ok(Message::Wake { .. } | Message::SnapshotFinished { .. }) => {
                log::debug!("stream {}: woken while stopped by a conflict", config.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_stream_polls_only_while_segments_wait_on_time() {
        let poll = Duration::from_secs(1);
        assert_eq!(idle_delay(poll, true, 0), WATCHED_POLL);
        assert_eq!(idle_delay(poll, true, 3), poll, "an unsealed segment or a short batch waits on time");
        assert_eq!(idle_delay(poll, false, 0), poll, "not watched: polled");
        let slow = Duration::from_secs(600);
        assert_eq!(idle_delay(slow, true, 0), slow, "never more often than configured");
    }

    /// Regression: a standby waited for its next prune, which it never
    /// runs (only the offloader prunes): due from the start, it made the
    /// thread spin, scanning its directory back to back (64 % of a core
    /// with 10,000 segments kept).
    #[test]
    fn a_standby_waits_for_its_next_follow_not_for_a_prune() {
        let (idle, poll) = (WATCHED_POLL, Duration::from_secs(1));
        let (due_now, follow_in) = (Duration::ZERO, Duration::from_secs(7));
        assert_eq!(next_wait(idle, poll, due_now, None), Duration::ZERO, "the offloader prunes now");
        assert_eq!(next_wait(idle, poll, Duration::from_secs(30), None), Duration::from_secs(30));
        assert_eq!(next_wait(idle, poll, due_now, Some(follow_in)), follow_in);
        assert_eq!(next_wait(idle, poll, due_now, Some(Duration::ZERO)), poll, "at least a poll");
        assert_eq!(next_wait(poll, poll, due_now, Some(follow_in)), poll, "not watched: polled");
    }
}
