//! Turning S3 failures into [`TargetError`]s an operator can act on.
//!
//! Two sources: an HTTP response with an error status (and usually an
//! `<Error>` body), and a transport failure reported by ureq (DNS, connect,
//! TLS, timeout, reset). Each becomes `Transient` (retry as is), `NotFound`,
//! or `Fatal` with a `fix` naming what to change. The mapping is pure and
//! tested with sample bodies. Messages carry the server's `Code` and
//! `Message` only — never request headers, the canonical request or the
//! string to sign that some servers echo back.

use crate::target::TargetError;

use super::xml;

/// What was being done when a failure happened, for messages.
#[derive(Debug, Clone, Copy)]
pub struct ErrorContext<'a> {
    /// Operation, e.g. `put`, `upload part 3 of`, `list`.
    pub op: &'a str,
    /// Key as the caller named it (relative to the target prefix).
    pub key: &'a str,
    pub bucket: &'a str,
    pub endpoint: &'a str,
    /// The region walship signs with.
    pub region: &'a str,
}

/// An S3 error response, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub status: u16,
    /// The S3 error code (`NoSuchKey`, …); derived from the status when the
    /// response had no body (HEAD).
    pub code: String,
    pub message: String,
    /// The region the server expects, from the body or `x-amz-bucket-region`.
    pub expected_region: Option<String>,
    pub request_id: Option<String>,
    /// Whether an `<Error>` document explained the failure (HEAD responses
    /// and some proxies give only a status).
    pub explained: bool,
}

const MAX_MESSAGE_CHARS: usize = 300;

const CREDENTIALS_FIX: &str = "check the access key / secret (credentials_file, \
     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or $CREDENTIALS_DIRECTORY)";

impl ServerError {
    /// Parse a non-success response. `bucket_region` is the
    /// `x-amz-bucket-region` header when present.
    pub fn from_response(status: u16, bucket_region: Option<&str>, body: &[u8]) -> ServerError {
        let text = String::from_utf8_lossy(body);
        let parsed = xml::parse_error(&text).unwrap_or_default();
        let explained = parsed.code.is_some();
        let code = parsed.code.unwrap_or_else(|| code_for_status(status).to_string());
        let region_from_body = parsed.region.filter(|_| is_region_code(&code));
        ServerError {
            status,
            code,
            message: sanitize(parsed.message.as_deref().unwrap_or("")),
            expected_region: region_from_body
                .or_else(|| bucket_region.map(str::to_string))
                .map(|r| sanitize(&r)),
            request_id: parsed.request_id.map(|id| sanitize(&id)),
            explained,
        }
    }

    /// Whether the same request may succeed if repeated soon. A request the
    /// store does not implement (501) never will.
    pub fn is_transient(&self) -> bool {
        if self.is_not_implemented() {
            return false;
        }
        self.status >= 500
            || self.status == 429
            || matches!(
                self.code.as_str(),
                "SlowDown"
                    | "ServiceUnavailable"
                    | "InternalError"
                    | "RequestTimeout"
                    | "OperationAborted"
                    | "Throttling"
            )
    }

    /// The server computed a different checksum than the request declared.
    pub fn is_digest_mismatch(&self) -> bool {
        matches!(
            self.code.as_str(),
            "BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch" | "XAmzContentSHA256Mismatch"
        )
    }

    /// An AccessDenied whose message says the key or signature is wrong (as
    /// Garage reports them) rather than a missing permission.
    fn blames_credentials(&self) -> bool {
        let message = self.message.to_ascii_lowercase();
        message.contains("signature") || message.contains("no such key")
    }

    /// The store does not implement this request (HTTP 501, `NotImplemented`).
    pub fn is_not_implemented(&self) -> bool {
        self.status == 501 || self.code == "NotImplemented"
    }

    /// The multipart upload does not (or no longer) exist.
    pub fn is_no_such_upload(&self) -> bool {
        self.code == "NoSuchUpload"
    }

    /// The error as an operator sees it.
    pub fn to_target_error(&self, ctx: &ErrorContext<'_>) -> TargetError {
        let detail = self.detail();
        if self.is_transient() {
            return transient(ctx, detail);
        }
        match self.code.as_str() {
            "NoSuchKey" => TargetError::NotFound { key: ctx.key.to_string() },
            "NotFound" if self.status == 404 => TargetError::NotFound { key: ctx.key.to_string() },
            _ => fatal(ctx, detail, self.fix(ctx)),
        }
    }

    fn detail(&self) -> String {
        let mut detail = if self.status == 200 {
            self.code.clone()
        } else {
            format!("{} (HTTP {})", self.code, self.status)
        };
        if !self.message.is_empty() {
            detail.push_str(": ");
            detail.push_str(&self.message);
        }
        if let Some(id) = &self.request_id {
            detail.push_str(&format!(" [request id {id}]"));
        }
        detail
    }

