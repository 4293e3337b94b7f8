//! Multipart upload of objects larger than one part.
//!
//! Steps: plan the parts ([`plan_parts`], pure); CreateMultipartUpload asking
//! for a full-object CRC32; upload the parts with at most `parallel_uploads`
//! in flight (scoped threads taking part numbers in turn from a shared
//! counter, a streamed body's part read into the worker's own buffer while
//! the counter is held, so it is read in order and at most
//! `parallel_uploads` part buffers exist),
//! each part with its own CRC32 header and retried on its own; check that
//! the part CRCs combine to the object's CRC32 (the source did not change);
//! CompleteMultipartUpload listing each part's ETag and CRC32, declaring the
//! whole-object CRC32 when the server agreed to full-object checksums; then
//! compare the checksum the server reports (full-object, or composite
//! `BASE64-N`) with the local one. Any failure aborts the upload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::target::{TargetError, Upload};

use super::S3Target;
use super::checksum::{self, ReportedCrc32};
use super::client::{Failure, Payload, S3Request};
use super::object::{explain_digest_mismatch, verify_echoed_crc};
use super::xml;

/// Most parts one upload may have (S3's limit).
pub const MAX_PARTS: u64 = 10_000;

/// One part of an object: its 1-based number and byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    pub number: u32,
    pub offset: u64,
    pub len: u64,
}

/// Parts of exactly `part_size` bytes, the last one holding the remainder.
/// Empty for an empty object; `part_size` must be above zero.
pub fn plan_parts(size: u64, part_size: u64) -> Vec<PartSpan> {
    let part_size = part_size.max(1);
    let count = size.div_ceil(part_size);
    (0..count)
        .map(|index| {
            let offset = index * part_size;
            PartSpan {
                number: u32::try_from(index + 1).unwrap_or(u32::MAX),
                offset,
                len: part_size.min(size - offset),
            }
        })
        .collect()
}

/// A part the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompletedPart {
    number: u32,
    etag: String,
    crc32: u32,
    len: u64,
}

/// An upload in progress.
struct Session<'a> {
    target: &'a S3Target,
    /// Key as the caller named it.
    key: &'a str,
    full_key: String,
    upload_id: String,
    /// The server agreed to a full-object CRC32 (`x-amz-checksum-type`).
    full_object: bool,
}

/// Store `body` as a multipart upload; on any failure the upload is aborted.
pub fn put_multipart(target: &S3Target, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
    let parts = plan_parts(body.size, target.part_size);
    if parts.len() as u64 > MAX_PARTS {
        return Err(too_many_parts(key, body.size, target.part_size));
    }
    let session = create(target, key)?;
    let result = upload_parts(&session, body, &parts)
        .and_then(|completed| check_parts_combine(&session, body, &completed).map(|()| completed))
        .and_then(|completed| complete(&session, body, &completed));
    if let Err(error) = &result {
        log::debug!("multipart upload of {key} failed ({error}); aborting it");
        match abort(target, key, &session.full_key, &session.upload_id) {
            Ok(()) => {}
            Err(AbortError::NotImplemented) => {
                target.warn_once("AbortMultipartUpload", super::bucket::NO_STALE_UPLOAD_CLEANUP);
            }
            Err(AbortError::Failed(abort_error)) => log::warn!(
                "could not abort the failed multipart upload of {key}: {abort_error} \
                 (it is aborted at the next start)"
            ),
        }
    }
    result
}

fn too_many_parts(key: &str, size: u64, part_size: u64) -> TargetError {
    let needed = size.div_ceil(MAX_PARTS);
    TargetError::Fatal {
        op: "put".into(),
        key: key.into(),
        detail: format!("{size} bytes need more than {MAX_PARTS} parts of {part_size} bytes"),
        fix: format!("raise part_size to at least {}MiB", needed.div_ceil(1024 * 1024)),
    }
}

