//! The systemd packaging, checked with systemd's own tools, and the notify
//! protocol and SIGHUP reload end to end.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::*;

const UNIT: &str = include_str!("../packaging/walship.service");
const EXAMPLE_CONFIG: &str = include_str!("../packaging/walship.conf");
const EXEC_START: &str = "ExecStart=/usr/local/bin/walship run -c /etc/walship/walship.conf";

/// Every key of `[global]` and of `[stream NAME]`, as SPEC.md and
/// src/config.rs define them.
const GLOBAL_KEYS: &[&str] = &[
    "state_dir",
    "target",
    "endpoint",
    "region",
    "credentials_file",
    "ca_file",
    "part_size",
    "parallel_uploads",
    "poll_interval",
    "connect_timeout",
    "io_timeout",
    "backoff_min",
    "backoff_max",
    "metrics_listen",
    "metrics_file",
    "log_level",
    "node_id",
    "heartbeat_interval",
    "bandwidth_limit",
    "bandwidth_schedule",
    "restore_bandwidth_limit",
    "data_budget",
    "budget_period_start",
    "prune_interval",
];
const STREAM_KEYS: &[&str] = &[
    "dir",
    "pattern",
    "naming",
    "wal_segment_size",
    "seal",
    "seal_idle",
    "batch_size",
    "max_batch_delay",
    "snapshot_interval",
    "snapshot_command",
    "snapshot_timeout",
    "keep_snapshots",
    "on_archived",
    "replicas",
    "max_offloader_lag",
    "manifest_compaction",
    "backlog_limit",
    "compression",
    "compression_level",
    "prefetch_segments",
    "prefetch_bytes",
];

fn systemd_analyze() -> &'static str {
    const PATH: &str = "/usr/bin/systemd-analyze";
    assert!(
        Path::new(PATH).exists(),
        "{PATH} is missing: install the systemd package (apt-get install systemd); \
         packaging/walship.service is checked with it"
    );
    PATH
}

/// A copy of the unit in `dir` whose ExecStart runs the built binary
/// (`systemd-analyze verify` checks that the executable exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    assert_eq!(UNIT.matches(EXEC_START).count(), 1, "the unit's ExecStart changed");
    let built = format!("ExecStart={} run -c /etc/walship/walship.conf", env!("CARGO_BIN_EXE_walship"));
    let path = dir.join("walship.service");
    fs::write(&path, UNIT.replace(EXEC_START, &built)).unwrap();
    path
}

/// The unit's settings (`Key=value` lines outside comments), in order.
fn unit_settings() -> Vec<(String, String)> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

/// `systemd-analyze verify` accepts the unit and prints nothing: no unknown
/// key, no bad value, no missing executable. Works offline, as root, with
/// systemd installed but not running as PID 1.
#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = TestDir::new("unit-verify");
    let unit = unit_for_test(&dir.path);
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&unit)
        .current_dir(&dir.path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "systemd-analyze verify failed ({:?}):\n{printed}", out.status);
    assert!(printed.trim().is_empty(), "systemd-analyze verify warns:\n{printed}");
}

/// The sysusers.d entry creates the unit's user and group (dry run, in an
/// empty root: nothing is written).
#[test]
fn sysusers_entry_creates_the_walship_user() {
    let root = TestDir::new("sysusers");
    let entry = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/walship.sysusers");
    let out = Command::new("/usr/bin/systemd-sysusers")
        .arg("--dry-run")
        .arg(format!("--root={}", root.path.display()))
        .arg(&entry)
        .output()
        .expect("run systemd-sysusers (from the systemd package)");
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("Creating group 'walship'"), "{printed}");
    assert!(printed.contains("Creating user 'walship'"), "{printed}");
    let unexpected: Vec<&str> =
        printed.lines().filter(|l| !l.starts_with("Creating ") && !l.starts_with("Would write ")).collect();
    assert!(unexpected.is_empty(), "systemd-sysusers warns: {unexpected:?}");
}

