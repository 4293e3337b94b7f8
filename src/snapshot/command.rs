//! Running `snapshot_command`: a command line through `/bin/sh -c` (as
//! PostgreSQL runs its `archive_command`), with `WALSHIP_STREAM`,
//! `WALSHIP_POSITION`, `WALSHIP_OUTPUT` and `WALSHIP_JOB` in its
//! environment; exit 0 means the file at `WALSHIP_OUTPUT` is the snapshot.
//!
//! The command runs in a process group of its own; when it exits, times out
//! (`snapshot_timeout`) or walship stops, the whole group is killed
//! (`killpg`), so no child of the command outlives its job. If walship
//! itself dies, the shell gets SIGKILL (`PR_SET_PDEATHSIG`), and what the
//! command started in the background is found at the next start by the
//! `WALSHIP_OUTPUT` in its environment and killed ([`kill_leftovers`]). Its stderr is
//! copied into walship's log line by line, prefixed with the stream and the
//! job; its stdout is discarded. It starts with no signal blocked, whatever
//! walship's threads block.

use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How often a running command is looked at (exit, timeout, stop).
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// How long the log copier may take to drain stderr after the group is gone.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// One run of the command.
#[derive(Debug, Clone)]
pub struct CommandRun<'a> {
    /// The command line.
    pub command: &'a str,
    pub stream: &'a str,
    pub position: u64,
    pub job: u64,
    /// Where the command writes the snapshot (`WALSHIP_OUTPUT`).
    pub output: &'a Path,
    pub timeout: Duration,
}

/// Why the command did not produce a snapshot.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started.
    Spawn(io::Error),
    /// It exited with a failure status, or was killed by a signal.
    Exited(ExitStatus),
    /// It ran past `snapshot_timeout` and its process group was killed.
    TimedOut(Duration),
    /// It exited 0 but left no regular file at the output path.
    NoOutput(PathBuf),
    /// walship is stopping; the command's group was killed.
    Stopped,
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandFailure::Spawn(e) => write!(f, "the snapshot command could not be started: {e}"),
            CommandFailure::Exited(status) => match (status.code(), status.signal()) {
                (Some(code), _) => write!(
                    f,
                    "the snapshot command failed with exit status {code} (its stderr is in the log)"
                ),
                (None, Some(signal)) => write!(f, "the snapshot command was killed by signal {signal}"),
                (None, None) => write!(f, "the snapshot command failed ({status})"),
            },
            CommandFailure::TimedOut(limit) => write!(
                f,
                "the snapshot command ran longer than snapshot_timeout ({}) and was killed with its \
                 whole process group",
                crate::human::duration(*limit)
            ),
            CommandFailure::NoOutput(path) => write!(
                f,
                "the snapshot command exited 0 but left no regular file at {} ($WALSHIP_OUTPUT); \
                 it must write the snapshot there",
                path.display()
            ),
            CommandFailure::Stopped => write!(f, "walship stopped; the snapshot command was killed"),
        }
    }
}

/// Run the command to its end (or its timeout, or until `stop` says so),
/// and check that it left its output file.
pub fn run(run: &CommandRun<'_>, stop: &dyn Fn() -> bool) -> Result<(), CommandFailure> {
    let mut child = spawn(run).map_err(CommandFailure::Spawn)?;
    let group = child.id() as libc::pid_t;
    let drained = copy_stderr_to_log(&mut child, run);
    let ended = watch(&mut child, run.timeout, stop);
    // Whatever ended it, nothing of its group outlives the job.
    kill_group(group);
    let _ = child.wait();
    if let Some(drained) = drained {
        let _ = drained.recv_timeout(STDERR_DRAIN);
    }
    match ended? {
        status if !status.success() => Err(CommandFailure::Exited(status)),
        _ if std::fs::symlink_metadata(run.output).is_ok_and(|m| m.is_file()) => Ok(()),
        _ => Err(CommandFailure::NoOutput(run.output.to_path_buf())),
    }
}

fn spawn(run: &CommandRun<'_>) -> io::Result<Child> {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(run.command)
        .env("WALSHIP_STREAM", run.stream)
        .env("WALSHIP_POSITION", run.position.to_string())
        .env("WALSHIP_OUTPUT", run.output)
        .env("WALSHIP_JOB", run.job.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (prctl, sigemptyset, sigprocmask), touching no lock or allocation.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Copy the child's stderr into the log on a thread; the receiver hears
/// once it is drained.
fn copy_stderr_to_log(child: &mut Child, run: &CommandRun<'_>) -> Option<mpsc::Receiver<()>> {
    let stderr = child.stderr.take()?;
    let prefix = format!("stream {}: snapshot job {}:", run.stream, run.job);
    let (done, drained) = mpsc::channel();
    let copier = thread::Builder::new().name("walship-snapshot-log".into()).spawn(move || {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            log::info!("{prefix} {}", String::from_utf8_lossy(&line).trim_end());
        }
        let _ = done.send(());
    });
    copier.ok().map(|_| drained)
}

/// Wait for the child's exit, its timeout or `stop`.
fn watch(
    child: &mut Child,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<ExitStatus, CommandFailure> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(CommandFailure::Spawn)? {
            return Ok(status);
        }
        if stop() {
            return Err(CommandFailure::Stopped);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(CommandFailure::TimedOut(timeout));
        }
        thread::sleep(WATCH_INTERVAL.min(deadline - now));
    }
}

