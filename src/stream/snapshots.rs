//! A stream's snapshot jobs, as its thread runs them: when one is due
//! (`plan::snapshot_due`, once the committed position reaches it, with the
//! jump rule), or asked for (`walship snapshot`, at the archived position),
//! and admitted (`snapshot::admit`: none running, at most 100 recorded), a
//! job gets its id and runs on a thread of its own, so shipping goes on.
//! Its end comes back through the stream's mailbox
//! ([`Message::SnapshotFinished`]) and the stream's thread records the
//! snapshot (`Stream::commit_snapshot`). A failed scheduled job is tried
//! again after the stream's backoff; a requested one is not retried.
//!
//! [`take_snapshot`] runs one job on the calling thread, for `run --once`
//! and for `walship snapshot` with no daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::Stream;
use super::mailbox::Message;
use crate::error::Error;
use crate::manifest::{SnapshotRecord, StreamRules};
use crate::plan;
use crate::retry::Backoff;
use crate::snapshot::job::{self, JobSpec};
use crate::snapshot::{self, JobEvent, JobReport, JobState};
use crate::status::unix_now;
use crate::target::Target;

/// The stream thread's snapshot jobs: the one running, and when a failed
/// scheduled one is tried again.
pub struct SnapshotJobs {
    state_root: PathBuf,
    target: Arc<dyn Target>,
    /// The stream's own mailbox, where a job reports its end.
    mailbox: Sender<Message>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    running: Option<Running>,
    /// Why the scheduled job was last refused, logged once per change.
    refused: Option<String>,
}

struct Running {
    report: JobReport,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    /// Who asked for it, waiting for its end.
    waiting: Vec<Sender<JobEvent>>,
}

impl SnapshotJobs {
    pub fn new(
        state_root: PathBuf,
        target: Arc<dyn Target>,
        mailbox: Sender<Message>,
        backoff: Backoff,
    ) -> Self {
        SnapshotJobs { state_root, target, mailbox, backoff, retry_at: None, running: None, refused: None }
    }

    /// How long until a failed scheduled job may be tried again, if one
    /// waits to be (so that the stream's thread wakes for it).
    pub fn retry_in(&self) -> Option<std::time::Duration> {
        self.retry_at.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// After a pass: show where the next snapshot falls, and start the
    /// scheduled job if it is due.
    pub fn start_due(&mut self, stream: &Stream) {
        let config = stream.config();
        if config.snapshot_interval == 0 || config.snapshot_command.is_none() {
            return;
        }
        let committed = stream.committed();
        let next =
            plan::next_snapshot(stream.last_snapshot(), committed.unwrap_or(0), config.snapshot_interval);
        stream.update_status(|s| s.snapshots.next_position = next);
        let Some(committed) = committed else { return };
        let Some(position) = plan::snapshot_due(stream.last_snapshot(), committed, config.snapshot_interval)
        else {
            return;
        };
        if self.running.is_some() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        // A `0` bandwidth window or a spent data budget holds snapshots too.
        if stream.uploads_held().is_some() {
            return;
        }
        if let Err(refusal) = snapshot::admit(stream.name(), None, stream.snapshot_count()) {
            let message = refusal.to_string();
            if self.refused.as_ref() != Some(&message) {
                log::error!("{message}");
                self.refused = Some(message);
            }
            return;
        }
        self.refused = None;
        if let Err(error) = self.start(stream, position, None) {
            log::error!(
                "stream {}: cannot start the snapshot at position {position}: {error}",
                stream.name()
            );
            self.retry_at = Some(Instant::now() + self.backoff.failed());
        }
    }

    /// `walship snapshot`: a job at the archived position now, or why not.
    pub fn request(&mut self, stream: Option<&Stream>, reply: Sender<JobEvent>) {
        let Some(stream) = stream else {
            let why = "the stream is not open (see its last error in `walship status`); try again";
            let _ = reply.send(JobEvent::Refused(why.into()));
            return;
        };
        let outcome = match self.admit_request(stream) {
            Ok(position) => self
                .start(stream, position, Some(reply.clone()))
                .map_err(|error| format!("stream {}: cannot start the snapshot job: {error}", stream.name())),
            Err(why) => Err(why),
        };
        if let Err(why) = outcome {
            let _ = reply.send(JobEvent::Refused(why));
        }
    }

    /// The position a requested job takes, or why none starts.
    fn admit_request(&self, stream: &Stream) -> Result<u64, String> {
        let name = stream.name();
        if stream.config().snapshot_command.is_none() {
            return Err(no_command(name));
        }
        let running = self.running.as_ref().map(|r| r.report.id);
        snapshot::admit(name, running, stream.snapshot_count()).map_err(|r| r.to_string())?;
        request_position(name, stream.archived(), stream.last_snapshot())
    }

    /// Start a job at `position` on its own thread.
    fn start(
        &mut self,
        stream: &Stream,
        position: u64,
        asked: Option<Sender<JobEvent>>,
    ) -> Result<(), Error> {
        let config = stream.config();
        let Some(command) = config.snapshot_command.clone() else {
            return Err(Error::Usage(no_command(stream.name())));
        };
        let id = snapshot::next_job_id(&self.state_root)?;
        let report = running_report(stream.name(), position, id);
        log::info!("stream {}: snapshot job {id} started at position {position}", stream.name());
        let stop = Arc::new(AtomicBool::new(false));
        let (name, naming, timeout) = (config.name.clone(), config.naming.clone(), config.snapshot_timeout);
        let compression = config.compression;
        let (state_root, target, mailbox) =
            (self.state_root.clone(), Arc::clone(&self.target), self.mailbox.clone());
        let (status, stop_job) = (Arc::clone(&stream.status), Arc::clone(&stop));
        let thread = thread::Builder::new()
            .name(format!("walship-snapshot-{name}"))
            .spawn(move || {
                let rules = StreamRules::new(&name, &naming);
                let spec = JobSpec {
                    state_dir: &state_root,
                    rules,
                    command: &command,
                    timeout,
                    position,
                    id,
                    compression,
                };
                let result = job::run(&spec, target.as_ref(), &status, &|| stop_job.load(Ordering::SeqCst));
                let _ = mailbox.send(Message::SnapshotFinished { id, result });
            })
            .map_err(|e| Error::local("start a thread for the snapshot job of", &config.name, e))?;
        stream.update_status(|s| s.snapshots.last_job = Some(report.clone()));
        let waiting: Vec<Sender<JobEvent>> = asked.into_iter().collect();
        for asker in &waiting {
            let _ = asker.send(JobEvent::Started(report.clone()));
        }
        self.running = Some(Running { report, stop, thread, waiting });
        Ok(())
    }

    /// A job ended: record its snapshot (or note why it failed), tell who
    /// asked, and schedule a retry after a failure.
    pub fn finished(&mut self, stream: &mut Stream, id: u64, result: Result<SnapshotRecord, String>) {
        let Some(running) = self.running.take_if(|r| r.report.id == id) else { return };
        let _ = running.thread.join();
        let report = end_job(stream, running.report, result);
        if matches!(report.state, JobState::Succeeded) {
            self.backoff.succeeded();
            self.retry_at = None;
        } else {
            self.retry_at = Some(Instant::now() + self.backoff.failed());
        }
        for asker in running.waiting {
            let _ = asker.send(JobEvent::Ended(report.clone()));
        }
    }

    /// The stream stops: kill the running job and wait for its thread.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else { return };
        running.stop.store(true, Ordering::SeqCst);
        let _ = running.thread.join();
        let ended = JobReport {
            state: JobState::Failed("walship stopped; the job was killed".into()),
            ended: Some(unix_now()),
            ..running.report
        };
        log::warn!("{ended}");
        for asker in running.waiting {
            let _ = asker.send(JobEvent::Ended(ended.clone()));
        }
    }
}