/// CreateMultipartUpload with CRC32 checksums, full-object if the server can.
fn create<'a>(target: &'a S3Target, key: &'a str) -> Result<Session<'a>, TargetError> {
    let full_key = target.full_key(key);
    let request = S3Request::new("start multipart upload of", key, "POST")
        .object(&full_key)
        .query("uploads", "")
        .header("x-amz-checksum-algorithm", "CRC32")
        .header("x-amz-checksum-type", "FULL_OBJECT");
    let reply = target.client.call_checked(&request)?;
    let upload_id = xml::parse_upload_id(&reply.text()).ok_or_else(|| TargetError::Transient {
        op: request.op.into(),
        key: key.into(),
        detail: "the response holds no UploadId".into(),
    })?;
    let checksum_type = reply.header("x-amz-checksum-type").unwrap_or("none");
    let full_object = checksum_type.eq_ignore_ascii_case("FULL_OBJECT");
    log::debug!("multipart upload of {key} started (checksum type {checksum_type})");
    Ok(Session { target, key, full_key, upload_id, full_object })
}

/// Upload every part, at most `parallel_uploads` at a time; after the first
/// failure no new part starts. Returns the parts in order, or the failure of
/// the lowest-numbered part that failed.
fn upload_parts(
    session: &Session<'_>,
    body: &Upload<'_>,
    parts: &[PartSpan],
) -> Result<Vec<CompletedPart>, TargetError> {
    // The next part to take; its bytes are taken while this is held, so a
    // streamed body is read in order.
    let next = Mutex::new(0usize);
    let failed = AtomicBool::new(false);
    let outcomes: Mutex<Vec<Option<Result<CompletedPart, TargetError>>>> =
        Mutex::new(parts.iter().map(|_| None).collect());
    let worker = || {
        // This worker's part buffer (used by streamed bodies only).
        let mut buffer = Vec::new();
        // A stop request lets the parts in flight finish but starts no new
        // one; the upload is then aborted like any other failure.
        while !failed.load(Ordering::Relaxed) && !session.target.retry.is_stopping() {
            let (index, span, bytes) = {
                let mut next = next.lock().unwrap_or_else(PoisonError::into_inner);
                let index = *next;
                let Some(span) = parts.get(index) else { break };
                *next += 1;
                (index, span, body.part(span.offset, span.len, &mut buffer))
            };
            let outcome = match bytes {
                Ok(slices) => upload_part(session, span, slices),
                Err(e) => Err(super::object::unreadable_body(session.key, e)),
            };
            if outcome.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            outcomes.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(outcome);
        }
    };
    let workers = session.target.parallel_uploads.clamp(1, parts.len().max(1));
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(worker);
        }
        worker();
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(PoisonError::into_inner);
    collect_parts(session.key, outcomes)
}

/// All parts in order, or the first failure.
fn collect_parts(
    key: &str,
    outcomes: Vec<Option<Result<CompletedPart, TargetError>>>,
) -> Result<Vec<CompletedPart>, TargetError> {
    let mut completed = Vec::with_capacity(outcomes.len());
    let mut skipped = false;
    for outcome in outcomes {
        match outcome {
            Some(Ok(part)) => completed.push(part),
            Some(Err(error)) => return Err(error),
            None => skipped = true,
        }
    }
    if skipped {
        return Err(TargetError::Transient {
            op: "put".into(),
            key: key.into(),
            detail: "some parts were not uploaded".into(),
        });
    }
    Ok(completed)
}

