//! The running archiver: one thread per stream, each looping
//! wait → pass → (on failure) back off, plus the library API an embedding
//! program uses: start, wake a stream at once, read status, stop.
//!
//! Failures never end a stream's thread (retrying never gives up on data),
//! except a conflict — different content already archived at a position —
//! which parks the stream loudly until an operator intervenes. Each error is
//! logged once when it first appears and once when it clears.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::config::{Config, Global, StreamConfig};
use crate::error::Error;
use crate::metrics;
use crate::retry::Backoff;
use crate::status::{StreamStatus, unix_now};
use crate::stream::{PassReport, Stream};
use crate::target::{self, Target};

/// Failed passes back off up to this many times `backoff_max` (5 s by
/// default, so minutes between passes of a stream that keeps failing).
const PASS_BACKOFF_FACTOR: u32 = 60;

/// A running archiver. Dropping it without `stop` detaches the threads.
pub struct Archiver {
    shared: Arc<Shared>,
    target: Arc<dyn Target>,
    threads: Vec<JoinHandle<()>>,
    metrics: MetricsOutputs,
}

struct Shared {
    stop: AtomicBool,
    slots: Vec<Arc<Slot>>,
    /// When a stream thread last went round its loop (seconds since epoch).
    heartbeat: AtomicU64,
}

