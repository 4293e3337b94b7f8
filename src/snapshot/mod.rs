//! Snapshot jobs, as RisingWave's backup manager runs them: each job has an
//! id (increasing, never reused, kept across restarts by a durable counter
//! in the state directory), a state (running, succeeded, failed with its
//! message), a start and an end time. At most one job runs per stream, and
//! a stream holding more than [`MAX_SNAPSHOTS`] snapshots takes no new job
//! until it is pruned ([`admit`]).
//!
//! - [`command`] runs `snapshot_command` (its process group, timeout,
//!   stderr into the log, the output file);
//! - [`job`] is one job from start to stored object: the command, then the
//!   upload through the batches' own store path (`stream::upload`).
//!
//! When a job runs is the stream's business (`stream::snapshots`, through
//! `plan::snapshot_due`); recording the stored snapshot is too: the stream's
//! thread is its manifest's only writer.

pub mod command;
pub mod job;
pub mod status;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::durable;
use crate::error::Error;
use crate::manifest::Entry;
use crate::statedir;
use crate::target::keys;

/// More snapshots than this recorded for a stream refuses new jobs.
pub const MAX_SNAPSHOTS: usize = 100;

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    /// With the message saying why.
    Failed(String),
}

impl JobState {
    /// `running`, `succeeded` or `failed`.
    pub fn word(&self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed(_) => "failed",
        }
    }
}

/// One job, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub id: u64,
    pub stream: String,
    /// The position the snapshot is taken at.
    pub position: u64,
    pub state: JobState,
    /// Start and end, in seconds since the epoch (end: once done).
    pub started: u64,
    pub ended: Option<u64>,
}

impl JobReport {
    /// The report of a job its process left running when it ended: failed,
    /// with no known end. Others are unchanged.
    pub fn interrupted(self) -> JobReport {
        match self.state {
            JobState::Running => {
                JobReport { state: JobState::Failed("walship stopped before the job ended".into()), ..self }
            }
            _ => self,
        }
    }

    /// How long it ran (to `now` while running).
    pub fn duration(&self, now: u64) -> Duration {
        Duration::from_secs(self.ended.unwrap_or(now).saturating_sub(self.started))
    }
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let JobReport { id, stream, position, .. } = self;
        write!(f, "snapshot job {id} of stream {stream} at position {position} {}", self.state.word())?;
        match &self.state {
            JobState::Failed(why) => write!(f, ": {why}"),
            _ => Ok(()),
        }
    }
}

/// What a stream tells whoever asked for a job: it started, then it ended;
/// or it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    Started(JobReport),
    Ended(JobReport),
    /// Not started: why (a [`Refusal`], or no snapshot to take).
    Refused(String),
}

/// The snapshots a stream's manifest holds that retention has not deleted,
/// kept from its entries as they are read or appended (at most a little
/// over [`MAX_SNAPSHOTS`] positions: more refuses new jobs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotBook {
    live: BTreeSet<u64>,
}

impl SnapshotBook {
    /// Take `entry` of `stream`'s manifest into account.
    pub fn note(&mut self, stream: &str, entry: &Entry) {
        match entry {
            Entry::Snapshot(snapshot) => {
                self.live.insert(snapshot.position);
            }
            Entry::Prune(prune) => {
                for position in prune.deleted.iter().filter_map(|key| keys::parse_snapshot_key(stream, key)) {
                    self.live.remove(&position);
                }
            }
            Entry::Log(_) => {}
        }
    }

    /// How many snapshots are recorded and not pruned.
    pub fn count(&self) -> usize {
        self.live.len()
    }
}

/// Why a job is not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A job of the stream is running (its id).
    Running { stream: String, id: u64 },
    /// The stream holds this many snapshots, more than [`MAX_SNAPSHOTS`].
    TooMany { stream: String, count: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Running { stream, id } => write!(
                f,
                "stream {stream}: snapshot job {id} is running; one job runs at a time per stream, \
                 ask again once it is done"
            ),
            Refusal::TooMany { stream, count } => write!(
                f,
                "stream {stream}: {count} snapshots are recorded, more than {MAX_SNAPSHOTS}; no new \
                 snapshot job starts until older ones are pruned (`walship prune -s {stream}`)"
            ),
        }
    }
}

/// The rule for starting a job: none running, and at most
/// [`MAX_SNAPSHOTS`] snapshots recorded.
pub fn admit(stream: &str, running: Option<u64>, recorded: usize) -> Result<(), Refusal> {
    if let Some(id) = running {
        return Err(Refusal::Running { stream: stream.into(), id });
    }
    if recorded > MAX_SNAPSHOTS {
        return Err(Refusal::TooMany { stream: stream.into(), count: recorded });
    }
    Ok(())
}

