//! The `target` setting: `file:///absolute/path` or `s3://bucket[/prefix]`,
//! parsed and validated here, where the targets are defined. The bucket and
//! prefix rules are those of [`super::s3::settings`].

use std::path::PathBuf;

use super::s3::settings::{check_bucket, check_prefix};

/// Where archives go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetUrl {
    /// `file:///abs/path`
    File(PathBuf),
    /// `s3://bucket/optional/prefix` (prefix without leading or trailing '/').
    S3 { bucket: String, prefix: String },
}

impl TargetUrl {
    /// Parse a `target` value.
    pub fn parse(value: &str) -> Result<TargetUrl, String> {
        if let Some(rest) = value.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "a file target takes an absolute path, as in file:///mnt/archive \
                     (three slashes), got {value:?}"
                ));
            }
            return Ok(TargetUrl::File(PathBuf::from(rest)));
        }
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            let prefix = prefix.trim_matches('/');
            check_prefix(prefix)?;
            return Ok(TargetUrl::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() });
        }
        Err(format!("expected s3://bucket/prefix or file:///absolute/path, got {value:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let s3 = |bucket: &str, prefix: &str| TargetUrl::S3 { bucket: bucket.into(), prefix: prefix.into() };
        #[rustfmt::skip]
        let cases = [
            ("file:///mnt/archive", TargetUrl::File("/mnt/archive".into())),
            ("file:///", TargetUrl::File("/".into())),
            ("s3://bucket", s3("bucket", "")),
            ("s3://bucket/", s3("bucket", "")),
            ("s3://my.bucket-1/a/b/", s3("my.bucket-1", "a/b")),
            ("s3://abc//a", s3("abc", "a")),
            ("s3://abc/x_y-z.(1)!*'", s3("abc", "x_y-z.(1)!*'")),
            ("s3://abc/site+7:edge/wal", s3("abc", "site+7:edge/wal")),
            ("s3://abc/ünï cödé/x y", s3("abc", "ünï cödé/x y")),
        ];
        for (text, target) in cases {
            assert_eq!(TargetUrl::parse(text).as_ref(), Ok(&target), "{text}");
        }
        #[rustfmt::skip]
        let errors = [
            ("file://mnt/archive", "three slashes"),
            ("http://x/y", "expected s3://bucket/prefix or file:///absolute/path"),
            ("S3://bucket", "expected s3://"),
            ("s3://", "3 to 63 characters"),
            ("s3://ab", "3 to 63 characters"),
            ("s3://My-Bucket", "lowercase letters"),
            ("s3://bu_cket", "lowercase letters"),
            ("s3://-abc", "starts and ends with a letter or digit"),
            ("s3://abc-", "starts and ends with a letter or digit"),
            ("s3://a..b", "no two dots in a row"),
            ("s3://192.168.1.1", "IP address"),
            ("s3://abc/a//b", "empty, '.' or '..' part"),
            ("s3://abc/../x", "empty, '.' or '..' part"),
            ("s3://abc/a/./b", "empty, '.' or '..' part"),
            ("s3://abc/a\u{7}b", "control character"),
        ];
        for (text, part) in errors {
            let message = TargetUrl::parse(text).expect_err(text);
            assert!(message.contains(part), "{text}: {message}");
        }
        let long = format!("s3://{}", "a".repeat(64));
        assert!(TargetUrl::parse(&long).is_err());
        assert!(TargetUrl::parse(&format!("s3://abc/{}", "p".repeat(513))).is_err());
    }
}
