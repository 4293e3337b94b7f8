//! The messages a stream's thread takes, over a std `mpsc` channel: the
//! thread is the only writer of its stream's manifest and position, and
//! everything else (the library API, the daemon, a later `push`) talks to it
//! through its mailbox. Replies go back on a channel sent with the request.
//!
//! A snapshot job runs on a thread of its own (so shipping goes on) and
//! hands its stored snapshot back as [`Message::SnapshotFinished`]: the
//! stream's thread records it. Retention deletes and records too, so
//! `walship prune` against a running daemon is a [`Message::Prune`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Sender, SyncSender};

use crate::error::Error;
use crate::manifest::SnapshotRecord;
use crate::snapshot::JobEvent;

/// A request to a stream's thread.
#[derive(Debug)]
pub enum Message {
    /// Look at the directory now, in the shape of Gitaly's
    /// `NotifyNewEntries(low, high)`: `low` is the oldest position the
    /// application still holds (a low water mark above the next expected
    /// position is a gap), `high` the newest it has sealed (so it is
    /// archived even while it is the newest file). Both optional: a plain
    /// wake-up says neither.
    Wake { low: Option<u64>, high: Option<u64> },
    /// Archive everything sealed through the segment file `path` (in the
    /// stream's directory; the caller declares it sealed), a short batch
    /// included, and reply once it is committed: the archived position, or
    /// why not.
    ArchiveNow { path: PathBuf, reply: Sender<ArchiveReply> },
    /// Take a snapshot now (`walship snapshot`): the stream answers on
    /// `reply` with the job's start and then its end, or with why no job
    /// starts.
    Snapshot { reply: Sender<JobEvent> },
    /// A snapshot job of this stream ended (sent by its thread): the record
    /// to commit, or why the job failed.
    SnapshotFinished { id: u64, result: Result<SnapshotRecord, String> },
    /// Apply retention now, or with `dry_run` only plan it (`walship
    /// prune` while the daemon runs): the reply is what the command prints,
    /// or why it failed.
    Prune { dry_run: bool, reply: SyncSender<PruneReply> },
    /// Stop after the batch in flight.
    Stop,
}

/// The answer to [`Message::Prune`], in order: each line `walship prune`
/// prints, as it comes (a bounded channel: a long prune waits for its
/// reader rather than pile its lines up), then how it ended (why it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneReply {
    Line(String),
    Done(Result<(), String>),
}

/// The answer to [`Message::ArchiveNow`]: the archived position once the
/// file is durably archived and recorded, or the error (shared: one failure
/// can answer several requests).
pub type ArchiveReply = Result<u64, Arc<Error>>;