/// UploadPart for one span: CRC32 computed over the slices, sent as header,
/// compared with what the server echoes.
fn upload_part(
    session: &Session<'_>,
    span: &PartSpan,
    slices: Vec<&[u8]>,
) -> Result<CompletedPart, TargetError> {
    let crc32 = checksum::crc32_of_slices(&slices);
    let op = format!("upload part {} of", span.number);
    let request = S3Request::new(&op, session.key, "PUT")
        .object(&session.full_key)
        .query("partNumber", span.number.to_string())
        .query("uploadId", session.upload_id.clone())
        .header("x-amz-checksum-crc32", checksum::crc32_header(crc32))
        .payload(Payload::Unsigned(slices.clone()))
        .without_expect_continue();
    let client = &session.target.client;
    let reply = match client.call(&request) {
        Ok(reply) => reply,
        Err(Failure::Server(error)) if error.is_digest_mismatch() => {
            return Err(explain_digest_mismatch(session.key, crc32, &slices, &error));
        }
        Err(failure) => return Err(client.target_error(&request, failure)),
    };
    verify_echoed_crc(session.key, crc32, reply.header("x-amz-checksum-crc32"))?;
    let etag =
        reply.header("etag").filter(|etag| !etag.trim().is_empty()).ok_or_else(|| TargetError::Fatal {
            op: op.clone(),
            key: session.key.into(),
            detail: "the server returned no ETag for the part".into(),
            fix: "make sure any proxy in front of the endpoint passes the ETag header".into(),
        })?;
    Ok(CompletedPart { number: span.number, etag: etag.to_string(), crc32, len: span.len })
}

/// The part CRCs must combine to the CRC32 the caller declared: otherwise
/// the source changed between the caller's pass and ours.
fn check_parts_combine(
    session: &Session<'_>,
    body: &Upload<'_>,
    parts: &[CompletedPart],
) -> Result<(), TargetError> {
    let combined = crate::crc::concatenation(parts.iter().map(|p| (p.crc32, p.len)));
    // Part lengths that overflow a u64 cannot add up to the declared object.
    let actual = combined.map_or(!body.crc32, |(_, crc)| crc);
    if actual == body.crc32 {
        Ok(())
    } else {
        Err(TargetError::Checksum { key: session.key.into(), expected: body.crc32, actual })
    }
}

/// CompleteMultipartUpload, then the reported checksum compared with ours.
/// The whole-object CRC32 is declared only when the server agreed to
/// full-object checksums, so it refuses to assemble a different object.
fn complete(session: &Session<'_>, body: &Upload<'_>, parts: &[CompletedPart]) -> Result<(), TargetError> {
    let declared = session.full_object.then_some(body.crc32);
    match send_complete(session, parts, declared) {
        Ok(reported) => verify_reported(session.key, body.crc32, parts, reported.as_deref()),
        Err(Failure::Server(error)) if error.is_no_such_upload() => confirm_completed_earlier(session, body),
        Err(Failure::Server(error)) if error.is_digest_mismatch() => Err(TargetError::Transient {
            op: COMPLETE_OP.into(),
            key: session.key.into(),
            detail: format!(
                "the server assembled an object whose checksum differs from ours ({}: {})",
                error.code, error.message
            ),
        }),
        Err(failure) => {
            let request = S3Request::new(COMPLETE_OP, session.key, "POST");
            Err(session.target.client.target_error(&request, failure))
        }
    }
}

const COMPLETE_OP: &str = "complete multipart upload of";

/// Send CompleteMultipartUpload; returns the `ChecksumCRC32` the server
/// reports, if any.
fn send_complete(
    session: &Session<'_>,
    parts: &[CompletedPart],
    declared_crc32: Option<u32>,
) -> Result<Option<String>, Failure> {
    let document = complete_document(parts);
    let mut request = S3Request::new(COMPLETE_OP, session.key, "POST")
        .object(&session.full_key)
        .query("uploadId", session.upload_id.clone())
        .header("content-type", "application/xml")
        .payload(Payload::Signed(document.as_bytes()));
    if let Some(crc32) = declared_crc32 {
        request = request
            .header("x-amz-checksum-type", "FULL_OBJECT")
            .header("x-amz-checksum-crc32", checksum::crc32_header(crc32));
    }
    let reply = session.target.client.call(&request)?;
    Ok(xml::parse_complete_multipart(&reply.text()).checksum_crc32)
}

