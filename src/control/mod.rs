//! The daemon's control socket: how a command (`walship snapshot`) asks
//! the running daemon to do something and waits for the answer.
//!
//! The socket is a Unix stream socket at `STATE_DIR/.walship-control`
//! ([`crate::statedir::control_socket`]), owner-only (0600), served by the
//! daemon that holds `STATE_DIR/.walship-control.lock` ([`server`]); a
//! client whose user is neither the socket's owner nor root is refused
//! (checked with `SO_PEERCRED`, [`peer_allowed`]). [`client`] connects and
//! tells "no daemon" (no socket, or a stale one nobody listens on) apart
//! from an answer.
//!
//! The protocol is one request and its reply per connection, in UTF-8
//! lines ending with `\n`:
//!
//! ```text
//! request = verb *(SP argument) LF          ; at most 4096 bytes
//! reply   = *(info-line) final-line
//! info-line  = "info" SP text LF            ; progress, shown as it comes
//! final-line = outcome SP text LF
//! outcome = "ok" / "failed" / "refused" / "usage" / "not-here"
//! ```
//!
//! Arguments are separated by single spaces; a request whose last argument
//! is a path takes the rest of the line for it, so a path may hold spaces
//! (never a newline). The requests are the variants of [`Request`]:
//!
//! - `snapshot STREAM`: take a snapshot of STREAM now and answer with the
//!   job's outcome (`ok` naming the job id and position, `failed` with the
//!   job's message, `refused` when a job already runs or the stream holds
//!   too many snapshots, `not-here` when this daemon does not run STREAM:
//!   another process may, or none).
//! - `prune STREAM` and `prune STREAM --dry-run`: apply retention to
//!   STREAM now (or only plan it) in the stream's thread, the journal's one
//!   writer; one `info` line per line `walship prune` prints, as it comes
//!   (the summary, then one per object deleted), then `ok` with the
//!   summary again, or `failed` with why.
//! - `push STREAM PATH`: archive the segment file at PATH (absolute) now,
//!   through the stream's thread, and answer once it is durably stored and
//!   recorded (`ok` with the archived position, `failed` with why, e.g. a
//!   conflict naming both CRCs, `usage` for a file that is not the
//!   stream's, `not-here` when this daemon does not run STREAM).
//!
//! To add a request: a variant of [`Request`] with its spelling in
//! [`Request::parse`] and [`Request::to_line`] (tested as a round trip),
//! and its handling in the daemon's handler (`archiver`). The outcome words
//! map to exit codes ([`Outcome::exit_code`]) the same for every request.

pub mod client;
pub mod server;

use std::fmt;

use crate::error::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

/// Longest request line the server reads, newline included.
pub const MAX_REQUEST_LEN: usize = 4096;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Take a snapshot of the stream now.
    Snapshot { stream: String },
    /// Apply retention to the stream now, or with `dry_run` only say what
    /// it would delete.
    Prune { stream: String, dry_run: bool },
    /// Archive the segment file `path` (absolute) of the stream now.
    Push { stream: String, path: std::path::PathBuf },
}

impl Request {
    /// Read a request line (without its newline).
    pub fn parse(line: &str) -> Result<Request, String> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let one_word = |what: &str| match rest {
            "" => Err(format!("`{verb}` needs {what}")),
            word if word.contains(' ') => Err(format!("`{verb}` takes only {what}")),
            word => Ok(word.to_string()),
        };
        match verb {
            "snapshot" => Ok(Request::Snapshot { stream: one_word("a stream name")? }),
            "push" => match rest.split_once(' ') {
                Some((stream, path)) if !stream.is_empty() && path.starts_with('/') => {
                    Ok(Request::Push { stream: stream.to_string(), path: path.into() })
                }
                _ => Err(format!("`{verb}` needs a stream name and an absolute path")),
            },
            "prune" => match rest.strip_suffix(" --dry-run") {
                Some(stream) if !stream.is_empty() && !stream.contains(' ') => {
                    Ok(Request::Prune { stream: stream.to_string(), dry_run: true })
                }
                _ => Ok(Request::Prune {
                    stream: one_word("a stream name, then optionally --dry-run")?,
                    dry_run: false,
                }),
            },
            _ => Err(format!(
                "unknown request `{}`; this daemon knows: snapshot, prune, push",
                crate::manifest::shown(verb)
            )),
        }
    }

    /// The request as its line (without the newline). Fails for text that
    /// cannot travel on one line.
    pub fn to_line(&self) -> Result<String, String> {
        let line = match self {
            Request::Snapshot { stream } => format!("snapshot {stream}"),
            Request::Prune { stream, dry_run: false } => format!("prune {stream}"),
            Request::Prune { stream, dry_run: true } => format!("prune {stream} --dry-run"),
            Request::Push { stream, path } => {
                let path = path.to_str().ok_or_else(|| "the path is not UTF-8".to_string())?;
                format!("push {stream} {path}")
            }
        };
        if line.contains('\n') || line.len() >= MAX_REQUEST_LEN {
            return Err("the request does not fit on one line of the control protocol".into());
        }
        Ok(line)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked.
    Ok,
    /// Tried, and it failed (a failed snapshot job).
    Failed,
    /// Not tried: something stands in the way (a job already running, too
    /// many snapshots).
    Refused,
    /// The request itself is wrong (an unknown request, no snapshot command).
    Usage,
    /// This daemon does not run the stream named: the client deals with it
    /// as if no daemon answered (the stream's lock tells whether another
    /// process runs it).
    NotHere,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Ok, Outcome::Failed, Outcome::Refused, Outcome::Usage, Outcome::NotHere];

    /// The word on the final line.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Usage => "usage",
            Outcome::NotHere => "not-here",
        }
    }

    /// The exit code of a command that got this outcome.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Ok => EXIT_OK,
            Outcome::Failed | Outcome::Refused | Outcome::NotHere => EXIT_FAILURE,
            Outcome::Usage => EXIT_USAGE,
        }
    }
}

