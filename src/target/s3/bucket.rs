//! Bucket-level operations: ListObjectsV2 page by page, DeleteObjects in
//! batches, aborting stale multipart uploads, and the reachability check.
//!
//! Keys cross this module's boundary relative to the target prefix; the
//! prefix is added to every request and stripped from every answer (keys
//! outside it are ignored).

use std::collections::HashSet;

use crate::target::{DatedListing, DatedObject, ObjectInfo, TargetError, Upload};

use super::S3Target;
use super::checksum;
use super::client::{Failure, Payload, Reply, S3Request};
use super::dates;
use super::error::{self, ServerError};
use super::multipart::{self, AbortError};
use super::xml;

/// DeleteObjects accepts at most this many keys per request.
pub const DELETE_BATCH: usize = 1000;

/// Every object under `prefix` (target-relative) sorting after
/// `start_after`, one page (one ListObjectsV2 answer) at a time to `visit`,
/// until it returns `false`.
pub fn list_pages(
    target: &S3Target,
    prefix: &str,
    start_after: Option<&str>,
    visit: &mut dyn FnMut(Vec<ObjectInfo>) -> bool,
) -> Result<(), TargetError> {
    for_each_page(target, prefix, start_after, None, |page, _| {
        let objects = page.objects.into_iter().filter_map(|(key, size)| {
            let key = target.relative_key(&key)?.to_string();
            Some(ObjectInfo { key, size, crc32: None })
        });
        Ok(visit(objects.collect()))
    })
}

/// Every object under `prefix` with its `LastModified`, and the `Date` of
/// the last page's response: the store's clock, for judging ages.
pub fn list_dated(target: &S3Target, prefix: &str) -> Result<DatedListing, TargetError> {
    let mut objects = Vec::new();
    let mut store_now = None;
    for_each_page(target, prefix, None, None, |page, reply| {
        let unreadable = |what: String| {
            let request = S3Request::new("list", display_prefix(target, prefix), "GET");
            error::transient(&target.client.context(&request), format!("unreadable listing: {what}"))
        };
        let date =
            reply.header("date").ok_or_else(|| unreadable("the response has no Date header".into()))?;
        store_now =
            Some(dates::parse_http_date(date).ok_or_else(|| unreadable(format!("Date header {date:?}")))?);
        let dated = page.last_modified.into_iter().zip(page.etags);
        for ((key, size), (modified, etag)) in page.objects.into_iter().zip(dated) {
            let Some(key) = target.relative_key(&key) else { continue };
            let text = modified.unwrap_or_default();
            let modified = dates::parse_iso8601(&text)
                .ok_or_else(|| unreadable(format!("object {key} has LastModified {text:?}")))?;
            objects.push(DatedObject { key: key.to_string(), size, modified, etag });
        }
        Ok(true)
    })?;
    let store_now = store_now.unwrap_or_else(std::time::SystemTime::now);
    Ok(DatedListing { objects, store_now })
}

/// The names one level below `prefix` (target-relative, ending in '/' or
/// empty) that hold objects: ListObjectsV2 with delimiter '/'.
pub fn list_dirs(target: &S3Target, prefix: &str) -> Result<Vec<String>, TargetError> {
    let mut dirs = Vec::new();
    for_each_page(target, prefix, None, Some("/"), |page, _| {
        dirs.extend(page.common_prefixes.iter().filter_map(|full| {
            let relative = target.relative_key(full)?.strip_prefix(prefix)?;
            Some(relative.trim_end_matches('/').to_string())
        }));
        Ok(true)
    })?;
    Ok(dirs)
}

