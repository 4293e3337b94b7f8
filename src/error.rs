//! The crate-wide error: one variant per thing that can go wrong, each
//! carrying the context (stream, path, key) an operator needs, with a
//! `Display` that says what to do. `exit_code` is the CLI contract.
//!
//! `Display` is the whole message, the wrapped error's text included: that
//! is what `main` prints and the logs show. Every variant that wraps another
//! error also returns it from `source()`, so a program embedding walship can
//! inspect the typed cause (an `io::Error`'s kind, a `TargetError`).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::manifest::ManifestError;
use crate::source::ScanError;
use crate::target::TargetError;
use crate::target::s3::credentials::CredentialsError;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: operational failure (I/O, network, integrity).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of `fetch` when the segment is not in the archive.
pub const EXIT_NOT_FOUND: i32 = 3;

#[derive(Debug)]
pub enum Error {
    /// Bad command line; the message says what is expected.
    Usage(String),
    /// Bad or unreadable configuration.
    Config(ConfigError),
    /// No usable S3 credentials (missing, unreadable, or too open).
    Credentials(CredentialsError),
    /// The stream's directory could not be scanned.
    Scan { stream: String, source: ScanError },
    /// The local or a remote manifest is damaged or hostile.
    Manifest(ManifestError),
    /// A target operation failed.
    Target { stream: String, source: TargetError },
    /// The configured target cannot be set up (no stream involved yet).
    TargetSetup(TargetError),
    /// Local state (state directory, restore destination) could not be
    /// read or written.
    Local { what: String, path: PathBuf, source: io::Error },
    /// A sealed segment changed while being archived.
    SegmentChanged { stream: String, name: String, detail: String },
    /// libzstd could not compress a batch (it could not get memory).
    Compression { stream: String, source: io::Error },
    /// The archive holds different content at a position: never overwritten.
    Conflict { stream: String, key: String, detail: String },
    /// The state directory describes another archive than the configured
    /// target's, which lacks the journal's last record (`missing`).
    OtherTarget { stream: String, journal: PathBuf, recorded: Option<String>, place: String, missing: String },
    /// `fetch`: no such segment in the archive.
    NotInArchive { stream: String, name: String },
    /// `fetch`: the segment lay before `pruned_before`, where retention
    /// deleted the archive; `oldest`: the oldest segment still archived
    /// (position, name).
    PrunedSegment { stream: String, name: String, pruned_before: u64, oldest: Option<(u64, String)> },
    /// Restore stopped at a gap.
    Gap { stream: String, first: u64, last: u64, reason: String, restored_to: Option<u64> },
    /// Another process holds the stream's lock (`holder`: its PID, when
    /// the lock file tells).
    Locked { stream: String, path: PathBuf, holder: Option<u32> },
    /// Restore was asked to write where it must not.
    UnsafeRestore { path: PathBuf, detail: String },
    /// `restore`: the archive holds nothing (`end` is `None`), or ends
    /// before the position asked for.
    ArchiveEnds { stream: String, end: Option<u64>, asked: Option<u64> },
    /// `restore`: retention removed the position asked for (everything
    /// before `pruned_before`, but what the `oldest` snapshot kept restores).
    Pruned { stream: String, asked: u64, pruned_before: u64, oldest: Option<u64> },
    /// `fetch` wrote a segment through to `dest` (standard output, a device,
    /// a FIFO) as it arrived, and its CRC32 did not match at the end.
    CorruptOutput { dest: String, source: TargetError },
    /// Standard output could not be written (a closed pipe: the reader
    /// stopped reading, which `main` treats as a quiet end).
    Output(io::Error),
    /// A snapshot job failed, or none was started (a job already running,
    /// too many snapshots, nothing to snapshot): the message names the job
    /// or says why.
    Snapshot(String),
    /// `push` through the running daemon failed: the daemon's message (a
    /// conflict naming both CRCs, a failed upload, …).
    PushFailed(String),
    /// A prune failed or stopped half-way (the daemon stopping), here or
    /// in the running daemon for `walship prune`: the message says why.
    Prune(String),
    /// The stream's lock is held (by the daemon, `holder`), but its control
    /// socket does not answer (`why`).
    DaemonUnreachable { stream: String, holder: Option<u32>, why: String },
    /// Several things failed (`run --once`, `check`, `verify`): each was
    /// already reported; this carries the count, what they are (a singular
    /// noun: "stream") and the exit code of the most severe (a configuration
    /// problem outranks an operational one).
    Failed { count: usize, what: &'static str, exit_code: i32 },
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Credentials(_) | Error::TargetSetup(_) => EXIT_USAGE,
            Error::NotInArchive { .. } | Error::PrunedSegment { .. } => EXIT_NOT_FOUND,
            Error::Failed { exit_code, .. } => *exit_code,
            _ => EXIT_FAILURE,
        }
    }

    /// Shorthand for a local I/O error.
    pub fn local(what: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Local { what: what.into(), path: path.into(), source }
    }

    /// Shorthand for a target error of `stream`.
    pub fn target(stream: &str, source: TargetError) -> Error {
        Error::Target { stream: stream.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Config(e) => write!(f, "{e}"),
            Error::Credentials(e) => write!(f, "{e}"),
            Error::Scan { stream, source } => write!(f, "stream {stream}: {source}"),
            Error::Manifest(e) => write!(f, "{e}"),
            Error::TargetSetup(e) => write!(f, "{e}"),
            Error::Target { stream, source } => write!(f, "stream {stream}: {source}"),
            Error::Local { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())?;
                match source.kind() {
                    io::ErrorKind::StorageFull => write!(f, "; free space on that filesystem"),
                    io::ErrorKind::PermissionDenied => write!(f, "; check its owner and permissions"),
                    io::ErrorKind::ReadOnlyFilesystem => write!(f, "; it must be writable"),
                    _ => Ok(()),
                }
            }
            Error::SegmentChanged { stream, name, detail } => write!(
                f,
                "stream {stream}: segment {name} changed after it was sealed ({detail}); \
                 sealed segments must not be modified — nothing was recorded, it will be retried"
            ),
            Error::Compression { stream, source } => write!(
                f,
                "stream {stream}: could not compress a batch ({source}); nothing was sent, it will \
                 be retried (zstd fails only for lack of memory: lower compression_level)"
            ),
            Error::Conflict { stream, key, detail } => write!(
                f,
                "stream {stream}: the archive already holds {key} with different content \
                 ({detail}); refusing to overwrite. Check that no other node archives to the \
                 same target and stream name, then move the object aside"
            ),
            Error::OtherTarget { stream, journal, recorded, place, missing } => {
                let recorded = match recorded {
                    Some(recorded) => format!("the archive at {recorded}"),
                    None => "an archive (this release did not record which)".into(),
                };
                write!(
                    f,
                    "stream {stream}: {} describes {recorded}, but the configured target {place} \
                     does not hold its last record ({missing}); carrying on would leave the new \
                     archive without everything before it. Put the old target back in the config, \
                     or move the stream's state directory ({}) aside: walship then rebuilds it \
                     from the new target and archives the segments still present",
                    journal.display(),
                    journal.parent().unwrap_or(journal).display()
                )
            }
            Error::NotInArchive { stream, name } => {
                write!(f, "stream {stream}: segment {name} is not in the archive")
            }
            Error::PrunedSegment { stream, name, pruned_before, oldest } => {
                write!(
                    f,
                    "stream {stream}: segment {name} is not in the archive: retention (keep_snapshots) \
                     deleted the positions before {pruned_before}"
                )?;
                match oldest {
                    Some((position, oldest)) => {
                        write!(f, "; the oldest archived segment is {oldest} (position {position})")
                    }
                    None => write!(f, "; no segment remains archived"),
                }
            }
            Error::Gap { stream, first, last, reason, restored_to } => {
                write!(
                    f,
                    "stream {stream}: positions {first}..{last} are a gap in the archive ({reason}); "
                )?;
                match restored_to {
                    Some(p) => write!(f, "restored up to position {p}; ")?,
                    None => write!(f, "nothing before it was restored; ")?,
                }
                write!(f, "pass --allow-gaps to restore past it")
            }
            Error::Locked { stream, path, holder } => {
                let process = holder.map_or("another walship process".to_string(), |pid| {
                    format!("another walship process (PID {pid})")
                });
                write!(
                    f,
                    "stream {stream}: {process} is archiving it (lock {} is held); stop it first",
                    path.display()
                )
            }
            Error::UnsafeRestore { path, detail } => {
                write!(f, "refusing to write {}: {detail}", path.display())
            }
            Error::ArchiveEnds { stream, end: None, .. } => {
                write!(f, "stream {stream}: nothing is archived yet; there is nothing to restore")
            }
            Error::ArchiveEnds { stream, end: Some(end), asked } => {
                write!(f, "stream {stream}: the archive ends at position {end}")?;
                match asked {
                    Some(p) => write!(f, "; cannot restore up to {p}"),
                    None => Ok(()),
                }
            }
            Error::Pruned { stream, asked, pruned_before, oldest } => {
                write!(
                    f,
                    "stream {stream}: position {asked} can no longer be restored: retention \
                     (keep_snapshots) deleted the positions before {pruned_before}"
                )?;
                match oldest {
                    Some(oldest) => write!(
                        f,
                        "; the oldest position that can still be restored is {oldest} (restore \
                         with --position {oldest} or later)"
                    ),
                    None => write!(f, "; no snapshot remains to restore from"),
                }
            }
            Error::CorruptOutput { dest, source } => write!(
                f,
                "{source}: the bytes already written to {dest} are corrupt; discard them \
                 (nothing else was changed)"
            ),
            Error::Output(e) => write!(f, "cannot write to standard output: {e}"),
            Error::Snapshot(message) | Error::Prune(message) => write!(f, "{message}"),
            Error::PushFailed(message) => write!(f, "the daemon could not archive it: {message}"),
            Error::DaemonUnreachable { stream, holder, why } => {
                let holder =
                    holder.map_or("another walship process".into(), |pid| format!("walship PID {pid}"));
                write!(
                    f,
                    "stream {stream} is archived by {holder} (it holds the stream's lock), but the \
                     control socket does not answer for it: {why}. If it is a `walship run --once` pass, \
                     try again once it is done; a daemon that serves no control socket (see its \
                     log: an older release, or a second daemon on the same state_dir) must be \
                     stopped first"
                )
            }
            Error::Failed { count, what, .. } => {
                write!(f, "{} failed (see above)", crate::human::count(*count as u64, what))
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Credentials(e) => Some(e),
            Error::Scan { source, .. } => Some(source),
            Error::Manifest(e) => Some(e),
            Error::Target { source, .. } | Error::CorruptOutput { source, .. } => Some(source),
            Error::TargetSetup(e) => Some(e),
            Error::Local { source, .. } | Error::Compression { source, .. } => Some(source),
            Error::Output(e) => Some(e),
            Error::Usage(_)
            | Error::SegmentChanged { .. }
            | Error::Conflict { .. }
            | Error::OtherTarget { .. }
            | Error::NotInArchive { .. }
            | Error::PrunedSegment { .. }
            | Error::Gap { .. }
            | Error::Locked { .. }
            | Error::UnsafeRestore { .. }
            | Error::ArchiveEnds { .. }
            | Error::Pruned { .. }
            | Error::Snapshot(_)
            | Error::PushFailed(_)
            | Error::Prune(_)
            | Error::DaemonUnreachable { .. }
            | Error::Failed { .. } => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Error {
        Error::Manifest(e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn target_error() -> TargetError {
        TargetError::Unusable { detail: "target directory /x does not exist".into(), fix: "create it".into() }
    }

    /// Regression: the message was one literal with runs of spaces where its
    /// lines had been joined.
    #[test]
    fn other_target_message_reads_as_one_sentence() {
        let error = Error::OtherTarget {
            stream: "s".into(),
            journal: PathBuf::from("/state/s/manifest"),
            recorded: None,
            place: "file:///new".into(),
            missing: "s/manifest/0000000000000007-0000000000000008.batch".into(),
        };
        let text = error.to_string();
        assert!(!text.contains("  "), "{text}");
        assert!(text.contains("file:///new does not hold its last record"), "{text}");
    }

    #[test]
    fn wrapped_errors_are_the_source() {
        let local = Error::local("write", "/x", io::Error::from(io::ErrorKind::StorageFull));
        let cause = local.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("io source");
        assert_eq!(cause.kind(), io::ErrorKind::StorageFull);
        assert!(local.to_string().contains("free space"), "{local}");

        for error in [
            Error::target("s", target_error()),
            Error::TargetSetup(target_error()),
            Error::CorruptOutput { dest: "standard output".into(), source: target_error() },
        ] {
            let source = error.source().expect("a source");
            assert!(source.downcast_ref::<TargetError>().is_some(), "{error}");
            assert!(error.to_string().contains("does not exist"), "the message includes the cause: {error}");
        }
        assert!(Error::Output(io::Error::from(io::ErrorKind::BrokenPipe)).source().is_some());
        assert!(Error::Usage("x".into()).source().is_none());
    }

    #[test]
    fn exit_codes() {
        let cases = [
            (Error::Usage("x".into()), EXIT_USAGE),
            (Error::TargetSetup(target_error()), EXIT_USAGE),
            (Error::target("s", target_error()), EXIT_FAILURE),
            (Error::NotInArchive { stream: "s".into(), name: "n".into() }, EXIT_NOT_FOUND),
            (Error::ArchiveEnds { stream: "s".into(), end: None, asked: None }, EXIT_FAILURE),
            (Error::UnsafeRestore { path: "/x".into(), detail: "d".into() }, EXIT_FAILURE),
            (Error::Failed { count: 2, what: "check", exit_code: EXIT_USAGE }, EXIT_USAGE),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error}");
        }
        let one = Error::Failed { count: 1, what: "stream", exit_code: EXIT_FAILURE };
        assert_eq!(one.to_string(), "1 stream failed (see above)");
    }
}