/// The settings the SPEC asks of the unit are there (a typo in a key would
/// already be a verify warning; this catches one that is removed).
#[test]
fn unit_has_the_required_settings() {
    let settings = unit_settings();
    let has = |key: &str, value: &str| settings.iter().any(|(k, v)| k == key && v == value);
    #[rustfmt::skip]
    let required = [
        ("Type", "notify"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("WatchdogSec", "60s"),
        ("TimeoutStopSec", "90s"),
        ("User", "walship"),
        ("Group", "walship"),
        ("StateDirectory", "walship"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("PrivateUsers", "yes"),
        ("UMask", "0077"),
        ("IPAddressDeny", "any"),
        // The file names src/target/s3/credentials.rs reads in $CREDENTIALS_DIRECTORY.
        ("LoadCredential", "aws_access_key_id:/etc/walship/aws_access_key_id"),
        ("LoadCredential", "aws_secret_access_key:/etc/walship/aws_secret_access_key"),
    ];
    for (key, value) in required {
        assert!(has(key, value), "packaging/walship.service lacks {key}={value}");
    }
    // Nothing writable besides the state directory unless the operator says so.
    assert!(!settings.iter().any(|(k, _)| k == "ReadWritePaths"), "ReadWritePaths is site-specific");
    // The state directory the unit creates is the example config's state_dir.
    let example = walship::config::parse(Path::new("walship.conf"), EXAMPLE_CONFIG).expect("example parses");
    assert_eq!(example.global.state_dir, Path::new("/var/lib/walship"));
}

/// `systemd-analyze security --offline` rates the unit's sandbox at an
/// exposure of 1.0 or lower (of 10; it was 1.2 before PrivateUsers=,
/// UMask=0077 and the IP address allow list), printed in the test output;
/// skipped where that option does not exist.
#[test]
fn unit_is_well_sandboxed() {
    let dir = TestDir::new("unit-security");
    let unit = unit_for_test(&dir.path);
    let out = Command::new(systemd_analyze())
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .current_dir(&dir.path)
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("run systemd-analyze security");
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    if printed.contains("unrecognized option") {
        eprintln!("SKIPPING: this systemd-analyze has no `security --offline`");
        return;
    }
    assert!(out.status.success(), "systemd-analyze security failed ({:?}):\n{printed}", out.status);
    let overall = printed
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for walship.service: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{printed}"));
    let exposure: f64 = overall.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a number");
    let remaining: Vec<&str> = printed.lines().filter(|l| l.starts_with('✗')).collect();
    eprintln!("packaging/walship.service exposure: {overall}; not tightened:\n{}", remaining.join("\n"));
    assert!(exposure <= 1.0, "exposure {exposure} above 1.0:\n{printed}");
}

/// The example config parses with walship's own parser and explains every
/// key walship knows; each optional setting shown commented out is valid
/// when enabled.
#[test]
fn example_config_parses_and_explains_every_key() {
    let path = Path::new("/etc/walship/walship.conf");
    let config = walship::config::parse(path, EXAMPLE_CONFIG).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.streams.len(), 3);

    // The test's key lists are the parser's: a key added to src/config.rs
    // fails here until it is added above and explained in the example.
    assert_eq!(
        known_keys("[global]"),
        GLOBAL_KEYS,
        "[global] keys changed: update this test and the example"
    );
    assert_eq!(
        known_keys("[stream s]"),
        STREAM_KEYS,
        "stream keys changed: update this test and the example"
    );
    for key in GLOBAL_KEYS.iter().chain(STREAM_KEYS) {
        let mentioned = EXAMPLE_CONFIG.lines().any(|line| {
            line.match_indices(&format!("{key} =")).any(|(at, _)| {
                line[..at].chars().last().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_')
            })
        });
        assert!(mentioned, "packaging/walship.conf does not explain `{key}`");
    }

    // Enable every `#key = value` line: the result is still a valid config.
    let enabled: String = EXAMPLE_CONFIG
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(enabled, EXAMPLE_CONFIG.trim_end(), "no optional settings shown");
    let all = walship::config::parse(path, &enabled).unwrap_or_else(|e| panic!("with all enabled: {e}"));
    assert!(all.global.credentials_file.is_some() && all.global.metrics_file.is_some());
    assert_eq!(all.streams[0].snapshot_interval, 10_000);
}

fn is_key(word: &str) -> bool {
    GLOBAL_KEYS.contains(&word) || STREAM_KEYS.contains(&word)
}

/// The keys the parser accepts in `section`, read from its "unknown key"
/// message (which lists them when nothing is close to the bad key).
fn known_keys(section: &str) -> Vec<String> {
    let stream = "[stream s]\ndir = /s\npattern = {seq}\nbatch_size = 1\n";
    let global = "[global]\nstate_dir = /s\ntarget = file:///t\n";
    let bad = "qqqqqqqqqqqq = 1\n";
    let text = if section == "[global]" {
        format!("{global}{bad}{stream}")
    } else {
        format!("{global}{stream}{bad}")
    };
    let error = walship::config::parse(Path::new("x.conf"), &text).expect_err("unknown key").to_string();
    let (_, list) = error.split_once(" takes: ").unwrap_or_else(|| panic!("no key list in: {error}"));
    list.split(", ").map(str::to_string).collect()
}

/// A notify socket as systemd binds it: collects every datagram received.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    done: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (sink, stop) = (Arc::clone(&messages), Arc::clone(&done));
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    sink.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifySocket { path, messages, done, reader: Some(reader) }
    }

    fn env(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Every datagram so far.
    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().iter().map(|(_, m)| m.clone()).collect()
    }

    /// Every assignment line so far, datagrams flattened.
    fn lines(&self) -> Vec<String> {
        self.messages().iter().flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>()).collect()
    }

    /// Wait until some line satisfies `wanted`.
    fn wait_for_line(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        self.wait_for(what, |lines| lines.iter().any(|l| wanted(l)));
    }

    /// Wait until the lines so far satisfy `done`.
    fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.lines()) {
            assert!(Instant::now() < deadline, "no {what} notification; got {:?}", self.messages());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// When each `WATCHDOG=1` arrived.
    fn pings(&self) -> Vec<Instant> {
        let messages = self.messages.lock().unwrap();
        messages.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| *t).collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Wait until `path` holds `content`.
fn wait_for_file(path: &Path, content: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(path).unwrap_or_default() != content {
        assert!(Instant::now() < deadline, "{what}: {} never became {content:?}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until the log file contains `part`; returns the log.
fn wait_for_log(log: &Path, part: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(part) {
            return text;
        }
        assert!(Instant::now() < deadline, "log never showed {part:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Under systemd (NOTIFY_SOCKET, WATCHDOG_USEC set) the daemon reports
/// READY=1 with a status line, pings the watchdog at half its interval,
/// keeps the status current, and reports STOPPING=1 on SIGTERM, exiting 0.
#[test]
fn daemon_speaks_the_systemd_notify_protocol() {
    let setup = Setup::new("notify", 1, "seal = spool");
    setup.write_segments(0..=2, 300);
    let notify = NotifySocket::bind(setup.dir.path.join("notify.sock"));
    let log = setup.dir.path.join("walship.log");
    let env = [("NOTIFY_SOCKET", notify.env()), ("WATCHDOG_USEC", "200000")];
    let daemon = Daemon::start_with_env(&setup.config, fs::File::create(&log).unwrap(), &env);

    notify.wait_for_line("READY=1", |l| l == "READY=1");
    let ready = notify.messages().into_iter().find(|m| m.starts_with("READY=1")).unwrap();
    assert!(ready.contains("\nSTATUS=archiving 1 stream; lag "), "{ready:?}");
    wait_for_file(&setup.state.join("s/archived_position"), "2\n", "archiving");
    notify.wait_for_line("an up-to-date STATUS", |l| {
        l == "STATUS=archiving 1 stream; lag 0 segments; no errors"
    });

    // 100 ms between pings: over a second, many of them and no long silence.
    let since = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let pings: Vec<Instant> = notify.pings().into_iter().filter(|t| *t >= since).collect();
    assert!(pings.len() >= 5, "{} WATCHDOG=1 in a second; expected about 10", pings.len());

    let output = daemon.terminate();
    assert!(output.status.success(), "exit {:?}:\n{}", output.status, fs::read_to_string(&log).unwrap());
    notify.wait_for_line("STOPPING=1", |l| l == "STOPPING=1");
    let messages = notify.messages();
    let stopping = messages.iter().position(|m| m.starts_with("STOPPING=1")).unwrap();
    assert!(messages[stopping..].iter().all(|m| !m.contains("READY=1")), "{messages:?}");
    assert_eq!(messages.iter().filter(|m| m.contains("READY=1")).count(), 1, "{messages:?}");
}

/// SIGHUP with a valid new config applies it without a restart (a new
/// stream is archived, RELOADING=1 then READY=1 are notified); with an
/// invalid one, the error is logged with the file and line, and the running
/// config stays in force.
#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let setup = Setup::new("reload", 1, "seal = spool");
    setup.write_segments(0..=1, 300);
    let notify = NotifySocket::bind(setup.dir.path.join("notify.sock"));
    let log = setup.dir.path.join("walship.log");
    let env = [("NOTIFY_SOCKET", notify.env())];
    let mut daemon = Daemon::start_with_env(&setup.config, fs::File::create(&log).unwrap(), &env);
    let pid = daemon.id();
    notify.wait_for_line("READY=1", |l| l == "READY=1");
    let position = |stream: &str| setup.state.join(stream).join("archived_position");
    wait_for_file(&position("s"), "1\n", "stream s");

    // A second stream, with segments waiting.
    let second = setup.dir.path.join("src-t");
    fs::create_dir_all(&second).unwrap();
    let write_second = |positions: std::ops::RangeInclusive<u64>| {
        for p in positions {
            fs::write(second.join(segment_name(p)), segment_bytes(p, 300)).unwrap();
        }
    };
    write_second(0..=2);
    let original = fs::read_to_string(&setup.config).unwrap();
    let with_second = |batch_size: &str| {
        format!(
            "{original}\n[stream t]\ndir = {}\npattern = seg-{{seq}}.log\nseal = spool\nbatch_size = {batch_size}\n",
            second.display()
        )
    };
    fs::write(&setup.config, with_second("1")).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for_file(&position("t"), "2\n", "stream t added by the reload");
    assert!(daemon.exited().is_none(), "the daemon exited on SIGHUP");
    assert_eq!(daemon.id(), pid);
    let text = wait_for_log(&log, "reloaded ");
    assert!(text.contains(&format!("reloaded {}: 2 streams; added t", setup.config.display())), "{text}");
    assert_eq!(text.matches("walship started").count(), 1, "restarted instead of reloading:\n{text}");
    assert_reload_notified(&notify, 1);

    // An invalid config: the error names the file, line and key.
    let invalid = with_second("lots");
    let line = invalid.lines().position(|l| l == "batch_size = lots").unwrap() + 1;
    fs::write(&setup.config, &invalid).unwrap();
    daemon.signal(libc::SIGHUP);
    let text = wait_for_log(&log, "reload refused");
    let refused = text.lines().find(|l| l.contains("reload refused")).unwrap();
    let location = format!("{}:{line}: [stream t] batch_size", setup.config.display());
    assert!(refused.contains(&location), "expected {location:?} in {refused:?}");
    assert_reload_notified(&notify, 2);
    notify.wait_for_line("a status naming the refused reload", |l| {
        l.starts_with("STATUS=") && l.contains("config reload refused") && l.contains(&location)
    });

    // Both streams keep archiving under the config in force.
    setup.write_segments(2..=3, 300);
    write_second(3..=4);
    wait_for_file(&position("s"), "3\n", "stream s after the refused reload");
    wait_for_file(&position("t"), "4\n", "stream t after the refused reload");
    assert!(daemon.exited().is_none());
    let output = daemon.terminate();
    assert!(output.status.success(), "exit {:?}:\n{}", output.status, fs::read_to_string(&log).unwrap());
}

/// A valid config that cannot start (its metrics port is taken) is logged
/// and the previous config runs again.
#[test]
fn sighup_with_a_config_that_cannot_start_goes_back_to_the_old_one() {
    let setup = Setup::new("reload-fallback", 1, "seal = spool");
    setup.write_segments(0..=1, 300);
    let notify = NotifySocket::bind(setup.dir.path.join("notify.sock"));
    let log = setup.dir.path.join("walship.log");
    let env = [("NOTIFY_SOCKET", notify.env())];
    let mut daemon = Daemon::start_with_env(&setup.config, fs::File::create(&log).unwrap(), &env);
    let position = setup.state.join("s/archived_position");
    wait_for_file(&position, "1\n", "stream s");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    setup.write_config(1, "seal = spool", &format!("metrics_listen = 127.0.0.1:{port}"));
    daemon.signal(libc::SIGHUP);
    let text = wait_for_log(&log, "going back to the running config");
    assert!(text.contains("metrics_listen"), "{text}");
    assert_reload_notified(&notify, 1);

    setup.write_segments(2..=3, 300);
    wait_for_file(&position, "3\n", "stream s under the previous config");
    let output = daemon.terminate();
    assert!(output.status.success(), "exit {:?}:\n{}", output.status, fs::read_to_string(&log).unwrap());
}

/// `count` reloads were notified, each as RELOADING=1 followed by READY=1.
fn assert_reload_notified(notify: &NotifySocket, count: usize) {
    notify
        .wait_for("READY=1 after a reload", |lines| lines.iter().filter(|l| *l == "READY=1").count() > count);
    let states: Vec<String> =
        notify.lines().into_iter().filter(|l| l == "READY=1" || l == "RELOADING=1").collect();
    let mut expected = vec!["READY=1".to_string()];
    for _ in 0..count {
        expected.extend(["RELOADING=1".to_string(), "READY=1".to_string()]);
    }
    assert_eq!(states, expected, "{:?}", notify.messages());
}

/// `scripts/package-deb --binary PATH --out DIR`: builds the .deb from the
/// test build; returns its path.
fn build_deb(out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package-deb");
    let built = Command::new(&script)
        .args(["--binary", env!("CARGO_BIN_EXE_walship"), "--out"])
        .arg(out)
        .output()
        .expect("run scripts/package-deb");
    assert!(built.status.success(), "scripts/package-deb failed:\n{}", stderr(&built));
    PathBuf::from(stdout(&built).trim())
}

/// `dpkg-deb ARGS DEB` output, asserting success.
fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb").args(args).arg(deb).output().expect("run dpkg-deb");
    assert!(out.status.success(), "dpkg-deb {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Whether installing a package on this machine is allowed: as root, and
/// only in CI or when asked (WALSHIP_TEST_INSTALL_DEB=1), never over an
/// installed walship.
fn may_install_packages() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    if std::env::var_os("CI").is_none() && std::env::var_os("WALSHIP_TEST_INSTALL_DEB").is_none() {
        return Err("neither CI nor WALSHIP_TEST_INSTALL_DEB=1 is set".into());
    }
    let status = Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "walship"]).output();
    if status.is_ok_and(|s| stdout(&s) == "installed") {
        return Err("a walship package is already installed here".into());
    }
    Ok(())
}

/// Run a command of the install half, asserting success; returns its output.
fn run_as_admin(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{program} {args:?} failed ({:?}):\n{printed}", out.status);
    printed
}

/// The .deb built by `scripts/package-deb` holds the binary, the unit (run
/// from /usr/bin), the sysusers entry, the example config as a conffile and
/// the state directory, with dependencies computed from the binary. As root
/// in CI it is also installed with `dpkg -i` (user created, state directory
/// owned by it, the installed unit passing `systemd-analyze verify`,
/// `walship --version` answering), removed (`dpkg -r`: the binary goes, the
/// conffile stays) and purged (`dpkg -P`: nothing left).
#[test]
fn deb_package_installs_verifies_and_removes_cleanly() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("SKIPPING the .deb test: dpkg-deb is not installed (apt-get install dpkg-dev)");
        return;
    }
    let dir = TestDir::new("deb");
    let deb = build_deb(&dir.path);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        deb.file_name().unwrap().to_str().unwrap().starts_with(&format!("walship_{version}_")),
        "{deb:?}"
    );

    let contents = dpkg_deb(&["--contents"], &deb);
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/walship"),
        ("-rw-r--r-- root/root", "./usr/lib/systemd/system/walship.service"),
        ("-rw-r--r-- root/root", "./usr/lib/sysusers.d/walship.conf"),
        ("-rw-r----- root/root", "./etc/walship/walship.conf"),
        ("drwxr-x--- root/root", "./var/lib/walship/"),
    ] {
        let line = contents.lines().find(|l| l.ends_with(&format!(" {path}")));
        let line = line.unwrap_or_else(|| panic!("{path} is not in the package:\n{contents}"));
        assert!(line.starts_with(mode), "{path}: expected {mode}, got {line}");
    }
    let control = dpkg_deb(&["--field"], &deb);
    assert!(control.contains(&format!("Version: {version}\n")), "{control}");
    assert!(control.contains("Depends: libc6 (>= "), "Depends not computed from the binary:\n{control}");
    let info = dpkg_deb(&["--info"], &deb);
    assert!(info.contains(" conffiles "), "no conffiles in the package:\n{info}");

    let extracted = dir.path.join("root");
    let out = Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&extracted).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let unit = fs::read_to_string(extracted.join("usr/lib/systemd/system/walship.service")).unwrap();
    assert_eq!(unit, UNIT.replace(EXEC_START, "ExecStart=/usr/bin/walship run -c /etc/walship/walship.conf"));
    assert_eq!(fs::read_to_string(extracted.join("etc/walship/walship.conf")).unwrap(), EXAMPLE_CONFIG);

    if let Err(why) = may_install_packages() {
        eprintln!(
            "SKIPPING the install half of the .deb test (dpkg -i, systemd-analyze verify, \
             walship --version, dpkg -r, dpkg -P): {why}; it runs as root with CI=1 or \
             WALSHIP_TEST_INSTALL_DEB=1"
        );
        return;
    }
    let deb_arg = deb.to_str().unwrap();
    run_as_admin("dpkg", &["-i", deb_arg]);
    let owner = run_as_admin("stat", &["-c", "%U:%G %a", "/var/lib/walship", "/etc/walship/walship.conf"]);
    assert_eq!(owner, "walship:walship 750\nroot:walship 640\n");
    let verified = run_as_admin(systemd_analyze(), &["verify", "/usr/lib/systemd/system/walship.service"]);
    assert!(verified.trim().is_empty(), "systemd-analyze verify warns on the installed unit:\n{verified}");
    let answered = run_as_admin("/usr/bin/walship", &["--version"]);
    assert_eq!(answered.trim(), format!("walship {version}"));

    // Remove: the program goes, the edited config (a conffile) stays.
    fs::write("/etc/walship/walship.conf", format!("{EXAMPLE_CONFIG}\n# edited\n")).unwrap();
    run_as_admin("dpkg", &["-r", "walship"]);
    assert!(!Path::new("/usr/bin/walship").exists());
    assert!(!Path::new("/usr/lib/systemd/system/walship.service").exists());
    assert!(fs::read_to_string("/etc/walship/walship.conf").unwrap().ends_with("# edited\n"));
    // Purge: nothing of it is left.
    run_as_admin("dpkg", &["-P", "walship"]);
    for gone in ["/etc/walship", "/var/lib/walship", "/usr/lib/sysusers.d/walship.conf"] {
        assert!(!Path::new(gone).exists(), "{gone} is left after dpkg -P");
    }
    let known =
        Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "walship"]).output().unwrap();
    assert!(!known.status.success() || stdout(&known) == "not-installed", "{}", stdout(&known));
}