/// ListObjectsV2 under `prefix` (target-relative) after `start_after`,
/// with an optional delimiter, page by page (up to 1,000 keys each), each
/// page handed to `each` with its response; `each` returns whether to go
/// on.
fn for_each_page(
    target: &S3Target,
    prefix: &str,
    start_after: Option<&str>,
    delimiter: Option<&str>,
    mut each: impl FnMut(xml::ListObjectsPage, &Reply) -> Result<bool, TargetError>,
) -> Result<(), TargetError> {
    let full_prefix = target.full_key(prefix);
    let display = display_prefix(target, prefix);
    let full_start_after = start_after.map(|key| target.full_key(key));
    let mut token: Option<String> = None;
    let mut seen_tokens = HashSet::new();
    loop {
        let mut request = S3Request::new("list", display, "GET").query("list-type", "2");
        if !full_prefix.is_empty() {
            request = request.query("prefix", full_prefix.clone());
        }
        if let Some(after) = &full_start_after {
            request = request.query("start-after", after.clone());
        }
        if let Some(delimiter) = delimiter {
            request = request.query("delimiter", delimiter);
        }
        if let Some(token) = &token {
            request = request.query("continuation-token", token.clone());
        }
        let reply = target.client.call_checked(&request)?;
        let page = xml::parse_list_objects(&reply.text()).map_err(|detail| {
            error::transient(&target.client.context(&request), format!("unreadable listing: {detail}"))
        })?;
        let (is_truncated, next_token) = (page.is_truncated, page.next_continuation_token.clone());
        if !each(page, &reply)? || !is_truncated {
            return Ok(());
        }
        token = match next_token {
            Some(next) if seen_tokens.insert(next.clone()) => Some(next),
            _ => {
                return Err(error::transient(
                    &target.client.context(&request),
                    "the listing is truncated but gives no new continuation token".into(),
                ));
            }
        };
    }
}

/// Delete `keys` (target-relative), [`DELETE_BATCH`] per request; keys that
/// do not exist are not an error.
pub fn delete(target: &S3Target, keys: &[String]) -> Result<(), TargetError> {
    for batch in keys.chunks(DELETE_BATCH) {
        delete_batch(target, batch)?;
    }
    Ok(())
}

fn delete_batch(target: &S3Target, keys: &[String]) -> Result<(), TargetError> {
    let document = delete_document(keys.iter().map(|key| target.full_key(key)));
    let display = keys.first().map_or("", String::as_str);
    // S3 requires Content-MD5 or a flexible checksum on DeleteObjects.
    let request = S3Request::new("delete", display, "POST")
        .query("delete", "")
        .header("content-type", "application/xml")
        .header("x-amz-sdk-checksum-algorithm", "CRC32")
        .header("x-amz-checksum-crc32", checksum::crc32_header(crc32fast::hash(document.as_bytes())))
        .payload(Payload::Signed(document.as_bytes()));
    let reply = target.client.call_checked(&request)?;
    let failure =
        xml::parse_delete_failures(&reply.text()).into_iter().find(|failure| failure.code != "NoSuchKey");
    match failure {
        None => Ok(()),
        Some(failure) => {
            let key = target.relative_key(&failure.key).unwrap_or(&failure.key).to_string();
            let error = ServerError {
                status: 200,
                code: failure.code,
                message: failure.message,
                expected_region: None,
                request_id: None,
                explained: true,
            };
            let request = S3Request::new("delete", &key, "POST");
            Err(error.to_target_error(&target.client.context(&request)))
        }
    }
}

/// The DeleteObjects body for these bucket keys, in quiet mode (only
/// failures are reported back).
fn delete_document(full_keys: impl Iterator<Item = String>) -> String {
    let mut document =
        String::from("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>");
    for key in full_keys {
        document.push_str(&format!("<Object><Key>{}</Key></Object>", xml::escape(&key)));
    }
    document.push_str("</Delete>");
    document
}

/// What is lost when the store cannot list or abort multipart uploads, and
/// the remedy: said once (see [`S3Target::warn_once`]).
pub const NO_STALE_UPLOAD_CLEANUP: &str = "unfinished multipart uploads left by a crash or a kill \
     are not cleaned up automatically and keep using space; add a lifecycle rule to the bucket \
     that aborts incomplete multipart uploads (e.g. after 1 day). Archiving goes on";

