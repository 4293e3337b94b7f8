//! One signed S3 request at a time: URL, headers, signature, timeouts, TLS,
//! retries, and the response turned into bytes or a typed failure.
//!
//! Everything S3-operation-specific (which query, which headers, what the
//! response means) lives in the callers; this module only knows how to send
//! a [`S3Request`] path-style (`{endpoint}/{bucket}/{key}`) and read back a
//! small [`Reply`] or an open streaming response. It never logs headers; the
//! `Authorization` header exists only inside [`Client::send_once`].

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use ureq::http;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::transport::DefaultConnector;
use ureq::{Agent, SendBody};

use crate::target::TargetError;

use super::body::SliceReader;
use super::credentials::Credentials;
use super::error::{self, ErrorContext, ServerError};
use super::resolve::EndpointResolver;
use super::retry::RetryPolicy;
use super::settings::Endpoint;
use super::sigv4::{self, AmzTime};
use super::xml;

/// Largest XML response read into memory (a listing page is well below).
const MAX_XML_BODY: u64 = 16 * 1024 * 1024;
/// Largest error body read; the rest is ignored.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Timeouts of every request phase.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// DNS resolution, and TCP + TLS connection setup (each).
    pub connect: Duration,
    /// Sending the request head and receiving the response head (total),
    /// and any single read or write stalling while bodies move.
    pub io: Duration,
}

/// Build the HTTP agent: status codes returned (not errors), no redirects,
/// every phase under a timeout, TLS always verified; the endpoint resolved
/// by [`EndpointResolver`].
pub fn build_agent(
    timeouts: Timeouts,
    ca_file: Option<&Path>,
    max_connections: usize,
) -> Result<Agent, String> {
    let roots = match ca_file {
        Some(path) => RootCerts::new_with_certs(&load_ca_file(path)?),
        None => RootCerts::WebPki,
    };
    let tls = TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(roots).build();
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls)
        .user_agent(concat!("walship/", env!("CARGO_PKG_VERSION")))
        .timeout_resolve(Some(timeouts.connect))
        .timeout_connect(Some(timeouts.connect))
        .timeout_send_request(Some(timeouts.io))
        .timeout_recv_response(Some(timeouts.io))
        .timeout_per_read(Some(timeouts.io))
        .timeout_per_write(Some(timeouts.io))
        .timeout_await_100(Some(timeouts.io.min(Duration::from_secs(1))))
        .max_idle_connections(max_connections.max(1))
        .max_idle_connections_per_host(max_connections.max(1))
        .build();
    Ok(Agent::with_parts(config, DefaultConnector::default(), EndpointResolver::default()))
}

