//! S3 credentials: where they come from, and keeping the secret out of sight.
//!
//! Sources, first match wins:
//! 1. the configured `credentials_file` (AWS shared-credentials format, the
//!    `[default]` profile), refused when group- or world-readable;
//! 2. the environment, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
//!    (and `AWS_SESSION_TOKEN`);
//! 3. systemd's `LoadCredential=`: files `aws_access_key_id` and
//!    `aws_secret_access_key` in `$CREDENTIALS_DIRECTORY`.
//!
//! Parsing ([`parse_shared_credentials`]) is separate from reading files so
//! tests and the fuzzer ([`check_parse`]) feed it text. Neither `Debug` nor `Display` of [`Credentials`] ever
//! shows the secret or the session token. Other profiles, `credential_process`
//! and instance metadata are deliberately not supported.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An access key pair (plus an optional session token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The public half, e.g. `AKIA…` or Garage's `GK…`; safe to log.
    pub access_key_id: String,
    /// Never logged, displayed or put in an error.
    pub secret_access_key: String,
    /// Temporary-credential token (`x-amz-security-token`); never logged.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access key {}", self.access_key_id)
    }
}

/// Why no usable credentials were found. `Display` names the source and the fix.
#[derive(Debug)]
pub enum CredentialsError {
    /// A credentials file could not be opened or read.
    Read { path: PathBuf, error: std::io::Error },
    /// The credentials file is readable by group or others.
    TooOpen { path: PathBuf, mode: u32 },
    /// The credentials file's content is wrong.
    Parse { path: PathBuf, line: usize, reason: String },
    /// A source was found but lacks one of its two values.
    Incomplete { source: String, missing: String },
    /// No source holds credentials.
    Missing,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::Read { path, error } => {
                write!(f, "cannot read credentials file {}: {error}", path.display())
            }
            CredentialsError::TooOpen { path, mode } => write!(
                f,
                "credentials file {} is readable by other users (mode {:04o}); \
                 run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            CredentialsError::Parse { path, line, reason } => {
                write!(f, "{}:{line}: {reason}", path.display())
            }
            CredentialsError::Incomplete { source, missing } => {
                write!(f, "{source} has no {missing}; provide both the access key id and the secret")
            }
            CredentialsError::Missing => write!(
                f,
                "no S3 credentials: set credentials_file, or AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY in the environment, or LoadCredential=aws_access_key_id \
                 and LoadCredential=aws_secret_access_key in the systemd unit"
            ),
        }
    }
}

impl std::error::Error for CredentialsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CredentialsError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A problem in shared-credentials text, before a path is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line (0 when the problem is the file as a whole).
    pub line: usize,
    pub reason: String,
}

/// Load credentials from the first source that has them (see the module doc),
/// reading the process environment.
pub fn load(credentials_file: Option<&Path>) -> Result<Credentials, CredentialsError> {
    load_with_env(credentials_file, &|name| std::env::var(name).ok())
}

/// [`load`] with the environment given as a lookup function (for tests).
pub fn load_with_env(
    credentials_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, CredentialsError> {
    if let Some(path) = credentials_file {
        return load_file(path);
    }
    if let Some(credentials) = from_environment(env)? {
        return Ok(credentials);
    }
    match env("CREDENTIALS_DIRECTORY").filter(|dir| !dir.is_empty()) {
        Some(dir) => from_credentials_directory(Path::new(&dir)),
        None => Err(CredentialsError::Missing),
    }
}

/// Read and parse a shared-credentials file, refusing it when its mode lets
/// group or others read it.
pub fn load_file(path: &Path) -> Result<Credentials, CredentialsError> {
    let read_error = |error| CredentialsError::Read { path: path.to_path_buf(), error };
    let mut file = File::open(path).map_err(read_error)?;
    let mode = file.metadata().map_err(read_error)?.mode();
    if !is_private_mode(mode) {
        return Err(CredentialsError::TooOpen { path: path.to_path_buf(), mode });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_error)?;
    parse_shared_credentials(&text).map_err(|e| CredentialsError::Parse {
        path: path.to_path_buf(),
        line: e.line,
        reason: e.reason,
    })
}

/// Whether a file mode keeps the file private to its owner (no group or
/// other permission bits at all).
pub fn is_private_mode(mode: u32) -> bool {
    mode & 0o077 == 0
}

/// Parse AWS shared-credentials text and return its `[default]` profile.
/// `#` and `;` start comment lines; keys are case-insensitive; whitespace
/// around `=` is ignored.
pub fn parse_shared_credentials(text: &str) -> Result<Credentials, ParseError> {
    let mut section: Option<String> = None;
    let mut access_key_id = None;
    let mut secret_access_key = None;
    let mut session_token = None;
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or_else(|| ParseError {
                line: line_number,
                reason: "a section header must look like [default]".into(),
            })?;
            section = Some(name.trim().to_string());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| ParseError { line: line_number, reason: "expected `key = value`".into() })?;
        if section.as_deref() != Some("default") {
            continue;
        }
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => access_key_id = Some(value),
            "aws_secret_access_key" => secret_access_key = Some(value),
            "aws_session_token" => session_token = Some(value),
            _ => {}
        }
    }
    let missing = |what: &str| ParseError { line: 0, reason: format!("no {what} in the [default] section") };
    Ok(Credentials {
        access_key_id: non_empty(access_key_id).ok_or_else(|| missing("aws_access_key_id"))?,
        secret_access_key: non_empty(secret_access_key).ok_or_else(|| missing("aws_secret_access_key"))?,
        session_token: non_empty(session_token),
    })
}

