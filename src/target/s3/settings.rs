//! The settings of an `s3://` target and the one validator of each: bucket
//! name, key prefix, endpoint, region, part size. The config calls these at
//! load (so a bad value is refused with its file and line) and
//! [`super::S3Target::new`] calls them again for library users who build
//! [`S3Settings`] by hand; there is no second copy of any rule.
//!
//! Key prefix: S3 accepts any UTF-8 in a key, and so does walship, with
//! three exceptions that cannot work reliably: empty segments (`a//b`),
//! `.` and `..` segments (HTTP stacks and proxies normalize them away, so
//! the key signed is not the key stored), and control characters (XML 1.0,
//! the format of S3 listings, cannot carry most of them). Everything else
//! (`+`, `:`, spaces, `ü`, `@`, …) is percent-encoded on the wire by
//! [`super::sigv4::uri_encode`].

use std::path::PathBuf;
use std::time::Duration;

use super::credentials::Credentials;

/// Smallest part size S3 allows (except for the last part).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part (and single PutObject walship sends) S3 allows.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Longest key prefix: S3 keys are at most 1024 bytes, and the stream name
/// and walship's own key layout need the rest.
pub const MAX_PREFIX_BYTES: usize = 512;

/// Everything needed to talk to one bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http://host:port` or `https://host[:port]`, without a path (see
    /// [`parse_endpoint`]).
    pub endpoint: String,
    /// Signing region: `us-east-1` for AWS's default, `garage` for Garage.
    pub region: String,
    pub bucket: String,
    /// Key prefix inside the bucket, may be empty; slashes at either end are
    /// ignored (see [`check_prefix`]).
    pub prefix: String,
    pub credentials: Credentials,
    /// A PEM file of CA certificates trusted instead of the bundled WebPKI
    /// roots, when set (for a private endpoint).
    pub ca_file: Option<PathBuf>,
    /// Objects larger than this go multipart in parts of exactly this size
    /// (the last part smaller); see [`check_part_size`].
    pub part_size: u64,
    /// Parts of one object in flight at once (at least 1).
    pub parallel_uploads: usize,
    /// Streams (or a restore's downloads) using the target at once (at
    /// least 1): the connection pool keeps `streams × (parallel_uploads +
    /// 1)` idle connections, for each stream's parts plus the record or
    /// exists-check it sends meanwhile.
    pub streams: usize,
    /// DNS + TCP + TLS setup, each.
    pub connect_timeout: Duration,
    /// Response-head wait, and the longest a body read or write may stall.
    pub io_timeout: Duration,
    /// Backoff bounds between attempts of one request.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Where requests go: `scheme://authority`, split for signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port` or `https://host[:port]`, no trailing slash.
    pub origin: String,
    /// The `Host` header value (authority as written).
    pub host: String,
    pub is_https: bool,
}

/// Parse an endpoint URL. Only a scheme and an authority (`host[:port]`)
/// are accepted, with at most a trailing '/': requests are path-style under
/// the root, so a path, query, fragment or user info could not be honoured.
pub fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let shown = without_user_info(url);
    let expected =
        || format!("expected an http:// or https:// URL such as https://s3.example.net, got {shown:?}");
    let (scheme, rest) = url.split_once("://").ok_or_else(expected)?;
    let is_https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(expected()),
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(expected());
    }
    if shown != url {
        return Err(format!(
            "expected just scheme://host[:port] such as https://s3.example.net, got {shown:?} \
             (its user name and password not shown): the endpoint carries no credentials; give \
             them in credentials_file, the environment or $CREDENTIALS_DIRECTORY"
        ));
    }
    if host.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "expected just scheme://host[:port] such as https://s3.example.net, got {url:?}: \
             buckets are addressed path-style under the endpoint's root, so it takes no \
             path, query or user name; put a key prefix in target = s3://bucket/prefix instead"
        ));
    }
    check_port(host).map_err(|why| format!("{why} in {url:?}"))?;
    Ok(Endpoint {
        origin: format!("{}://{host}", if is_https { "https" } else { "http" }),
        host: host.to_string(),
        is_https,
    })
}