/// The certificates of a PEM file, as trust anchors.
fn load_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(e) => return Err(format!("ca_file {} is not valid PEM: {e}", path.display())),
        }
    }
    if certificates.is_empty() {
        return Err(format!(
            "ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// A request body.
pub enum Payload<'a> {
    Empty,
    /// Small in-memory body (XML); its SHA-256 is signed.
    Signed(&'a [u8]),
    /// Object data streamed from slices; sent as `UNSIGNED-PAYLOAD` (the
    /// caller adds its CRC32 header).
    Unsigned(Vec<&'a [u8]>),
}

/// One S3 operation to send.
pub struct S3Request<'a> {
    /// Operation name for messages, e.g. `put`, `upload part 2 of`.
    pub op: &'a str,
    /// The key as the caller knows it (relative to the target prefix), for
    /// messages; empty for bucket-level operations.
    pub display_key: &'a str,
    /// Full object key in the bucket; `None` addresses the bucket itself.
    pub object: Option<&'a str>,
    pub method: &'static str,
    /// Query parameters, not encoded.
    pub query: Vec<(String, String)>,
    /// Extra headers (lower-case names); all are signed.
    pub headers: Vec<(String, String)>,
    pub payload: Payload<'a>,
    /// An object body is sent only after the server's `100 Continue`
    /// (`Expect: 100-continue`), so that a request it refuses (auth,
    /// region, bucket) costs no body. Off for the parts of a multipart
    /// upload, whose creation already passed those checks: waiting costs a
    /// round trip per part, with nothing else in flight at a batch's start.
    pub expect_continue: bool,
}

impl<'a> S3Request<'a> {
    /// A request without query, headers or body.
    pub fn new(op: &'a str, display_key: &'a str, method: &'static str) -> S3Request<'a> {
        S3Request {
            op,
            display_key,
            object: None,
            method,
            query: Vec::new(),
            headers: Vec::new(),
            payload: Payload::Empty,
            expect_continue: true,
        }
    }

    /// Address the object `key` (full key, prefix included).
    pub fn object(mut self, key: &'a str) -> Self {
        self.object = Some(key);
        self
    }

    /// Add a query parameter.
    pub fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_string(), value.into()));
        self
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Set the body.
    pub fn payload(mut self, payload: Payload<'a>) -> Self {
        self.payload = payload;
        self
    }

    /// Send the body at once, without waiting for `100 Continue`.
    pub fn without_expect_continue(mut self) -> Self {
        self.expect_continue = false;
        self
    }
}

/// A complete small response.
pub struct Reply {
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value, when present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn header_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// No usable response (network, TLS, timeout), already classified.
    Transport(TargetError),
    /// The server answered with an error.
    Server(ServerError),
}

impl Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Transport(error) => error.is_transient(),
            Failure::Server(error) => error.is_transient(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(TargetError::Transient { detail, .. }) => write!(f, "{detail}"),
            Failure::Transport(error) => write!(f, "{error}"),
            Failure::Server(error) => write!(f, "{} (HTTP {})", error.code, error.status),
        }
    }
}

/// Sends signed requests to one bucket.
pub struct Client {
    agent: Agent,
    endpoint: Endpoint,
    bucket: String,
    region: String,
    credentials: Credentials,
    retry: RetryPolicy,
}

impl Client {
    pub fn new(
        agent: Agent,
        endpoint: Endpoint,
        bucket: String,
        region: String,
        credentials: Credentials,
        retry: RetryPolicy,
    ) -> Client {
        Client { agent, endpoint, bucket, region, credentials, retry }
    }

    /// `scheme://host[:port]` of the store, for messages.
    pub fn endpoint_origin(&self) -> &str {
        &self.endpoint.origin
    }

