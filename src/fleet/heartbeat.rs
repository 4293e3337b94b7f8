//! The heartbeat object's text format, version 1: what a node says about
//! one of its streams, at `STREAM/nodes/NODE_ID`, rewritten every
//! `heartbeat_interval`.
//!
//! ```text
//! walship-heartbeat 1
//! node=gw-17a
//! stream=sensors
//! version=0.1.0
//! written=1796006405          node's clock, seconds since the epoch (informative)
//! archived=1234               last archived position; empty: none
//! committed=1240              committed position; empty: none
//! backlog_segments=6          sealed segments waiting to be archived
//! first_waiting=1235          lowest position of the node's copy not yet
//!                             archived; empty: none waits
//! held=1240                   highest sealed position the node's copy has
//!                             held since it started; empty: none
//! last_success=1796006400     empty: none yet
//! last_error=                 the error the stream is stuck on; empty: none
//! state=running               or `stopped`: the node's last heartbeat,
//!                             written as it stopped cleanly
//! ```
//!
//! The first line names the format and its version; then `key=value`
//! lines, each key at most once. `node`, `stream` and `version` are
//! required, the others default to none or 0. Keys this version does not
//! know are skipped, so a later walship may add some and still be read.
//! Age is never judged from `written` (nodes' clocks differ) but from the
//! object's Last-Modified against the store's clock (see `view`).
//!
//! A node's fleet index object (`.walship/fleet/NODE_ID`, for `walship
//! fleet`) holds the heartbeats of all its streams one after another, each
//! starting at its `walship-heartbeat 1` line ([`index_text`],
//! [`parse_index`]): all of the same node, no stream twice, at most
//! [`MAX_INDEX_LEN`] bytes; an empty object is a node with no stream.
//!
//! [`parse`] and [`parse_index`] are total: any bytes give heartbeats or an
//! error naming the line, never a panic, and they read at most [`MAX_LEN`]
//! (one heartbeat) or [`MAX_INDEX_LEN`] (an index) bytes. Writing
//! keeps values on one line and within bounds (`last_error` at most
//! [`MAX_ERROR_LEN`] bytes, control characters as spaces), so that what is
//! written always parses back to the same value.

use std::fmt;

use crate::config::check_node_id;
use crate::config::check_stream_name;

/// The first line of every heartbeat.
pub const MAGIC: &str = "walship-heartbeat";

/// The format version written and read.
pub const VERSION: u32 = 1;

/// A heartbeat larger than this is refused unread.
pub const MAX_LEN: usize = 4096;

/// A fleet index object larger than this is refused unread (room for
/// 256 streams' heartbeats of the largest size).
pub const MAX_INDEX_LEN: usize = 256 * MAX_LEN;

/// Longest `last_error` written; longer messages are cut.
pub const MAX_ERROR_LEN: usize = 1024;

/// Longest `version` value accepted.
const MAX_VERSION_LEN: usize = 64;

/// What one node says about one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: String,
    pub stream: String,
    /// The walship version that wrote it.
    pub version: String,
    /// The writer's clock when it wrote it (seconds since the epoch).
    pub written: u64,
    pub archived: Option<u64>,
    pub committed: Option<u64>,
    pub backlog_segments: u64,
    /// The lowest position waiting in the node's copy (what it could
    /// archive next; an election skips a node that would leave a gap).
    pub first_waiting: Option<u64>,
    /// How far the node's own copy reaches (elections compare this, not
    /// `committed`, which counts what the node adopted from the archive).
    pub held: Option<u64>,
    pub last_success: Option<u64>,
    pub last_error: Option<String>,
    /// Written as the node stopped cleanly: it archives no more (peers elect
    /// without it at once). Absent in the text: running.
    pub stopped: bool,
}

/// Why bytes are not a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// 1-based line, or 0 for the whole object.
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "not a heartbeat: {}", self.problem),
            line => write!(f, "not a heartbeat: line {line}: {}", self.problem),
        }
    }
}

impl std::error::Error for FormatError {}