/// The final line of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub outcome: Outcome,
    /// For a person: what happened, naming the job, stream, position.
    pub message: String,
}

impl Reply {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Reply {
        Reply { outcome, message: message.into() }
    }

    /// The reply's final line (without the newline); newlines in the
    /// message become spaces.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.outcome.word(), one_line(&self.message))
    }
}

/// One line of a reply, as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyLine {
    Info(String),
    Final(Reply),
}

impl ReplyLine {
    /// Read a reply line (without its newline).
    pub fn parse(line: &str) -> Result<ReplyLine, String> {
        let (word, text) = line.split_once(' ').unwrap_or((line, ""));
        if word == "info" {
            return Ok(ReplyLine::Info(text.to_string()));
        }
        match Outcome::ALL.into_iter().find(|o| o.word() == word) {
            Some(outcome) => Ok(ReplyLine::Final(Reply::new(outcome, text))),
            None => Err(format!("unexpected reply line `{}`", crate::manifest::shown(line))),
        }
    }
}

/// An info line for `text`.
pub fn info_line(text: &str) -> String {
    format!("info {}", one_line(text))
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Whether a client running as `peer_uid` may use the socket of a daemon
/// running as `owner_uid`: only the same user, or root.
pub fn peer_allowed(peer_uid: u32, owner_uid: u32) -> bool {
    peer_uid == owner_uid || peer_uid == 0
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        for (request, spelled) in [
            (Request::Snapshot { stream: "sensors".into() }, "snapshot sensors"),
            (Request::Prune { stream: "sensors".into(), dry_run: false }, "prune sensors"),
            (Request::Prune { stream: "sensors".into(), dry_run: true }, "prune sensors --dry-run"),
        ] {
            let line = request.to_line().unwrap();
            assert_eq!(line, spelled);
            assert_eq!(Request::parse(&line), Ok(request));
        }
        let push =
            Request::Push { stream: "pg".into(), path: "/data/pg wal/000000010000000000000001".into() };
        let line = push.to_line().unwrap();
        assert_eq!(line, "push pg /data/pg wal/000000010000000000000001", "a path may hold spaces");
        assert_eq!(Request::parse(&line), Ok(push));
        let newline = Request::Push { stream: "pg".into(), path: "/a\nb".into() };
        assert!(newline.to_line().is_err());
        for (line, expected) in [
            ("push pg", "needs a stream name and an absolute path"),
            ("push pg pg_wal/x", "needs a stream name and an absolute path"),
            ("push  /x", "needs a stream name and an absolute path"),
            ("prune", "needs a stream name, then optionally --dry-run"),
            ("prune a b", "takes only a stream name, then optionally --dry-run"),
            ("snapshot", "needs a stream name"),
            ("snapshot a b", "takes only a stream name"),
            ("restart now", "unknown request `restart`"),
            ("", "unknown request ``"),
        ] {
            let error = Request::parse(line).unwrap_err();
            assert!(error.contains(expected), "{line:?}: {error}");
        }
    }

    #[test]
    fn reply_lines_round_trip() {
        for outcome in Outcome::ALL {
            let reply = Reply::new(outcome, "job 7 of stream s: a\nb");
            let parsed = ReplyLine::parse(&reply.to_line()).unwrap();
            assert_eq!(parsed, ReplyLine::Final(Reply::new(outcome, "job 7 of stream s: a b")));
        }
        assert_eq!(
            ReplyLine::parse(&info_line("job 7 started")),
            Ok(ReplyLine::Info("job 7 started".into()))
        );
        assert!(ReplyLine::parse("maybe so").is_err());
    }

    #[test]
    fn outcomes_map_to_the_cli_exit_codes() {
        let codes: Vec<i32> = Outcome::ALL.iter().map(|o| o.exit_code()).collect();
        assert_eq!(codes, [0, 1, 1, 2, 1]);
    }

    #[test]
    fn only_the_owner_and_root_may_connect() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(1000, 0), "a user may not drive root's daemon");
    }
}
