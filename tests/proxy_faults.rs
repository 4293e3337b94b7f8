//! The daemon against Garage through the fault-injecting proxy
//! ([`crate::faultproxy`]): refused connections, resets in mid-body, stalls,
//! 500 / 503 / SlowDown answers and cut-short responses, aimed at each kind
//! of request the daemon sends (LIST, HEAD, PutObject, multipart create,
//! parts and complete, manifest records). Under every one, the daemon must
//! archive everything in the end, record only objects fully stored, lose no
//! segment, leave no multipart upload behind, and stop and resume cleanly.
//!
//! Each test checks that its faults really fired: a plan whose rules never
//! met their requests fails the test.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::faultproxy::{Fault, FaultProxy, Kind, Rule};
use crate::s3::{S3Env, unique_prefix};
use crate::util::*;

const BATCH: u64 = 5;

/// Garage behind a fault proxy, a stream feeding it, the daemon's log.
struct Rig {
    env: S3Env,
    proxy: FaultProxy,
    setup: Setup,
    prefix: String,
    /// The last position written to the stream directory.
    written: u64,
    /// The daemon's stderr, across restarts.
    log: PathBuf,
}

impl Rig {
    /// A rig, or `None` when there is no S3 test environment.
    fn new(name: &str) -> Option<Rig> {
        let env = S3Env::get()?;
        let proxy = FaultProxy::start(&env.endpoint);
        let prefix = unique_prefix(name);
        let mut setup = Setup::new(name, BATCH, "seal = spool");
        let credentials = env.credentials_file(&setup.dir.path, &env.secret);
        setup.target_lines = format!(
            "target = s3://{}/{prefix}\nendpoint = {}\nregion = {}\ncredentials_file = {}\n\
             part_size = 5MiB\nparallel_uploads = 2\nconnect_timeout = 1s\nio_timeout = 1s\n",
            env.bucket,
            proxy.endpoint(),
            env.region,
            credentials.display()
        );
        setup.write_config(BATCH, "seal = spool", "");
        let log = setup.dir.path.join("daemon.log");
        Some(Rig { env, proxy, setup, prefix, written: 0, log })
    }

    /// Write the next batch's segments (by atomic rename, as `seal = spool`
    /// wants): ~1.2 MiB segments (a 2-part multipart object) and small ones
    /// in turn.
    fn write_batch(&mut self) {
        let first = self.written + 1;
        let large = (first / BATCH).is_multiple_of(2);
        for position in first..first + BATCH {
            let mut bytes = segment_bytes(position, 3000);
            if large {
                bytes.resize(1_100_000 + (position as usize * 20_011) % 200_000, (position % 251) as u8);
            }
            let name = segment_name(position);
            let temporary = self.setup.src.join(format!(".{name}"));
            fs::write(&temporary, bytes).unwrap();
            fs::rename(&temporary, self.setup.src.join(name)).unwrap();
        }
        self.written = first + BATCH - 1;
    }

    fn archived(&self) -> Option<u64> {
        let text = fs::read_to_string(self.setup.state.join("s/archived_position")).ok()?;
        text.trim().parse().ok()
    }

    fn start_daemon(&self) -> Daemon {
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        Daemon::start_with_stderr(&self.setup.config, log)
    }

    fn daemon_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panic with the context when the daemon exited or `deadline` passed.
    fn check_progress(&self, daemon: &mut Daemon, deadline: Instant, waiting_for: &str) {
        if let Some(status) = daemon.exited() {
            panic!("the daemon exited ({status}) while {waiting_for}\nlog:\n{}", self.daemon_log());
        }
        assert!(
            Instant::now() < deadline,
            "timed out while {waiting_for}: archived {:?} of {}; rules left {:?}\ninjected: {:#?}\nlog:\n{}",
            self.archived(),
            self.written,
            self.proxy.pending_rules(),
            self.proxy.injected(),
            self.daemon_log()
        );
    }

