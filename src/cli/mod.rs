//! The command line: arguments in, a `Command` (or help text) out.
//!
//! One table lists the commands, each with its getopts options, a usage line
//! and a builder that turns the parsed options into a `Command`. Everything
//! here is pure: nothing is printed, read or exited; `main` prints `Help` on
//! stdout with exit status 0 and a `UsageError` on stderr with exit status 2
//! (no arguments at all is such an error: the overall usage, on stderr).
//! Whether a named stream exists or a file can be read is for the command to
//! find out once the config is loaded, not for this module.

use std::fmt;
use std::path::PathBuf;

use getopts::{Fail, Matches, Options};

use crate::config::{self, DEFAULT_PATH};
use crate::restore::FetchDest;

/// What to run, with which config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `-c FILE`, default [`DEFAULT_PATH`].
    pub config_path: PathBuf,
    pub command: Command,
}

/// A command and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `walship run [--once]`: the daemon, or one full pass with `once`.
    Run { once: bool },
    /// `walship list [-s STREAM] [--all | --range FIRST..LAST]`: archived
    /// batches and gaps.
    List { stream: Option<String>, rows: ListRows },
    /// `walship restore -s STREAM --to DIR [--position P] [--allow-gaps]`.
    Restore {
        stream: String,
        to: PathBuf,
        /// `None`: the newest archived position.
        position: Option<u64>,
        allow_gaps: bool,
    },
    /// `walship push -s STREAM FILE`: archive one file now (for
    /// `archive_command`).
    Push { stream: String, path: PathBuf },
    /// `walship fetch -s STREAM NAME DEST`: one segment by file name, to a
    /// path or (`-`) standard output.
    Fetch { stream: String, name: String, dest: FetchDest },
    /// `walship fetch -s STREAM --prefetch NAME`: fill the stream's
    /// prefetch spool with the segments after NAME (what `fetch` starts in
    /// the background).
    Prefetch { stream: String, after: String },
    /// `walship status [--json]`.
    Status { json: bool },
    /// `walship verify [-s STREAM] [--deep]`.
    Verify { stream: Option<String>, deep: bool },
    /// `walship prune [-s STREAM] [--dry-run]`: apply retention.
    Prune { stream: Option<String>, dry_run: bool },
    /// `walship snapshot -s STREAM`: take a snapshot now.
    Snapshot { stream: String },
    /// `walship check`: validate the config and reach every target.
    Check,
    /// `walship fleet [--json] [--stale DURATION] [--deep]`: every node's
    /// heartbeats.
    Fleet {
        json: bool,
        /// Read every stream's heartbeats instead of the fleet index.
        deep: bool,
        /// `None`: three heartbeat intervals.
        stale: Option<std::time::Duration>,
    },
}

/// The outcome of parsing the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Run this.
    Run(Invocation),
    /// Print this text on stdout and exit 0 (`--help`, `help`, `--version`).
    Help(String),
}

/// Arguments that do not form a valid command. The text is the problem, then
/// a line saying where usage is shown (for no arguments at all: the overall
/// usage); print it on stderr and exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// One command of the table.
struct CommandSpec {
    name: &'static str,
    /// What follows `walship NAME` in the usage line.
    synopsis: &'static str,
    /// One line for the overall usage.
    summary: &'static str,
    /// A paragraph for the command's own help.
    about: &'static str,
    /// Adds the command's own options (the common ones are added for all).
    options: fn(&mut Options),
    /// Builds the command from the parsed options.
    build: fn(&Matches) -> Result<Command, String>,
}