/// For the fuzzer: whatever `data` is, parsing gives credentials or an
/// error without panicking; profiles after the text and comments before it
/// change nothing but line numbers; neither `Debug` nor `Display` depends on
/// the secret or the token. Panics otherwise.
pub fn check_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse_shared_credentials(text);
    let other_profile = format!("{text}\n[other]\naws_access_key_id = OTHER\naws_secret_access_key = S\n");
    assert_eq!(parse_shared_credentials(&other_profile), parsed, "a later profile changed the result");
    let commented = parse_shared_credentials(&format!("# comment\n{text}"));
    match (&parsed, commented) {
        (Ok(credentials), Ok(again)) => assert_eq!(credentials, &again, "a comment changed the result"),
        (Err(error), Err(again)) => {
            let shifted = if error.line == 0 { 0 } else { error.line + 1 };
            assert_eq!((shifted, &error.reason), (again.line, &again.reason), "a comment changed the error");
        }
        (parsed, commented) => panic!("a comment changed {parsed:?} into {commented:?}"),
    }
    if let Ok(credentials) = parsed {
        assert!(!credentials.access_key_id.is_empty() && !credentials.secret_access_key.is_empty());
        let blank = Credentials {
            secret_access_key: "x".into(),
            session_token: credentials.session_token.as_ref().map(|_| "x".into()),
            ..credentials.clone()
        };
        assert_eq!(format!("{credentials:?}"), format!("{blank:?}"), "Debug shows the secret");
        assert_eq!(format!("{credentials}"), format!("{blank}"), "Display shows the secret");
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; `None`
/// when neither is set, an error when only one is.
fn from_environment(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Credentials>, CredentialsError> {
    let access_key_id = non_empty(env("AWS_ACCESS_KEY_ID"));
    let secret_access_key = non_empty(env("AWS_SECRET_ACCESS_KEY"));
    let incomplete = |missing: &str| CredentialsError::Incomplete {
        source: "the environment".into(),
        missing: missing.into(),
    };
    match (access_key_id, secret_access_key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(incomplete("AWS_SECRET_ACCESS_KEY")),
        (None, Some(_)) => Err(incomplete("AWS_ACCESS_KEY_ID")),
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: non_empty(env("AWS_SESSION_TOKEN")),
        })),
    }
}

/// Credentials from systemd's credential directory (`LoadCredential=`).
fn from_credentials_directory(dir: &Path) -> Result<Credentials, CredentialsError> {
    let access_key_id = read_credential(dir, "aws_access_key_id")?;
    let secret_access_key = read_credential(dir, "aws_secret_access_key")?;
    let source = format!("$CREDENTIALS_DIRECTORY ({})", dir.display());
    match (access_key_id, secret_access_key) {
        (None, None) => Err(CredentialsError::Missing),
        (Some(_), None) => {
            Err(CredentialsError::Incomplete { source, missing: "aws_secret_access_key".into() })
        }
        (None, Some(_)) => Err(CredentialsError::Incomplete { source, missing: "aws_access_key_id".into() }),
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: read_credential(dir, "aws_session_token")?,
        }),
    }
}