    fn fix(&self, ctx: &ErrorContext<'_>) -> String {
        let bucket = ctx.bucket;
        match self.code.as_str() {
            code if is_region_code(code) => match &self.expected_region {
                Some(region) => format!("set region = {region} (walship signs for {})", ctx.region),
                None => format!(
                    "set region to the bucket's region (walship signs for {}; \
                     Garage uses its s3_region setting, often \"garage\")",
                    ctx.region
                ),
            },
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken" => {
                CREDENTIALS_FIX.to_string()
            }
            "NoSuchBucket" => format!("create bucket {bucket} or fix target"),
            "RequestTimeTooSkewed" => {
                "fix the clock, e.g. enable NTP (systemctl enable --now systemd-timesyncd)".to_string()
            }
            "AccessDenied" if self.blames_credentials() => CREDENTIALS_FIX.to_string(),
            "AccessDenied" | "AllAccessDisabled" | "Forbidden" => format!(
                "grant this access key read and write access to bucket {bucket}, \
                 or check the access key / secret"
            ),
            "InvalidBucketName" => format!("fix the bucket name {bucket} in target"),
            "EntityTooSmall" | "EntityTooLarge" | "InvalidPart" | "InvalidPartOrder" => {
                "check part_size (at least 5MiB, at most 5GiB)".to_string()
            }
            "InvalidRange" => "the requested range lies outside the object; check the manifest \
                               against the archive (walship verify)"
                .to_string(),
            "QuotaExceeded" | "StorageFull" => "free space or raise the bucket's quota".to_string(),
            _ if self.is_not_implemented() => format!(
                "the S3 store at {} does not implement this request, and walship needs it \
                 to archive; use a store (or a version of it) that implements it",
                ctx.endpoint
            ),
            _ => format!("check the endpoint {} and bucket {bucket} settings", ctx.endpoint),
        }
    }
}

/// Codes that mean "signed for the wrong region".
fn is_region_code(code: &str) -> bool {
    matches!(
        code,
        "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "IllegalLocationConstraintException"
            | "AuthorizationQueryParametersError"
            | "WrongRegion"
    )
}

/// The code a body-less response (HEAD) stands for.
fn code_for_status(status: u16) -> &'static str {
    match status {
        301 => "PermanentRedirect",
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NotFound",
        409 => "Conflict",
        412 => "PreconditionFailed",
        416 => "InvalidRange",
        429 => "SlowDown",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        s if s >= 500 => "InternalError",
        _ => "UnexpectedStatus",
    }
}

/// Server text, bounded and without control characters, fit for one log line.
fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE_CHARS).collect()
}

/// A retryable failure.
pub fn transient(ctx: &ErrorContext<'_>, detail: String) -> TargetError {
    TargetError::Transient { op: ctx.op.to_string(), key: ctx.key.to_string(), detail }
}

/// A failure an operator must fix.
pub fn fatal(ctx: &ErrorContext<'_>, detail: String, fix: String) -> TargetError {
    TargetError::Fatal { op: ctx.op.to_string(), key: ctx.key.to_string(), detail, fix }
}

/// A failure ureq reported before any HTTP response arrived (or while
/// reading one). Unreachable endpoints are `Transient` here — an edge link
/// comes back by itself — with the endpoint named in the detail; `check`
/// turns them into `Fatal` (see [`unreachable_as_fatal`]).
pub fn transport_error(ctx: &ErrorContext<'_>, error: &ureq::Error) -> TargetError {
    let endpoint = ctx.endpoint;
    match error {
        ureq::Error::Timeout(phase) => transient(ctx, format!("timed out ({phase}) talking to {endpoint}")),
        ureq::Error::HostNotFound => transient(ctx, unreachable_detail(endpoint, "host not found")),
        ureq::Error::ConnectionFailed => transient(ctx, unreachable_detail(endpoint, "connection failed")),
        ureq::Error::Io(io) => io_error(ctx, io),
        ureq::Error::Rustls(tls) => tls_error(ctx, tls),
        ureq::Error::Tls(what) => {
            fatal(ctx, format!("TLS failure with {endpoint}: {what}"), tls_fix(endpoint))
        }
        ureq::Error::Pem(pem) => fatal(
            ctx,
            format!("cannot parse a certificate: {pem}"),
            "set ca_file to a PEM file of CA certificates".into(),
        ),
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => fatal(
            ctx,
            format!("invalid request URL or header: {error}"),
            format!("check endpoint {endpoint} (an http:// or https:// URL) and the bucket name"),
        ),
        ureq::Error::RequireHttpsOnly(_) | ureq::Error::InvalidProxyUrl => {
            fatal(ctx, error.to_string(), "check the endpoint and the proxy environment variables".into())
        }
        _ => transient(ctx, format!("HTTP exchange with {endpoint} failed: {error}")),
    }
}

