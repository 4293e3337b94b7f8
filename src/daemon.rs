//! The daemon's life as a process: start the archiver, then wait for
//! signals — SIGTERM/SIGINT stop it, SIGHUP reloads the config — and keep
//! systemd informed (readiness, status line, watchdog) when it runs us.
//!
//! A reload applies a valid config without a restart of the process: when
//! only `[stream]` sections changed, only the changed streams restart (new
//! ones start, removed ones stop) and the others run on undisturbed; the
//! bandwidth and data budget keys apply at once, to the running streams; a
//! change under `[global]` (target, state directory, intervals, metrics)
//! affects every stream, so the whole archiver restarts. An invalid config
//! is refused and the running one stays in force. Starting with every stream
//! locked by another process is an error (exit 1).
//!
//! The archiving itself is `archiver`'s; this module only drives it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::archiver::Archiver;
use crate::config::{self, Config};
use crate::error::Error;
use crate::notify::{self, Notifier};
use crate::signals;

/// How long the daemon's main thread sleeps at most (signals wake it at
/// once; it wakes more often when the systemd watchdog needs it).
const DAEMON_TICK: Duration = Duration::from_secs(2);

/// How often the systemd status line is recomputed; it is sent only when it
/// changed.
const STATUS_REFRESH: Duration = Duration::from_secs(2);

/// `walship run`: archive until SIGTERM/SIGINT, reload the config on SIGHUP,
/// and keep systemd informed (readiness, status, watchdog) when run by it.
pub fn run(config: &Config) -> Result<(), Error> {
    signals::install();
    let mut notifier = Notifier::from_env();
    // Wake at least twice per watchdog interval, so no ping is late.
    let tick = notifier.watchdog_interval().map_or(DAEMON_TICK, |w| DAEMON_TICK.min(w / 2));
    let mut config = config.clone();
    let mut archiver = start_archiver(&config)?;
    let streams = crate::human::count(config.streams.len() as u64, "stream");
    log::info!("walship started: {streams} to {}", target_name(&config));
    notifier.ready(&notify::status_line(&archiver.status()));
    // Why the last reload was refused, until one succeeds (shown in the status).
    let mut reload_failure: Option<String> = None;
    let mut status_refreshed = Instant::now();
    while !signals::stop_requested() {
        if signals::take_reload_request() {
            archiver = reload(&mut config, archiver, &mut notifier, tick, &mut reload_failure)?;
            notifier.ready(&daemon_status(&archiver, reload_failure.as_deref()));
        }
        notifier.keep_alive();
        if notifier.is_active() && status_refreshed.elapsed() >= STATUS_REFRESH {
            notifier.status(&daemon_status(&archiver, reload_failure.as_deref()));
            status_refreshed = Instant::now();
        }
        signals::wait(tick);
    }
    log::info!("stopping: finishing in-flight work");
    notifier.stopping("stopping: finishing in-flight work");
    archiver.stop();
    log::info!("stopped");
    Ok(())
}

/// The target as configured, for messages.
pub fn target_name(config: &Config) -> String {
    match &config.global.target {
        config::TargetUrl::File(p) => format!("file://{}", p.display()),
        config::TargetUrl::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
    }
}

/// Start the archiver with the daemon's signals blocked in its threads, so
/// SIGTERM and SIGHUP always reach the main thread.
fn start_archiver(config: &Config) -> Result<Archiver, Error> {
    signals::with_signals_blocked(|| Archiver::start(config))
}

/// The systemd status line: the streams' summary, and a refused reload.
fn daemon_status(archiver: &Archiver, reload_failure: Option<&str>) -> String {
    let line = notify::status_line(&archiver.status());
    match reload_failure {
        Some(failure) => format!("{line}; config reload refused: {failure}"),
        None => line,
    }
}