/// `url` with any user info of its authority (`user:password@`) replaced
/// by `***@`, so that no message repeats a secret written there.
fn without_user_info(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// The port of `host[:port]` (IPv6 hosts in brackets), when there is one,
/// must be a number from 1 to 65535.
fn check_port(authority: &str) -> Result<(), String> {
    let after_host = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((_, rest)) => rest,
            None => return Err("an IPv6 address needs its closing ']'".into()),
        },
        None => authority.find(':').and_then(|colon| authority.get(colon..)).unwrap_or(""),
    };
    let Some(port) = after_host.strip_prefix(':') else {
        return if after_host.is_empty() { Ok(()) } else { Err("unexpected text after the host".into()) };
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("the port {port:?} is not a number from 1 to 65535")),
    }
}

/// S3 bucket naming rules: 3 to 63 characters of lowercase letters, digits,
/// '.' and '-'; starting and ending with a letter or digit; no "..", not
/// shaped like an IP address.
pub fn check_bucket(bucket: &str) -> Result<(), String> {
    let rule = if bucket.len() < 3 || bucket.len() > 63 {
        Some("is 3 to 63 characters")
    } else if !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        Some("uses only lowercase letters, digits, '.' and '-'")
    } else if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("starts and ends with a letter or digit")
    } else if bucket.contains("..") {
        Some("has no two dots in a row")
    } else if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        Some("is not shaped like an IP address")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(format!("invalid bucket name {bucket:?}: a bucket name {rule}")),
        None => Ok(()),
    }
}

/// A key prefix, given without slashes at either end (see the module doc):
/// any UTF-8 except empty, `.` or `..` segments and control characters, at
/// most [`MAX_PREFIX_BYTES`].
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(format!("the prefix is longer than {MAX_PREFIX_BYTES} bytes"));
    }
    if let Some(c) = prefix.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the prefix {prefix:?} holds the control character {c:?}; S3 listings (XML) cannot carry it"
        ));
    }
    if prefix.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..") {
        return Err(format!(
            "the prefix {prefix:?} has an empty, '.' or '..' part between slashes; \
             HTTP clients and proxies rewrite such paths, so write the prefix without them"
        ));
    }
    Ok(())
}

/// A SigV4 region: 1 to 64 letters, digits, '-' and '_'.
pub fn check_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("expected a region name such as us-east-1 (or garage for Garage), got {region:?}"))
    }
}

/// A part size S3 accepts: 5 MiB to 5 GiB.
pub fn check_part_size(size: u64) -> Result<(), String> {
    if size < MIN_PART_SIZE {
        return Err(format!(
            "expected at least 5MiB with an s3:// target (S3 refuses smaller parts), got {size} bytes"
        ));
    }
    if size > MAX_PART_SIZE {
        return Err(format!(
            "expected at most 5GiB with an s3:// target (S3's largest part), got {size} bytes"
        ));
    }
    Ok(())
}

