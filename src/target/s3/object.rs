//! Single-object operations: PutObject, HEAD and (ranged) GET.
//!
//! PutObject streams the upload's slices with `UNSIGNED-PAYLOAD` and an
//! `x-amz-checksum-crc32` header; a server-side checksum mismatch is then
//! told apart: if the bytes changed under us (a segment modified after it was
//! sealed) it is a [`TargetError::Checksum`], otherwise a transient transfer
//! fault. GET streams into the caller's writer and resumes an interrupted
//! body with a narrower range, pinned to the same object version by ETag.

use std::io::{Read, Write};

use crate::target::{ObjectInfo, TargetError, Upload};

use super::S3Target;
use super::checksum::{self, ReportedCrc32};
use super::client::{Failure, Payload, S3Request};
use super::error::{self, ServerError};

const COPY_BUFFER: usize = 64 * 1024;

/// Store `body` with one PutObject.
pub fn put_single(target: &S3Target, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
    let full_key = target.full_key(key);
    let mut buffer = Vec::new();
    let slices = body.part(0, body.size, &mut buffer).map_err(|e| unreadable_body(key, e))?;
    let request = S3Request::new("put", key, "PUT")
        .object(&full_key)
        .header("x-amz-checksum-crc32", checksum::crc32_header(body.crc32))
        .payload(Payload::Unsigned(slices.clone()));
    match target.client.call(&request) {
        Ok(reply) => verify_echoed_crc(key, body.crc32, reply.header("x-amz-checksum-crc32")),
        Err(Failure::Server(error)) if error.is_digest_mismatch() => {
            let explained = explain_digest_mismatch(key, body.crc32, &slices, &error);
            if let TargetError::Checksum { actual, .. } = &explained {
                take_back_refused_bytes(target, key, *actual);
            }
            Err(explained)
        }
        Err(failure) => Err(target.client.target_error(&request, failure)),
    }
}

/// Some stores (s3s-fs 0.14) store an object and only then refuse it for
/// its checksum. After such a refusal, an object under `key` holding
/// exactly the bytes sent (CRC32 `sent_crc`) is that refused upload: delete
/// it, so that a refused object is never left looking archived. Anything
/// else (nothing, or an earlier object) is left alone; failures here only
/// log, since the refusal is already being reported.
fn take_back_refused_bytes(target: &S3Target, key: &str, sent_crc: u32) {
    let stored = head(target, key).and_then(|info| match info {
        Some(info) => crate::target::stored_crc32(target, key).map(|crc| Some((info.size, crc))),
        None => Ok(None),
    });
    match stored {
        Ok(Some((_, crc))) if crc == sent_crc => {
            log::warn!(
                "the S3 store kept {key} although it refused its checksum (a defect of the store); \
                 deleting it"
            );
            if let Err(error) = super::bucket::delete(target, &[key.to_string()]) {
                log::warn!("could not delete the refused object {key}: {error}");
            }
        }
        Ok(_) => {}
        Err(error) => log::warn!("could not check whether the store kept the refused {key}: {error}"),
    }
}

/// The bytes of an upload could not be produced (a stream's reader failed).
pub fn unreadable_body(key: &str, error: std::io::Error) -> TargetError {
    TargetError::Transient {
        op: "put".into(),
        key: key.into(),
        detail: format!("reading the bytes to send: {error}"),
    }
}

/// After the server refused `sent` for its checksum: `Checksum` when the
/// source no longer has the CRC32 `expected` the caller computed,
/// `Transient` when it still does (the bytes were damaged on the way).
pub fn explain_digest_mismatch(key: &str, expected: u32, sent: &[&[u8]], error: &ServerError) -> TargetError {
    let actual = checksum::crc32_of_slices(sent);
    if actual != expected {
        return TargetError::Checksum { key: key.to_string(), expected, actual };
    }
    TargetError::Transient {
        op: "put".into(),
        key: key.to_string(),
        detail: format!(
            "the server received bytes that do not match their CRC32 ({}: {})",
            error.code, error.message
        ),
    }
}