    /// Keep writing batches (one at a time, as the daemon catches up) until
    /// every queued fault has fired.
    fn feed_until_faults_fired(&mut self, daemon: &mut Daemon, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.proxy.pending() > 0 {
            self.check_progress(daemon, deadline, "waiting for the planned faults to fire");
            if self.archived() == Some(self.written) {
                self.write_batch();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_archived(&self, daemon: &mut Daemon, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.archived() != Some(self.written) {
            self.check_progress(daemon, deadline, "waiting for everything to be archived");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: the daemon must exit 0 within a bounded time; returns how
    /// long it took.
    fn stop(&self, mut daemon: Daemon) -> Duration {
        let started = Instant::now();
        daemon.signal(libc::SIGTERM);
        let limit = Duration::from_secs(30);
        let status = loop {
            if let Some(status) = daemon.exited() {
                break status;
            }
            if started.elapsed() > limit {
                panic!("the daemon did not stop within {limit:?} of SIGTERM\nlog:\n{}", self.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "SIGTERM: exit {status}\nlog:\n{}", self.daemon_log());
        started.elapsed()
    }

    /// Keys under `prefix/SUBPREFIX` in Garage, relative to `prefix`, asked
    /// with curl (not through the proxy).
    fn stored_keys(&self, subprefix: &str) -> Vec<String> {
        let query = format!("?list-type=2&prefix={}", encode(&format!("{}/{subprefix}", self.prefix)));
        let text = stdout(&self.env.curl("GET", &query, &[]));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(!text.contains("<IsTruncated>true"), "listing truncated: {text}");
        let strip = format!("{}/", self.prefix);
        xml_values(&text, "Key")
            .into_iter()
            .map(|key| key.strip_prefix(&strip).unwrap().to_string())
            .collect()
    }

    /// Multipart uploads still open under the prefix.
    fn open_uploads(&self) -> Vec<String> {
        // curl signs the query as written: parameters in sorted order.
        let query = format!("?prefix={}&uploads=", encode(&format!("{}/", self.prefix)));
        let text = stdout(&self.env.curl("GET", &query, &[]));
        assert!(text.starts_with("HTTP/1.1 200") && text.contains("ListMultipartUploadsResult"), "{text}");
        xml_values(&text, "Key")
    }

    /// Everything written is archived exactly once, stored whole, and
    /// restores byte for byte; nothing half-done is left in the bucket.
    fn assert_archive_complete(&self) {
        // A last pass through the healed proxy has nothing to send, and
        // aborts any upload a fault left open (stale uploads go at start).
        let out = self.setup.ok(&["run", "--once"]);
        assert!(out.contains("archived 0 batches"), "{out}");
        assert_eq!(self.open_uploads(), Vec::<String>::new(), "unfinished multipart uploads left");

        let batches = journal_batches(&self.setup.journal().to_string_lossy());
        let mut next = 1;
        for (first, last, _) in &batches {
            assert_eq!(*first, next, "manifest ranges not contiguous: {batches:?}");
            next = last + 1;
        }
        assert_eq!(next, self.written + 1, "manifest ends at {} of {}: {batches:?}", next - 1, self.written);
        let recorded: Vec<String> = batches.iter().map(|(_, _, key)| key.clone()).collect();
        assert_eq!(self.stored_keys("s/batches/"), recorded, "batch objects in Garage vs. the manifest");
        assert_eq!(self.stored_keys("s/manifest/").len(), batches.len(), "remote records vs. the manifest");

        // Sizes and CRC32s of every recorded object, read back.
        self.setup.ok(&["verify", "--deep"]);
        let restored = self.setup.dir.path.join("restored");
        self.setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
        assert_same_files(&self.setup.src, &restored);
    }

    /// Errors are logged once per change of state, not once per attempt
    /// (never the same error line twice in a row), and say what happened.
    fn assert_log_discipline(&self) {
        let log = self.daemon_log();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("[ERROR]"))
            .map(|l| l.split_once("] ").map_or(l, |s| s.1))
            .collect();
        for pair in errors.windows(2) {
            assert_ne!(pair[0], pair[1], "the same error logged twice in a row\nlog:\n{log}");
        }
        // Nothing here is ever missing: a "not found" is a misreported fault.
        assert!(
            !errors.iter().any(|e| e.contains("not found")),
            "a fault reported as a missing object:\n{log}"
        );
    }

    fn summary(&self, name: &str, started: Instant, stop: Duration) {
        eprintln!(
            "{name}: {} faults injected in {} requests; {} positions archived; stopped in {stop:?}; \
             {:?} in all",
            self.proxy.injected().len(),
            self.proxy.requests(),
            self.written,
            started.elapsed()
        );
    }
}

/// (first, last, key) of each batch line in a local journal.
fn journal_batches(path: &str) -> Vec<(u64, u64, String)> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .filter(|line| line.contains(" batch "))
        .map(|line| {
            let field = |name: &str| -> String {
                let start = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
                line[start..].split(' ').next().unwrap().to_string()
            };
            (field("first").parse().unwrap(), field("last").parse().unwrap(), field("key"))
        })
        .collect()
}

/// The text of every `<tag>` element, in order.
fn xml_values(text: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    text.split(&open).skip(1).filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_string())).collect()
}

/// Percent-encode a query value (keys here hold only unreserved bytes and '/').
fn encode(value: &str) -> String {
    value.replace('/', "%2F")
}

/// Queue `plan`, start the daemon, feed it until every fault fired, heal,
/// wait for everything to be archived, stop it, check the archive.
fn archive_through(name: &str, plan: &[Rule]) {
    let Some(mut rig) = Rig::new(name) else { return };
    let started = Instant::now();
    for rule in plan {
        rig.proxy.push(*rule);
    }
    rig.write_batch();
    let mut daemon = rig.start_daemon();
    rig.feed_until_faults_fired(&mut daemon, Duration::from_secs(60));
    rig.proxy.heal();
    let faults = rig.proxy.injected().len();
    let expected: u32 = plan.iter().map(|r| r.count).sum();
    assert_eq!(faults, expected as usize, "{:#?}", rig.proxy.injected());
    rig.wait_archived(&mut daemon, Duration::from_secs(60));
    let stop = rig.stop(daemon);
    rig.assert_archive_complete();
    rig.assert_log_discipline();
    rig.summary(name, started, stop);
}

/// Bursts of `fault` at each kind of request in the daemon's order of
/// work; `long` bursts outlast a request's own retries (5 attempts), so
/// the stream's pass fails and is retried too.
fn bursts(fault: Fault, short: u32, long: u32) -> Vec<Rule> {
    vec![
        Rule::burst(fault, Kind::List, long),
        Rule::burst(fault, Kind::ListUploads, short),
        Rule::burst(fault, Kind::Head, long),
        Rule::burst(fault, Kind::CreateUpload, short),
        Rule::burst(fault, Kind::PutPart, 2 * long),
        Rule::burst(fault, Kind::Complete, long),
        Rule::burst(fault, Kind::PutRecord, long),
        Rule::burst(fault, Kind::PutObject, long),
        Rule::every(fault, Kind::Any, 3, 2 * short),
    ]
}

/// Connections reset on accept: a burst at start-up (LIST), then every 3rd
/// and every 2nd connection, with another burst in between.
#[test]
fn refused_connections_lose_nothing() {
    archive_through(
        "proxy-refuse",
        &[
            Rule::burst(Fault::Refuse, Kind::Any, 6),
            Rule::every(Fault::Refuse, Kind::Any, 3, 12),
            Rule::burst(Fault::Refuse, Kind::Any, 6),
            Rule::every(Fault::Refuse, Kind::Any, 2, 12),
        ],
    );
}

/// Half a body sent, then both sides reset (bodiless requests reset at once):
/// nothing half-stored is ever recorded.
#[test]
fn resets_in_mid_request_body_lose_nothing() {
    archive_through("proxy-reset", &bursts(Fault::ResetMidBody, 2, 6));
}

/// Requests read and never answered: `io_timeout` ends each one.
#[test]
fn stalled_requests_time_out_and_lose_nothing() {
    // Each stall costs an `io_timeout` (1 s) or two: short bursts, one long
    // enough (5) to outlast a request's retries.
    let stall = |kind, count| Rule::burst(Fault::Stall, kind, count);
    archive_through(
        "proxy-stall",
        &[
            stall(Kind::List, 1),
            stall(Kind::ListUploads, 1),
            stall(Kind::Head, 5),
            stall(Kind::CreateUpload, 1),
            stall(Kind::PutPart, 2),
            stall(Kind::Complete, 1),
            stall(Kind::PutRecord, 1),
            stall(Kind::PutObject, 1),
        ],
    );
}

/// 500 InternalError instead of an answer, at every kind of request.
#[test]
fn http_500_answers_lose_nothing() {
    archive_through("proxy-500", &bursts(Fault::Status(500), 2, 6));
}

/// 503 ServiceUnavailable instead of an answer, at every kind of request.
#[test]
fn http_503_answers_lose_nothing() {
    archive_through("proxy-503", &bursts(Fault::Status(503), 2, 6));
}

/// 503 SlowDown on every other request, then on 12 in a row.
#[test]
fn slow_down_on_every_other_request_loses_nothing() {
    archive_through(
        "proxy-slowdown",
        &[
            Rule::burst(Fault::SlowDown, Kind::List, 2),
            Rule::every(Fault::SlowDown, Kind::Any, 2, 40),
            Rule::burst(Fault::SlowDown, Kind::Any, 12),
        ],
    );
}

/// Responses cut short after the server acted: stored objects, completed
/// uploads and created uploads whose answers are lost.
#[test]
fn cut_short_responses_lose_nothing() {
    // A cut Complete has completed the upload (the retry finds it done), so
    // each burst on it needs another multipart batch: keep that one short.
    let mut plan = bursts(Fault::CutResponse, 2, 6);
    for rule in plan.iter_mut().filter(|r| r.kind == Kind::Complete) {
        rule.count = 2;
    }
    archive_through("proxy-cut", &plan);
}

/// `run --once` while the endpoint refuses every connection (reset on
/// accept, then nothing listening) exits 1 naming the endpoint; once the
/// endpoint is back, the same command archives everything.
#[test]
fn run_once_during_an_outage_fails_naming_the_endpoint_then_recovers() {
    let Some(mut rig) = Rig::new("proxy-outage") else { return };
    rig.write_batch();
    rig.write_batch();
    let endpoint = rig.proxy.endpoint();

    rig.proxy.push(Rule::burst(Fault::Refuse, Kind::Any, 1_000_000));
    let started = Instant::now();
    let out = rig.setup.walship(&["run", "--once"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&endpoint), "the message does not name {endpoint}:\n{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(!rig.proxy.injected().is_empty());
    rig.proxy.heal();

    rig.proxy.go_down();
    let out = rig.setup.walship(&["run", "--once"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&endpoint) && text.contains("reachable"), "{text}");
    rig.proxy.resume();

    let out = rig.setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 2 batches (10 segments"), "{out}");
    rig.assert_archive_complete();
}

/// SIGTERM while every other response is cut short: a clean exit 0, a
/// consistent archive; a restart (healed) archives the rest.
#[test]
fn sigterm_while_faults_fire_then_resume_archives_everything() {
    let Some(mut rig) = Rig::new("proxy-stop") else { return };
    let started = Instant::now();
    rig.proxy.push(Rule::every(Fault::CutResponse, Kind::Any, 2, 1_000_000));
    for _ in 0..4 {
        rig.write_batch();
    }
    let mut daemon = rig.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.proxy.injected().len() < 8 || rig.archived().is_none() {
        rig.check_progress(&mut daemon, deadline, "waiting for faults and a first batch");
        std::thread::sleep(Duration::from_millis(10));
    }
    let archived_at_stop = rig.archived();
    let first_stop = rig.stop(daemon);
    let faults_before_stop = rig.proxy.injected().len();
    rig.proxy.heal();

    // What the stopped daemon recorded is whole and contiguous.
    rig.setup.ok(&["verify", "--deep"]);
    let recorded = journal_batches(&rig.setup.journal().to_string_lossy());
    assert_eq!(recorded.first().map(|b| b.0), Some(1), "{recorded:?}");
    assert!(recorded.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{recorded:?}");

    let mut daemon = rig.start_daemon();
    rig.write_batch();
    rig.wait_archived(&mut daemon, Duration::from_secs(60));
    let second_stop = rig.stop(daemon);
    rig.assert_archive_complete();
    rig.assert_log_discipline();
    eprintln!(
        "proxy-stop: stopped at position {archived_at_stop:?} of {} after {faults_before_stop} faults \
         in {first_stop:?}; resumed and stopped again in {second_stop:?}",
        rig.written
    );
    rig.summary("proxy-stop", started, second_stop);
}

/// Regression: a HEAD answered 5xx on every attempt was reported as "object
/// not found in the archive": the GET meant to explain a body-less refusal
/// found no object yet, and its 404 replaced the server error.
#[test]
fn head_failing_with_503_is_reported_as_the_server_error_not_as_missing() {
    let Some(mut rig) = Rig::new("proxy-head-503") else { return };
    rig.write_batch();
    rig.proxy.push(Rule::burst(Fault::Status(503), Kind::Head, 5));
    let out = rig.setup.walship(&["run", "--once"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(rig.proxy.pending(), 0, "{:?}", rig.proxy.pending_rules());
    assert!(text.contains("head s/batches/") && text.contains("ServiceUnavailable (HTTP 503)"), "{text}");
    assert!(!text.contains("not found"), "{text}");
    let out = rig.setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 1 batch ("), "{out}");
    rig.assert_archive_complete();
}

/// Reading the archive back through faulty GETs: a wiped state directory
/// is rebuilt from the remote records, `verify --deep` and `restore` read
/// every object, while responses are cut short (resumed by range), answered
/// 500, 503 or SlowDown, stalled or reset. (A GET resumes a cut body at most
/// 4 times, by design: no object here is cut more often.)
#[test]
fn reads_resume_through_cut_and_failed_responses() {
    let Some(mut rig) = Rig::new("proxy-reads") else { return };
    for _ in 0..4 {
        rig.write_batch();
    }
    rig.setup.ok(&["run", "--once"]);
    let restored = rig.setup.dir.path.join("restored");
    let get = |fault, count| Rule::burst(fault, Kind::Get, count);
    let phases: [(&[&str], [Rule; 3]); 3] = [
        (
            &["run", "--once"],
            [get(Fault::CutResponse, 3), get(Fault::Status(503), 2), get(Fault::ResetMidBody, 2)],
        ),
        (&["verify", "--deep"], [get(Fault::CutResponse, 4), get(Fault::Stall, 1), get(Fault::SlowDown, 2)]),
        (
            &["restore", "-s", "s", "--to", restored.to_str().unwrap()],
            [get(Fault::CutResponse, 2), get(Fault::Status(500), 2), get(Fault::CutResponse, 2)],
        ),
    ];
    fs::remove_dir_all(&rig.setup.state).unwrap();
    for (args, plan) in phases {
        for rule in plan {
            rig.proxy.push(rule);
        }
        let out = rig.setup.walship(args);
        assert_success(&out, args);
        assert_eq!(rig.proxy.pending(), 0, "{args:?}: faults never fired: {:?}", rig.proxy.pending_rules());
        if args[0] == "run" {
            assert!(stdout(&out).contains("archived 0 batches"), "{}", stdout(&out));
            assert!(stderr(&out).contains("adopted 4 records"), "{}", stderr(&out));
        }
    }
    assert_same_files(&rig.setup.src, &restored);
    eprintln!(
        "proxy-reads: {} faults injected in {} requests",
        rig.proxy.injected().len(),
        rig.proxy.requests()
    );
}

/// SIGTERM while multipart parts stall: the part in flight times out
/// (io_timeout = 1 s), nothing is retried, no new part starts, the upload
/// is aborted, and the daemon exits 0 in about one timeout instead of
/// working through every retry (5 s here, minutes at the defaults); nothing
/// half-done is recorded, and a healed restart finishes.
#[test]
fn sigterm_during_stalls_stops_within_a_bounded_time() {
    let Some(mut rig) = Rig::new("proxy-stall-stop") else { return };
    rig.write_batch(); // a large, multipart batch
    rig.proxy.push(Rule::every(Fault::Stall, Kind::PutPart, 1, 1_000_000));
    let mut daemon = rig.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.proxy.injected().is_empty() {
        rig.check_progress(&mut daemon, deadline, "waiting for a stalled request");
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = rig.stop(daemon);
    // The stalled parts in flight (1 s), then the abort.
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?} with parts stalling");
    assert_eq!(rig.archived(), None, "nothing can have been archived through stalls");

    rig.proxy.heal();
    let mut daemon = rig.start_daemon();
    rig.wait_archived(&mut daemon, Duration::from_secs(60));
    rig.stop(daemon);
    rig.assert_archive_complete();
}

/// A part that keeps failing and an abort that fails too leave an upload
/// open on the target. The running daemon clears such leftovers before its
/// next attempt, without waiting for a restart, so they never pile up.
/// (Garage drops unfinished uploads of a key once the key completes, which
/// would hide a pile-up; completion is blocked while the count is checked.)
#[test]
fn uploads_left_open_by_failed_attempts_do_not_pile_up() {
    let Some(mut rig) = Rig::new("proxy-leftover") else { return };
    rig.write_batch(); // large: multipart, 2 parts in flight
    for _ in 0..3 {
        // Both parts fail all 5 attempts, then the abort fails all of its
        // attempts too (rules fire in queue order).
        rig.proxy.push(Rule::burst(Fault::Status(500), Kind::PutPart, 10));
        rig.proxy.push(Rule::burst(Fault::Status(500), Kind::Abort, 5));
    }
    rig.proxy.push(Rule::every(Fault::Status(500), Kind::PutPart, 1, 1_000_000));
    let mut daemon = rig.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.proxy.pending_rules().len() > 1 {
        rig.check_progress(&mut daemon, deadline, "waiting for three failed attempts");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300)); // a few more attempts
    let open = rig.open_uploads();
    assert!(open.len() <= 1, "unfinished uploads piled up in the running daemon: {open:?}");

    rig.proxy.heal();
    rig.wait_archived(&mut daemon, Duration::from_secs(60));
    rig.stop(daemon);
    rig.assert_archive_complete();
}

/// Regression: a store without ListMultipartUploads (s3s-fs answers 501
/// NotImplemented) stopped every stream: the answer was taken for a
/// temporary failure and retried forever. It is optional: the daemon warns
/// once, saying what is lost and the remedy, and archives everything.
#[test]
fn a_store_without_list_multipart_uploads_warns_once_and_keeps_archiving() {
    let Some(mut rig) = Rig::new("proxy-no-list-uploads") else { return };
    rig.proxy.push(Rule::burst(Fault::NotImplemented, Kind::ListUploads, 1_000_000));
    rig.write_batch();
    rig.write_batch();
    let mut daemon = rig.start_daemon();
    rig.wait_archived(&mut daemon, Duration::from_secs(60));
    rig.write_batch();
    rig.wait_archived(&mut daemon, Duration::from_secs(60));
    rig.stop(daemon);
    assert!(!rig.proxy.injected().is_empty(), "no ListMultipartUploads was refused");
    let log = rig.daemon_log();
    assert_eq!(log.matches("does not implement ListMultipartUploads").count(), 1, "{log}");
    assert!(log.contains("not cleaned up automatically") && log.contains("lifecycle rule"), "{log}");
    assert!(!log.contains("temporary failure"), "{log}");
    rig.proxy.heal();
    rig.assert_archive_complete();
}

/// A required request the store does not implement fails at once (no
/// retries: it cannot succeed later), naming the request and the store.
#[test]
fn a_required_request_the_store_does_not_implement_fails_naming_it() {
    let Some(mut rig) = Rig::new("proxy-no-put") else { return };
    rig.write_batch(); // large segments: a multipart upload
    rig.proxy.push(Rule::burst(Fault::NotImplemented, Kind::CreateUpload, 1_000_000));
    let started = Instant::now();
    let out = rig.setup.walship(&["run", "--once"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("start multipart upload of s/batches/"), "{text}");
    assert!(text.contains("NotImplemented (HTTP 501)"), "{text}");
    let store = format!("the S3 store at {} does not implement this request", rig.proxy.endpoint());
    assert!(text.contains(&store), "{text}");
    assert_eq!(rig.proxy.injected().len(), 1, "a request that cannot succeed was retried");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    rig.proxy.heal();
    rig.setup.ok(&["run", "--once"]);
    rig.assert_archive_complete();
}
