//! The `s3://` target: objects in an S3-compatible bucket (AWS S3, Garage,
//! MinIO, Ceph RGW), addressed path-style: `{endpoint}/{bucket}/{prefix}/{key}`.
//!
//! I/O only, like every target: key in, bytes out. The pieces:
//! - [`sigv4`]: request signing (pure), [`credentials`]: where keys come from;
//! - `client`: one signed request with timeouts, TLS and retries;
//! - `error`: S3 error bodies and transport failures as [`TargetError`]s;
//! - `object`: PutObject, HEAD, ranged GET; `multipart`: large objects in
//!   parallel parts; `bucket`: listing, batch delete, stale uploads, check;
//! - `resolve`: the endpoint's address without a lookup thread per request;
//! - [`xml`], [`checksum`], `body`, `retry`, `dates` (LastModified and
//!   Date headers, for the dated listing heartbeats need): small helpers.
//!
//! Integrity: every object and part carries `x-amz-checksum-crc32`, so the
//! server refuses bytes that do not match; multipart uploads ask for a
//! full-object CRC32 (`x-amz-checksum-type: FULL_OBJECT`), so the finished
//! object's checksum is the CRC32 of its bytes — the value the manifest
//! records and [`Target::head`] reports.
//!
//! `head` reports `crc32: None` when the server has no CRC32 for the object
//! or only a composite one (`BASE64-N`, from servers that ignore
//! `FULL_OBJECT`): compare sizes and treat the CRC32 as unknown then. A HEAD
//! on a missing bucket also answers `None` (HEAD responses have no body to
//! tell a missing bucket from a missing key); `check` and the next PUT report
//! the bucket. Unreachable endpoints are `Transient` in operations and
//! `Fatal` (with the fix) in `check`.
//!
//! Required and optional requests: PutObject, HEAD, GET, ListObjectsV2,
//! DeleteObjects and the multipart upload requests (create, part, complete)
//! are required; a store that answers one of them 501 NotImplemented gets a
//! fatal error naming the request and the store (never retried: it cannot
//! succeed later). ListMultipartUploads and AbortMultipartUpload only clean
//! up stale uploads: without them walship warns once (what is lost, and the
//! lifecycle rule that replaces them) and keeps archiving. The GET that
//! explains a refused HEAD falls back to the HEAD's own error.
//!
//! Trust: TLS is always verified, against the bundled WebPKI roots or, when
//! `ca_file` is set, against the certificates of that file only (ureq offers
//! one root set per agent; a private endpoint needs only its own CA).

mod body;
mod bucket;
pub mod checksum;
mod client;
pub mod credentials;
mod dates;
mod error;
mod multipart;
mod object;
mod resolve;
mod retry;
pub mod settings;
pub mod sigv4;
pub mod xml;

use crate::target::{Body, DatedListing, ObjectInfo, Target, TargetError, Upload};
use std::io::Write;

use client::{Client, Timeouts};
pub use credentials::Credentials;
use retry::RetryPolicy;

pub use settings::{MAX_PART_SIZE, MIN_PART_SIZE, S3Settings};

/// Attempts of one request (or part) before its transient error is returned.
pub const REQUEST_ATTEMPTS: u32 = 5;

/// An S3 bucket (and prefix) as a [`Target`].
pub struct S3Target {
    client: Client,
    /// Normalized: no leading or trailing `/`; empty for the bucket root.
    prefix: String,
    part_size: u64,
    parallel_uploads: usize,
    retry: RetryPolicy,
    /// `s3://bucket/prefix`, names the target in bucket-level messages.
    location: String,
    /// `s3://bucket/prefix at ENDPOINT`: which archive this is.
    place: String,
    description: String,
    /// Optional operations the store turned out not to implement, each
    /// warned about once.
    unsupported: std::sync::Mutex<Vec<&'static str>>,
}

impl S3Target {
    /// Validate `settings` and build the HTTP client (no request is sent;
    /// see [`Target::check`]).
    pub fn new(settings: S3Settings) -> Result<S3Target, TargetError> {
        let endpoint = settings::validate(&settings).map_err(|(detail, fix)| config_error(detail, fix))?;
        if !endpoint.is_https {
            log::warn!(
                "endpoint {} uses plain http: archived data crosses the network unencrypted",
                endpoint.origin
            );
        }
        let timeouts = Timeouts { connect: settings.connect_timeout, io: settings.io_timeout };
        let connections = settings.streams.max(1) * (settings.parallel_uploads + 1);
        let agent =
            client::build_agent(timeouts, settings.ca_file.as_deref(), connections).map_err(|detail| {
                config_error(detail, "set ca_file to a readable PEM file of CA certificates")
            })?;
        let retry = RetryPolicy {
            attempts: REQUEST_ATTEMPTS,
            min_delay: settings.retry_min,
            max_delay: settings.retry_max,
            stopping: Default::default(),
        };
        let prefix = settings.prefix.trim_matches('/').to_string();
        let location = if prefix.is_empty() {
            format!("s3://{}", settings.bucket)
        } else {
            format!("s3://{}/{prefix}", settings.bucket)
        };
        let place = format!("{location} at {}", endpoint.origin);
        let description = format!("{place} (region {}, {})", settings.region, settings.credentials);
        let client = Client::new(
            agent,
            endpoint,
            settings.bucket,
            settings.region,
            settings.credentials,
            retry.clone(),
        );
        Ok(S3Target {
            client,
            prefix,
            part_size: settings.part_size,
            parallel_uploads: settings.parallel_uploads,
            retry,
            location,
            place,
            description,
            unsupported: Default::default(),
        })
    }

