//! AWS Signature Version 4 for S3, as pure functions of their inputs.
//!
//! Each step of the algorithm is its own function (canonical request, string
//! to sign, signing key, signature, `Authorization` header) and the time is
//! always an argument, so the steps are tested against the worked examples of
//! AWS's documentation. Nothing here does I/O or reads the clock, except
//! [`AmzTime::now`].
//!
//! Deliberately left out: presigned URLs, chunked (streaming) payload
//! signatures and other services than `s3`; walship sends `UNSIGNED-PAYLOAD`
//! for object data (protected by its CRC32 header instead) and the SHA-256 of
//! small XML bodies.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::{digest, hmac};

use super::credentials::Credentials;

/// Payload hash placeholder for bodies that are not hashed (object data).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// SHA-256 of the empty string, the payload hash of requests without a body.
pub const EMPTY_PAYLOAD_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "s3";

/// A request time in the two forms SigV4 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmzTime {
    /// `YYYYMMDD`, the date of the credential scope.
    pub date: String,
    /// `YYYYMMDDTHHMMSSZ`, the `x-amz-date` header.
    pub datetime: String,
}

impl AmzTime {
    /// The current time.
    pub fn now() -> AmzTime {
        AmzTime::from_system_time(SystemTime::now())
    }

    /// `time` in UTC; times before 1970 are clamped to the epoch.
    pub fn from_system_time(time: SystemTime) -> AmzTime {
        let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        AmzTime::from_unix_seconds(seconds)
    }

    /// `seconds` since the Unix epoch, in UTC.
    pub fn from_unix_seconds(seconds: u64) -> AmzTime {
        let (year, month, day) = civil_from_days(seconds / 86_400);
        let second_of_day = seconds % 86_400;
        let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
        let date = format!("{year:04}{month:02}{day:02}");
        let datetime = format!("{date}T{hour:02}{minute:02}{second:02}Z");
        AmzTime { date, datetime }
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Percent-encode per AWS rules: unreserved characters (`A-Z a-z 0-9 - . _ ~`)
/// stay, every other byte becomes `%XX` (upper-case hex); `/` stays when
/// `encode_slash` is false (object key paths) and is encoded otherwise
/// (query names and values).
pub fn uri_encode(input: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &byte in input.as_bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        if unreserved || (byte == b'/' && !encode_slash) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The canonical query string: names and values encoded, pairs sorted by
/// encoded name then value, joined by `&` (`name=` for empty values). The
/// same string is sent on the wire, so what is signed is what is sent.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> =
        params.iter().map(|(name, value)| (uri_encode(name, true), uri_encode(value, true))).collect();
    encoded.sort();
    encoded.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

/// Canonical headers block (`name:value\n` per header, lower-case names,
/// trimmed values with inner runs of spaces collapsed, sorted by name) and the
/// matching `SignedHeaders` list. Every header given is signed.
pub fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut normalized: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), collapse_spaces(value)))
        .collect();
    normalized.sort();
    let block = normalized.iter().map(|(name, value)| format!("{name}:{value}\n")).collect::<String>();
    let signed = normalized.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    (block, signed)
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What is signed about one request.
pub struct RequestToSign<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The path exactly as sent, already encoded (see [`uri_encode`]).
    pub canonical_uri: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(String, String)],
    /// Every header to sign (must include `host`, `x-amz-date` and
    /// `x-amz-content-sha256`).
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

/// The canonical request text and its `SignedHeaders` list.
pub fn canonical_request(request: &RequestToSign<'_>) -> (String, String) {
    let (header_block, signed_headers) = canonical_headers(request.headers);
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.canonical_uri,
        canonical_query(request.query),
        header_block,
        signed_headers,
        request.payload_hash
    );
    (text, signed_headers)
}

/// `DATE/REGION/s3/aws4_request`.
pub fn credential_scope(date: &str, region: &str) -> String {
    format!("{date}/{region}/{SERVICE}/aws4_request")
}

/// The string to sign for a canonical request.
pub fn string_to_sign(time: &AmzTime, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}\n{scope}\n{}", time.datetime, sha256_hex(canonical_request.as_bytes()))
}

/// The signing key: HMAC chain of the secret over date, region, service.
pub fn signing_key(secret_access_key: &str, date: &str, region: &str) -> hmac::Key {
    let secret = format!("AWS4{secret_access_key}");
    let date_key = hmac_sign(secret.as_bytes(), date);
    let region_key = hmac_sign(&date_key, region);
    let service_key = hmac_sign(&region_key, SERVICE);
    let signing = hmac_sign(&service_key, "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, &signing)
}

fn hmac_sign(key: &[u8], data: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data.as_bytes()).as_ref().to_vec()
}

