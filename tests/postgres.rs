//! A real PostgreSQL (Debian's package, run as a non-root user on a loopback
//! port) archiving through `walship push` into Garage and recovering
//! through `walship fetch`: point-in-time recovery to exactly the rows of a
//! target time, a promotion to a new timeline archived beside the old one,
//! and a second recovery following that timeline.
//!
//! Skipped (with a note) when PostgreSQL or Garage is missing, unless
//! `WALSHIP_REQUIRE_POSTGRES` is set, as `scripts/test` does after
//! installing the `postgresql` package. 1 MiB WAL segments and a few
//! thousand pgbench transactions keep it to well under a minute.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::s3::{S3Env, unique_prefix};
use crate::util::*;

/// The newest PostgreSQL server under /usr/lib/postgresql (Debian's
/// layout), or `WALSHIP_TEST_PG_BIN`.
fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WALSHIP_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// PostgreSQL refuses to run as root: as root, everything PostgreSQL (and
/// the walship it runs) does runs as this user.
const PG_USER: &str = "postgres";

/// One test's PostgreSQL installation, user and scratch directory.
struct Pg {
    bin: PathBuf,
    /// Run as this user (through runuser) when the test runs as root.
    user: Option<&'static str>,
    dir: PathBuf,
    walship: PathBuf,
}

