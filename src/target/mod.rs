//! Targets: where archived objects live.
//!
//! A target does I/O only — key in, bytes out. It knows nothing of streams,
//! batches, schedules or manifests; those policies live in `stream` and
//! `manifest`. Every target honours one error contract: a missing object is
//! reported as [`TargetError::NotFound`], whatever the backend.
//!
//! Key layout (shared by every target, built and parsed only by [`keys`]):
//! positions and sequence numbers are fixed-width lower-case hex, so a plain
//! lexical listing is in position order.
//!
//! Backends: [`fs`] (`file://`, every write through `durable`) and [`s3`];
//! `memory` is a fault-injecting test double for the stream's policy tests.
//! [`url`] reads and validates a `target =` setting, once, for the config
//! and the backends alike.

pub mod fs;
pub mod keys;
#[cfg(test)]
pub mod memory;
pub mod s3;
pub mod url;

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::{Mutex, PoisonError};

/// A writer that passes everything to `inner` and checksums it on the way
/// (`std::io::sink()` as `inner` only checksums).
pub struct CrcWriter<W> {
    pub inner: W,
    pub hasher: crc32fast::Hasher,
}

impl<W> CrcWriter<W> {
    pub fn new(inner: W) -> CrcWriter<W> {
        CrcWriter { inner, hasher: crc32fast::Hasher::new() }
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// CRC32 of a stored object, by reading it back whole (for targets that
/// cannot report it, and for `verify --deep`).
pub fn stored_crc32(target: &dyn Target, key: &str) -> Result<u32, TargetError> {
    let mut sink = CrcWriter::new(std::io::sink());
    target.get(key, None, &mut sink)?;
    Ok(sink.hasher.finalize())
}

/// What a target knows of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key relative to the target's root (prefix already removed).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Whole-object CRC32, when the target can tell it cheaply.
    pub crc32: Option<u32>,
}

/// A listed object and when the store last wrote it, by the store's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedObject {
    /// The object's key relative to the target's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last-Modified (S3; whole seconds), or the file's mtime.
    pub modified: std::time::SystemTime,
    /// The store's ETag (S3), which changes whenever the content does;
    /// `None` where there is none (file target: size and mtime tell).
    pub etag: Option<String>,
}

/// A listing and the store's own clock when it answered, so an object's
/// age is judged by one clock, whatever the clocks of the nodes that wrote
/// it or read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedListing {
    /// In lexical key order.
    pub objects: Vec<DatedObject>,
    /// S3: the `Date` header of the listing's last response; file: the
    /// local clock (the directory lives on this host's filesystem).
    pub store_now: std::time::SystemTime,
}

/// An object to store, whose total size and CRC32 are known before the
/// first byte is sent (S3 needs the checksum up front; the file target
/// recomputes it while writing and refuses a mismatch, which is how a
/// segment changed under us is caught).
pub struct Upload<'a> {
    /// Where the bytes come from.
    pub body: Body<'a>,
    /// The object's size in bytes.
    pub size: u64,
    /// CRC32 of the whole object.
    pub crc32: u32,
}

/// The bytes of an [`Upload`].
pub enum Body<'a> {
    /// The exact concatenation of these slices (usually whole
    /// memory-mapped segments), cut into parts with no copy.
    Pieces(&'a [&'a [u8]]),
    /// Bytes produced once, in order (a compressed batch's frames), read
    /// into each part's buffer as the upload goes.
    Stream(Mutex<StreamBody<'a>>),
}

/// A [`Body::Stream`]'s reader and how far it has been read.
pub struct StreamBody<'a> {
    reader: &'a mut (dyn Read + Send),
    read: u64,
}