/// SIGKILL every process (of this user) whose environment holds
/// `WALSHIP_OUTPUT=output`: what a job's command left running when walship
/// died. Returns how many were killed.
pub fn kill_leftovers(output: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let mut wanted = b"WALSHIP_OUTPUT=".to_vec();
    wanted.extend_from_slice(output.as_os_str().as_bytes());
    let Ok(processes) = std::fs::read_dir("/proc") else { return 0 };
    let own = std::process::id();
    let mut killed = 0;
    for entry in processes.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // Unreadable (another user's, unless walship runs as root): not ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if pid != own && environ.split(|b| *b == 0).any(|var| var == wanted) {
            // SAFETY: kill only sends a signal to the process just found.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

/// SIGKILL every process of the group (none left is fine).
fn kill_group(group: libc::pid_t) {
    // SAFETY: killpg only sends a signal; `group` is the group our child
    // leads (process_group(0)), which its PID names until it is reaped.
    unsafe {
        libc::killpg(group, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::test_support::TempDir;

    fn run_script(dir: &TempDir, script: &str, timeout: Duration) -> Result<(), CommandFailure> {
        let output = dir.0.join("out");
        let _ = std::fs::remove_file(&output);
        let run = CommandRun { command: script, stream: "s", position: 42, job: 7, output: &output, timeout };
        super::run(&run, &|| false)
    }

    #[test]
    fn the_environment_reaches_the_command_and_its_output_is_the_snapshot() {
        let dir = TempDir::new("snapshot-command-env");
        let script =
            r#"printf '%s %s %s' "$WALSHIP_STREAM" "$WALSHIP_POSITION" "$WALSHIP_JOB" > "$WALSHIP_OUTPUT""#;
        run_script(&dir, script, Duration::from_secs(10)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.0.join("out")).unwrap(), "s 42 7");
    }

    #[test]
    fn failures_say_which() {
        let dir = TempDir::new("snapshot-command-fail");
        let failed = run_script(&dir, "echo broken >&2; exit 3", Duration::from_secs(10)).unwrap_err();
        assert!(failed.to_string().contains("exit status 3"), "{failed}");
        let none = run_script(&dir, "true", Duration::from_secs(10)).unwrap_err();
        assert!(matches!(none, CommandFailure::NoOutput(_)), "{none}");
        assert!(none.to_string().contains("left no regular file"), "{none}");
        let dir_not_file =
            run_script(&dir, "mkdir \"$WALSHIP_OUTPUT\"", Duration::from_secs(10)).unwrap_err();
        assert!(matches!(dir_not_file, CommandFailure::NoOutput(_)), "{dir_not_file}");
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let dir = TempDir::new("snapshot-command-timeout");
        let pid_file = dir.0.join("grandchild");
        // The grandchild writes its PID and sleeps; so does the shell.
        let script = format!("sh -c 'echo $$ > {}; sleep 60' & sleep 60", pid_file.display());
        let started = Instant::now();
        let failure = run_script(&dir, &script, Duration::from_millis(500)).unwrap_err();
        assert!(matches!(failure, CommandFailure::TimedOut(_)), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(10), "killed at the timeout");
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(process_gone(pid), "the grandchild {pid} was killed with the group");
    }

    #[test]
    fn stopping_walship_kills_the_command() {
        let dir = TempDir::new("snapshot-command-stop");
        let output = dir.0.join("out");
        let run = CommandRun {
            command: "sleep 60",
            stream: "s",
            position: 0,
            job: 1,
            output: &output,
            timeout: Duration::from_secs(60),
        };
        let stop = AtomicBool::new(false);
        let failure = thread::scope(|scope| {
            let running = scope.spawn(|| super::run(&run, &|| stop.load(Ordering::SeqCst)));
            thread::sleep(Duration::from_millis(200));
            stop.store(true, Ordering::SeqCst);
            running.join().unwrap()
        });
        assert!(matches!(failure, Err(CommandFailure::Stopped)), "{failure:?}");
    }

    /// Whether `pid` is gone (or a zombie waiting for its parent), within a
    /// few seconds.
    pub fn process_gone(pid: i32) -> bool {
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            match state.as_deref().and_then(|s| s.rsplit(')').next()).map(str::trim_start) {
                None => return true,
                Some(rest) if rest.starts_with('Z') => return true,
                Some(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }
}