/// Hex HMAC-SHA256 of the string to sign.
pub fn signature(key: &hmac::Key, string_to_sign: &str) -> String {
    hex(hmac::sign(key, string_to_sign.as_bytes()).as_ref())
}

/// The `Authorization` header value.
pub fn authorization_header(
    access_key_id: &str,
    scope: &str,
    signed_headers: &str,
    signature: &str,
) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}/{scope},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// Every step at once: the `Authorization` header for `request` at `time`.
pub fn authorize(
    request: &RequestToSign<'_>,
    credentials: &Credentials,
    region: &str,
    time: &AmzTime,
) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let scope = credential_scope(&time.date, region);
    let to_sign = string_to_sign(time, &scope, &canonical);
    let key = signing_key(&credentials.secret_access_key, &time.date, region);
    authorization_header(&credentials.access_key_id, &scope, &signed_headers, &signature(&key, &to_sign))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of "Signature Calculations for the Authorization Header:
    // Transferring Payload in a Single Chunk" in the Amazon S3 API reference.
    const HOST: &str = "examplebucket.s3.amazonaws.com";
    const DATE_TIME: &str = "20130524T000000Z";

    fn example_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn example_time() -> AmzTime {
        AmzTime::from_unix_seconds(1_369_353_600)
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn signature_of(authorization: &str) -> &str {
        authorization.rsplit("Signature=").next().unwrap_or("")
    }

    #[test]
    fn example_time_is_the_documented_one() {
        let time = example_time();
        assert_eq!(time.date, "20130524");
        assert_eq!(time.datetime, DATE_TIME);
    }

    #[test]
    fn get_object_example() {
        let headers = headers(&[
            ("Host", HOST),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", DATE_TIME),
        ]);
        let request = RequestToSign {
            method: "GET",
            canonical_uri: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(
            canonical,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let scope = credential_scope("20130524", "us-east-1");
        assert_eq!(
            string_to_sign(&example_time(), &scope, &canonical),
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        let authorization = authorize(&request, &example_credentials(), "us-east-1", &example_time());
        assert_eq!(
            authorization,
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
                 SignedHeaders={signed},\
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            )
        );
    }

    #[test]
    fn put_object_example_encodes_the_dollar_sign() {
        let payload_hash = sha256_hex(b"Welcome to Amazon S3.");
        assert_eq!(payload_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
        let uri = format!("/{}", uri_encode("test$file.text", false));
        assert_eq!(uri, "/test%24file.text");
        let headers = headers(&[
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("Host", HOST),
            ("x-amz-content-sha256", &payload_hash),
            ("x-amz-date", DATE_TIME),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ]);
        let request = RequestToSign {
            method: "PUT",
            canonical_uri: &uri,
            query: &[],
            headers: &headers,
            payload_hash: &payload_hash,
        };
        let authorization = authorize(&request, &example_credentials(), "us-east-1", &example_time());
        assert!(
            authorization
                .contains("SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,")
        );
        assert_eq!(
            signature_of(&authorization),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn get_bucket_lifecycle_example_has_an_empty_query_value() {
        let query = vec![("lifecycle".to_string(), String::new())];
        assert_eq!(canonical_query(&query), "lifecycle=");
        let headers = headers(&[
            ("Host", HOST),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", DATE_TIME),
        ]);
        let request = RequestToSign {
            method: "GET",
            canonical_uri: "/",
            query: &query,
            headers: &headers,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let authorization = authorize(&request, &example_credentials(), "us-east-1", &example_time());
        assert_eq!(
            signature_of(&authorization),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn list_objects_example_sorts_the_query() {
        let query = vec![("prefix".to_string(), "J".to_string()), ("max-keys".to_string(), "2".to_string())];
        assert_eq!(canonical_query(&query), "max-keys=2&prefix=J");
        let headers = headers(&[
            ("Host", HOST),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", DATE_TIME),
        ]);
        let request = RequestToSign {
            method: "GET",
            canonical_uri: "/",
            query: &query,
            headers: &headers,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let authorization = authorize(&request, &example_credentials(), "us-east-1", &example_time());
        assert_eq!(
            signature_of(&authorization),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn uri_encoding_follows_aws_rules() {
        assert_eq!(uri_encode("a-b_c.d~e", true), "a-b_c.d~e");
        assert_eq!(uri_encode("a b/c", false), "a%20b/c");
        assert_eq!(uri_encode("a b/c", true), "a%20b%2Fc");
        assert_eq!(uri_encode("+=&?*", true), "%2B%3D%26%3F%2A");
        assert_eq!(uri_encode("é", true), "%C3%A9");
    }

    /// "Create a canonical request" in the IAM user guide: S3 paths are
    /// encoded once, each segment, '/' kept; spaces are %20, never '+'.
    #[test]
    fn paths_are_encoded_once_per_segment() {
        assert_eq!(uri_encode("documents and settings/", false), "documents%20and%20settings/");
        assert_eq!(uri_encode("site+7:edge/wal/s/batches/0", false), "site%2B7%3Aedge/wal/s/batches/0");
        assert_eq!(uri_encode("ünï cödé/x y/s", false), "%C3%BCn%C3%AF%20c%C3%B6d%C3%A9/x%20y/s");
        assert_eq!(uri_encode("a%20b/~c", false), "a%2520b/~c");
    }

    /// The same guide's query example (`marker`, `max-keys`, `prefix`,
    /// sorted by name) and ListObjectsV2's parameters: '/' in a value is
    /// %2F, '=' %3D, '+' %2B, a space %20; a continuation token (here the
    /// one of the ListObjectsV2 reference example) is encoded like any value.
    #[test]
    fn list_objects_v2_queries_are_encoded_and_sorted() {
        let query = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> =
                pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            canonical_query(&owned)
        };
        assert_eq!(
            query(&[("prefix", "somePrefix"), ("marker", "someMarker"), ("max-keys", "20")]),
            "marker=someMarker&max-keys=20&prefix=somePrefix"
        );
        assert_eq!(
            query(&[
                ("list-type", "2"),
                ("prefix", "ünï cödé/x y/s/"),
                ("start-after", "site+7:edge/wal/s/manifest/x"),
                ("continuation-token", "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="),
            ]),
            "continuation-token=1ueGcxLPRx1Tr%2FXYExHnhbYLgveDs2J%2Fwm36Hy4vbOwM%3D&list-type=2&\
             prefix=%C3%BCn%C3%AF%20c%C3%B6d%C3%A9%2Fx%20y%2Fs%2F&\
             start-after=site%2B7%3Aedge%2Fwal%2Fs%2Fmanifest%2Fx"
        );
        // Empty values keep their '=' (ListMultipartUploads' `uploads`).
        assert_eq!(query(&[("uploads", ""), ("prefix", "a b")]), "prefix=a%20b&uploads=");
    }

    /// A whole signed request for a key outside the unreserved set: the
    /// canonical request carries the encoded path, as sent.
    #[test]
    fn requests_for_utf8_keys_sign_the_encoded_path() {
        let uri = format!("/{}/{}", uri_encode("examplebucket", true), uri_encode("ünï cödé/x+y", false));
        assert_eq!(uri, "/examplebucket/%C3%BCn%C3%AF%20c%C3%B6d%C3%A9/x%2By");
        let headers = headers(&[
            ("Host", HOST),
            ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
            ("x-amz-date", DATE_TIME),
        ]);
        let request = RequestToSign {
            method: "GET",
            canonical_uri: &uri,
            query: &[],
            headers: &headers,
            payload_hash: EMPTY_PAYLOAD_SHA256,
        };
        let (canonical, _) = canonical_request(&request);
        assert!(
            canonical.starts_with("GET\n/examplebucket/%C3%BCn%C3%AF%20c%C3%B6d%C3%A9/x%2By\n\n"),
            "{canonical}"
        );
    }

    #[test]
    fn headers_are_lowercased_trimmed_and_sorted() {
        let (block, signed) =
            canonical_headers(&headers(&[("X-Amz-Meta-B", "  two   words "), ("Host", "h")]));
        assert_eq!(block, "host:h\nx-amz-meta-b:two words\n");
        assert_eq!(signed, "host;x-amz-meta-b");
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(AmzTime::from_unix_seconds(0).datetime, "19700101T000000Z");
        // 2000-02-29 (leap day) 23:59:59
        assert_eq!(AmzTime::from_unix_seconds(951_868_799).datetime, "20000229T235959Z");
        // 2024-12-31 12:34:56
        assert_eq!(AmzTime::from_unix_seconds(1_735_648_496).datetime, "20241231T123456Z");
        // 2100-03-01 (2100 is not a leap year)
        assert_eq!(AmzTime::from_unix_seconds(4_107_542_400).date, "21000301");
    }
}