/// The CompleteMultipartUpload body.
fn complete_document(parts: &[CompletedPart]) -> String {
    let mut document =
        String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for part in parts {
        document.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag><ChecksumCRC32>{}</ChecksumCRC32></Part>",
            part.number,
            xml::escape(&part.etag),
            checksum::crc32_header(part.crc32)
        ));
    }
    document.push_str("</CompleteMultipartUpload>");
    document
}

/// Compare the checksum the server reports for the finished object with the
/// local one: full-object against the object's CRC32, composite against the
/// CRC32 of the part CRCs. No value reported: the per-part checks stand.
fn verify_reported(
    key: &str,
    object_crc32: u32,
    parts: &[CompletedPart],
    reported: Option<&str>,
) -> Result<(), TargetError> {
    let Some(text) = reported else {
        log::debug!("complete {key}: the server reported no checksum; per-part checks stand");
        return Ok(());
    };
    let mismatch = |expected, actual| TargetError::Checksum { key: key.into(), expected, actual };
    match checksum::parse_reported_crc32(text) {
        Some(ReportedCrc32::FullObject(actual)) if actual != object_crc32 => {
            Err(mismatch(object_crc32, actual))
        }
        Some(ReportedCrc32::FullObject(_)) => Ok(()),
        Some(ReportedCrc32::Composite { crc: actual, parts: count }) => {
            let part_crcs: Vec<u32> = parts.iter().map(|p| p.crc32).collect();
            match checksum::composite_crc32(&part_crcs) {
                ReportedCrc32::Composite { crc, .. } if crc != actual => Err(mismatch(crc, actual)),
                _ if count as usize != parts.len() => Err(TargetError::Transient {
                    op: COMPLETE_OP.into(),
                    key: key.into(),
                    detail: format!("the server counts {count} parts, {} were uploaded", parts.len()),
                }),
                _ => Ok(()),
            }
        }
        None => {
            log::warn!("complete {key}: cannot read the reported checksum {text:?}; per-part checks stand");
            Ok(())
        }
    }
}

/// The upload is gone: an earlier attempt of Complete may have succeeded
/// with its response lost. Accept only an object with our size and CRC32.
fn confirm_completed_earlier(session: &Session<'_>, body: &Upload<'_>) -> Result<(), TargetError> {
    match super::object::head(session.target, session.key)? {
        Some(info) if info.size == body.size && info.crc32 == Some(body.crc32) => Ok(()),
        _ => Err(TargetError::Transient {
            op: COMPLETE_OP.into(),
            key: session.key.into(),
            detail: "the upload disappeared before it completed (aborted by another process?)".into(),
        }),
    }
}

/// Why an AbortMultipartUpload failed.
#[derive(Debug)]
pub enum AbortError {
    /// The store does not implement it (HTTP 501): optional, see
    /// [`super::bucket::NO_STALE_UPLOAD_CLEANUP`].
    NotImplemented,
    Failed(TargetError),
}

impl std::fmt::Display for AbortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortError::NotImplemented => write!(f, "the store does not implement AbortMultipartUpload"),
            AbortError::Failed(error) => write!(f, "{error}"),
        }
    }
}