    /// Error context of a request.
    pub fn context<'r>(&'r self, request: &'r S3Request<'_>) -> ErrorContext<'r> {
        ErrorContext {
            op: request.op,
            key: request.display_key,
            bucket: &self.bucket,
            endpoint: &self.endpoint.origin,
            region: &self.region,
        }
    }

    /// Turn a failure into the operator-facing error.
    pub fn target_error(&self, request: &S3Request<'_>, failure: Failure) -> TargetError {
        match failure {
            Failure::Transport(error) => error,
            Failure::Server(error) => error.to_target_error(&self.context(request)),
        }
    }

    /// Send with retries and read the whole (small) response; non-success
    /// answers become `Failure::Server`.
    pub fn call(&self, request: &S3Request<'_>) -> Result<Reply, Failure> {
        self.retry.run(&|| describe(request), Failure::is_transient, || self.exchange(request))
    }

    /// [`Client::call`] with failures already mapped to `TargetError`.
    pub fn call_checked(&self, request: &S3Request<'_>) -> Result<Reply, TargetError> {
        self.call(request).map_err(|failure| self.target_error(request, failure))
    }

    /// Send with retries and return the open response for streaming its
    /// body; non-success answers become `Failure::Server`.
    pub fn open(&self, request: &S3Request<'_>) -> Result<http::Response<ureq::Body>, Failure> {
        self.retry.run(&|| describe(request), Failure::is_transient, || {
            let response = self.send_once(request).map_err(Failure::Transport)?;
            if response.status().is_success() {
                Ok(response)
            } else {
                Err(Failure::Server(server_error(response)))
            }
        })
    }

    /// One attempt, whole body read.
    fn exchange(&self, request: &S3Request<'_>) -> Result<Reply, Failure> {
        let response = self.send_once(request).map_err(Failure::Transport)?;
        if !response.status().is_success() {
            return Err(Failure::Server(server_error(response)));
        }
        let status = response.status().as_u16();
        let (parts, mut body) = response.into_parts();
        let bytes = body
            .with_config()
            .limit(MAX_XML_BODY)
            .read_to_vec()
            .map_err(|e| Failure::Transport(error::transport_error(&self.context(request), &e)))?;
        // S3 may answer 200 and still report an error in the body
        // (CompleteMultipartUpload, CopyObject).
        if xml::root_name(&String::from_utf8_lossy(&bytes)) == Some("Error") {
            return Err(Failure::Server(ServerError::from_response(status, None, &bytes)));
        }
        Ok(Reply { headers: parts.headers, body: bytes })
    }

    /// Sign and send one attempt; the response body is left unread.
    fn send_once(&self, request: &S3Request<'_>) -> Result<http::Response<ureq::Body>, TargetError> {
        log::debug!("{} {}", request.method, describe(request));
        let builder = self.signed_request_head(request);
        let mut reader = SliceReader::new(match &request.payload {
            Payload::Empty => Vec::new(),
            Payload::Signed(bytes) => vec![*bytes],
            Payload::Unsigned(slices) => slices.clone(),
        });
        // Two calls because `SendBody` is invariant over its lifetime.
        let response = match &request.payload {
            Payload::Empty => self.run(builder.body(SendBody::none())),
            _ => self.run(builder.body(SendBody::from_reader(&mut reader))),
        };
        response.map_err(|e| error::transport_error(&self.context(request), &e))
    }

    /// Method, URL and headers of `request`, signed now.
    fn signed_request_head(&self, request: &S3Request<'_>) -> http::request::Builder {
        let canonical_uri = self.canonical_uri(request.object);
        let (payload_hash, content_length) = payload_facts(&request.payload);
        let time = AmzTime::now();
        let headers = self.signed_headers(request, &time, &payload_hash, content_length);
        let authorization = sigv4::authorize(
            &sigv4::RequestToSign {
                method: request.method,
                canonical_uri: &canonical_uri,
                query: &request.query,
                headers: &headers,
                payload_hash: &payload_hash,
            },
            &self.credentials,
            &self.region,
            &time,
        );
        let mut builder =
            http::Request::builder().method(request.method).uri(self.url(&canonical_uri, &request.query));
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = builder.header("authorization", authorization);
        if request.expect_continue && matches!(&request.payload, Payload::Unsigned(_)) && content_length > 0 {
            // Lets the server refuse (auth, region, bucket) before the body is sent.
            builder = builder.header("expect", "100-continue");
        }
        builder
    }

    /// The URL: origin, path and query exactly as signed.
    fn url(&self, canonical_uri: &str, query: &[(String, String)]) -> String {
        let query = sigv4::canonical_query(query);
        if query.is_empty() {
            format!("{}{canonical_uri}", self.endpoint.origin)
        } else {
            format!("{}{canonical_uri}?{query}", self.endpoint.origin)
        }
    }

    fn run(
        &self,
        request: Result<http::Request<SendBody<'_>>, http::Error>,
    ) -> Result<http::Response<ureq::Body>, ureq::Error> {
        self.agent.run(request.map_err(ureq::Error::Http)?)
    }

    /// `/{bucket}` or `/{bucket}/{encoded key}`: the path exactly as sent.
    fn canonical_uri(&self, object: Option<&str>) -> String {
        let bucket = sigv4::uri_encode(&self.bucket, true);
        match object {
            Some(key) => format!("/{bucket}/{}", sigv4::uri_encode(key, false)),
            None => format!("/{bucket}"),
        }
    }

    /// Every header to send and sign (the host, date, payload hash, session
    /// token, the request's own headers, and the content length of bodies).
    fn signed_headers(
        &self,
        request: &S3Request<'_>,
        time: &AmzTime,
        payload_hash: &str,
        content_length: u64,
    ) -> Vec<(String, String)> {
        let mut headers = vec![
            ("host".to_string(), self.endpoint.host.clone()),
            ("x-amz-date".to_string(), time.datetime.clone()),
            ("x-amz-content-sha256".to_string(), payload_hash.to_string()),
        ];
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        if matches!(request.method, "PUT" | "POST") {
            headers.push(("content-length".to_string(), content_length.to_string()));
        }
        headers.extend(request.headers.iter().cloned());
        headers
    }
}