/// Run one job on this thread at `position` (`run --once`, `walship
/// snapshot` with no daemon) and record its snapshot; the command is
/// killed once `stop` says so. `Err` only when the job could not start (no
/// command, no id).
pub fn take_snapshot(
    stream: &mut Stream,
    state_root: &std::path::Path,
    position: u64,
    stop: &dyn Fn() -> bool,
) -> Result<JobReport, Error> {
    let config = stream.config().clone();
    let command = config.snapshot_command.as_deref().ok_or_else(|| Error::Usage(no_command(&config.name)))?;
    let id = snapshot::next_job_id(state_root)?;
    let report = running_report(&config.name, position, id);
    log::info!("stream {}: snapshot job {id} started at position {position}", config.name);
    stream.update_status(|s| s.snapshots.last_job = Some(report.clone()));
    let rules = StreamRules::new(&config.name, &config.naming);
    let spec = JobSpec {
        state_dir: state_root,
        rules,
        command,
        timeout: config.snapshot_timeout,
        position,
        id,
        compression: config.compression,
    };
    let target = Arc::clone(&stream.target);
    let result = job::run(&spec, target.as_ref(), &stream.status, stop);
    Ok(end_job(stream, report, result))
}

/// The position a requested snapshot takes: the archived position, which
/// must lie after the newest snapshot.
pub fn request_position(
    stream: &str,
    archived: Option<u64>,
    last_snapshot: Option<u64>,
) -> Result<u64, String> {
    match (archived, last_snapshot) {
        (None, _) => Err(format!(
            "stream {stream}: nothing is archived yet; a snapshot is taken at the archived position"
        )),
        (Some(archived), Some(last)) if last >= archived => Err(format!(
            "stream {stream}: the newest snapshot is already at position {last} and nothing was archived \
             after it (archived position {archived}); there is nothing new to snapshot"
        )),
        (Some(archived), _) => Ok(archived),
    }
}

fn no_command(stream: &str) -> String {
    format!("stream {stream} has no snapshot_command; set one in its [stream {stream}] section")
}

fn running_report(stream: &str, position: u64, id: u64) -> JobReport {
    JobReport {
        id,
        stream: stream.into(),
        position,
        state: JobState::Running,
        started: unix_now(),
        ended: None,
    }
}

/// Record the job's snapshot if it stored one; its report, ended, goes to
/// the status and the log.
fn end_job(stream: &mut Stream, report: JobReport, result: Result<SnapshotRecord, String>) -> JobReport {
    let state = match result.map(|record| stream.commit_snapshot(record)) {
        Ok(Ok(())) => JobState::Succeeded,
        Ok(Err(error)) => {
            JobState::Failed(format!("the snapshot was stored but could not be recorded: {error}"))
        }
        Err(message) => JobState::Failed(message),
    };
    let now = unix_now();
    let report = JobReport { state, ended: Some(now), ..report };
    match report.state {
        JobState::Succeeded => log::info!("{report}"),
        _ => log::error!("{report}"),
    }
    stream.update_status(|s| s.snapshots.ended(&report, now));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_snapshot_takes_the_archived_position_after_the_newest() {
        assert_eq!(request_position("s", Some(250), None), Ok(250));
        assert_eq!(request_position("s", Some(250), Some(200)), Ok(250));
        let nothing = request_position("s", None, None).unwrap_err();
        assert!(nothing.contains("nothing is archived yet"), "{nothing}");
        let same = request_position("s", Some(200), Some(200)).unwrap_err();
        assert!(same.contains("already at position 200"), "{same}");
        assert!(request_position("s", Some(150), Some(200)).is_err(), "a scheduled one ran ahead");
    }
}