/// AbortMultipartUpload; an upload already gone counts as aborted.
pub fn abort(target: &S3Target, key: &str, full_key: &str, upload_id: &str) -> Result<(), AbortError> {
    let request = S3Request::new("abort multipart upload of", key, "DELETE")
        .object(full_key)
        .query("uploadId", upload_id);
    match target.client.call(&request) {
        Ok(_) => Ok(()),
        Err(Failure::Server(error)) if error.is_no_such_upload() || error.status == 404 => Ok(()),
        Err(Failure::Server(error)) if error.is_not_implemented() => Err(AbortError::NotImplemented),
        Err(failure) => Err(AbortError::Failed(target.client.target_error(&request, failure))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn sizes(parts: &[PartSpan]) -> Vec<u64> {
        parts.iter().map(|p| p.len).collect()
    }

    #[test]
    fn parts_are_exactly_part_size_except_the_last() {
        let part = 5 * MIB;
        assert_eq!(plan_parts(0, part), vec![]);
        assert_eq!(sizes(&plan_parts(1, part)), vec![1]);
        assert_eq!(sizes(&plan_parts(part, part)), vec![part]);
        assert_eq!(sizes(&plan_parts(part + 1, part)), vec![part, 1]);
        assert_eq!(sizes(&plan_parts(3 * part, part)), vec![part, part, part]);
        assert_eq!(sizes(&plan_parts(16 * MIB, part)), vec![part, part, part, MIB]);
    }

    #[test]
    fn parts_are_numbered_from_one_and_contiguous() {
        let parts = plan_parts(23 * MIB, 8 * MIB);
        assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1, 2, 3]);
        let mut offset = 0;
        for part in &parts {
            assert_eq!(part.offset, offset);
            offset += part.len;
        }
        assert_eq!(offset, 23 * MIB);
    }

    #[test]
    fn too_many_parts_suggests_a_part_size() {
        let error = too_many_parts("k", 100_000 * 5 * MIB, 5 * MIB);
        assert!(error.to_string().contains("raise part_size to at least 50MiB"), "{error}");
    }

    fn part(number: u32, data: &[u8]) -> CompletedPart {
        CompletedPart {
            number,
            etag: format!("\"etag{number}\""),
            crc32: crc32fast::hash(data),
            len: data.len() as u64,
        }
    }

    #[test]
    fn reported_checksums_are_verified_in_both_forms() {
        let parts = [part(1, b"aaaa"), part(2, b"bb")];
        let object_crc = crc32fast::hash(b"aaaabb");
        let full = checksum::crc32_header(object_crc);
        assert!(verify_reported("k", object_crc, &parts, Some(&full)).is_ok());
        let composite = checksum::composite_crc32(&[parts[0].crc32, parts[1].crc32]).to_string();
        assert!(composite.ends_with("-2"));
        assert!(verify_reported("k", object_crc, &parts, Some(&composite)).is_ok());
        assert!(verify_reported("k", object_crc, &parts, None).is_ok());

        let wrong_full = checksum::crc32_header(object_crc ^ 0xff);
        assert!(matches!(
            verify_reported("k", object_crc, &parts, Some(&wrong_full)),
            Err(TargetError::Checksum { .. })
        ));
        let wrong_count = composite.replace("-2", "-3");
        assert!(verify_reported("k", object_crc, &parts, Some(&wrong_count)).is_err());
        let wrong_crc = format!("{}-2", checksum::crc32_header(0x1234_5678));
        assert!(matches!(
            verify_reported("k", object_crc, &parts, Some(&wrong_crc)),
            Err(TargetError::Checksum { .. })
        ));
    }

    #[test]
    fn complete_document_lists_parts_with_checksums() {
        let document = complete_document(&[part(1, b"a"), part(2, b"b")]);
        assert!(document.starts_with("<CompleteMultipartUpload xmlns="));
        assert!(document.contains(&format!(
            "<Part><PartNumber>1</PartNumber><ETag>&quot;etag1&quot;</ETag><ChecksumCRC32>{}</ChecksumCRC32></Part>",
            checksum::crc32_header(crc32fast::hash(b"a"))
        )));
        assert!(document.ends_with("</Part></CompleteMultipartUpload>"));
    }

    #[test]
    fn a_failed_or_missing_part_fails_the_collection() {
        let ok = vec![Some(Ok(part(1, b"a"))), Some(Ok(part(2, b"b")))];
        assert_eq!(collect_parts("k", ok).unwrap().len(), 2);
        let failed =
            vec![Some(Ok(part(1, b"a"))), Some(Err(TargetError::NotFound { key: "k".into() })), None];
        assert!(matches!(collect_parts("k", failed), Err(TargetError::NotFound { .. })));
        let skipped = vec![Some(Ok(part(1, b"a"))), None];
        assert!(collect_parts("k", skipped).unwrap_err().is_transient());
    }
}