const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "run",
        synopsis: "[--once]",
        summary: "archive every stream until stopped (the daemon)",
        about: "Archive every configured stream until stopped by SIGTERM or SIGINT;\n\
                SIGHUP reloads the config.",
        options: |o| {
            o.optflag(
                "",
                "once",
                "do one full pass and exit: archive every sealed segment (a short final \
                 batch included), then take every snapshot then due",
            );
        },
        build: |m| {
            no_arguments(m)?;
            Ok(Command::Run { once: m.opt_present("once") })
        },
    },
    CommandSpec {
        name: "list",
        synopsis: "[-s STREAM] [--all | --range FIRST..LAST]",
        summary: "show archived batches, gaps and snapshots",
        about: "Show what is archived, per stream: the positions retention pruned (if\n\
                any), a summary line, then one line per batch (positions, segments,\n\
                size, CRC32, object key) and per gap (positions and reason), then the\n\
                snapshots (position, size, CRC32, object key). On a terminal, a long\n\
                list shows its first and last lines only; --all shows every line,\n\
                --range those that hold positions FIRST..LAST.",
        options: |o| {
            o.optopt("s", "stream", "only this stream (default: all)", "STREAM");
            o.optflag("", "all", "every batch and gap, also on a terminal");
            o.optopt("", "range", "only the batches and gaps holding these positions", "FIRST..LAST");
        },
        build: |m| {
            no_arguments(m)?;
            let rows = match (m.opt_present("all"), m.opt_str("range")) {
                (true, Some(_)) => return Err("--all and --range exclude each other: give one".into()),
                (true, None) => ListRows::All,
                (false, Some(range)) => parse_range(&range)?,
                (false, None) => ListRows::Paged,
            };
            Ok(Command::List { stream: optional_stream(m)?, rows })
        },
    },
    CommandSpec {
        name: "restore",
        synopsis: "-s STREAM --to DIR [--position P] [--allow-gaps]",
        summary: "restore a stream into a directory, up to a position",
        about: "Restore the latest snapshot at or before the position, plus the segments\n\
                after it, into DIR: verified by CRC, under their original names. Stops\n\
                at a gap in the archive unless --allow-gaps is given.",
        options: |o| {
            o.optopt("s", "stream", "the stream to restore (required)", "STREAM");
            o.optopt("", "to", "the directory to restore into (required)", "DIR");
            o.optopt(
                "",
                "position",
                "restore up to this position (default: the newest archived); \
                 decimal, or hexadecimal after 0x",
                "P",
            );
            o.optflag("", "allow-gaps", "continue past gaps instead of stopping");
        },
        build: |m| {
            no_arguments(m)?;
            Ok(Command::Restore {
                stream: required_stream(m)?,
                to: required_path(m, "to", "--to DIR")?,
                position: m.opt_str("position").map(|p| parse_position(&p)).transpose()?,
                allow_gaps: m.opt_present("allow-gaps"),
            })
        },
    },
    CommandSpec {
        name: "push",
        synopsis: "-s STREAM FILE",
        summary: "archive one segment now (for archive_command)",
        about: "Archive FILE, a segment in STREAM's directory, with every segment before\n\
                it, and exit 0 only once it is durably stored and recorded. Usable as\n\
                PostgreSQL's archive_command (`walship push -s pg %p`): a PostgreSQL\n\
                history or backup file is stored beside the WAL under its own name.\n\
                \n\
                Pushing a file the archive already holds with the same bytes succeeds;\n\
                other bytes under an archived name fail, naming both CRC32s. When the\n\
                daemon runs on the stream, push hands it the file through the control\n\
                socket and waits for its answer; otherwise push takes the stream's lock\n\
                itself (waiting while another push holds it).",
        options: |o| {
            o.optopt("s", "stream", "the stream the file belongs to (required)", "STREAM");
        },
        build: |m| {
            let stream = required_stream(m)?;
            let [path] = m.free.as_slice() else {
                return Err(format!("expected one argument, the FILE to archive, got {}", m.free.len()));
            };
            if path.is_empty() {
                return Err("FILE is empty; give the path of the segment to archive".into());
            }
            Ok(Command::Push { stream, path: PathBuf::from(path) })
        },
    },
    CommandSpec {
        name: "fetch",
        synopsis: "-s STREAM NAME DEST",
        summary: "restore one segment by name (for restore_command)",
        about: "Write the archived segment called NAME (its file name) of STREAM to DEST,\n\
                verified by CRC. Usable as PostgreSQL's restore_command (`walship fetch\n\
                -s pg %f %p`): exit status 3 says the segment is not in the archive.\n\
                \n\
                DEST is a new file: an existing file is refused, never replaced (PostgreSQL\n\
                removes %p before it asks). The file appears under its name only once\n\
                complete, verified and synced. DEST `-` is standard output; a DEST that is\n\
                a device or FIFO (/dev/stdout) is written through: the bytes go out as they\n\
                arrive, and a CRC mismatch at the end exits 1 saying to discard them.\n\
                \n\
                With prefetch_segments > 0 (the default), fetch then starts a background\n\
                `walship fetch --prefetch NAME`, which downloads the next segments into a\n\
                bounded spool in the state directory; a later fetch of one of them is\n\
                served from there, checked by CRC32.",
        options: |o| {
            o.optopt("s", "stream", "the stream the segment belongs to (required)", "STREAM");
            o.optflag("", "prefetch", "only fill the spool with the segments after NAME (no DEST)");
        },
        build: |m| {
            let stream = required_stream(m)?;
            if m.opt_present("prefetch") {
                let [name] = m.free.as_slice() else {
                    return Err(format!("--prefetch takes one argument, NAME, got {}", m.free.len()));
                };
                check_segment_name(name)?;
                return Ok(Command::Prefetch { stream, after: name.clone() });
            }
            let [name, dest] = m.free.as_slice() else {
                return Err(format!("expected two arguments, NAME and DEST, got {}", m.free.len()));
            };
            check_segment_name(name)?;
            let dest = match dest.as_str() {
                "" => return Err("DEST is empty; give the path to write the segment to, or -".into()),
                "-" => FetchDest::Stdout,
                path => FetchDest::Path(PathBuf::from(path)),
            };
            Ok(Command::Fetch { stream, name: name.clone(), dest })
        },
    },
    CommandSpec {
        name: "status",
        synopsis: "[--json]",
        summary: "show each stream's positions, lag, errors and backoff",
        about: "Show per stream: whether a daemon runs, archived and committed position\n\
                (the highest position up to which every segment is sealed, i.e. complete),\n\
                lag (sealed segments not yet archived), last success, last error,\n\
                backoff state, the last and next snapshot and the last snapshot job (id,\n\
                position, state, start and end, why it failed).",
        options: |o| {
            o.optflag("", "json", "print JSON instead of text");
        },
        build: |m| {
            no_arguments(m)?;
            Ok(Command::Status { json: m.opt_present("json") })
        },
    },
    CommandSpec {
        name: "verify",
        synopsis: "[-s STREAM] [--deep]",
        summary: "check archived objects against the manifest",
        about: "Check every recorded object against the manifest's sizes and CRCs, and\n\
                report missing and corrupt objects and gaps.",
        options: |o| {
            o.optopt("s", "stream", "only this stream (default: all)", "STREAM");
            o.optflag("", "deep", "download every object and recompute its CRCs");
        },
        build: |m| {
            no_arguments(m)?;
            Ok(Command::Verify { stream: optional_stream(m)?, deep: m.opt_present("deep") })
        },
    },
    CommandSpec {
        name: "prune",
        synopsis: "[-s STREAM] [--dry-run]",
        summary: "apply retention: delete snapshots and batches no longer needed",
        about: "Keep each stream's newest keep_snapshots snapshots; delete older snapshots\n\
                and the batches only they needed, recording each deletion in the manifest\n\
                before the objects go. Prints every object deleted (kind, positions, size,\n\
                key). Nothing is deleted until a stream has more snapshots than it keeps.\n\
                A running daemon does this by itself every prune_interval; while it runs,\n\
                `walship prune` asks it through its control socket in state_dir.",
        options: |o| {
            o.optopt("s", "stream", "only this stream (default: all)", "STREAM");
            o.optflag("", "dry-run", "show what would be deleted, delete nothing");
        },
        build: |m| {
            no_arguments(m)?;
            Ok(Command::Prune { stream: optional_stream(m)?, dry_run: m.opt_present("dry-run") })
        },
    },
    CommandSpec {
        name: "snapshot",
        synopsis: "-s STREAM",
        summary: "take a snapshot now and report the job's outcome",
        about: "Take a snapshot of STREAM now, at its archived position, with its\n\
                snapshot_command, and print the job's outcome with its id. Through the\n\
                running daemon when there is one (its control socket in state_dir);\n\
                with no daemon, the job runs here under the stream's lock.\n\
                \n\
                Exit status: 0 the snapshot is stored and recorded; 1 the job failed, or\n\
                none was started (a job of the stream is already running: the message\n\
                names it; more than 100 snapshots are recorded: prune first); 2 a usage\n\
                or configuration error (no such stream, no snapshot_command).",
        options: |o| {
            o.optopt("s", "stream", "the stream to snapshot (required)", "STREAM");
        },
        build: |m| {
            no_arguments(m)?;
            Ok(Command::Snapshot { stream: required_stream(m)? })
        },
    },
    CommandSpec {
        name: "check",
        synopsis: "",
        summary: "validate the config and reach every target",
        about: "Validate the config file and reach every target; exit 0 if all is well.",
        options: |_| {},
        build: |m| {
            no_arguments(m)?;
            Ok(Command::Check)
        },
    },
    CommandSpec {
        name: "fleet",
        synopsis: "[--json] [--stale DURATION] [--deep]",
        summary: "show every node's and stream's health from the heartbeats on the target",
        about: "Read the heartbeats that nodes with node_id write, from the target alone,\n\
                and show one line per node and stream: stale (not refreshed within\n\
                DURATION by the store's clock, default three heartbeat intervals) and\n\
                failing ones first, with positions, backlog, last success, version and\n\
                error. Reads the fleet index (.walship/fleet/NODE_ID, one object per node):\n\
                one LIST per 1,000 nodes, and GETs of only the objects changed since the\n\
                last run (remembered in state_dir/.walship-fleet-cache when writable).\n\
                --deep reads every stream's heartbeats (STREAM/nodes/NODE_ID) instead:\n\
                a LIST per stream and a GET per heartbeat, but it also shows nodes whose\n\
                walship is older than the fleet index.",
        options: |o| {
            o.optflag("", "json", "print JSON instead of text");
            o.optflag("", "deep", "read every stream's heartbeats, not the fleet index");
            o.optopt("", "stale", "older heartbeats are stale (default: 3 x heartbeat_interval)", "DURATION");
        },
        build: |m| {
            no_arguments(m)?;
            let stale = m.opt_str("stale").map(|d| config::values::positive_duration(&d)).transpose();
            Ok(Command::Fleet {
                json: m.opt_present("json"),
                deep: m.opt_present("deep"),
                stale: stale.map_err(|e| format!("--stale: {e}"))?,
            })
        },
    },
];

