//! The `s3://` target: objects in an S3-compatible bucket (AWS S3, Garage,
//! MinIO, Ceph RGW), addressed path-style: `{endpoint}/{bucket}/{prefix}/{key}`.
//!
//! I/O only, like every target: key in, bytes out. The pieces:
//! - [`sigv4`]: request signing (pure), [`credentials`]: where keys come from;
//! - `client`: one signed request with timeouts, TLS and retries;
//! - `error`: S3 error bodies and transport failures as [`TargetError`]s;
//! - `object`: PutObject, HEAD, ranged GET; `multipart`: large objects in
//!   parallel parts; `bucket`: listing, batch delete, stale uploads, check;
//! - [`xml`], [`checksum`], `body`, `retry`: small helpers.
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
//! Trust: TLS is always verified, against the bundled WebPKI roots or, when
//! `ca_file` is set, against the certificates of that file only (ureq offers
//! one root set per agent; a private endpoint needs only its own CA).

mod body;
mod bucket;
pub mod checksum;
mod client;
pub mod credentials;
mod error;
mod multipart;
mod object;
mod retry;
pub mod sigv4;
pub mod xml;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::target::{ObjectInfo, Target, TargetError, Upload};

use client::{Client, Timeouts};
pub use credentials::Credentials;
use retry::RetryPolicy;

/// Smallest part size S3 allows (except for the last part).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part (and single PutObject walship sends) S3 allows.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Attempts of one request (or part) before its transient error is returned.
pub const REQUEST_ATTEMPTS: u32 = 5;

/// Everything needed to talk to one bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http://host:port` or `https://host[:port]`, without a path.
    pub endpoint: String,
    /// Signing region: `us-east-1` for AWS's default, `garage` for Garage.
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket, may be empty; slashes at either end are
    /// ignored.
    pub prefix: String,
    pub credentials: Credentials,
    /// Extra trust anchors (PEM); replaces the WebPKI roots when set.
    pub ca_file: Option<PathBuf>,
    /// Objects larger than this go multipart in parts of exactly this size
    /// (the last part smaller); at least [`MIN_PART_SIZE`].
    pub part_size: u64,
    /// Parts of one object in flight at once (at least 1).
    pub parallel_uploads: usize,
    /// DNS + TCP + TLS setup, each.
    pub connect_timeout: Duration,
    /// Response-head wait, and the longest a body read or write may stall.
    pub io_timeout: Duration,
    /// Backoff bounds between attempts of one request.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

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
    description: String,
}

impl S3Target {
    /// Validate `settings` and build the HTTP client (no request is sent;
    /// see [`Target::check`]).
    pub fn new(settings: S3Settings) -> Result<S3Target, TargetError> {
        validate(&settings)?;
        let endpoint = client::parse_endpoint(&settings.endpoint)
            .map_err(|detail| config_error(detail, "set endpoint to an http:// or https:// URL"))?;
        if !endpoint.is_https {
            log::warn!(
                "endpoint {} uses plain http: archived data crosses the network unencrypted",
                endpoint.origin
            );
        }
        let timeouts = Timeouts { connect: settings.connect_timeout, io: settings.io_timeout };
        let agent = client::build_agent(timeouts, settings.ca_file.as_deref(), settings.parallel_uploads + 1)
            .map_err(|detail| {
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
        let description = format!(
            "{location} at {} (region {}, {})",
            endpoint.origin, settings.region, settings.credentials
        );
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
            description,
        })
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

fn validate(settings: &S3Settings) -> Result<(), TargetError> {
    let checks: [(bool, String, &str); 7] = [
        (
            settings.part_size >= MIN_PART_SIZE,
            format!("part_size {} is below S3's 5MiB minimum", settings.part_size),
            "set part_size to at least 5MiB",
        ),
        (
            settings.part_size <= MAX_PART_SIZE,
            format!("part_size {} is above S3's 5GiB maximum", settings.part_size),
            "set part_size to at most 5GiB",
        ),
        (
            settings.parallel_uploads >= 1,
            "parallel_uploads is 0".into(),
            "set parallel_uploads to at least 1",
        ),
        (
            !settings.bucket.is_empty() && !settings.bucket.contains('/'),
            format!("bucket name {:?} is not valid", settings.bucket),
            "set target = s3://BUCKET/prefix",
        ),
        (
            !settings.region.trim().is_empty(),
            "region is empty".into(),
            "set region (us-east-1 for AWS's default, garage for Garage)",
        ),
        (
            !settings.connect_timeout.is_zero() && !settings.io_timeout.is_zero(),
            "a zero timeout would fail every request".into(),
            "use timeouts above zero",
        ),
        (
            settings.retry_min <= settings.retry_max,
            format!("backoff_min {:?} exceeds backoff_max {:?}", settings.retry_min, settings.retry_max),
            "set backoff_min <= backoff_max",
        ),
    ];
    match checks.into_iter().find(|(ok, _, _)| !ok) {
        Some((_, detail, fix)) => Err(config_error(detail, fix)),
        None => Ok(()),
    }
}

fn config_error(detail: String, fix: &str) -> TargetError {
    TargetError::Unusable { detail: format!("s3 target: {detail}"), fix: fix.into() }
}

impl Target for S3Target {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
        let pieces_len: u64 = body.pieces.iter().map(|p| p.len() as u64).sum();
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
        bucket::list(self, prefix, start_after)
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