/// One credential file's trimmed content; `None` when absent or empty.
fn read_credential(dir: &Path, name: &str) -> Result<Option<String>, CredentialsError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(non_empty(Some(text.trim().to_string()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CredentialsError::Read { path, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("walship-creds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn parses_the_default_profile() {
        let text = "# comment\n[other]\naws_access_key_id = NOPE\n\n[default]\n\
                    aws_access_key_id=AKID\n  AWS_SECRET_ACCESS_KEY =  s/e=cret \n; end\n";
        let credentials = parse_shared_credentials(text).unwrap();
        assert_eq!(credentials.access_key_id, "AKID");
        assert_eq!(credentials.secret_access_key, "s/e=cret");
        assert_eq!(credentials.session_token, None);
    }

    #[test]
    fn reports_what_is_missing_or_malformed() {
        let err = parse_shared_credentials("[default]\naws_access_key_id = A\n").unwrap_err();
        assert!(err.reason.contains("aws_secret_access_key"), "{err:?}");
        let err = parse_shared_credentials("[default]\njunk line\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse_shared_credentials("[default\n").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(parse_shared_credentials("").is_err());
    }

    #[test]
    fn never_shows_the_secret() {
        let credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: SECRET.into(),
            session_token: Some("TOKEN-SECRET".into()),
        };
        for shown in [format!("{credentials:?}"), format!("{credentials}")] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("TOKEN-SECRET"), "{shown}");
            assert!(shown.contains("AKID"), "{shown}");
        }
    }

    #[test]
    fn private_modes() {
        assert!(is_private_mode(0o100600));
        assert!(is_private_mode(0o100400));
        assert!(!is_private_mode(0o100640));
        assert!(!is_private_mode(0o100604));
        assert!(!is_private_mode(0o100610));
    }

    #[test]
    fn refuses_a_group_readable_file_and_names_the_fix() {
        let dir = temp_dir("open");
        let path = dir.join("credentials");
        std::fs::write(&path, format!("[default]\naws_access_key_id=A\naws_secret_access_key={SECRET}\n"))
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let message = load_file(&path).unwrap_err().to_string();
        assert!(message.contains(&format!("chmod 600 {}", path.display())), "{message}");
        assert!(!message.contains(SECRET));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let credentials = load_file(&path).unwrap();
        assert_eq!(credentials.secret_access_key, SECRET);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_configured_file_wins_over_the_environment() {
        let dir = temp_dir("order");
        let path = dir.join("credentials");
        std::fs::write(&path, "[default]\naws_access_key_id=FILE\naws_secret_access_key=S\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = env_of(&[("AWS_ACCESS_KEY_ID", "ENV"), ("AWS_SECRET_ACCESS_KEY", "S")]);
        assert_eq!(load_with_env(Some(&path), &env).unwrap().access_key_id, "FILE");
        assert_eq!(load_with_env(None, &env).unwrap().access_key_id, "ENV");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environment_needs_both_values() {
        let env = env_of(&[("AWS_ACCESS_KEY_ID", "ENV")]);
        let message = load_with_env(None, &env).unwrap_err().to_string();
        assert!(message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
            ("AWS_SESSION_TOKEN", "T"),
        ]);
        assert_eq!(load_with_env(None, &env).unwrap().session_token.as_deref(), Some("T"));
    }

    #[test]
    fn systemd_credentials_directory_is_the_last_resort() {
        let dir = temp_dir("systemd");
        std::fs::write(dir.join("aws_access_key_id"), "GKSYSTEMD\n").unwrap();
        let dir_text = dir.display().to_string();
        let env = env_of(&[("CREDENTIALS_DIRECTORY", &dir_text)]);
        let message = load_with_env(None, &env).unwrap_err().to_string();
        assert!(message.contains("aws_secret_access_key"), "{message}");

        std::fs::write(dir.join("aws_secret_access_key"), "secret\n").unwrap();
        let credentials = load_with_env(None, &env).unwrap();
        assert_eq!(credentials.access_key_id, "GKSYSTEMD");
        assert_eq!(credentials.secret_access_key, "secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_anywhere_says_how_to_provide_credentials() {
        let message = load_with_env(None, &env_of(&[])).unwrap_err().to_string();
        assert!(message.contains("credentials_file"), "{message}");
        assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
        assert!(message.contains("LoadCredential"), "{message}");
    }
}