/// Every setting checked by its validator; the first problem as (what is
/// wrong, what to change).
pub fn validate(settings: &S3Settings) -> Result<Endpoint, (String, &'static str)> {
    let endpoint =
        parse_endpoint(&settings.endpoint).map_err(|e| (e, "set endpoint to an http:// or https:// URL"))?;
    check_bucket(&settings.bucket).map_err(|e| (e, "set target = s3://BUCKET/prefix"))?;
    check_prefix(settings.prefix.trim_matches('/')).map_err(|e| (e, "fix the prefix in target"))?;
    check_region(&settings.region)
        .map_err(|e| (e, "set region (us-east-1 for AWS's default, garage for Garage)"))?;
    check_part_size(settings.part_size)
        .map_err(|e| (e, "set part_size to at least 5MiB and at most 5GiB"))?;
    let checks = [
        (settings.parallel_uploads >= 1, "parallel_uploads is 0", "set parallel_uploads to at least 1"),
        (
            !settings.connect_timeout.is_zero() && !settings.io_timeout.is_zero(),
            "a zero timeout would fail every request",
            "use timeouts above zero",
        ),
        (
            settings.retry_min <= settings.retry_max,
            "backoff_min exceeds backoff_max",
            "set backoff_min <= backoff_max",
        ),
    ];
    match checks.into_iter().find(|(ok, _, _)| !ok) {
        Some((_, detail, fix)) => Err((detail.to_string(), fix)),
        None => Ok(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_endpoint_is_never_repeated() {
        for url in
            ["https://user:supersecret@s3.example.net", "user:supersecret@s3", "ftp://u:supersecret@h/x"]
        {
            let error = parse_endpoint(url).unwrap_err();
            assert!(!error.contains("supersecret"), "{error}");
        }
        assert!(
            parse_endpoint("https://user:supersecret@s3.example.net")
                .unwrap_err()
                .contains("***@s3.example.net")
        );
    }

    #[test]
    fn endpoints_are_scheme_and_authority_only() {
        let e = parse_endpoint("http://127.0.0.1:3900").unwrap();
        assert_eq!(e.origin, "http://127.0.0.1:3900");
        assert_eq!(e.host, "127.0.0.1:3900");
        assert!(!e.is_https);
        let e = parse_endpoint("HTTPS://s3.example.net/").unwrap();
        assert_eq!(e.origin, "https://s3.example.net");
        assert!(e.is_https);
        assert!(parse_endpoint("https://[::1]:9000").is_ok());
        assert!(parse_endpoint("http://minio.local:9000/").is_ok());
        for bad in [
            "s3.example.net",
            "ftp://x",
            "https://",
            "https:// x",
            "https://h/path",
            "https://s3.example.net/base",
            "https://u@h",
            "https://h?x",
            "https://h#x",
            "https://h:0",
            "https://h:99999",
            "https://h:port",
            "https://[::1",
            "https://[::1]x",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        let message = parse_endpoint("https://s3.example.net/base").unwrap_err();
        assert!(message.contains("takes no path"), "{message}");
    }

    #[test]
    fn prefixes_take_any_utf8_but_not_what_cannot_work() {
        for good in
            ["a", "site+7:edge/wal", "ünï cödé/x y", "x_y-z.(1)!*'", "a=b&c?d#e%f@g", "..a/b..", "中文/🦀"]
        {
            assert_eq!(check_prefix(good), Ok(()), "{good}");
        }
        for (bad, part) in [
            ("a//b", "empty, '.' or '..'"),
            ("../x", "empty, '.' or '..'"),
            ("a/./b", "empty, '.' or '..'"),
            ("a/..", "empty, '.' or '..'"),
            ("a\tb", "control character"),
            ("a\u{0}b", "control character"),
            ("a\u{85}b", "control character"),
        ] {
            let message = check_prefix(bad).expect_err(bad);
            assert!(message.contains(part), "{bad:?}: {message}");
        }
        assert!(check_prefix(&"p".repeat(MAX_PREFIX_BYTES)).is_ok());
        assert!(check_prefix(&"p".repeat(MAX_PREFIX_BYTES + 1)).is_err());
    }

    #[test]
    fn regions_and_part_sizes() {
        assert!(check_region("garage").is_ok() && check_region("eu-west-1").is_ok());
        assert!(check_region("us east").is_err() && check_region("").is_err());
        assert!(check_part_size(MIN_PART_SIZE).is_ok() && check_part_size(MAX_PART_SIZE).is_ok());
        assert!(check_part_size(MIN_PART_SIZE - 1).unwrap_err().contains("at least 5MiB"));
        assert!(check_part_size(MAX_PART_SIZE + 1).unwrap_err().contains("at most 5GiB"));
    }
}