/// Payload hash to sign and body length.
fn payload_facts(payload: &Payload<'_>) -> (String, u64) {
    match payload {
        Payload::Empty => (sigv4::EMPTY_PAYLOAD_SHA256.to_string(), 0),
        Payload::Signed(bytes) => (sigv4::sha256_hex(bytes), bytes.len() as u64),
        Payload::Unsigned(slices) => {
            (sigv4::UNSIGNED_PAYLOAD.to_string(), slices.iter().map(|s| s.len() as u64).sum())
        }
    }
}

/// Read (a bounded prefix of) an error response's body and parse it.
fn server_error(response: http::Response<ureq::Body>) -> ServerError {
    let status = response.status().as_u16();
    let region = header_value(response.headers(), "x-amz-bucket-region").map(str::to_string);
    let mut body = Vec::new();
    let (_, mut response_body) = response.into_parts();
    // A failed read leaves a partial body; the status alone still classifies.
    let _ = response_body.as_reader().take(MAX_ERROR_BODY).read_to_end(&mut body);
    ServerError::from_response(status, region.as_deref(), &body)
}

fn describe(request: &S3Request<'_>) -> String {
    if request.display_key.is_empty() {
        request.op.to_string()
    } else {
        format!("{} {}", request.op, request.display_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        let timeouts = Timeouts { connect: Duration::from_secs(1), io: Duration::from_secs(1) };
        let credentials = Credentials {
            access_key_id: "GK1".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        Client::new(
            build_agent(timeouts, None, 1).unwrap(),
            super::super::settings::parse_endpoint("http://127.0.0.1:9").unwrap(),
            "bucket".into(),
            "garage".into(),
            credentials,
            RetryPolicy::default(),
        )
    }

    fn expect_header(request: &S3Request<'_>) -> Option<String> {
        let head = client().signed_request_head(request).body(()).unwrap();
        head.headers().get("expect").map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn object_bodies_wait_for_continue_except_multipart_parts() {
        let data: &[u8] = b"object bytes";
        let put = S3Request::new("put", "k", "PUT").object("p/k").payload(Payload::Unsigned(vec![data]));
        assert_eq!(expect_header(&put).as_deref(), Some("100-continue"));
        let part = S3Request::new("upload part 1 of", "k", "PUT")
            .object("p/k")
            .payload(Payload::Unsigned(vec![data]))
            .without_expect_continue();
        assert_eq!(expect_header(&part), None);
        // Small signed bodies and empty ones never wait.
        let xml = S3Request::new("complete", "k", "POST").payload(Payload::Signed(b"<x/>"));
        assert_eq!(expect_header(&xml), None);
        assert_eq!(expect_header(&S3Request::new("head", "k", "HEAD")), None);
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("walship-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let message = load_ca_file(&path).unwrap_err();
        assert!(message.contains("no PEM certificate"), "{message}");
        let message = load_ca_file(&dir.join("missing.pem")).unwrap_err();
        assert!(message.contains("cannot read ca_file"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