/// Compare a checksum the server echoed with ours; composite or unreadable
/// values cannot be compared and are ignored.
pub fn verify_echoed_crc(key: &str, expected: u32, echoed: Option<&str>) -> Result<(), TargetError> {
    match echoed.and_then(checksum::parse_reported_crc32) {
        Some(ReportedCrc32::FullObject(actual)) if actual != expected => {
            Err(TargetError::Checksum { key: key.to_string(), expected, actual })
        }
        _ => Ok(()),
    }
}

/// Size and full-object CRC32 of `key`; `None` when it does not exist.
pub fn head(target: &S3Target, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
    let full_key = target.full_key(key);
    let request =
        S3Request::new("head", key, "HEAD").object(&full_key).header("x-amz-checksum-mode", "ENABLED");
    let reply = match target.client.call(&request) {
        Ok(reply) => reply,
        Err(Failure::Server(error)) if error.status == 404 && error.code != "NoSuchBucket" => {
            return Ok(None);
        }
        // A transient status (5xx, 429) needs no explaining and must stay
        // transient: the explaining GET could only blur it (e.g. into a
        // not-found for an object not stored yet).
        Err(Failure::Server(error)) if !error.explained && !error.is_transient() => {
            return Err(explain_head_failure(target, key, &request, error));
        }
        Err(failure) => return Err(target.client.target_error(&request, failure)),
    };
    let size = reply
        .header("content-length")
        .and_then(|length| length.trim().parse::<u64>().ok())
        .ok_or_else(|| TargetError::Transient {
            op: "head".into(),
            key: key.into(),
            detail: "the response has no valid Content-Length".into(),
        })?;
    Ok(Some(ObjectInfo { key: key.to_string(), size, crc32: reported_full_crc(&reply) }))
}

/// HEAD responses have no body, so a refusal (wrong region, key, …) comes
/// without its reason: ask for the first byte with GET, whose error carries
/// it. Falls back to the status-only error.
fn explain_head_failure(
    target: &S3Target,
    key: &str,
    head_request: &S3Request<'_>,
    error: ServerError,
) -> TargetError {
    let full_key = target.full_key(key);
    let request = S3Request::new("head", key, "GET").object(&full_key).header("range", "bytes=0-0");
    match target.client.call(&request) {
        Err(Failure::Server(explained)) if explained.explained => {
            target.client.target_error(&request, Failure::Server(explained))
        }
        _ => target.client.target_error(head_request, Failure::Server(error)),
    }
}

/// The object's CRC32 when the server reports a full-object one; `None` for
/// composite (`BASE64-N`) values, which are not a CRC32 of the bytes.
fn reported_full_crc(reply: &super::client::Reply) -> Option<u32> {
    match checksum::parse_reported_crc32(reply.header("x-amz-checksum-crc32")?)? {
        ReportedCrc32::FullObject(crc) => Some(crc),
        ReportedCrc32::Composite { .. } => None,
    }
}

/// Progress of one GET across resumed requests.
struct Download {
    /// First byte wanted (object offset).
    start: u64,
    /// Bytes wanted; learnt from the first response when no range was given.
    wanted: Option<u64>,
    written: u64,
    /// ETag of the first response, so a resumed request reads the same version.
    etag: Option<String>,
}