/// Give out the next job id of `state_dir`: one more than the last one
/// given out by any process, kept durably (`.walship-jobs`), under a lock
/// so two processes never get the same id.
pub fn next_job_id(state_dir: &Path) -> Result<u64, Error> {
    durable::create_dir_all(state_dir).map_err(|e| Error::local("create state directory", state_dir, e))?;
    let counter = statedir::job_counter(state_dir);
    statedir::with_lock(&statedir::job_counter_lock(state_dir), || {
        let last = match std::fs::read_to_string(&counter) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                let damaged = std::io::Error::other(format!(
                    "it should hold the last job id, a whole number, but holds {:?}; put the \
                     highest job id the log shows in it",
                    crate::manifest::shown(text.trim())
                ));
                Error::local("read the snapshot job counter", &counter, damaged)
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::local("read the snapshot job counter", &counter, e)),
        };
        let next = last + 1;
        durable::write_file(&counter, format!("{next}\n").as_bytes())
            .map_err(|e| Error::local("write the snapshot job counter", &counter, e))?;
        Ok(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn one_job_per_stream_and_at_most_a_hundred_snapshots() {
        assert_eq!(admit("s", None, 0), Ok(()));
        assert_eq!(admit("s", None, MAX_SNAPSHOTS), Ok(()));
        let running = admit("s", Some(7), 3).unwrap_err();
        assert_eq!(running, Refusal::Running { stream: "s".into(), id: 7 });
        assert!(running.to_string().contains("snapshot job 7 is running"), "{running}");
        let many = admit("s", None, MAX_SNAPSHOTS + 1).unwrap_err();
        assert!(
            many.to_string().contains("101 snapshots") && many.to_string().contains("walship prune -s s")
        );
        assert!(matches!(admit("s", Some(1), 500), Err(Refusal::Running { .. })), "the running job first");
    }

    #[test]
    fn the_book_counts_snapshots_until_a_prune_deletes_them() {
        use crate::manifest::{Encoding, PruneRecord, SnapshotRecord, StoredObject};
        let snapshot = |position| {
            let stored = StoredObject { size: 1, crc32: 0, encoding: Encoding::Identity };
            let key = keys::snapshot_key("s", position);
            Entry::Snapshot(SnapshotRecord { position, key, size: 1, crc32: 0, stored })
        };
        let mut book = SnapshotBook::default();
        for position in [0, 100, 200] {
            book.note("s", &snapshot(position));
        }
        assert_eq!(book.count(), 3);
        let deleted =
            vec![keys::batch_key("s", 0, 99), keys::snapshot_key("s", 0), keys::snapshot_key("t", 100)];
        book.note("s", &Entry::Prune(PruneRecord { sequence: 1, before: 100, deleted }));
        assert_eq!(book.count(), 2, "only the stream's own snapshot keys count");
    }

    #[test]
    fn job_ids_increase_across_restarts_and_a_damaged_counter_is_named() {
        let dir = TempDir::new("job-ids");
        let ids: Vec<u64> = (0..3).map(|_| next_job_id(&dir.0).unwrap()).collect();
        assert_eq!(ids, [1, 2, 3]);
        // A new process reads the same counter.
        assert_eq!(std::fs::read_to_string(statedir::job_counter(&dir.0)).unwrap(), "3\n");
        assert_eq!(next_job_id(&dir.0).unwrap(), 4);
        std::fs::write(statedir::job_counter(&dir.0), "many").unwrap();
        let error = next_job_id(&dir.0).unwrap_err().to_string();
        assert!(error.contains(".walship-jobs") && error.contains("\"many\""), "{error}");
    }

    #[test]
    fn ids_given_out_by_threads_at_once_are_all_different() {
        let dir = TempDir::new("job-ids-race");
        let mut ids: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| next_job_id(&dir.0).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        ids.sort_unstable();
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn a_report_says_which_job_and_why() {
        let mut report = JobReport {
            id: 12,
            stream: "s".into(),
            position: 200,
            state: JobState::Running,
            started: 100,
            ended: None,
        };
        assert_eq!(report.to_string(), "snapshot job 12 of stream s at position 200 running");
        assert_eq!(report.duration(130), Duration::from_secs(30));
        let cut_short = report.clone().interrupted();
        assert!(
            cut_short.to_string().ends_with("failed: walship stopped before the job ended"),
            "{cut_short}"
        );
        report.state = JobState::Failed("the command exited with status 3".into());
        report.ended = Some(110);
        assert!(report.to_string().ends_with("failed: the command exited with status 3"));
        assert_eq!(report.duration(130), Duration::from_secs(10));
    }
}