impl<'a> Upload<'a> {
    /// An upload of the concatenation of `pieces`.
    pub fn pieces(pieces: &'a [&'a [u8]], size: u64, crc32: u32) -> Upload<'a> {
        Upload { body: Body::Pieces(pieces), size, crc32 }
    }

    /// An upload of the `size` bytes `reader` produces.
    pub fn stream(reader: &'a mut (dyn Read + Send), size: u64, crc32: u32) -> Upload<'a> {
        Upload { body: Body::Stream(Mutex::new(StreamBody { reader, read: 0 })), size, crc32 }
    }

    /// Bytes `start..start+len` of the object: sub-slices of the pieces (no
    /// copy), or the stream's next `len` bytes read into `buffer`. A stream
    /// is read once, front to back: its parts are asked for in order, each
    /// once (callers that upload parts in parallel take them in turn).
    pub fn part<'s>(&'s self, start: u64, len: u64, buffer: &'s mut Vec<u8>) -> io::Result<Vec<&'s [u8]>> {
        match &self.body {
            Body::Pieces(pieces) => Ok(slices(pieces, start, len)),
            Body::Stream(stream) => {
                let mut stream = stream.lock().unwrap_or_else(PoisonError::into_inner);
                if start != stream.read {
                    let detail = format!("part at {start} asked for after {} bytes were read", stream.read);
                    return Err(io::Error::other(format!("upload read out of order: {detail}")));
                }
                let len = usize::try_from(len).map_err(io::Error::other)?;
                buffer.clear();
                buffer.resize(len, 0);
                stream.reader.read_exact(buffer).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        io::Error::other("the upload's bytes ended before its declared size")
                    }
                    _ => e,
                })?;
                stream.read += len as u64;
                Ok(vec![&buffer[..]])
            }
        }
    }
}

/// Bytes `start..start+len` of the concatenation of `pieces`, as sub-slices
/// (no copy).
fn slices<'p>(pieces: &[&'p [u8]], start: u64, len: u64) -> Vec<&'p [u8]> {
    let mut out = Vec::new();
    let end = start + len;
    let mut piece_start = 0u64;
    for piece in pieces {
        let piece_end = piece_start + piece.len() as u64;
        if piece_end > start && piece_start < end {
            let from = start.max(piece_start) - piece_start;
            let to = end.min(piece_end) - piece_start;
            out.push(&piece[from as usize..to as usize]);
        }
        piece_start = piece_end;
        if piece_start >= end {
            break;
        }
    }
    out
}

/// The storage operations walship needs. Implementations: [`fs::FileTarget`]
/// and `s3::S3Target`.
pub trait Target: Send + Sync {
    /// A one-line description for logs and `check` (never contains secrets).
    fn describe(&self) -> String;

    /// Which archive this is, for binding a state directory to it: the place
    /// alone (`file://ROOT`, `s3://BUCKET/PREFIX at ENDPOINT`), the same
    /// whatever the credentials or region.
    fn place(&self) -> String;

    /// Store `body` under `key`, atomically: readers see either nothing or
    /// the whole object. Overwrites an existing object of the same key.
    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError>;

    /// Size and checksum of `key`, or `None` when it does not exist.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError>;

    /// Write the object's bytes (or `range = (offset, len)` of them) to `out`;
    /// returns the number of bytes written. A missing key is `NotFound`.
    fn get(&self, key: &str, range: Option<(u64, u64)>, out: &mut dyn Write) -> Result<u64, TargetError>;

    /// Every object whose key starts with `prefix` and sorts after
    /// `start_after`, in lexical key order.
    fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError>;

    /// [`Target::list`] a page at a time: `visit` gets each page of
    /// objects, in order, and the listing stops early when it returns
    /// `false`. A target that lists everything at once hands it over as one
    /// page.
    fn list_pages(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> bool,
    ) -> Result<(), TargetError> {
        visit(self.list(prefix, start_after)?);
        Ok(())
    }

    /// Every object whose key starts with `prefix`, with when it was last
    /// written and the store's clock at the listing (for judging ages, as
    /// heartbeats need). Targets that cannot tell say so (`Unusable`).
    fn list_dated(&self, _prefix: &str) -> Result<DatedListing, TargetError> {
        Err(TargetError::Unusable {
            detail: format!("{} cannot tell when its objects were written", self.describe()),
            fix: "use a file:// or s3:// target for node_id and fleet".into(),
        })
    }

    /// The names one level below `prefix` (empty, or ending in '/') under
    /// which objects exist, in lexical order: the streams of an archive
    /// when `prefix` is empty. Targets that cannot tell say so (`Unusable`).
    fn list_dirs(&self, _prefix: &str) -> Result<Vec<String>, TargetError> {
        Err(TargetError::Unusable {
            detail: format!("{} cannot list its directories", self.describe()),
            fix: "use a file:// or s3:// target for fleet".into(),
        })
    }