    /// Warn, once per target and operation, that the store does not
    /// implement the optional `operation`; `consequence` says what is lost
    /// and what to do.
    fn warn_once(&self, operation: &'static str, consequence: &str) {
        let mut warned = self.unsupported.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !warned.contains(&operation) {
            warned.push(operation);
            log::warn!(
                "the S3 store at {} does not implement {operation} (HTTP 501 NotImplemented): {consequence}",
                self.client.endpoint_origin()
            );
        }
    }

    /// The bucket key of a target-relative key.
    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) }
    }

    /// The target-relative key of a bucket key; `None` outside the prefix.
    fn relative_key<'k>(&self, full_key: &'k str) -> Option<&'k str> {
        if self.prefix.is_empty() {
            Some(full_key)
        } else {
            full_key.strip_prefix(&self.prefix)?.strip_prefix('/')
        }
    }
}

fn config_error(detail: String, fix: &str) -> TargetError {
    TargetError::Unusable { detail: format!("s3 target: {detail}"), fix: fix.into() }
}

impl Target for S3Target {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn place(&self) -> String {
        self.place.clone()
    }

    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
        let pieces_len = match &body.body {
            Body::Pieces(pieces) => pieces.iter().map(|p| p.len() as u64).sum(),
            Body::Stream(_) => body.size,
        };
        if pieces_len != body.size {
            return Err(TargetError::Fatal {
                op: "put".into(),
                key: key.into(),
                detail: format!("upload declares {} bytes but holds {pieces_len}", body.size),
                fix: "this is a bug in walship; please report it".into(),
            });
        }
        if body.size <= self.part_size {
            object::put_single(self, key, body)
        } else {
            multipart::put_multipart(self, key, body)
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
        object::head(self, key)
    }

    fn get(&self, key: &str, range: Option<(u64, u64)>, out: &mut dyn Write) -> Result<u64, TargetError> {
        object::get(self, key, range, out)
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError> {
        let mut objects = Vec::new();
        bucket::list_pages(self, prefix, start_after, &mut |page| {
            objects.extend(page);
            true
        })?;
        Ok(objects)
    }

    fn list_pages(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> bool,
    ) -> Result<(), TargetError> {
        bucket::list_pages(self, prefix, start_after, visit)
    }

    fn list_dated(&self, prefix: &str) -> Result<DatedListing, TargetError> {
        bucket::list_dated(self, prefix)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        bucket::list_dirs(self, prefix)
    }

    fn delete(&self, keys: &[String]) -> Result<(), TargetError> {
        bucket::delete(self, keys)
    }

    fn abort_stale_uploads(&self, prefix: &str) -> Result<usize, TargetError> {
        bucket::abort_stale_uploads(self, prefix)
    }

    fn check(&self) -> Result<(), TargetError> {
        bucket::check(self)
    }

    fn shut_down(&self) {
        self.retry.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn settings() -> S3Settings {
        S3Settings {
            endpoint: "http://127.0.0.1:39001".into(),
            region: "garage".into(),
            bucket: "archive".into(),
            prefix: "/fleet/node-1/".into(),
            credentials: Credentials {
                access_key_id: "GK0123".into(),
                secret_access_key: "very-secret".into(),
                session_token: None,
            },
            ca_file: None,
            part_size: MIN_PART_SIZE,
            parallel_uploads: 2,
            streams: 1,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_secs(5),
        }
    }

    fn fix_of(result: Result<S3Target, TargetError>) -> String {
        match result {
            Err(TargetError::Unusable { fix, .. }) => fix,
            Err(other) => panic!("expected Unusable, got {other:?}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn keys_live_under_the_normalized_prefix() {
        let target = S3Target::new(settings()).unwrap();
        assert_eq!(target.full_key("s/batches/1"), "fleet/node-1/s/batches/1");
        assert_eq!(target.relative_key("fleet/node-1/s/batches/1"), Some("s/batches/1"));
        assert_eq!(target.relative_key("fleet/node-10/x"), None);
        assert_eq!(target.full_key(""), "fleet/node-1/");

        let target = S3Target::new(S3Settings { prefix: String::new(), ..settings() }).unwrap();
        assert_eq!(target.full_key("s/x"), "s/x");
        assert_eq!(target.relative_key("s/x"), Some("s/x"));
    }

    #[test]
    fn describe_names_the_place_but_not_the_secret() {
        let target = S3Target::new(settings()).unwrap();
        let text = target.describe();
        assert!(text.contains("s3://archive/fleet/node-1 at http://127.0.0.1:39001"), "{text}");
        assert!(text.contains("GK0123"), "{text}");
        assert!(!text.contains("very-secret"), "{text}");
    }

    #[test]
    fn refuses_parts_below_five_mebibytes() {
        let fix = fix_of(S3Target::new(S3Settings { part_size: MIN_PART_SIZE - 1, ..settings() }));
        assert!(fix.contains("at least 5MiB"), "{fix}");
    }

    #[test]
    fn refuses_other_bad_settings() {
        for bad in [
            S3Settings { parallel_uploads: 0, ..settings() },
            S3Settings { bucket: String::new(), ..settings() },
            S3Settings { region: " ".into(), ..settings() },
            S3Settings { io_timeout: Duration::ZERO, ..settings() },
            S3Settings { retry_min: Duration::from_secs(9), ..settings() },
            S3Settings { endpoint: "s3.example.net".into(), ..settings() },
            S3Settings { ca_file: Some("/nonexistent/ca.pem".into()), ..settings() },
            S3Settings { part_size: MAX_PART_SIZE + 1, ..settings() },
        ] {
            assert!(S3Target::new(bad).is_err());
        }
    }
}
