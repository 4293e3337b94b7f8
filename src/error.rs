//! The crate-wide error: one variant per thing that can go wrong, each
//! carrying the context (stream, path, key) an operator needs, with a
//! `Display` that says what to do. `exit_code` is the CLI contract.

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
    /// Local state (state directory, restore destination) could not be
    /// read or written.
    Local { what: String, path: PathBuf, source: io::Error },
    /// A sealed segment changed while being archived.
    SegmentChanged { stream: String, name: String, detail: String },
    /// The archive holds different content at a position: never overwritten.
    Conflict { stream: String, key: String, detail: String },
    /// `fetch`: no such segment in the archive.
    NotInArchive { stream: String, name: String },
    /// Restore stopped at a gap.
    Gap { stream: String, first: u64, last: u64, reason: String, restored_to: Option<u64> },
    /// Another process holds the stream's lock (`holder`: its PID, when
    /// the lock file tells).
    Locked { stream: String, path: PathBuf, holder: Option<u32> },
    /// Restore was asked to write where it must not.
    UnsafeRestore { path: PathBuf, detail: String },
    /// Several things failed (`run --once`, `check`, `verify`): each was
    /// already reported; this carries the count and the exit code of the
    /// most severe (a configuration problem outranks an operational one).
    Failed { count: usize, what: String, exit_code: i32 },
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Credentials(_) => EXIT_USAGE,
            Error::NotInArchive { .. } => EXIT_NOT_FOUND,
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
            Error::Target { stream, source } if stream.is_empty() => write!(f, "{source}"),
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
            Error::Conflict { stream, key, detail } => write!(
                f,
                "stream {stream}: the archive already holds {key} with different content \
                 ({detail}); refusing to overwrite. Check that no other node archives to the \
                 same target and stream name, then move the object aside"
            ),
            Error::NotInArchive { stream, name } => {
                write!(f, "stream {stream}: segment {name} is not in the archive")
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
            Error::Failed { count, what, .. } => write!(f, "{count} {what} failed (see above)"),
        }
    }
}

impl std::error::Error for Error {}

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