/// Write the object (or `range = (offset, len)` of it) to `out`.
pub fn get(
    target: &S3Target,
    key: &str,
    range: Option<(u64, u64)>,
    out: &mut dyn Write,
) -> Result<u64, TargetError> {
    if let Some((offset, len)) = range
        && offset.checked_add(len).is_none()
    {
        return Err(TargetError::Fatal {
            op: "get".into(),
            key: key.into(),
            detail: format!("byte range {offset}+{len} is out of bounds"),
            fix: "this is a bug in walship or a damaged manifest; run walship verify".into(),
        });
    }
    if let Some((_, 0)) = range {
        return match head(target, key)? {
            Some(_) => Ok(0),
            None => Err(TargetError::NotFound { key: key.to_string() }),
        };
    }
    let mut download = Download {
        start: range.map_or(0, |(offset, _)| offset),
        wanted: range.map(|(_, len)| len),
        written: 0,
        etag: None,
    };
    // Each request is retried by the client until a response arrives; a body
    // that breaks off after some progress is resumed here, a bounded number
    // of times.
    let mut resumes = 0;
    let mut backoff = target.retry.backoff();
    // Restores and fetches are paced here, as the bytes arrive.
    let mut out = crate::bandwidth::PacedWriter { inner: out };
    loop {
        let before = download.written;
        match fetch_into(target, key, range.is_some(), &mut download, &mut out) {
            Ok(()) => return Ok(download.written),
            Err(error)
                if error.is_transient()
                    && download.written > before
                    && resumes + 1 < target.retry.attempts =>
            {
                log::debug!("get {key}: {error}; resuming at byte {}", download.written);
                std::thread::sleep(backoff.failed());
                resumes += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// One GET request, continuing where `download` stands; `Ok` once every
/// wanted byte is written.
fn fetch_into(
    target: &S3Target,
    key: &str,
    ranged: bool,
    download: &mut Download,
    out: &mut dyn Write,
) -> Result<(), TargetError> {
    let full_key = target.full_key(key);
    let mut request = S3Request::new("get", key, "GET").object(&full_key);
    let resuming = download.written > 0;
    if ranged || resuming {
        let first = download.start + download.written;
        let last = download.wanted.map_or(String::new(), |w| (download.start + w - 1).to_string());
        request = request.header("range", format!("bytes={first}-{last}"));
    }
    if let Some(etag) = &download.etag {
        request = request.header("if-match", etag.clone());
    }
    let response = match target.client.open(&request) {
        Ok(response) => response,
        Err(Failure::Server(error)) if error.status == 412 => {
            return Err(TargetError::Transient {
                op: "get".into(),
                key: key.into(),
                detail: "the object changed while it was being downloaded".into(),
            });
        }
        Err(failure) => return Err(target.client.target_error(&request, failure)),
    };
    let remaining = check_response_head(key, ranged || resuming, download, &response)?;
    let ctx = target.client.context(&request);
    let mut reader = response.into_body().into_reader().take(remaining);
    copy_counted(
        &mut reader,
        out,
        &mut download.written,
        |e| error::transient(&ctx, format!("reading the response failed: {e}")),
        |e| local_write_error(key, e),
    )?;
    // The client keeps a connection for the next request only once a read
    // has seen the body's end; `take` stopped just before that read.
    let _ = reader.into_inner().read(&mut [0; 1]);
    match download.wanted {
        Some(wanted) if download.written < wanted => Err(error::transient(
            &ctx,
            format!("the response ended after {} of {wanted} bytes", download.written),
        )),
        _ => Ok(()),
    }
}

/// Validate status and length of a GET response, learn the ETag and total
/// size on the first one; returns how many body bytes to read.
fn check_response_head(
    key: &str,
    ranged: bool,
    download: &mut Download,
    response: &ureq::http::Response<ureq::Body>,
) -> Result<u64, TargetError> {
    let headers = response.headers();
    let content_length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if ranged && response.status().as_u16() != 206 {
        return Err(TargetError::Fatal {
            op: "get".into(),
            key: key.into(),
            detail: format!("asked for a byte range, got HTTP {}", response.status().as_u16()),
            fix: "use an S3 server (or proxy) that honours Range requests".into(),
        });
    }
    if download.etag.is_none() {
        download.etag = headers.get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
    }
    if download.wanted.is_none() {
        download.wanted = content_length;
    }
    let remaining = download.wanted.map(|w| w - download.written.min(w));
    match (remaining, content_length) {
        (Some(remaining), Some(length)) if length != remaining => Err(TargetError::Transient {
            op: "get".into(),
            key: key.into(),
            detail: format!("expected {remaining} bytes, the response announces {length}"),
        }),
        (Some(remaining), _) => Ok(remaining),
        (None, _) => Ok(u64::MAX),
    }
}

/// Copy `reader` to `out`, adding to `written`; read failures go through
/// `read_error`, write failures are local and reported as such.
fn copy_counted(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    written: &mut u64,
    read_error: impl Fn(std::io::Error) -> TargetError,
    write_error: impl Fn(std::io::Error) -> TargetError,
) -> Result<(), TargetError> {
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        out.write_all(&buffer[..n]).map_err(&write_error)?;
        *written += n as u64;
    }
}

/// A failure writing downloaded bytes locally: not the archive's fault.
fn local_write_error(key: &str, error: std::io::Error) -> TargetError {
    TargetError::Fatal {
        op: "get".into(),
        key: key.to_string(),
        detail: format!("writing the downloaded bytes failed: {error}"),
        fix: "check the destination (free space, permissions)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_checksums_are_compared_when_full_object() {
        let crc = crc32fast::hash(b"abc");
        let header = checksum::crc32_header(crc);
        assert!(verify_echoed_crc("k", crc, Some(&header)).is_ok());
        assert!(verify_echoed_crc("k", crc, None).is_ok());
        assert!(verify_echoed_crc("k", crc, Some(&format!("{header}-2"))).is_ok());
        assert!(verify_echoed_crc("k", crc, Some("garbage")).is_ok());
        let other = checksum::crc32_header(crc ^ 1);
        assert!(matches!(
            verify_echoed_crc("k", crc, Some(&other)),
            Err(TargetError::Checksum { expected, actual, .. }) if expected == crc && actual == crc ^ 1
        ));
    }

    #[test]
    fn digest_mismatch_is_a_checksum_error_only_when_the_source_changed() {
        let error = ServerError::from_response(400, None, b"<Error><Code>BadDigest</Code></Error>");
        let bytes: &[u8] = b"segment bytes";
        let sent = [bytes];
        assert!(explain_digest_mismatch("k", crc32fast::hash(bytes), &sent, &error).is_transient());
        assert!(matches!(
            explain_digest_mismatch("k", 7, &sent, &error),
            TargetError::Checksum { expected: 7, .. }
        ));
    }

    /// Restore opened a new connection per GET: the body was read up to
    /// its last byte, not to its end, so the client never kept the
    /// connection. Three ranged GETs now share one.
    #[test]
    fn gets_one_after_another_share_one_connection() {
        use std::io::{BufRead, BufReader};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(connection) = connection else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(connection.try_clone().unwrap());
                    let mut writer = connection;
                    loop {
                        let mut line = String::new();
                        // One request head (no body), then a 206 of 5 bytes.
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let reply =
                            "HTTP/1.1 206 Partial Content\r\ncontent-length: 5\r\netag: \"e\"\r\n\r\nhello";
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let settings = super::super::tests::settings();
        let target = S3Target::new(super::super::S3Settings { endpoint, ..settings }).unwrap();
        for _ in 0..3 {
            let mut out = Vec::new();
            assert_eq!(get(&target, "k", Some((0, 5)), &mut out).unwrap(), 5);
            assert_eq!(out, b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "connections opened for 3 GETs");
    }

    #[test]
    fn copy_counts_and_separates_write_failures() {
        let mut written = 0;
        let mut out = Vec::new();
        let mut reader: &[u8] = b"hello";
        copy_counted(&mut reader, &mut out, &mut written, |_| unreachable!(), |_| unreachable!()).unwrap();
        assert_eq!((written, out.as_slice()), (5, &b"hello"[..]));

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut reader: &[u8] = b"hello";
        let error = copy_counted(
            &mut reader,
            &mut Full,
            &mut written,
            |_| unreachable!(),
            |e| local_write_error("k", e),
        );
        assert!(matches!(error, Err(TargetError::Fatal { .. })));
    }
}