/// SIGHUP: load the same config file again; apply it if it is valid, keep
/// the running config if not. Returns the archiver now running, and sets
/// `failure` to why the new config was refused (or clears it). An error only
/// when neither the new nor the old config could be started.
fn reload(
    config: &mut Config,
    running: Archiver,
    notifier: &mut Notifier,
    tick: Duration,
    failure: &mut Option<String>,
) -> Result<Archiver, Error> {
    let path = config.path.clone();
    log::info!("SIGHUP: reloading {}", path.display());
    notifier.reloading(&format!("reloading {}", path.display()));
    let new = match config::load(&path) {
        Ok(new) => new,
        Err(e) => {
            log::error!("reload refused, the running config stays in force: {e}");
            *failure = Some(e.to_string());
            return Ok(running);
        }
    };
    *failure = None;
    if new == *config {
        log::info!("reloaded {}: no changes", path.display());
        return Ok(running);
    }
    if new.global.log_level != config.global.log_level {
        log::warn!("reload: the new log_level applies at the next restart");
    }
    let changes = describe_changes(config, &new);
    if running.can_reload_streams(&new) {
        // Only streams changed: restart those alone, the others run on.
        let mut running = running;
        let applied = keeping_watchdog_fed(notifier, tick, || running.reload_streams(&new));
        return match applied {
            Ok(()) => {
                log::info!("reloaded {}: {changes}", path.display());
                *config = new;
                Ok(running)
            }
            Err(error) => {
                // Only a thread that could not be spawned gets here.
                log::error!("reload: cannot start every stream of {}: {error}", path.display());
                *failure = Some(error.to_string());
                *config = new;
                Ok(running)
            }
        };
    }
    let old = &*config;
    match keeping_watchdog_fed(notifier, tick, || switch_archiver(old, &new, running))? {
        Switched::New(archiver) => {
            log::info!(
                "reloaded {}: {changes}; every stream restarted (global settings changed)",
                path.display()
            );
            *config = new;
            Ok(archiver)
        }
        Switched::Old { archiver, refused } => {
            *failure = Some(refused);
            Ok(archiver)
        }
    }
}

/// Which config the archiver runs after a reload.
enum Switched {
    New(Archiver),
    /// The new config could not start (the reason is in `refused`); the
    /// old one runs again.
    Old {
        archiver: Archiver,
        refused: String,
    },
}

/// Stop `running` (bounded, see [`Archiver::stop`]) and start `new`; if that
/// fails, start `old` again so the daemon keeps archiving.
fn switch_archiver(old: &Config, new: &Config, running: Archiver) -> Result<Switched, Error> {
    running.stop();
    let error = match start_archiver(new) {
        Ok(archiver) => return Ok(Switched::New(archiver)),
        Err(error) => error,
    };
    log::error!(
        "reload: cannot start with the new config {}: {error}; going back to the running config",
        new.path.display()
    );
    match start_archiver(old) {
        Ok(archiver) => Ok(Switched::Old { archiver, refused: error.to_string() }),
        Err(again) => {
            log::error!("reload: cannot start the previous config again either: {again}");
            Err(again)
        }
    }
}

/// Run `work` on a helper thread while this thread keeps feeding the
/// systemd watchdog: stopping the archiver waits for the requests in flight,
/// which may take longer than the watchdog allows.
fn keeping_watchdog_fed<T: Send>(
    notifier: &mut Notifier,
    tick: Duration,
    work: impl FnOnce() -> T + Send,
) -> T {
    std::thread::scope(|scope| {
        let worker = signals::with_signals_blocked(|| scope.spawn(work));
        while !worker.is_finished() {
            notifier.keep_alive();
            std::thread::sleep(tick.min(Duration::from_millis(20)));
        }
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What a reload changed, for the log: `2 streams; added t; changed [global]`.
fn describe_changes(old: &Config, new: &Config) -> String {
    let count = new.streams.len();
    let mut out = format!("{count} stream{}", if count == 1 { "" } else { "s" });
    let only_in = |a: &Config, b: &Config| -> Vec<String> {
        a.streams.iter().filter(|s| b.stream(&s.name).is_none()).map(|s| s.name.clone()).collect()
    };
    let (added, removed) = (only_in(new, old), only_in(old, new));
    let mut changed: Vec<String> = new
        .streams
        .iter()
        .filter(|s| old.stream(&s.name).is_some_and(|o| o != *s))
        .map(|s| format!("[stream {}]", s.name))
        .collect();
    if new.global != old.global {
        changed.insert(0, "[global]".to_string());
    }
    for (label, items) in
        [("added", added.join(", ")), ("removed", removed.join(", ")), ("changed", changed.join(", "))]
    {
        if !items.is_empty() {
            let _ = write!(out, "; {label} {items}");
        }
    }
    out
}
