//! What each CLI command does: load the config, set up logging, call the
//! library, print results for a person (stdout) and diagnostics (stderr via
//! `log`). `main.rs` only turns the returned error into an exit code.
//!
//! Every line for stdout goes through [`print()`] (the `outln!` macro), which
//! turns a failed write into [`Error::Output`] instead of a panic: when the
//! reader of a pipe goes away (`walship list | head -1`), the command stops
//! at its next line and `main` exits quietly.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::SystemTime;

use crate::archiver;
use crate::catalog;
use crate::catalog::reader::{ManifestReader, Reach};
use crate::cli::{Command, Invocation, ListRows};
use crate::config::{self, Config, StreamConfig};
use crate::control::{self, client::Answer};
use crate::daemon::{self, target_name};
use crate::durable;
use crate::error::{EXIT_FAILURE, EXIT_USAGE, Error};
use crate::human::{count, human_bytes};
use crate::manifest::StreamRules;
use crate::restore::{self, FetchDest, RestoreRequest};
use crate::snapshot::JobState;
use crate::source;
use crate::statedir;
use crate::status::{StatusCell, StreamStatus};
use crate::stream;
use crate::target;

/// Print a line on stdout, `println!`-style, through [`print`].
macro_rules! outln {
    ($($arg:tt)*) => {
        print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Write `text` to stdout now. A failure (a closed pipe, a full disk) is an
/// [`Error::Output`], never a panic.
pub fn print(text: impl fmt::Display) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    write!(out, "{text}").and_then(|()| out.flush()).map_err(Error::Output)
}

/// Run one parsed command line.
pub fn execute(invocation: Invocation) -> Result<(), Error> {
    let config = config::load(&invocation.config_path)?;
    init_logging(config.global.log_level);
    match invocation.command {
        Command::Run { once: true } => run_once(&config),
        Command::Run { once: false } => daemon::run(&config),
        Command::List { stream, rows } => list(&config, stream.as_deref(), rows),
        Command::Restore { stream, to, position, allow_gaps } => {
            let request = RestoreRequest { stream: &stream, to: &to, position, allow_gaps };
            restore(&config, &request)
        }
        Command::Push { stream, path } => push(&config, &stream, &path),
        Command::Fetch { stream, name, dest } => fetch(&config, &stream, &name, &dest),
        Command::Prefetch { stream, after } => {
            let stream = named(&config, &stream)?;
            limit_downloads(&config);
            crate::prefetch::run(&config, stream, &after).map(|_| ())
        }
        Command::Status { json } => status(&config, json),
        Command::Verify { stream, deep } => verify(&config, stream.as_deref(), deep),
        Command::Prune { stream, dry_run } => prune(&config, stream.as_deref(), dry_run),
        Command::Snapshot { stream } => snapshot(&config, &stream),
        Command::Check => check(&config),
        Command::Fleet { json, deep, stale } => fleet(&config, json, deep, stale),
    }
}

fn init_logging(level: log::LevelFilter) {
    let log_config = simplelog::ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // Only fails if a logger is already set (embedding programs, tests).
    let _ = simplelog::WriteLogger::init(level, log_config, io::stderr());
}

/// The streams a command applies to: all, or the one named (which must exist).
fn selected<'a>(config: &'a Config, stream: Option<&str>) -> Result<Vec<&'a StreamConfig>, Error> {
    match stream {
        None => Ok(config.streams.iter().collect()),
        Some(name) => named(config, name).map(|s| vec![s]),
    }
}

fn named<'a>(config: &'a Config, name: &str) -> Result<&'a StreamConfig, Error> {
    config.stream(name).ok_or_else(|| {
        let known: Vec<&str> = config.streams.iter().map(|s| s.name.as_str()).collect();
        Error::Usage(format!(
            "no stream named {name} in {}; configured streams: {}",
            config.path.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))
    })
}