/// Abort every unfinished multipart upload under `prefix` (target-relative).
/// All of them belong to earlier runs: call this before uploading.
///
/// Optional: a store that does not implement ListMultipartUploads or
/// AbortMultipartUpload (HTTP 501) gets a warning, once, and 0 is returned.
pub fn abort_stale_uploads(target: &S3Target, prefix: &str) -> Result<usize, TargetError> {
    let full_prefix = target.full_key(prefix);
    let display = display_prefix(target, prefix);
    let mut aborted = 0;
    let mut markers: Option<(String, Option<String>)> = None;
    loop {
        let mut request = S3Request::new("list multipart uploads under", display, "GET").query("uploads", "");
        if !full_prefix.is_empty() {
            request = request.query("prefix", full_prefix.clone());
        }
        if let Some((key_marker, upload_marker)) = &markers {
            request = request.query("key-marker", key_marker.clone());
            if let Some(upload_marker) = upload_marker {
                request = request.query("upload-id-marker", upload_marker.clone());
            }
        }
        let reply = match target.client.call(&request) {
            Ok(reply) => reply,
            Err(Failure::Server(error)) if error.is_not_implemented() => {
                target.warn_once("ListMultipartUploads", NO_STALE_UPLOAD_CLEANUP);
                return Ok(aborted);
            }
            Err(failure) => return Err(target.client.target_error(&request, failure)),
        };
        let page = xml::parse_list_uploads(&reply.text());
        for upload in &page.uploads {
            let key = target.relative_key(&upload.key).unwrap_or(&upload.key);
            match multipart::abort(target, key, &upload.key, &upload.upload_id) {
                Ok(()) => {}
                Err(AbortError::NotImplemented) => {
                    target.warn_once("AbortMultipartUpload", NO_STALE_UPLOAD_CLEANUP);
                    return Ok(aborted);
                }
                Err(AbortError::Failed(error)) => return Err(error),
            }
            log::info!(
                "aborted the unfinished multipart upload of {key} (started {})",
                upload.initiated.as_deref().unwrap_or("at an unknown time")
            );
            aborted += 1;
        }
        let next = page.next_key_marker.map(|key| (key, page.next_upload_id_marker));
        match next {
            Some(next) if page.is_truncated && markers.as_ref() != Some(&next) => markers = Some(next),
            _ => return Ok(aborted),
        }
    }
}

/// Prove bucket, region and credentials work, and that writing, checksums
/// and deleting are allowed: list one key, then put and delete a small
/// probe object at the prefix root. Unreachable endpoints are `Fatal` here.
pub fn check(target: &S3Target) -> Result<(), TargetError> {
    let check_request = S3Request::new("check", &target.location, "GET");
    let ctx = target.client.context(&check_request);
    let as_fatal = |error| error::unreachable_as_fatal(&ctx, error);
    let full_prefix = target.full_key("");
    let mut request =
        S3Request::new("list", &target.location, "GET").query("list-type", "2").query("max-keys", "1");
    if !full_prefix.is_empty() {
        request = request.query("prefix", full_prefix);
    }
    target.client.call_checked(&request).map_err(as_fatal)?;
    let probe_key = probe_key();
    let content: &[u8] = b"walship check probe; safe to delete\n";
    let pieces = [content];
    let probe = Upload::pieces(&pieces, content.len() as u64, crc32fast::hash(content));
    super::object::put_single(target, &probe_key, &probe).map_err(as_fatal)?;
    delete(target, &[probe_key]).map_err(as_fatal)
}

/// A prefix as messages show it: the target itself when empty.
fn display_prefix<'a>(target: &'a S3Target, prefix: &'a str) -> &'a str {
    if prefix.is_empty() { &target.location } else { prefix }
}

/// A probe key no stream can own (stream names do not start with a dot).
fn probe_key() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!(".walship-check-{:x}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_document_escapes_keys_and_is_quiet() {
        let document = delete_document(["p/a&b".to_string(), "p/<c>".to_string()].into_iter());
        assert_eq!(
            document,
            "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>\
             <Object><Key>p/a&amp;b</Key></Object><Object><Key>p/&lt;c&gt;</Key></Object></Delete>"
        );
    }

    #[test]
    fn probe_keys_start_with_a_dot() {
        assert!(probe_key().starts_with(".walship-check-"));
    }
}