/// `args` without `-c FILE`, `-cFILE`, `--config FILE` or `--config=FILE`.
fn without_config_option(args: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                args.next();
            }
            a if a.starts_with("--config=") || (a.starts_with("-c") && a.len() > 2) => {}
            _ => kept.push(arg.clone()),
        }
    }
    kept
}

/// Parse the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Parsed, UsageError> {
    let Some((first, rest)) = args.split_first() else {
        return Err(UsageError(overall_usage()));
    };
    match first.as_str() {
        "-h" | "--help" | "help" => return help_for(first, rest),
        "-V" | "--version" => {
            return Ok(Parsed::Help(format!("walship {}\n", env!("CARGO_PKG_VERSION"))));
        }
        _ => {}
    }
    let spec = find_command(first)?;
    let opts = options_of(spec);
    let error = |message: String| command_error(spec, message);
    let matches = opts.parse(rest).map_err(|fail| error(describe_fail(fail)))?;
    if matches.opt_present("help") {
        return Ok(Parsed::Help(command_usage(spec)));
    }
    let config_path = match matches.opt_str("config") {
        None => PathBuf::from(DEFAULT_PATH),
        Some(path) if path.is_empty() => {
            return Err(error("-c needs the path of a config file".into()));
        }
        Some(path) => PathBuf::from(path),
    };
    let command = (spec.build)(&matches).map_err(error)?;
    Ok(Parsed::Run(Invocation { config_path, command }))
}

