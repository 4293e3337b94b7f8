//! Shared helpers: temp directories, generated segments, configs, and
//! running the built `walship` binary as a user would.

#![allow(dead_code)]

pub mod kvapp;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join("walship-tests").join(format!("{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Deterministic content of the segment at `position`: lengths vary (some
/// segments are empty), bytes are pseudo-random, so concatenation mistakes
/// and off-by-one splits show.
pub fn segment_bytes(position: u64, max_len: usize) -> Vec<u8> {
    let len = if position % 97 == 13 { 0 } else { (position as usize * 7919) % max_len + 1 };
    let mut state = position.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Name of a generated segment, matching the `seg-{seq}.log` pattern.
pub fn segment_name(position: u64) -> String {
    format!("seg-{position:06}.log")
}

/// A stream directory, a file target, a state directory and a config file
/// tying them together.
pub struct Setup {
    pub dir: TestDir,
    pub src: PathBuf,
    pub archive: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// The `[global]` lines naming the target (file:// by default).
    pub target_lines: String,
}

impl Setup {
    /// One stream called `s` with `batch_size`, plus `extra` stream lines
    /// (e.g. "seal = spool"). Global extras go in `global_extra`.
    pub fn new(name: &str, batch_size: u64, extra: &str) -> Setup {
        Setup::with_global(name, batch_size, extra, "")
    }

    pub fn with_global(name: &str, batch_size: u64, extra: &str, global_extra: &str) -> Setup {
        let dir = TestDir::new(name);
        let src = dir.path.join("src");
        let archive = dir.path.join("archive");
        let state = dir.path.join("state");
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&archive).unwrap();
        let config = dir.path.join("walship.conf");
        let target_lines = format!("target = file://{}", archive.display());
        let setup = Setup { dir, src, archive, state, config, target_lines };
        setup.write_config(batch_size, extra, global_extra);
        setup
    }

    /// Like [`Setup::with_global`] but archiving to the target that
    /// `target_lines` (e.g. `target = s3://…` plus `endpoint = …`) configures.
    pub fn with_target(name: &str, batch_size: u64, extra: &str, target_lines: &str) -> Setup {
        let mut setup = Setup::new(name, batch_size, extra);
        setup.target_lines = target_lines.to_string();
        setup.write_config(batch_size, extra, "");
        setup
    }

    pub fn write_config(&self, batch_size: u64, extra: &str, global_extra: &str) {
        let text = format!(
            "[global]\nstate_dir = {}\n{}\npoll_interval = 10ms\nbackoff_min = 10ms\n\
             backoff_max = 50ms\n{global_extra}\n\n[stream s]\ndir = {}\npattern = seg-{{seq}}.log\n\
             batch_size = {batch_size}\n{extra}\n",
            self.state.display(),
            self.target_lines,
            self.src.display(),
        );
        fs::write(&self.config, text).unwrap();
    }

    /// Write segments `positions` with [`segment_bytes`].
    pub fn write_segments(&self, positions: std::ops::RangeInclusive<u64>, max_len: usize) {
        // Written aside and renamed in, as a spool's writer must: a daemon
        // woken by the file's creation would otherwise find it growing.
        for p in positions {
            let temp = self.src.join(format!(".{}.tmp", segment_name(p)));
            fs::write(&temp, segment_bytes(p, max_len)).unwrap();
            fs::rename(&temp, self.src.join(segment_name(p))).unwrap();
        }
    }

    /// Run `walship ARGS -c CONFIG`.
    pub fn walship(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let config = self.config.to_str().unwrap();
        all.extend(["-c", config]);
        walship(&all)
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.walship(args);
        assert_success(&out, args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The batch objects in the archive, sorted by key.
    pub fn batch_objects(&self) -> Vec<PathBuf> {
        sorted_files(&self.archive.join("s/batches"))
    }

    /// The remote manifest record objects, sorted by key.
    pub fn record_objects(&self) -> Vec<PathBuf> {
        sorted_files(&self.archive.join("s/manifest"))
    }

    pub fn journal(&self) -> PathBuf {
        self.state.join("s/manifest")
    }
}

pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'));
    files.sort();
    files
}

/// Run the built binary with `args`.
pub fn walship(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .expect("run walship")
}

/// Run `walship ARGS`, failing the test (instead of hanging it) if it has
/// not exited within `limit`. For small outputs: they stay in the pipes
/// until it exits.
pub fn walship_within(args: &[&str], limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run walship");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait for walship").is_none() {
        if started.elapsed() > limit {
            child.kill().expect("kill walship");
            let out = child.wait_with_output().expect("collect walship's output");
            panic!("walship {args:?} hung; stderr:\n{}", stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect walship's output")
}

pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "walship {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert that `restored` holds exactly the files of `original`, byte for byte.
pub fn assert_same_files(original: &Path, restored: &Path) {
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let (a, b) = (names(original), names(restored));
    assert_eq!(a, b, "file names differ between {} and {}", original.display(), restored.display());
    for name in a {
        let (x, y) = (fs::read(original.join(&name)).unwrap(), fs::read(restored.join(&name)).unwrap());
        assert!(x == y, "{name} differs after restore ({} vs {} bytes)", x.len(), y.len());
    }
}

/// Send `signal` (e.g. `libc::SIGTERM`) to a child process.
pub fn send_signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned and still hold; no memory involved.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
}

/// A `walship run` child process. Dropping it kills the process, so a test
/// that fails half-way never leaves a daemon running.
pub struct Daemon {
    child: Option<std::process::Child>,
}

impl Daemon {
    /// Start `walship run -c CONFIG`; stderr is captured when `capture_log`
    /// (keep such runs short: the pipe is read only at the end).
    pub fn start(config: &Path, capture_log: bool) -> Daemon {
        let stderr = if capture_log { std::process::Stdio::piped() } else { std::process::Stdio::null() };
        Daemon::start_with_stderr(config, stderr)
    }

    /// Start `walship run -c CONFIG` with its log going to `stderr`.
    pub fn start_with_stderr(config: &Path, stderr: impl Into<std::process::Stdio>) -> Daemon {
        Daemon::start_with_env(config, stderr, &[])
    }

    /// Start `walship run -c CONFIG` with its log going to `stderr` and
    /// `env` (name, value) added to its environment.
    pub fn start_with_env(
        config: &Path,
        stderr: impl Into<std::process::Stdio>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_walship"))
            .args(["run", "-c", config.to_str().unwrap()])
            .env_remove("AWS_ACCESS_KEY_ID")
            // Never talk to a systemd that runs the tests themselves.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start walship run");
        Daemon { child: Some(child) }
    }

    /// The process id.
    pub fn id(&mut self) -> u32 {
        self.child().id()
    }

    /// Send `signal` (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&mut self, signal: i32) {
        send_signal(self.child(), signal);
    }

    fn child(&mut self) -> &mut std::process::Child {
        self.child.as_mut().expect("daemon still owned")
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, and wait for the exit status and captured log.
    pub fn terminate(mut self) -> Output {
        send_signal(self.child(), libc::SIGTERM);
        self.child.take().unwrap().wait_with_output().unwrap()
    }

    /// The exit status, if it has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child().try_wait().unwrap()
    }

    /// Wait for it to exit by itself (it should, e.g. on a startup error).
    pub fn wait(mut self) -> Output {
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Store `image` as stream `s`'s snapshot at `position` without running a
/// job, through walship's own API as a job stores one: the object, then
/// its remote record, then the local journal (no daemon may run).
pub fn store_snapshot(setup: &Setup, position: u64, image: &str) {
    use walship::manifest::{Encoding, Entry, Journal, SnapshotRecord, StoredObject, StreamRules};
    use walship::target::{Upload, keys};
    let config = walship::config::load(&setup.config).unwrap_or_else(|e| panic!("{e}"));
    let target = walship::target::open(&config.global).unwrap_or_else(|e| panic!("{e}"));
    let stream = config.stream("s").expect("stream s");
    let rules = StreamRules::new(&stream.name, &stream.naming);
    let bytes = image.as_bytes();
    let (size, crc32) = (bytes.len() as u64, crc32fast::hash(bytes));
    let key = keys::snapshot_key("s", position);
    target.put(&key, &Upload::pieces(&[bytes], size, crc32)).unwrap_or_else(|e| panic!("{e}"));
    let stored = StoredObject { size, crc32, encoding: Encoding::Identity };
    let entry = Entry::Snapshot(SnapshotRecord { position, key, size, crc32, stored });
    walship::catalog::put_remote_entry(target.as_ref(), &rules, &entry).unwrap_or_else(|e| panic!("{e}"));
    let (mut journal, _) = Journal::open(&setup.journal(), &rules, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    journal.append_entries(&[entry]).unwrap_or_else(|e| panic!("{e}"));
}