impl Pg {
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.current_dir(&self.dir).env_remove("PGDATA");
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self.command(program).args(args).output().expect("run a PostgreSQL program");
        assert!(out.status.success(), "{program} {args:?} failed:\n{}{}", stdout(&out), stderr(&out));
        out
    }

    /// One SQL statement's result, unaligned, tuples only.
    fn sql(&self, port: u16, statement: &str) -> String {
        let port = port.to_string();
        let dir = self.dir.to_str().unwrap();
        let out = self.run("psql", &["-X", "-h", dir, "-p", &port, "-d", "postgres", "-At", "-c", statement]);
        stdout(&out).trim().to_string()
    }

    /// `walship ARGS -c CONFIG` as the PostgreSQL user (through setpriv,
    /// which execs: the child is walship itself, so signals reach it).
    fn walship_command(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = match self.user {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", user, "--regid", user, "--init-groups", "--"]).arg(&self.walship);
                c
            }
            None => Command::new(&self.walship),
        };
        command.args(args).arg("-c").arg(config).env_remove("AWS_ACCESS_KEY_ID").current_dir(&self.dir);
        command
    }

    fn walship(&self, config: &Path, args: &[&str]) -> Output {
        self.walship_command(config, args).output().expect("run walship")
    }

    fn start(&self, data: &Path, port: u16) {
        let log = self.dir.join(format!("{}.log", data.file_name().unwrap().to_str().unwrap()));
        let out = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "120", "start"])
            .arg("-o")
            .arg(format!("-p {port}"))
            .output()
            .unwrap();
        let log_text = fs::read_to_string(&log).unwrap_or_default();
        assert!(out.status.success(), "pg_ctl start failed:\n{}{}\n{log_text}", stdout(&out), stderr(&out));
    }

    fn stop(&self, data: &Path) {
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    /// Wait until `done` (checked every 100 ms) or fail after a minute.
    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Switch to a new WAL segment and wait until the one switched from is
    /// archived (`pg_stat_archiver`), failing on any failed archive_command.
    fn switch_and_archive(&self, port: u16) {
        let switched = self.sql(port, "SELECT pg_walfile_name(pg_switch_wal())");
        self.wait(&format!("{switched} archived"), || {
            let row =
                self.sql(port, "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver");
            let (last, failed) = row.split_once('|').unwrap();
            assert_eq!(failed, "0", "archive_command failed; see the server log in {}", self.dir.display());
            last >= switched.as_str()
        });
    }
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Give `path` (recursively) to `user`.
fn chown(path: &Path, user: &str) {
    let out = Command::new("chown").args(["-R", &format!("{user}:")]).arg(path).output().unwrap();
    assert!(out.status.success(), "chown: {}", stderr(&out));
}

/// The walship config: the stream `pg` over `data`'s pg_wal, with the
/// base backup as its snapshot command.
fn write_config(path: &Path, state: &Path, target_lines: &str, data: &Path, snapshot_command: &str) {
    let text = format!(
        "[global]\nstate_dir = {}\n{target_lines}poll_interval = 100ms\n\n[stream pg]\ndir = {}/pg_wal\n\
         naming = postgres\nwal_segment_size = 1MiB\nbatch_size = 16\nsnapshot_command = {snapshot_command}\n",
        state.display(),
        data.display()
    );
    fs::write(path, text).unwrap();
}

/// The lines appended to a cluster's postgresql.conf.
fn server_settings(pg: &Pg, config: &Path, archive: bool) -> String {
    let walship = pg.walship.display();
    let config = config.display();
    let archive_lines = if archive {
        format!("archive_mode = on\narchive_command = '{walship} push -c {config} -s pg %p'\n")
    } else {
        "archive_mode = off\n".into()
    };
    format!(
        "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
         wal_level = replica\nmax_wal_senders = 2\n{archive_lines}\
         restore_command = '{walship} fetch -c {config} -s pg %f %p'\n",
        pg.dir.display()
    )
}

fn append(path: &Path, text: &str) {
    let old = fs::read_to_string(path).unwrap();
    fs::write(path, format!("{old}\n{text}")).unwrap();
}

/// Row counts of the tables the test writes.
fn counts(pg: &Pg, port: u16) -> String {
    pg.sql(port, "SELECT (SELECT count(*) FROM marks) || '/' || (SELECT count(*) FROM pgbench_history)")
}

/// The five steps, against a real PostgreSQL and Garage.
#[test]
fn postgres_point_in_time_recovery_and_a_new_timeline_through_walship() {
    let Some(bin) = postgres_bin() else {
        assert!(
            std::env::var_os("WALSHIP_REQUIRE_POSTGRES").is_none(),
            "WALSHIP_REQUIRE_POSTGRES is set but no PostgreSQL is installed; run scripts/test"
        );
        eprintln!("skipping: no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)");
        return;
    };
    let Some(s3) = S3Env::get() else { return };
    let started = Instant::now();
    let scratch = TestDir::new("postgres");
    // SAFETY: geteuid(2) has no preconditions.
    let user = (unsafe { libc::geteuid() } == 0).then_some(PG_USER);
    let walship = scratch.path.join("walship");
    fs::copy(env!("CARGO_BIN_EXE_walship"), &walship).unwrap();
    fs::set_permissions(&walship, fs::Permissions::from_mode(0o755)).unwrap();
    let pg = Pg { bin, user, dir: scratch.path.clone(), walship };
    let target_lines = s3.target_lines(&scratch.path, &unique_prefix("postgres"));
    let state = scratch.path.join("state");
    let (data1, data2, data3) =
        (scratch.path.join("data1"), scratch.path.join("data2"), scratch.path.join("data3"));
    let (config1, config2) = (scratch.path.join("walship1.conf"), scratch.path.join("walship2.conf"));
    let port1 = free_port();
    let sock = pg.dir.to_str().unwrap().to_string();
    // The base backup, as a walship snapshot: the tar of pg_basebackup.
    let base_backup_command = format!(
        "{} -h {sock} -p {port1} -D - -Ft -X none -c fast > \"$WALSHIP_OUTPUT\"",
        pg.bin.join("pg_basebackup").display()
    );
    write_config(&config1, &state, &target_lines, &data1, &base_backup_command);
    write_config(&config2, &state, &target_lines, &data2, &base_backup_command);
    if let Some(user) = user {
        chown(&scratch.path, user);
    }

    // 1. A cluster archiving through walship push, while the daemon runs
    // on the stream (push hands it each segment).
    let daemon_log = fs::File::create(scratch.path.join("daemon.log")).unwrap();
    let mut daemon = pg.walship_command(&config1, &["run"]).stderr(daemon_log).spawn().unwrap();
    pg.wait("the daemon's control socket", || state.join(".walship-control").exists());
    let data = data1.to_str().unwrap();
    pg.run("initdb", &["-D", data, "--wal-segsize=1", "-A", "trust", "-U", "postgres", "-E", "UTF8"]);
    append(&data1.join("postgresql.conf"), &server_settings(&pg, &config1, true));
    pg.start(&data1, port1);

    eprintln!("postgres test: step 1 initdb and start done at {:.1} s", started.elapsed().as_secs_f64());
    // 2. Load, a base backup, more load.
    let port = port1.to_string();
    pg.run("pgbench", &["-h", &sock, "-p", &port, "-i", "-s", "1", "-q", "postgres"]);
    pg.sql(port1, "CREATE TABLE marks (id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
    pg.run("pgbench", &["-h", &sock, "-p", &port, "-t", "300", "-c", "2", "-n", "postgres"]);
    let snapshot = pg.walship(&config1, &["snapshot", "-s", "pg"]);
    assert_success(&snapshot, &["snapshot"]);
    // Restored as `walship restore` gives a snapshot back: up to its
    // position, the snapshot file alone.
    let list = stdout(&pg.walship(&config1, &["list", "-s", "pg"]));
    let key =
        list.split_whitespace().find(|word| word.starts_with("pg/snapshots/")).expect("a snapshot listed");
    let position = key.trim_start_matches("pg/snapshots/");
    let restored = scratch.path.join("restored-snapshot");
    let out = pg.walship(
        &config1,
        &["restore", "-s", "pg", "--to", restored.to_str().unwrap(), "--position", &format!("0x{position}")],
    );
    assert_success(&out, &["restore", "the snapshot"]);
    let base_backup = restored.join(format!("walship-snapshot-{position}"));
    assert!(base_backup.is_file(), "{}", stdout(&out));
    pg.run("pgbench", &["-h", &sock, "-p", &port, "-t", "300", "-c", "2", "-n", "postgres"]);
    pg.sql(port1, "INSERT INTO marks SELECT FROM generate_series(1, 1000)");

    eprintln!("postgres test: step 2 load and base backup done at {:.1} s", started.elapsed().as_secs_f64());
    // 3. A target time and the rows at it; more load after it.
    std::thread::sleep(Duration::from_millis(1100));
    let target_time = pg.sql(port1, "SELECT clock_timestamp()");
    let at_target = counts(&pg, port1);
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql(port1, "INSERT INTO marks SELECT FROM generate_series(1, 500)");
    pg.run("pgbench", &["-h", &sock, "-p", &port, "-t", "200", "-c", "2", "-n", "postgres"]);
    assert_ne!(counts(&pg, port1), at_target);
    pg.switch_and_archive(port1);
    pg.stop(&data1);
    send_signal(&daemon, libc::SIGTERM);
    assert!(daemon.wait().unwrap().success(), "see {}/daemon.log", scratch.path.display());

    eprintln!(
        "postgres test: step 3 target time, load, archive done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // 4. Restore the base backup, recover to the target time: exactly its rows.
    let restore = |into: &Path, settings: &str| {
        fs::create_dir(into).unwrap();
        fs::set_permissions(into, fs::Permissions::from_mode(0o700)).unwrap();
        let out = Command::new("tar")
            .args(["-xf", base_backup.to_str().unwrap(), "-C", into.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", stderr(&out));
        append(&into.join("postgresql.conf"), settings);
        fs::write(into.join("recovery.signal"), "").unwrap();
        if let Some(user) = user {
            chown(into, user);
        }
    };
    let to_time = format!(
        "{}recovery_target_time = '{target_time}'\nrecovery_target_action = 'promote'\n",
        server_settings(&pg, &config2, true)
    );
    restore(&data2, &to_time);
    let port2 = free_port();
    pg.start(&data2, port2);
    pg.wait("the recovery to end", || pg.sql(port2, "SELECT pg_is_in_recovery()") == "f");
    assert_eq!(counts(&pg, port2), at_target, "recovered rows at {target_time}");

    eprintln!(
        "postgres test: step 4 point-in-time recovery done at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // 5. The promotion made timeline 2: its WAL and history file are
    // archived beside timeline 1's, without collision.
    let wal_file = "SELECT pg_walfile_name(pg_current_wal_lsn())";
    assert!(pg.sql(port2, wal_file).starts_with("00000002"), "now on timeline 2");
    pg.sql(port2, "INSERT INTO marks SELECT FROM generate_series(1, 700)");
    pg.run("pgbench", &["-h", &sock, "-p", &port2.to_string(), "-t", "200", "-c", "2", "-n", "postgres"]);
    pg.switch_and_archive(port2);
    let on_timeline_2 = counts(&pg, port2);
    pg.stop(&data2);
    let list = stdout(&pg.walship(&config2, &["list", "-s", "pg"]));
    assert!(list.contains("timeline 1 ends and timeline 2 begins"), "{list}");
    assert!(list.contains("pg/batches/00000100") && list.contains("pg/batches/00000200"), "{list}");
    let history = scratch.path.join("00000002.history");
    let out = pg.walship(&config2, &["fetch", "-s", "pg", "00000002.history", history.to_str().unwrap()]);
    assert_success(&out, &["fetch", "00000002.history"]);

    eprintln!("postgres test: step 5 timeline 2 archived done at {:.1} s", started.elapsed().as_secs_f64());
    // A second recovery from the same base backup follows the latest
    // timeline to the end of the archive.
    let follow = format!("{}recovery_target_timeline = 'latest'\n", server_settings(&pg, &config2, false));
    restore(&data3, &follow);
    let port3 = free_port();
    pg.start(&data3, port3);
    pg.wait("the second recovery to end", || pg.sql(port3, "SELECT pg_is_in_recovery()") == "f");
    assert_eq!(counts(&pg, port3), on_timeline_2, "rows at the end of timeline 2");
    assert!(pg.sql(port3, wal_file).starts_with("00000003"), "promoted after timeline 2");
    pg.stop(&data3);
    eprintln!("postgres test: {:.1} s", started.elapsed().as_secs_f64());
}