    /// Delete `keys`; keys that do not exist are not an error.
    fn delete(&self, keys: &[String]) -> Result<(), TargetError>;

    /// Abort unfinished uploads under `prefix` left by earlier runs; returns
    /// how many were aborted. Targets without such a notion return 0.
    fn abort_stale_uploads(&self, _prefix: &str) -> Result<usize, TargetError> {
        Ok(0)
    }

    /// Remove temp files that an interrupted write left under `prefix`
    /// (only the target's own temp names, only those last modified before
    /// `older_than`); returns how many. Targets that write no temp files
    /// return 0. Called by a stream at start, under its lock.
    fn clean_stale_temps(
        &self,
        _prefix: &str,
        _older_than: std::time::SystemTime,
    ) -> Result<usize, TargetError> {
        Ok(0)
    }

    /// Prove the target is reachable and writable enough to archive to.
    fn check(&self) -> Result<(), TargetError>;

    /// The process is stopping: let the request in flight finish (each is
    /// bounded by timeouts) but retry nothing and start no new part, so a
    /// stop completes in bounded time. Irreversible.
    fn shut_down(&self) {}
}

/// Why a target operation failed. `Display` is a message for an operator:
/// what failed, and what to do about it. Never contains secrets.
#[derive(Debug)]
pub enum TargetError {
    /// The object does not exist.
    NotFound { key: String },
    /// Worth retrying as is: network failure, timeout, 5xx, 429/SlowDown,
    /// interrupted local I/O.
    Transient { op: String, key: String, detail: String },
    /// Will keep failing until an operator changes something (credentials,
    /// region, bucket, permissions, disk space); `fix` says what.
    Fatal { op: String, key: String, detail: String, fix: String },
    /// Bytes stored or received do not match their CRC32.
    Checksum { key: String, expected: u32, actual: u32 },
    /// The target as a whole cannot be used (its root is missing or not a
    /// directory, its settings are invalid): no object is involved; `fix`
    /// says what to change.
    Unusable { detail: String, fix: String },
}

impl TargetError {
    /// Whether repeating the same request soon may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Transient { .. })
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::NotFound { key } => write!(f, "object {key} not found in the archive"),
            TargetError::Transient { op, key, detail } => {
                write!(f, "{op} {key}: {detail} (a temporary failure)")
            }
            TargetError::Fatal { op, key, detail, fix } => {
                write!(f, "{op} {key}: {detail}; {fix}")
            }
            TargetError::Checksum { key, expected, actual } => {
                write!(f, "object {key}: CRC32 mismatch (expected {expected:08x}, got {actual:08x})")
            }
            TargetError::Unusable { detail, fix } => write!(f, "{detail}; {fix}"),
        }
    }
}

impl std::error::Error for TargetError {}

/// Build the configured target for one user at a time (a command). For S3
/// this loads the credentials (file, environment or
/// `$CREDENTIALS_DIRECTORY`) but sends no request.
pub fn open(global: &crate::config::Global) -> Result<std::sync::Arc<dyn Target>, crate::error::Error> {
    open_shared(global, 1)
}

/// Build the configured target for `streams` streams archiving at once (or
/// a restore's parallel downloads; an S3 target sizes its connection pool
/// for them all), as [`open`] does.
pub fn open_shared(
    global: &crate::config::Global,
    streams: usize,
) -> Result<std::sync::Arc<dyn Target>, crate::error::Error> {
    use crate::error::Error;
    use url::TargetUrl;
    match &global.target {
        TargetUrl::File(root) => Ok(std::sync::Arc::new(fs::FileTarget::new(root.clone()))),
        TargetUrl::S3 { bucket, prefix } => {
            let credentials =
                s3::credentials::load(global.credentials_file.as_deref()).map_err(Error::Credentials)?;
            let settings = s3::S3Settings {
                endpoint: global.endpoint.clone().unwrap_or_default(),
                region: global.region.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                credentials,
                ca_file: global.ca_file.clone(),
                part_size: global.part_size,
                parallel_uploads: global.parallel_uploads,
                streams,
                connect_timeout: global.connect_timeout,
                io_timeout: global.io_timeout,
                retry_min: global.backoff_min,
                retry_max: global.backoff_max,
            };
            let target = s3::S3Target::new(settings).map_err(Error::TargetSetup)?;
            Ok(std::sync::Arc::new(target))
        }
    }
}