impl Heartbeat {
    /// The object's text.
    pub fn to_text(&self) -> String {
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        format!(
            "{MAGIC} {VERSION}\nnode={}\nstream={}\nversion={}\nwritten={}\narchived={}\n\
             committed={}\nbacklog_segments={}\nfirst_waiting={}\nheld={}\nlast_success={}\nlast_error={}\n\
             state={}\n",
            self.node,
            self.stream,
            one_line(&self.version, MAX_VERSION_LEN),
            self.written,
            opt(self.archived),
            opt(self.committed),
            self.backlog_segments,
            opt(self.first_waiting),
            opt(self.held),
            opt(self.last_success),
            self.last_error.as_deref().map_or(String::new(), |e| one_line(e, MAX_ERROR_LEN)),
            if self.stopped { "stopped" } else { "running" },
        )
    }
}

/// `text` on one line (control characters as spaces), trimmed, at most
/// `max` bytes (cut on a character boundary).
fn one_line(text: &str, max: usize) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut end = clean.trim().len().min(max);
    while !clean.trim().is_char_boundary(end) {
        end -= 1;
    }
    clean.trim()[..end].trim().to_string()
}

/// Read a heartbeat (see the module doc for the format).
pub fn parse(bytes: &[u8]) -> Result<Heartbeat, FormatError> {
    let whole = |problem: String| FormatError { line: 0, problem };
    if bytes.len() > MAX_LEN {
        return Err(whole(format!("{} bytes, more than the {MAX_LEN} a heartbeat may hold", bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| whole(format!("not UTF-8 ({e})")))?;
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line));
    let at = |line: usize, problem: String| FormatError { line, problem };
    match lines.next() {
        Some((_, first)) if first == format!("{MAGIC} {VERSION}") => {}
        Some((_, first)) if first.starts_with(&format!("{MAGIC} ")) => {
            return Err(at(
                1,
                format!("format {first:?} is not version {VERSION}: written by a newer walship"),
            ));
        }
        _ => return Err(at(1, format!("the first line is not `{MAGIC} {VERSION}`"))),
    }
    let mut heartbeat = Heartbeat::default();
    let mut seen: Vec<&str> = Vec::new();
    for (number, line) in lines {
        let (key, value) = line.split_once('=').ok_or_else(|| at(number, "expected key=value".into()))?;
        if seen.contains(&key) {
            return Err(at(number, format!("{key} appears twice")));
        }
        seen.push(key);
        let field = |problem: String| at(number, format!("{key}: {problem}"));
        let number_or_none = |value: &str| -> Result<Option<u64>, FormatError> {
            match value {
                "" => Ok(None),
                digits => {
                    parse_number(digits).map(Some).ok_or_else(|| field(format!("{digits:?} is not a number")))
                }
            }
        };
        match key {
            "node" => {
                check_node_id(value).map_err(field)?;
                heartbeat.node = value.to_string();
            }
            "stream" => {
                check_stream_name(value).map_err(field)?;
                heartbeat.stream = value.to_string();
            }
            "version" => {
                if value.is_empty()
                    || value.len() > MAX_VERSION_LEN
                    || value != one_line(value, MAX_VERSION_LEN)
                {
                    return Err(field(format!("expected 1 to {MAX_VERSION_LEN} printable characters")));
                }
                heartbeat.version = value.to_string();
            }
            "written" => heartbeat.written = number_or_none(value)?.unwrap_or(0),
            "archived" => heartbeat.archived = number_or_none(value)?,
            "committed" => heartbeat.committed = number_or_none(value)?,
            "backlog_segments" => heartbeat.backlog_segments = number_or_none(value)?.unwrap_or(0),
            "first_waiting" => heartbeat.first_waiting = number_or_none(value)?,
            "held" => heartbeat.held = number_or_none(value)?,
            "last_success" => heartbeat.last_success = number_or_none(value)?,
            "last_error" => {
                if value != one_line(value, MAX_ERROR_LEN) {
                    return Err(field("longer than a heartbeat writes, or not trimmed".into()));
                }
                heartbeat.last_error = (!value.is_empty()).then(|| value.to_string());
            }
            "state" => {
                heartbeat.stopped = match value {
                    "running" => false,
                    "stopped" => true,
                    _ => return Err(field(format!("expected running or stopped, got {value:?}"))),
                }
            }
            _ => {} // added by a later walship
        }
    }
    for required in ["node", "stream", "version"] {
        if !seen.contains(&required) {
            return Err(whole(format!("no {required}= line")));
        }
    }
    Ok(heartbeat)
}

/// A node's fleet index object: the heartbeats of its streams, one after
/// another (see the module doc).
pub fn index_text(heartbeats: &[Heartbeat]) -> String {
    heartbeats.iter().map(Heartbeat::to_text).collect()
}

/// Read a node's fleet index object: its heartbeats, in the order written.
/// Each starts at a line beginning `walship-heartbeat ` (with no '='); all
/// name the same node and no stream twice.
pub fn parse_index(bytes: &[u8]) -> Result<Vec<Heartbeat>, FormatError> {
    let whole = |problem: String| FormatError { line: 0, problem };
    if bytes.len() > MAX_INDEX_LEN {
        return Err(whole(format!(
            "{} bytes, more than the {MAX_INDEX_LEN} a fleet index may hold",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| whole(format!("not UTF-8 ({e})")))?;
    // Each heartbeat's lines, with the number of the line it starts on. A
    // first line has no '=' (a line with one is a key, maybe unknown).
    let starts = |line: &str| line.starts_with(&format!("{MAGIC} ")) && !line.contains('=');
    let mut chunks: Vec<(usize, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        match chunks.last_mut() {
            Some((_, chunk)) if !starts(line) => {
                chunk.push_str(line);
                chunk.push('\n');
            }
            _ => chunks.push((index + 1, format!("{line}\n"))),
        }
    }
    let mut heartbeats: Vec<Heartbeat> = Vec::with_capacity(chunks.len());
    for (start, chunk) in chunks {
        let heartbeat = parse(chunk.as_bytes()).map_err(|error| FormatError {
            line: start + error.line.saturating_sub(1),
            problem: error.problem,
        })?;
        let at = |problem: String| FormatError { line: start, problem };
        if let Some(first) = heartbeats.first().filter(|first| first.node != heartbeat.node) {
            return Err(at(format!("node {} in the index of node {}", heartbeat.node, first.node)));
        }
        if heartbeats.iter().any(|seen| seen.stream == heartbeat.stream) {
            return Err(at(format!("stream {} appears twice", heartbeat.stream)));
        }
        heartbeats.push(heartbeat);
    }
    Ok(heartbeats)
}

/// A run of ASCII digits as a u64 (no sign, no spaces, no overflow).
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// For the fuzzer: any bytes parse, as a heartbeat and as a fleet index,
/// or fail without panicking, and what parses is written back to text that
/// parses to the same heartbeat (or heartbeats).
pub fn check_parse(data: &[u8]) {
    if let Ok(heartbeat) = parse(data) {
        let again = parse(heartbeat.to_text().as_bytes()).expect("a written heartbeat parses");
        assert_eq!(again, heartbeat, "a heartbeat does not survive writing and reading");
        let index = parse_index(data).expect("one heartbeat is an index");
        assert_eq!(index, [heartbeat], "one heartbeat is an index of one");
    }
    if let Ok(heartbeats) = parse_index(data) {
        let again = parse_index(index_text(&heartbeats).as_bytes()).expect("a written index parses");
        assert_eq!(again, heartbeats, "a fleet index does not survive writing and reading");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heartbeat {
        Heartbeat {
            node: "gw-17a".into(),
            stream: "sensors".into(),
            version: "0.1.0".into(),
            written: 1_796_006_405,
            archived: Some(1234),
            committed: Some(1240),
            backlog_segments: 6,
            first_waiting: Some(1235),
            held: Some(1240),
            last_success: Some(1_796_006_400),
            last_error: None,
            stopped: false,
        }
    }

    #[test]
    fn writes_the_documented_text_and_reads_it_back() {
        let text = sample().to_text();
        assert_eq!(
            text,
            "walship-heartbeat 1\nnode=gw-17a\nstream=sensors\nversion=0.1.0\nwritten=1796006405\n\
             archived=1234\ncommitted=1240\nbacklog_segments=6\nfirst_waiting=1235\nheld=1240\nlast_success=1796006400\n\
             last_error=\nstate=running\n"
        );
        assert_eq!(parse(text.as_bytes()), Ok(sample()));
        let fresh = Heartbeat {
            archived: None,
            committed: None,
            first_waiting: None,
            last_success: None,
            ..sample()
        };
        assert_eq!(parse(fresh.to_text().as_bytes()), Ok(fresh));
    }

    #[test]
    fn errors_are_kept_on_one_bounded_line() {
        let failing =
            Heartbeat { last_error: Some(format!(" put failed:\n\t{}é ", "x".repeat(2000))), ..sample() };
        let read = parse(failing.to_text().as_bytes()).unwrap();
        let error = read.last_error.unwrap();
        assert!(error.starts_with("put failed:  xxx"), "{error}");
        assert!(error.len() <= MAX_ERROR_LEN);
        check_parse(failing.to_text().as_bytes());
    }

    #[test]
    fn unknown_keys_are_skipped_and_bad_input_is_named() {
        let stopped = Heartbeat { stopped: true, ..sample() };
        assert!(stopped.to_text().ends_with("\nstate=stopped\n"));
        assert_eq!(parse(stopped.to_text().as_bytes()), Ok(stopped));
        let bad = sample().to_text().replace("state=running", "state=paused");
        assert!(parse(bad.as_bytes()).unwrap_err().to_string().contains("expected running or stopped"));
        let newer = sample().to_text() + "offloader=gw-2\n";
        assert_eq!(parse(newer.as_bytes()), Ok(sample()));
        let text = sample().to_text();
        #[rustfmt::skip]
        let cases: [(String, usize, &str); 10] = [
            (String::new(), 1, "first line"),
            (text.replace(" 1\n", " 2\n"), 1, "written by a newer walship"),
            (text.replace("node=gw-17a", "node=../x"), 2, "node id"),
            (text.replace("stream=sensors", "stream=a/b"), 3, "stream name"),
            (text.replace("archived=1234", "archived=-1"), 6, "not a number"),
            (text.replace("archived=1234", "archived=99999999999999999999"), 6, "not a number"),
            (text.replace("committed=1240", "committed"), 7, "key=value"),
            (text.clone() + "node=x\n", 14, "twice"),
            (text.replace("version=0.1.0\n", ""), 0, "no version="),
            ("x".repeat(MAX_LEN + 1), 0, "more than the"),
        ];
        for (input, line, part) in cases {
            let error = parse(input.as_bytes()).expect_err(&input);
            assert_eq!(error.line, line, "{error}");
            assert!(error.to_string().contains(part), "{error} lacks {part:?}");
        }
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn an_index_holds_a_nodes_heartbeats_one_after_another() {
        let other = Heartbeat { stream: "pg".into(), last_error: Some("put failed".into()), ..sample() };
        let text = index_text(&[sample(), other.clone()]);
        assert_eq!(text, sample().to_text() + &other.to_text());
        assert_eq!(parse_index(text.as_bytes()), Ok(vec![sample(), other.clone()]));
        assert_eq!(parse_index(b""), Ok(vec![]), "a node with no stream");
        check_parse(text.as_bytes());
        let unknown_key = sample().to_text() + "walship-heartbeat 1=later\n";
        assert_eq!(parse_index(unknown_key.as_bytes()), Ok(vec![sample()]), "a key, not a heartbeat");
        check_parse(unknown_key.as_bytes());
        let lines = sample().to_text().lines().count();
        let stranger = Heartbeat { node: "gw-2".into(), ..other.clone() };
        #[rustfmt::skip]
        let cases: [(String, usize, &str); 6] = [
            ("garbage\n".to_string() + &text, 1, "first line"),
            (text.replace("stream=pg", "stream=sensors"), lines + 1, "stream sensors appears twice"),
            (index_text(&[sample(), stranger]), lines + 1, "node gw-2 in the index of node gw-17a"),
            (text.replace("archived=1234\ncommitted=1240\nbacklog_segments=6\nfirst_waiting=1235\nheld=1240\nlast_success=1796006400\nlast_error=put failed", "archived=x"), lines + 6, "not a number"),
            (text.replace("walship-heartbeat 1\nnode=gw-17a\nstream=pg", "walship-heartbeat 2\nnode=gw-17a\nstream=pg"), lines + 1, "newer walship"),
            ("x".repeat(MAX_INDEX_LEN + 1), 0, "more than the"),
        ];
        for (input, line, part) in cases {
            let error = parse_index(input.as_bytes()).expect_err(&input);
            assert!(error.to_string().contains(part), "{error} lacks {part:?}");
            assert_eq!(error.line, line, "{error}");
        }
    }
}