impl Shared {
    fn statuses(&self) -> Vec<StreamStatus> {
        self.slots.iter().map(|s| s.status.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect()
    }

    fn metrics_page(&self) -> String {
        metrics::render(&self.statuses(), self.heartbeat.load(Ordering::SeqCst))
    }
}

/// Threads serving `metrics_listen` and writing `metrics_file`.
#[derive(Default)]
struct MetricsOutputs {
    listener: Option<(SocketAddr, JoinHandle<()>)>,
    writer: Option<JoinHandle<()>>,
}

/// How often `metrics_file` is rewritten.
const METRICS_FILE_INTERVAL: Duration = Duration::from_secs(15);

/// What a stream's thread shares with the outside.
struct Slot {
    name: String,
    woken: Mutex<bool>,
    bell: Condvar,
    status: Arc<Mutex<StreamStatus>>,
}

impl Slot {
    /// Sleep up to `timeout`, returning early when woken or stopped.
    fn wait(&self, timeout: Duration, shared: &Shared) {
        let mut woken = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken && !shared.stop.load(Ordering::SeqCst) {
            woken = self.bell.wait_timeout(woken, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        *woken = false;
    }

    fn ring(&self) {
        *self.woken.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.bell.notify_all();
    }
}

impl Archiver {
    /// Start one thread per configured stream.
    pub fn start(config: &Config) -> Result<Archiver, Error> {
        let target = target::open(&config.global)?;
        let slots: Vec<Arc<Slot>> = config
            .streams
            .iter()
            .map(|s| {
                Arc::new(Slot {
                    name: s.name.clone(),
                    woken: Mutex::new(false),
                    bell: Condvar::new(),
                    status: Arc::new(Mutex::new(StreamStatus {
                        stream: s.name.clone(),
                        ..Default::default()
                    })),
                })
            })
            .collect();
        let shared =
            Arc::new(Shared { stop: AtomicBool::new(false), slots, heartbeat: AtomicU64::new(unix_now()) });
        let metrics = start_metrics(&config.global, &shared)?;
        let mut threads = Vec::new();
        for (stream_config, slot) in config.streams.iter().zip(&shared.slots) {
            let job = StreamJob {
                config: stream_config.clone(),
                state_dir: config.global.state_dir.clone(),
                target: Arc::clone(&target),
                poll_interval: config.global.poll_interval,
                backoff: Backoff::new(
                    config.global.backoff_min,
                    config.global.backoff_max.saturating_mul(PASS_BACKOFF_FACTOR),
                ),
            };
            let (slot, shared) = (Arc::clone(slot), Arc::clone(&shared));
            let handle = thread::Builder::new()
                .name(format!("walship-{}", stream_config.name))
                .spawn(move || job.run(&slot, &shared))
                .map_err(|e| Error::local("start a thread for stream", &stream_config.name, e))?;
            threads.push(handle);
        }
        Ok(Archiver { shared, target, threads, metrics })
    }

    /// Wake `stream` now (the application just sealed a segment). Returns
    /// false for an unknown stream.
    pub fn wake(&self, stream: &str) -> bool {
        let slot = self.shared.slots.iter().find(|s| s.name == stream);
        slot.inspect(|s| s.ring()).is_some()
    }

    /// Every stream's current status.
    pub fn status(&self) -> Vec<StreamStatus> {
        self.shared.statuses()
    }

    /// The metrics page, as served on `metrics_listen`.
    pub fn metrics(&self) -> String {
        self.shared.metrics_page()
    }

    /// Stop every stream and wait for the threads. The request in flight
    /// finishes or times out; nothing is retried, a multipart upload stops
    /// after its parts in flight and is aborted (or, if that fails, at the
    /// next start). Nothing half-done is recorded.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.target.shut_down();
        for slot in &self.shared.slots {
            slot.ring();
        }
        for handle in self.threads {
            let _ = handle.join();
        }
        if let Some((address, handle)) = self.metrics.listener {
            let _ = std::net::TcpStream::connect(address); // wake its accept()
            let _ = handle.join();
        }
        if let Some(handle) = self.metrics.writer {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

/// Start the metrics listener and file writer that the config asks for.
fn start_metrics(global: &Global, shared: &Arc<Shared>) -> Result<MetricsOutputs, Error> {
    let mut outputs = MetricsOutputs::default();
    if let Some(address) = &global.metrics_listen {
        let listener = metrics::bind(address)
            .map_err(|e| Error::local("listen for metrics (metrics_listen) on", address, e))?;
        let local = listener.local_addr().map_err(|e| Error::local("listen for metrics on", address, e))?;
        let shared = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name("walship-metrics".into())
            .spawn(move || {
                for connection in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(connection) = connection {
                        metrics::serve_one(connection, &shared.metrics_page());
                    }
                }
            })
            .map_err(|e| Error::local("start the metrics listener on", address, e))?;
        outputs.listener = Some((local, handle));
    }
    if let Some(path) = global.metrics_file.clone() {
        let shared = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name("walship-metrics-file".into())
            .spawn(move || write_metrics_file_until_stopped(&path, &shared))
            .map_err(|e| Error::local("start the metrics file writer for", &global.state_dir, e))?;
        outputs.writer = Some(handle);
    }
    Ok(outputs)
}

/// Rewrite `path` every [`METRICS_FILE_INTERVAL`] and once more at stop,
/// warning once per change of error.
fn write_metrics_file_until_stopped(path: &Path, shared: &Shared) {
    let mut last_error: Option<String> = None;
    loop {
        let result = metrics::write_file(path, &shared.metrics_page()).map_err(|e| e.to_string());
        if result.as_ref().err() != last_error.as_ref() {
            if let Err(e) = &result {
                log::warn!("cannot write metrics_file {}: {e}", path.display());
            }
            last_error = result.err();
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        thread::park_timeout(METRICS_FILE_INTERVAL);
    }
}

/// Everything one stream's thread owns.
struct StreamJob {
    config: StreamConfig,
    state_dir: std::path::PathBuf,
    target: Arc<dyn Target>,
    poll_interval: Duration,
    backoff: Backoff,
}

impl StreamJob {
    fn run(mut self, slot: &Slot, shared: &Shared) {
        let name = self.config.name.clone();
        let stopped = || shared.stop.load(Ordering::SeqCst);
        let mut stream: Option<Stream> = None;
        let mut last_error: Option<String> = None;
        while !stopped() {
            let result = self.attempt(&mut stream, last_error.is_some(), slot, &stopped);
            let delay = match result {
                Ok(_) => {
                    if last_error.take().is_some() && !stopped() {
                        log::info!("stream {name}: recovered; archiving again");
                    }
                    self.backoff.succeeded();
                    self.set_error(slot, None);
                    self.poll_interval
                }
                Err(error) if stopped() => {
                    log::info!(
                        "stream {name}: stopped in the middle of a batch ({error}); it resumes at the next start"
                    );
                    break;
                }
                Err(error) => {
                    let message = error.to_string();
                    if last_error.as_ref() != Some(&message) {
                        log::error!("{message}");
                    }
                    last_error = Some(message.clone());
                    if matches!(error, Error::Conflict { .. }) {
                        log::error!(
                            "stream {name}: stopped until the conflict is resolved and walship restarted"
                        );
                        self.set_error(slot, Some(message));
                        park_until_stopped(slot, shared);
                        break;
                    }
                    if matches!(error, Error::Manifest(_) | Error::Local { .. } | Error::Locked { .. }) {
                        stream = None; // reopen from disk on the next attempt
                    }
                    let delay = self.backoff.failed();
                    self.set_error(slot, Some(message));
                    slot.status.lock().unwrap_or_else(|p| p.into_inner()).retries += 1;
                    delay
                }
            };
            shared.heartbeat.store(unix_now(), Ordering::SeqCst);
            slot.wait(delay, shared);
        }
    }

    /// Open the stream if needed (or, after a failure, clear uploads the
    /// failed attempt left open), then run one pass.
    fn attempt(
        &self,
        stream: &mut Option<Stream>,
        after_failure: bool,
        slot: &Slot,
        stopped: &dyn Fn() -> bool,
    ) -> Result<PassReport, Error> {
        if stream.is_none() {
            let opened = Stream::open(
                self.config.clone(),
                &self.state_dir,
                Arc::clone(&self.target),
                Arc::clone(&slot.status),
            )?;
            *stream = Some(opened);
        } else if let Some(open) = stream.as_ref().filter(|_| after_failure) {
            // The last attempt failed: an upload it could not abort may
            // still be open on the target; clear it before trying again.
            open.abort_stale_uploads()?;
        }
        stream.as_mut().expect("opened above").pass(false, stopped)
    }

    fn set_error(&self, slot: &Slot, error: Option<String>) {
        let mut status = slot.status.lock().unwrap_or_else(|p| p.into_inner());
        status.backoff_ms = self.backoff.current().map(|d| d.as_millis() as u64);
        status.last_error = error;
    }
}

fn park_until_stopped(slot: &Slot, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        slot.wait(Duration::from_secs(3600), shared);
    }
}

/// A stream's name and how its pass went.
pub type StreamOutcome = (String, Result<PassReport, Error>);

/// One full pass over every stream, in parallel (one thread each), short
/// final batches included: `run --once`. Returns each stream's outcome.
pub fn run_once(config: &Config) -> Result<Vec<StreamOutcome>, Error> {
    let target = target::open(&config.global)?;
    let outcomes = thread::scope(|scope| {
        let handles: Vec<_> = config
            .streams
            .iter()
            .map(|stream_config| {
                let target = Arc::clone(&target);
                scope.spawn(move || {
                    let status = Arc::new(Mutex::new(StreamStatus {
                        stream: stream_config.name.clone(),
                        ..Default::default()
                    }));
                    let mut stream =
                        Stream::open(stream_config.clone(), &config.global.state_dir, target, status)?;
                    stream.pass(true, &|| false)
                })
            })
            .collect();
        config
            .streams
            .iter()
            .zip(handles)
            .map(|(s, h)| (s.name.clone(), h.join().unwrap_or_else(|_| Err(panicked(&s.name)))))
            .collect()
    });
    Ok(outcomes)
}

fn panicked(stream: &str) -> Error {
    Error::local(
        "archive stream",
        stream,
        std::io::Error::other("its thread panicked; this is a bug, please report it"),
    )
}