fn run_once(config: &Config) -> Result<(), Error> {
    let mut failed = 0;
    for (name, outcome) in archiver::run_once(config)? {
        match outcome {
            Ok(report) if report.stood_by() => {
                let replica = report.replica.as_ref().map(|r| r.reason.as_str()).unwrap_or_default();
                let archived = report.archived.map_or("nothing".to_string(), |p| format!("position {p}"));
                outln!("stream {name}: stood by ({replica}); the archive holds {archived}")?;
            }
            Ok(archiver::OnceReport { pass: r, snapshots, replica, .. }) => {
                outln!(
                    "stream {name}: archived {} ({}, {}), {} already in the archive, {}",
                    count(r.batches, "batch"),
                    count(r.segments, "segment"),
                    human_bytes(r.bytes),
                    r.healed,
                    count(r.gaps, "gap")
                )?;
                if let Some(replica) = replica {
                    outln!("stream {name}: this node ({}) offloads ({})", replica.node, replica.reason)?;
                }
                for job in snapshots {
                    outln!("{job}")?;
                    failed += usize::from(job.state != JobState::Succeeded);
                }
            }
            Err(e) => {
                log::error!("{e}");
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        count => Err(Error::Failed { count, what: "stream", exit_code: EXIT_FAILURE }),
    }
}

fn list(config: &Config, stream: Option<&str>, rows: ListRows) -> Result<(), Error> {
    let target = target::open(&config.global)?;
    for stream in selected(config, stream)? {
        let rules = StreamRules::new(&stream.name, &stream.naming);
        crate::list::list_stream(&config.global.state_dir, target.as_ref(), &rules, rows)?;
    }
    Ok(())
}

/// Restores and fetches download at `restore_bandwidth_limit`, when set.
fn limit_downloads(config: &Config) {
    let limit = config.global.metered.restore_bandwidth_limit;
    crate::bandwidth::downloads().set_limit(crate::bandwidth::Limit::from_settings(limit, None));
}

fn restore(config: &Config, request: &RestoreRequest<'_>) -> Result<(), Error> {
    let stream = named(config, request.stream)?;
    // Its parallel downloads share the connection pool.
    let target = target::open_shared(&config.global, restore::PARALLEL_GETS)?;
    limit_downloads(config);
    let rules = StreamRules::new(&stream.name, &stream.naming);
    let reader = ManifestReader::open(&config.global.state_dir, target.as_ref(), &rules, Reach::Whole)?;
    stream::retention::checked_prunes(&stream.name, &reader)?;
    let report = restore::restore(&reader, target.as_ref(), request)?;
    let upto = report.last_position.map_or("nothing".to_string(), |p| format!("up to position {p}"));
    let snapshot = report.snapshot.map_or(String::new(), |p| {
        format!("the snapshot at position {p} ({}) and ", restore::snapshot_file_name(p))
    });
    outln!(
        "stream {}: restored {snapshot}{} ({}) {upto} into {}",
        request.stream,
        count(report.segments, "segment"),
        human_bytes(report.bytes),
        request.to.display()
    )?;
    for (first, last) in &report.gaps_skipped {
        outln!("stream {}: gap {first}..{last} skipped (--allow-gaps)", request.stream)?;
    }
    Ok(())
}

/// Quiet on success, as `archive_command` should be: the stream's log line
/// says what was archived.
fn push(config: &Config, stream: &str, path: &std::path::Path) -> Result<(), Error> {
    let stream = named(config, stream)?;
    crate::push::push(config, stream, path)?;
    Ok(())
}

/// Fetch, then start the prefetch of what follows a segment.
fn fetch(config: &Config, stream: &str, name: &str, dest: &FetchDest) -> Result<(), Error> {
    let stream = named(config, stream)?;
    limit_downloads(config);
    crate::fetch::fetch(config, stream, name, dest)?;
    if stream.naming.position(name).is_some() {
        crate::prefetch::start(config, stream, name);
    }
    Ok(())
}

fn status(config: &Config, json: bool) -> Result<(), Error> {
    // A stream whose state cannot be read (a damaged journal) is reported,
    // and shown with that error, without hiding the others.
    let mut unreadable = 0;
    let statuses: Vec<StreamStatus> = config
        .streams
        .iter()
        .map(|s| {
            stream::status_from_disk(&config.global.state_dir, s).unwrap_or_else(|error| {
                log::error!("{error}");
                unreadable += 1;
                StreamStatus {
                    stream: s.name.clone(),
                    last_error: Some(error.to_string()),
                    ..Default::default()
                }
            })
        })
        .collect();
    if json {
        let items: Vec<String> = statuses.iter().map(StreamStatus::to_json).collect();
        outln!("[{}]", items.join(","))?;
    } else {
        let now = SystemTime::now();
        for s in &statuses {
            print(s.to_human(now))?;
        }
    }
    match unreadable {
        0 => Ok(()),
        count => Err(Error::Failed { count, what: "stream", exit_code: EXIT_FAILURE }),
    }
}

fn verify(config: &Config, stream: Option<&str>, deep: bool) -> Result<(), Error> {
    let target = target::open(&config.global)?;
    let mut problems = 0;
    for stream in selected(config, stream)? {
        let rules = StreamRules::new(&stream.name, &stream.naming);
        // The first failed line of output (a closed pipe) is kept and
        // returned once the stream's check is done; later lines are dropped.
        let mut output = Ok(());
        problems += catalog::verify::verify_stream(
            &config.global.state_dir,
            target.as_ref(),
            &rules,
            deep,
            &mut |line| {
                if output.is_ok() {
                    output = outln!("{line}");
                }
            },
        );
        output?;
    }
    match problems {
        0 => Ok(()),
        count => Err(Error::Failed { count, what: "archive check", exit_code: EXIT_FAILURE }),
    }
}

/// `walship fleet`: the fleet index (GETs of changed objects only, through
/// the cache in the state directory), or with `deep` every stream's
/// heartbeats.
fn fleet(config: &Config, json: bool, deep: bool, stale: Option<std::time::Duration>) -> Result<(), Error> {
    use crate::fleet::{index, view};
    let stale = stale.unwrap_or(config.global.heartbeat_interval * 3);
    let target = target::open(&config.global)?;
    let mut entries = if deep {
        let mut reader = view::HeartbeatReader::default();
        let entries = view::read_all(target.as_ref(), &mut reader).map_err(Error::TargetSetup)?;
        log::debug!("fleet --deep: {} LIST, {} GET requests", reader.lists, reader.gets);
        entries
    } else {
        let cache_file = statedir::fleet_cache(&config.global.state_dir);
        let mut cache = index::Cache::load(&cache_file, &target.place());
        let mut counts = index::Counts::default();
        let entries = index::read(target.as_ref(), &mut cache, &mut counts).map_err(Error::TargetSetup)?;
        cache.save(&cache_file);
        log::debug!("fleet: {} LIST, {} GET requests", counts.lists, counts.gets);
        entries
    };
    view::sort(&mut entries, stale);
    if json {
        print(view::render_json(&entries, stale))
    } else if entries.is_empty() {
        let older =
            if deep { "" } else { " (nodes running a walship older than the fleet index show with --deep)" };
        outln!("no heartbeats on {}: no node with node_id archives there yet{older}", target.describe())
    } else {
        print(view::render_text(&entries, stale))
    }
}

fn prune(config: &Config, stream: Option<&str>, dry_run: bool) -> Result<(), Error> {
    let target = target::open(&config.global)?;
    let streams = selected(config, stream)?;
    let mut failed = 0;
    for stream in &streams {
        // The first failed line of output (a closed pipe) is kept and
        // returned; the stream's prune goes on (later lines are dropped).
        let mut output = Ok(());
        let mut say = |line: &str| {
            if output.is_ok() {
                output = outln!("{}", line.trim_end());
            }
        };
        let pruned = prune_stream(config, stream, &target, dry_run, &mut say);
        output?;
        match pruned {
            Ok(()) => {}
            Err(error) if streams.len() == 1 => return Err(error),
            Err(error) => {
                log::error!("{error}");
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        count => Err(Error::Failed { count, what: "stream", exit_code: EXIT_FAILURE }),
    }
}

/// Plan (and unless `dry_run`, apply) retention for one stream, handing
/// each line to print to `say` as it comes. Through the running daemon
/// when there is one (the journal's one writer); with no daemon, here: the
/// real run opens the stream under its lock as the daemon would, the dry
/// run only reads, in passes over the manifest.
fn prune_stream(
    config: &Config,
    stream: &StreamConfig,
    target: &Arc<dyn target::Target>,
    dry_run: bool,
    say: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let state_dir = &config.global.state_dir;
    let request = control::Request::Prune { stream: stream.name.clone(), dry_run };
    let why = match control::client::ask(state_dir, &request, say)? {
        Answer::Reply(reply) => match reply.outcome {
            // Every line came as an info line, the summary first.
            control::Outcome::Ok => return Ok(()),
            control::Outcome::Usage => return Err(Error::Usage(reply.message)),
            control::Outcome::Failed | control::Outcome::Refused => return Err(Error::Prune(reply.message)),
            // The daemon serving the socket does not run this stream.
            control::Outcome::NotHere => reply.message,
        },
        Answer::NoDaemon(why) => why,
    };
    if dry_run {
        let rules = StreamRules::new(&stream.name, &stream.naming);
        let reader = ManifestReader::open(state_dir, target.as_ref(), &rules, Reach::Whole)?;
        stream::retention::checked_prunes(&stream.name, &reader)?;
        let survey = reader.survey();
        let log = |visit: &mut dyn FnMut(&crate::manifest::Record)| {
            reader.each_live_record(|record| {
                visit(&record);
                Ok(true)
            })
        };
        let keep = stream.keep_snapshots as usize;
        return stream::retention::print_plan(&stream.name, &survey, keep, &log, say).map(|_| ());
    }
    let lock = match statedir::lock_stream(state_dir, &stream.name) {
        Ok(lock) => lock,
        Err(Error::Locked { holder, .. }) => {
            return Err(Error::DaemonUnreachable { stream: stream.name.clone(), holder, why });
        }
        Err(other) => return Err(other),
    };
    let status =
        Arc::new(StatusCell::new(StreamStatus { stream: stream.name.clone(), ..Default::default() }));
    let mut open =
        stream::Stream::open(stream.clone(), state_dir, Arc::clone(target), status, Arc::new(lock))?;
    open.prune_now(false, &|| false, say)
}

/// `walship snapshot`: through the daemon's control socket, or, with no
/// daemon, here under the stream's lock.
fn snapshot(config: &Config, name: &str) -> Result<(), Error> {
    let stream = named(config, name)?;
    if stream.snapshot_command.is_none() {
        return Err(Error::Usage(format!(
            "stream {name} has no snapshot_command in {}; set one in its [stream {name}] section",
            config.path.display()
        )));
    }
    let state_dir = &config.global.state_dir;
    let request = control::Request::Snapshot { stream: name.to_string() };
    let why = match control::client::ask(state_dir, &request, &mut |info| log::info!("{info}"))? {
        Answer::Reply(reply) => match reply.outcome {
            control::Outcome::Ok => return outln!("{}", reply.message),
            control::Outcome::Usage => return Err(Error::Usage(reply.message)),
            control::Outcome::Failed | control::Outcome::Refused => {
                return Err(Error::Snapshot(reply.message));
            }
            // The daemon serving the socket does not run this stream.
            control::Outcome::NotHere => reply.message,
        },
        Answer::NoDaemon(why) => why,
    };
    let lock = match statedir::lock_stream(state_dir, name) {
        Ok(lock) => lock,
        Err(Error::Locked { holder, .. }) => {
            return Err(Error::DaemonUnreachable { stream: name.to_string(), holder, why });
        }
        Err(other) => return Err(other),
    };
    log::debug!("no daemon ({why}); taking the snapshot here");
    let report = snapshot_here(config, stream, lock)?;
    match report.state {
        JobState::Succeeded => outln!("{report}"),
        _ => Err(Error::Snapshot(report.to_string())),
    }
}

/// Open the stream under `lock` and run one snapshot job at its archived
/// position.
fn snapshot_here(
    config: &Config,
    stream: &StreamConfig,
    lock: statedir::StreamLock,
) -> Result<crate::snapshot::JobReport, Error> {
    let state_dir = &config.global.state_dir;
    let target = target::open(&config.global)?;
    let status = std::sync::Arc::new(StatusCell::new(StreamStatus {
        stream: stream.name.clone(),
        ..Default::default()
    }));
    let mut open =
        stream::Stream::open(stream.clone(), state_dir, target, status, std::sync::Arc::new(lock))?;
    crate::snapshot::admit(&stream.name, None, open.snapshot_count())
        .map_err(|r| Error::Snapshot(r.to_string()))?;
    let position = stream::snapshots::request_position(&stream.name, open.archived(), open.last_snapshot())
        .map_err(Error::Snapshot)?;
    // SIGINT or SIGTERM kill the command's process group and fail the job.
    crate::signals::install();
    stream::snapshots::take_snapshot(&mut open, state_dir, position, &crate::signals::stop_requested)
}

fn check(config: &Config) -> Result<(), Error> {
    outln!("config {}: ok ({})", config.path.display(), count(config.streams.len() as u64, "stream"))?;
    let (mut failed, mut exit_code) = (0, EXIT_FAILURE);
    let mut report = |what: String, result: Result<(), String>| match result {
        Ok(()) => outln!("{what}: ok"),
        Err(e) => {
            failed += 1;
            outln!("{what}: FAILED: {e}")
        }
    };
    match target::open(&config.global) {
        Ok(t) => report(format!("target {}", t.describe()), t.check().map_err(|e| e.to_string()))?,
        Err(e) => {
            exit_code = e.exit_code();
            report(format!("target {}", target_name(config)), Err(e.to_string()))?;
        }
    }
    report(
        format!("state_dir {}", config.global.state_dir.display()),
        check_writable(&config.global.state_dir),
    )?;
    // After state_dir exists: what only directory identity shows (bind
    // mounts); a configuration error, like the overlaps load refuses.
    let apart = config::places::check_identities(config);
    if apart.is_err() {
        exit_code = EXIT_USAGE;
    }
    report("state_dir, target and stream dirs apart".into(), apart)?;
    for stream in &config.streams {
        let scanned = source::scan(&stream.dir, &stream.naming, |_| true).map_err(|e| e.to_string());
        report(format!("stream {} dir {}", stream.name, stream.dir.display()), scanned.map(|_| ()))?;
    }
    match failed {
        0 => Ok(()),
        count => Err(Error::Failed { count, what: "check", exit_code }),
    }
}

fn check_writable(dir: &std::path::Path) -> Result<(), String> {
    durable::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let probe = statedir::check_probe(dir);
    durable::write_file(&probe, b"check\n").map_err(|e| format!("cannot write in it: {e}"))?;
    std::fs::remove_file(&probe).map_err(|e| format!("cannot remove {}: {e}", probe.display()))
}