/// `walship help [COMMAND]`, `walship --help [COMMAND]` (and `help --help`).
/// A `-c FILE` (every command takes one) is accepted and not read: help
/// needs no config.
fn help_for(first: &str, rest: &[String]) -> Result<Parsed, UsageError> {
    let rest: Vec<String> = without_config_option(rest);
    match rest.as_slice() {
        [] => Ok(Parsed::Help(overall_usage())),
        [name] if matches!(name.as_str(), "-h" | "--help" | "help") => Ok(Parsed::Help(overall_usage())),
        [name] => Ok(Parsed::Help(command_usage(find_command(name)?))),
        _ => Err(general_error(format!("`walship {first}` takes at most one command name"))),
    }
}

/// The table row of `name`, or an error saying what the commands are.
fn find_command(name: &str) -> Result<&'static CommandSpec, UsageError> {
    if let Some(spec) = COMMANDS.iter().find(|c| c.name == name) {
        return Ok(spec);
    }
    let message = if name.starts_with('-') {
        format!("expected a command before any option, as in `walship run {name}`")
    } else {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        format!("unknown command {:?}; the commands are {}", name, names.join(", "))
    };
    Err(general_error(message))
}

/// The command's own options, then `-c` and `-h`.
fn options_of(spec: &CommandSpec) -> Options {
    let mut opts = Options::new();
    (spec.options)(&mut opts);
    opts.optopt("c", "config", &format!("the config file (default {DEFAULT_PATH})"), "FILE");
    opts.optflag("h", "help", "show this help");
    opts
}