fn unreachable_detail(endpoint: &str, what: &str) -> String {
    format!("cannot reach {endpoint} ({what}){}", unreachable_hint(endpoint))
}

/// The suffix that marks an unreachable-endpoint detail.
fn unreachable_hint(endpoint: &str) -> String {
    format!("; check endpoint {endpoint} is reachable")
}

fn io_error(ctx: &ErrorContext<'_>, io: &std::io::Error) -> TargetError {
    use std::io::ErrorKind;
    if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return tls_error(ctx, tls);
    }
    match io.kind() {
        ErrorKind::ConnectionRefused => {
            transient(ctx, unreachable_detail(ctx.endpoint, "connection refused"))
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable | ErrorKind::AddrNotAvailable => {
            transient(ctx, unreachable_detail(ctx.endpoint, &io.to_string()))
        }
        _ => transient(ctx, format!("connection to {} failed: {io}", ctx.endpoint)),
    }
}

fn tls_error(ctx: &ErrorContext<'_>, tls: &rustls::Error) -> TargetError {
    let endpoint = ctx.endpoint;
    match tls {
        rustls::Error::InvalidCertificate(reason) => fatal(
            ctx,
            format!("the TLS certificate of {endpoint} is not trusted: {reason:?}"),
            "set ca_file to the CA that signed the endpoint's certificate".into(),
        ),
        _ => fatal(ctx, format!("TLS failure with {endpoint}: {tls}"), tls_fix(endpoint)),
    }
}

fn tls_fix(endpoint: &str) -> String {
    format!(
        "check that {endpoint} serves https on that port (use http:// if it does not), \
         and set ca_file to the CA that signed the endpoint's certificate"
    )
}