/// The listing of every command.
fn overall_usage() -> String {
    let mut text = String::from(
        "walship: archive append-only segment logs to S3 or a filesystem\n\n\
         Usage: walship COMMAND [OPTIONS]\n\nCommands:\n",
    );
    for spec in COMMANDS {
        text.push_str(&format!("  {:<9} {}\n", spec.name, spec.summary));
    }
    text.push_str(&format!(
        "  {:<9} {}\n\n\
         Every command takes -c FILE (default {DEFAULT_PATH}) and -h/--help.\n\
         Run `walship COMMAND --help` for a command's options.\n\n\
         Exit status:\n  \
           0 success\n  \
           1 operational failure (I/O, network, damaged data, a gap, nothing to restore)\n  \
           2 usage or configuration error\n  \
           3 fetch: the segment is not in the archive\n",
        "help", "show this text, or `walship help COMMAND` for one command"
    ));
    text
}

/// One command's usage line, description and options.
fn command_usage(spec: &CommandSpec) -> String {
    let usage = format!("walship {} {} [-c FILE]", spec.name, spec.synopsis);
    let brief =
        format!("Usage: {}\n\n{}", usage.split_whitespace().collect::<Vec<_>>().join(" "), spec.about);
    options_of(spec).usage(&brief)
}

/// An error within a command, pointing at its help.
fn command_error(spec: &CommandSpec, message: String) -> UsageError {
    UsageError(format!("walship {}: {message}\nrun `walship {} --help` for usage", spec.name, spec.name))
}

/// An error before a command is known, pointing at the overall help.
fn general_error(message: String) -> UsageError {
    UsageError(format!("walship: {message}\nrun `walship --help` for the list of commands"))
}

/// getopts' complaint in our words.
fn describe_fail(fail: Fail) -> String {
    match fail {
        Fail::UnrecognizedOption(name) => format!("unknown option {}", dashed(&name)),
        Fail::ArgumentMissing(name) => format!("option {} needs a value", dashed(&name)),
        Fail::OptionDuplicated(name) => format!("option {} is given more than once", dashed(&name)),
        Fail::UnexpectedArgument(name) => format!("option {} takes no value", dashed(&name)),
        Fail::OptionMissing(name) => format!("option {} is required", dashed(&name)),
    }
}

/// `s` → `-s`, `stream` → `--stream`.
fn dashed(name: &str) -> String {
    if name.chars().count() == 1 { format!("-{name}") } else { format!("--{name}") }
}

/// Refuse positional arguments for commands that take none.
fn no_arguments(m: &Matches) -> Result<(), String> {
    match m.free.first() {
        None => Ok(()),
        Some(extra) => Err(format!("unexpected argument {extra:?}")),
    }
}

/// Which lines `list` shows after its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListRows {
    /// Every line, unless stdout is a terminal and there are many: then
    /// the first and last ones.
    Paged,
    /// Every line.
    All,
    /// The lines of the records holding any of `first..=last`.
    Range(u64, u64),
}

/// `FIRST..LAST` (each as `--position` takes it).
fn parse_range(text: &str) -> Result<ListRows, String> {
    let wrong =
        || format!("--range expects FIRST..LAST (two positions, the first not above the last), got {text:?}");
    let (first, last) = text.split_once("..").ok_or_else(wrong)?;
    match (parse_position(first), parse_position(last)) {
        (Ok(first), Ok(last)) if first <= last => Ok(ListRows::Range(first, last)),
        _ => Err(wrong()),
    }
}

fn optional_stream(m: &Matches) -> Result<Option<String>, String> {
    match m.opt_str("stream") {
        None => Ok(None),
        Some(name) => {
            config::check_stream_name(&name).map_err(|e| format!("-s: {e}"))?;
            Ok(Some(name))
        }
    }
}

fn required_stream(m: &Matches) -> Result<String, String> {
    optional_stream(m)?.ok_or_else(|| "missing -s STREAM: which stream?".to_string())
}

/// A required path option, not empty.
fn required_path(m: &Matches, name: &str, shown: &str) -> Result<PathBuf, String> {
    match m.opt_str(name) {
        None => Err(format!("missing {shown}")),
        Some(path) if path.is_empty() => Err(format!("{shown} is empty")),
        Some(path) => Ok(PathBuf::from(path)),
    }
}

/// A position: decimal digits, or hexadecimal digits after `0x`.
fn parse_position(text: &str) -> Result<u64, String> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    let well_formed = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    if !well_formed {
        return Err(format!(
            "--position expects a whole number (decimal, or hexadecimal after 0x), got {text:?}"
        ));
    }
    u64::from_str_radix(digits, radix)
        .map_err(|_| format!("--position {text} is too large (at most {})", u64::MAX))
}

/// A segment's file name: no directory part, not a dot-file.
fn check_segment_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
        return Err(format!(
            "NAME must be a segment's file name, without a directory and not starting \
             with '.', got {name:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