/// For `check`: an unreachable endpoint is reported as `Fatal`, with the fix.
pub fn unreachable_as_fatal(ctx: &ErrorContext<'_>, error: TargetError) -> TargetError {
    match error {
        TargetError::Transient { detail, .. } if detail.ends_with(&unreachable_hint(ctx.endpoint)) => {
            let cause = detail.trim_end_matches(&unreachable_hint(ctx.endpoint));
            fatal(
                ctx,
                cause.to_string(),
                format!("check endpoint {} is reachable (address, port, firewall, DNS)", ctx.endpoint),
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext<'static> {
        ErrorContext {
            op: "put",
            key: "s/batches/1",
            bucket: "archive",
            endpoint: "https://s3.example.net",
            region: "us-east-1",
        }
    }

    fn error_xml(code: &str, message: &str, extra: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{message}</Message>{extra}<RequestId>4442587FB7D0A2F9</RequestId></Error>"
        )
        .into_bytes()
    }

    fn fix_of(error: TargetError) -> String {
        match error {
            TargetError::Fatal { fix, .. } => fix,
            other => panic!("expected Fatal, got {other:?}"),
        }
    }

    fn map(status: u16, body: &[u8]) -> TargetError {
        ServerError::from_response(status, None, body).to_target_error(&ctx())
    }

    #[test]
    fn wrong_region_names_the_region_the_server_expects() {
        let body = error_xml(
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'",
            "<Region>eu-west-1</Region>",
        );
        assert!(fix_of(map(400, &body)).contains("set region = eu-west-1"));

        // Garage: its configured region in <Region>.
        let body = error_xml(
            "AuthorizationHeaderMalformed",
            "Authorization header malformed, unexpected scope: '20240101/us-east-1/s3/aws4_request', expected: '20240101/garage/s3/aws4_request'",
            "<Resource>/b/k</Resource><Region>garage</Region>",
        );
        assert!(fix_of(map(400, &body)).contains("set region = garage"));

        // HEAD: no body, region only in x-amz-bucket-region.
        let error = ServerError::from_response(301, Some("ap-south-1"), b"");
        assert!(fix_of(error.to_target_error(&ctx())).contains("set region = ap-south-1"));
    }

    #[test]
    fn region_in_other_errors_is_not_taken_for_a_region_problem() {
        let body = error_xml("AccessDenied", "Access Denied", "<Region>garage</Region>");
        let fix = fix_of(map(403, &body));
        assert!(!fix.contains("region"), "{fix}");
        assert!(fix.contains("grant this access key"), "{fix}");
        assert!(fix.contains("bucket archive"), "{fix}");
    }

    #[test]
    fn wrong_keys_say_to_check_the_key_and_secret() {
        for code in ["InvalidAccessKeyId", "SignatureDoesNotMatch"] {
            let body = error_xml(code, "The request signature we calculated does not match", "");
            assert!(fix_of(map(403, &body)).contains("check the access key / secret"), "{code}");
        }
        // Garage reports both as AccessDenied.
        for message in ["Forbidden: Invalid signature", "Forbidden: No such key: GK00"] {
            let body = error_xml("AccessDenied", message, "<Region>garage</Region>");
            let fix = fix_of(map(403, &body));
            assert!(fix.starts_with("check the access key / secret"), "{fix}");
        }
    }

    #[test]
    fn missing_bucket_and_skewed_clock() {
        let body = error_xml("NoSuchBucket", "The specified bucket does not exist", "");
        assert!(fix_of(map(404, &body)).contains("create bucket archive or fix target"));
        let body = error_xml("RequestTimeTooSkewed", "The difference is too large", "");
        assert!(fix_of(map(403, &body)).contains("fix the clock"));
    }

    #[test]
    fn missing_objects_are_not_found() {
        let body = error_xml("NoSuchKey", "The specified key does not exist.", "");
        assert!(matches!(map(404, &body), TargetError::NotFound { key } if key == "s/batches/1"));
        assert!(matches!(map(404, b""), TargetError::NotFound { .. }));
    }

    #[test]
    fn server_trouble_and_throttling_are_transient() {
        assert!(map(500, &error_xml("InternalError", "oops", "")).is_transient());
        assert!(map(503, &error_xml("SlowDown", "Reduce your request rate", "")).is_transient());
        assert!(map(503, b"<html>bad gateway</html>").is_transient());
        assert!(map(429, b"").is_transient());
        assert!(map(400, &error_xml("RequestTimeout", "socket not read", "")).is_transient());
        assert!(!map(403, b"").is_transient());
    }

    #[test]
    fn a_request_the_store_does_not_implement_is_fatal_and_named() {
        for (status, body) in [
            (
                501,
                error_xml(
                    "NotImplemented",
                    "A header you provided implies functionality that is not implemented",
                    "",
                ),
            ),
            (501, Vec::new()),
            (400, error_xml("NotImplemented", "no", "")),
        ] {
            let error = ServerError::from_response(status, None, &body);
            assert!(error.is_not_implemented() && !error.is_transient(), "{status}");
            let shown = error.to_target_error(&ctx()).to_string();
            assert!(shown.starts_with("put s/batches/1: NotImplemented"), "{shown}");
            assert!(shown.contains("https://s3.example.net does not implement this request"), "{shown}");
        }
    }

    #[test]
    fn classification_helpers() {
        let error = ServerError::from_response(400, None, &error_xml("BadDigest", "crc", ""));
        assert!(error.is_digest_mismatch());
        let error = ServerError::from_response(404, None, &error_xml("NoSuchUpload", "gone", ""));
        assert!(error.is_no_such_upload());
    }

    #[test]
    fn messages_never_echo_the_canonical_request() {
        let body = error_xml(
            "SignatureDoesNotMatch",
            "mismatch",
            "<StringToSign>AWS4-HMAC-SHA256 secret-stuff</StringToSign>\
             <CanonicalRequest>x-amz-security-token:TOKEN</CanonicalRequest>",
        );
        let shown = map(403, &body).to_string();
        assert!(!shown.contains("TOKEN") && !shown.contains("secret-stuff"), "{shown}");
        assert!(shown.contains("SignatureDoesNotMatch (HTTP 403): mismatch"), "{shown}");
    }

    #[test]
    fn garbage_bodies_still_give_a_status_based_error() {
        let error = ServerError::from_response(403, None, b"\xff\xfe<Error><Code>");
        assert_eq!(error.code, "AccessDenied");
        let long = "x".repeat(10_000);
        let error = ServerError::from_response(400, None, &error_xml("Weird", &long, ""));
        assert!(error.message.len() <= MAX_MESSAGE_CHARS);
    }

    #[test]
    fn transport_failures() {
        let refused = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let error = transport_error(&ctx(), &refused);
        assert!(error.is_transient());
        let fatal = unreachable_as_fatal(&ctx(), error);
        let shown = fatal.to_string();
        assert_eq!(shown.matches("check endpoint").count(), 1, "{shown}");
        assert!(fix_of(fatal).contains("check endpoint https://s3.example.net is reachable"));
        let reset = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let error = transport_error(&ctx(), &reset);
        assert!(error.is_transient());
        assert!(!error.to_string().contains("check endpoint"), "{error}");

        assert!(transport_error(&ctx(), &ureq::Error::HostNotFound).is_transient());
        let timeout = ureq::Error::Timeout(ureq::Timeout::RecvResponse);
        assert!(transport_error(&ctx(), &timeout).is_transient());

        let untrusted =
            ureq::Error::Rustls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        assert!(fix_of(transport_error(&ctx(), &untrusted)).contains("set ca_file"));
        let wrapped = ureq::Error::Io(std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        )));
        assert!(fix_of(transport_error(&ctx(), &wrapped)).contains("set ca_file"));
    }
}
