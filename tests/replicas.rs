//! `replicas = on` through the built binary against Garage: two and three
//! daemons, each with its own state directory and its own copy of the same
//! stream (the same segments arriving on each, as on a pair of gateways),
//! each talking to Garage through its own proxy so the test counts who
//! uploads. One offloads at a time; a SIGKILLed offloader is replaced
//! within three heartbeat intervals plus a poll, the archive ends complete
//! and contiguous with nothing sent twice, `verify --deep` passes and a
//! restore is byte-identical; a lagging node is never elected; a node whose
//! clock is minutes off (libfaketime) changes nothing. The offloader
//! compacts the manifest every two records (`manifest_compaction = 2`), so
//! standbys follow, and take over, a compacted archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::faultproxy::{FaultProxy, Kind};
use crate::s3::{S3Env, unique_prefix};
use crate::util::*;

const HEARTBEAT: Duration = Duration::from_secs(1);

/// libfaketime, for a node whose clock is off (`apt-get install faketime`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// One node: its copy of the stream, state, config, proxy and daemon.
struct Replica {
    id: &'static str,
    config: PathBuf,
    src: PathBuf,
    /// Between the node and Garage, counting its requests (S3 tests).
    proxy: Option<FaultProxy>,
    daemon: Option<Daemon>,
    /// A clock offset for libfaketime (`+7m`), if any.
    skew: Option<&'static str>,
}

impl Replica {
    fn new(dir: &Path, env: &S3Env, prefix: &str, id: &'static str, skew: Option<&'static str>) -> Replica {
        let proxy = FaultProxy::start(&env.endpoint);
        fs::create_dir_all(dir.join(id)).unwrap();
        let target = env.target_lines(&dir.join(id), prefix).replace(&env.endpoint, &proxy.endpoint());
        Replica::with_target(dir, &target, id, skew, Some(proxy), "1s")
    }

    /// A node archiving to `target` (its `[global]` lines), with heartbeats
    /// every `interval`; `proxy`, when there is one, is what it talks to.
    fn with_target(
        dir: &Path,
        target: &str,
        id: &'static str,
        skew: Option<&'static str>,
        proxy: Option<FaultProxy>,
        interval: &str,
    ) -> Replica {
        let home = dir.join(id);
        let src = home.join("src");
        fs::create_dir_all(&src).unwrap();
        let text = format!(
            "[global]\nstate_dir = {}\n{target}\npoll_interval = 50ms\nbackoff_min = 10ms\nbackoff_max = 100ms\n\
             node_id = {id}\nheartbeat_interval = {interval}\n\n[stream s]\ndir = {}\npattern = seg-{{seq}}.log\n\
             seal = spool\nbatch_size = 2\non_archived = delete\nreplicas = on\nmanifest_compaction = 2\n\
             snapshot_command = echo snapshot > \"$WALSHIP_OUTPUT\"\n",
            home.join("state").display(),
            src.display()
        );
        let config = home.join("walship.conf");
        fs::write(&config, text).unwrap();
        Replica { id, config, src, proxy, daemon: None, skew }
    }

    fn start(&mut self) {
        let mut env = vec![];
        if let Some(offset) = self.skew {
            assert!(Path::new(FAKETIME_LIB).exists(), "{FAKETIME_LIB} is missing: apt-get install faketime");
            env = vec![
                ("LD_PRELOAD", FAKETIME_LIB),
                ("FAKETIME", offset),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ];
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        self.daemon = Some(Daemon::start_with_env(&self.config, log, &env));
    }

    /// The daemon's log (kept in the test directory when a test fails).
    fn log(&self) -> PathBuf {
        self.config.with_file_name("walship.log")
    }

    fn kill(&mut self) {
        self.daemon.take().expect("running").kill();
    }

    fn walship(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-c", self.config.to_str().unwrap()]);
        let out = walship(&all);
        assert_success(&out, &all);
        stdout(&out)
    }

    /// Who this node says offloads the stream (from `status --json`).
    fn offloader(&self) -> Option<String> {
        let json = self.walship(&["status", "--json"]);
        let (_, rest) = json.split_once("\"offloader\":\"")?;
        Some(rest.split('"').next()?.to_string())
    }

    fn archived(&self) -> Option<u64> {
        let state = self.config.parent().unwrap().join("state/s/archived_position");
        fs::read_to_string(state).ok()?.trim().parse().ok()
    }

    /// Batch objects this node PUT (keys, in order).
    fn batch_puts(&self) -> Vec<String> {
        self.proxy
            .as_ref()
            .expect("an S3 node")
            .seen(Kind::PutObject)
            .into_iter()
            .filter(|line| line.starts_with("PUT ") && line.contains("/s/batches/"))
            .map(|line| line.split('?').next().unwrap_or_default().to_string())
            .collect()
    }
}

/// Write segment `position` into every copy (atomically: spool streams
/// seal files on sight) and into `expected`.
fn arrive(replicas: &[&Replica], expected: &Path, position: u64) {
    let bytes = segment_bytes(position, 3000);
    for replica in replicas {
        let temp = replica.src.join(format!(".incoming-{position}"));
        fs::write(&temp, &bytes).unwrap();
        fs::rename(&temp, replica.src.join(segment_name(position))).unwrap();
    }
    fs::write(expected.join(segment_name(position)), &bytes).unwrap();
}

fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The archive holds every position `0..=last` once, in contiguous
/// batches; `verify --deep` passes; a restore equals `expected`.
fn assert_archive_complete(replica: &Replica, expected: &Path, last: u64, dir: &Path) {
    let list = replica.walship(&["list", "-s", "s"]);
    let mut next = 0;
    for line in list.lines().skip(2) {
        let range = line.split_whitespace().next().unwrap_or_default();
        let (first, end) = range.split_once("..").unwrap_or_else(|| panic!("{line:?}"));
        let (first, end): (u64, u64) = (first.parse().unwrap(), end.parse().unwrap());
        assert_eq!(first, next, "not contiguous at {line:?}:\n{list}");
        next = end + 1;
    }
    assert_eq!(next, last + 1, "archive ends at {}:\n{list}", next as i64 - 1);
    assert!(list.contains(", 0 gaps,") && !list.contains("GAP"), "{list}");
    replica.walship(&["verify", "-s", "s", "--deep"]);
    let restored = dir.join(format!("restored-{}", replica.id));
    replica.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(expected, &restored);
}

/// Two gateways, one with its clock 7 minutes ahead: n1 offloads alone,
/// then the pair elects one of them (the stream's hash picks) while the
/// other stands by and follows; the offloader is SIGKILLed while segments
/// keep arriving; the standby takes over in time, resumes without sending
/// again what was stored, and the archive ends complete.
#[test]
fn two_replicas_one_offloader_and_a_takeover_after_sigkill() {
    let Some(env) = S3Env::get() else { return };
    let dir = TestDir::new("replicas-two");
    let prefix = unique_prefix("replicas-two");
    let expected = dir.path.join("expected");
    fs::create_dir_all(&expected).unwrap();
    let mut nodes = [
        Replica::new(&dir.path, &env, &prefix, "n1", None),
        Replica::new(&dir.path, &env, &prefix, "n2", Some("+7m")),
    ];

    arrive(&[&nodes[0], &nodes[1]], &expected, 0);
    nodes[0].start();
    wait_until("n1 elected alone", Duration::from_secs(20), || nodes[0].offloader().as_deref() == Some("n1"));
    nodes[1].start();
    // Both see both alive: n2's clock, 7 minutes ahead, makes n1's
    // heartbeats look no older to it (ages are the store's).
    let agreed = || {
        let (a, b) = (nodes[0].offloader(), nodes[1].offloader());
        a.is_some()
            && a == b
            && nodes.iter().all(|n| n.walship(&["status"]).contains("among n1,n2, 2 caught up"))
    };
    wait_until("both agree", Duration::from_secs(20), agreed);
    let offloader = nodes[0].offloader().unwrap();
    let (off, standby) = if offloader == "n1" { (0, 1) } else { (1, 0) };
    std::thread::sleep(HEARTBEAT * 2); // the loser's in-flight upload, if any, ends
    let standby_puts = nodes[standby].batch_puts().len();

    for position in 1..=8 {
        arrive(&[&nodes[0], &nodes[1]], &expected, position);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("the offloader archived 8", Duration::from_secs(20), || nodes[off].archived() == Some(8));
    // The standby follows: its position, and its own copies acknowledged.
    wait_until("the standby following to 8", Duration::from_secs(20), || {
        nodes[standby].archived() == Some(8)
    });
    wait_until("the standby's copies deleted", Duration::from_secs(20), || {
        sorted_files(&nodes[standby].src).is_empty()
    });
    assert_eq!(nodes[standby].batch_puts().len(), standby_puts, "the standby uploaded");
    let status = nodes[standby].walship(&["status"]);
    let (o, s) = (nodes[off].id, nodes[standby].id);
    let line =
        format!("offloader:          {o} offloads; {s} stands by (elected {o} among n1,n2, 2 caught up)");
    assert!(status.contains(&line), "{status}");
    let json = nodes[off].walship(&["status", "--json"]);
    assert!(json.contains(&format!("\"node\":\"{o}\",\"offloader\":\"{o}\"")), "{json}");

    // Segments keep arriving; the offloader dies in the middle.
    let mut killed_at = Instant::now();
    for position in 9..=30 {
        arrive(&[&nodes[0], &nodes[1]], &expected, position);
        if position == 15 {
            nodes[off].kill();
            killed_at = Instant::now();
        }
        if nodes[standby].offloader().as_deref() == Some(s) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let copies = [&nodes[standby]];
    wait_until("the standby elected", Duration::from_secs(20), || {
        nodes[standby].offloader().as_deref() == Some(s)
    });
    let took = killed_at.elapsed();
    // Three intervals plus one poll, and the margin Last-Modified's whole
    // seconds need.
    assert!(took <= HEARTBEAT * 3 + Duration::from_millis(2500), "takeover took {took:?}");
    let last_written = (9..=30).rev().find(|p| expected.join(segment_name(*p)).exists()).unwrap();
    for position in last_written + 1..=30 {
        arrive(&copies, &expected, position);
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until("30 archived", Duration::from_secs(30), || nodes[standby].archived() == Some(30));

    // Nothing stored was sent again (at most the batch in flight when the
    // offloader was killed).
    let (puts_off, puts_new) =
        (nodes[off].batch_puts(), nodes[standby].batch_puts()[standby_puts..].to_vec());
    let again: Vec<&String> = puts_new.iter().filter(|key| puts_off.contains(key)).collect();
    assert!(again.len() <= 1, "sent twice: {again:?}\nbefore: {puts_off:?}\nafter: {puts_new:?}");
    let mut unique = puts_new.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), puts_new.len(), "the new offloader sent a batch twice: {puts_new:?}");
    assert_archive_complete(&nodes[standby], &expected, 30, &dir.path);
}

/// A clean stop hands over at once: the stopping offloader's last
/// heartbeat says `state=stopped`, so its peer elects itself at its next
/// round (within an interval, not three), and `fleet` shows it stopped.
/// On a file target: no S3 needed.
#[test]
fn a_clean_stop_hands_over_within_an_interval() {
    let dir = TestDir::new("replicas-stop");
    let archive = dir.path.join("archive");
    fs::create_dir_all(&archive).unwrap();
    let target = format!("target = file://{}", archive.display());
    let mut nodes = [
        Replica::with_target(&dir.path, &target, "n1", None, None, "2s"),
        Replica::with_target(&dir.path, &target, "n2", None, None, "2s"),
    ];
    let expected = dir.path.join("expected");
    fs::create_dir_all(&expected).unwrap();
    arrive(&[&nodes[0], &nodes[1]], &expected, 0);
    nodes[0].start();
    nodes[1].start();
    wait_until("both agree", Duration::from_secs(20), || {
        let first = nodes[0].offloader();
        first.is_some()
            && nodes[1].offloader() == first
            && nodes[0].walship(&["status"]).contains("among n1,n2, 2 caught up")
    });
    let offloader = nodes[0].offloader().unwrap();
    let (off, standby) = if offloader == "n1" { (0, 1) } else { (1, 0) };
    // A standby takes no snapshot and prunes nothing: its offloader does.
    for command in [["snapshot", "-s", "s"], ["prune", "-s", "s"]] {
        let mut args = command.to_vec();
        args.extend(["-c", nodes[standby].config.to_str().unwrap()]);
        let out = walship(&args);
        assert!(!out.status.success(), "{command:?} on the standby succeeded");
        assert!(stderr(&out).contains("this node stands by for the replicated stream"), "{}", stderr(&out));
    }
    let output = nodes[off].daemon.take().unwrap().terminate();
    assert!(output.status.success(), "{:?}", output.status);
    let stopped_at = Instant::now();
    let new_id = nodes[standby].id;
    wait_until("the handover", Duration::from_secs(20), || {
        nodes[standby].offloader().as_deref() == Some(new_id)
    });
    let took = stopped_at.elapsed();
    // One interval (2 s) plus a poll, well before the 6 s a silent node
    // takes to turn stale.
    assert!(took < Duration::from_millis(4500), "handover took {took:?}");
    let fleet = nodes[standby].walship(&["fleet"]);
    let line = fleet.lines().find(|l| l.contains(&format!(" {offloader} "))).unwrap();
    assert!(line.starts_with("stopped "), "{fleet}");
    for position in 1..=2 {
        arrive(&[&nodes[standby]], &expected, position);
    }
    wait_until("2 archived by the new offloader", Duration::from_secs(20), || {
        nodes[standby].archived() == Some(2)
    });
}

/// Three nodes, one lagging beyond max_offloader_lag (16): it is never
/// elected, not even when the offloader dies; one of the caught-up nodes
/// offloads at a time.
#[test]
fn three_replicas_never_elect_the_lagging_one() {
    let Some(env) = S3Env::get() else { return };
    let dir = TestDir::new("replicas-three");
    let prefix = unique_prefix("replicas-three");
    let expected = dir.path.join("expected");
    fs::create_dir_all(&expected).unwrap();
    let mut nodes: Vec<Replica> =
        ["n1", "n2", "n3"].into_iter().map(|id| Replica::new(&dir.path, &env, &prefix, id, None)).collect();
    // n3's copy stops at 3 while the others receive up to 40.
    for position in 0..=40 {
        let copies: Vec<&Replica> = nodes.iter().filter(|n| position <= 3 || n.id != "n3").collect();
        arrive(&copies, &expected, position);
    }
    for node in &mut nodes {
        node.start();
        wait_until("a first election", Duration::from_secs(20), || node.offloader().is_some());
    }
    wait_until("everyone agrees", Duration::from_secs(20), || {
        let first = nodes[0].offloader();
        first.is_some() && nodes.iter().all(|n| n.offloader() == first)
    });
    let offloader = nodes[0].offloader().expect("elected");
    std::thread::sleep(HEARTBEAT * 2); // a loser's in-flight upload, if any, ends
    let puts_before: Vec<usize> = nodes.iter().map(|n| n.batch_puts().len()).collect();
    assert_ne!(offloader, "n3");
    let elected = nodes.iter().position(|n| n.id == offloader).unwrap();
    wait_until("40 archived", Duration::from_secs(30), || nodes[elected].archived() == Some(40));
    let status = nodes[2].walship(&["status"]);
    assert!(status.contains("among n1,n2,n3, 2 caught up"), "{status}");
    for (index, node) in nodes.iter().enumerate().filter(|(_, n)| n.id != offloader) {
        assert_eq!(node.batch_puts().len(), puts_before[index], "{} uploaded while standing by", node.id);
    }

    // The offloader dies: the other caught-up node takes over; n3 never.
    nodes[elected].kill();
    let other = nodes.iter().position(|n| n.id != offloader && n.id != "n3").unwrap();
    let other_id = nodes[other].id;
    wait_until("takeover", Duration::from_secs(20), || nodes[other].offloader().as_deref() == Some(other_id));
    for position in 41..=46 {
        let copies: Vec<&Replica> = nodes.iter().filter(|n| n.id != "n3").collect();
        arrive(&copies, &expected, position);
    }
    wait_until("46 archived", Duration::from_secs(30), || nodes[other].archived() == Some(46));
    assert!(nodes[2].batch_puts().is_empty(), "the lagging node uploaded {:?}", nodes[2].batch_puts());
    wait_until("n3 seeing the new offloader", Duration::from_secs(10), || {
        nodes[2].offloader().as_deref() == Some(other_id)
    });
    assert!(nodes[2].batch_puts().is_empty(), "the lagging node uploaded {:?}", nodes[2].batch_puts());
    assert_archive_complete(&nodes[other], &expected, 46, &dir.path);
}

/// `run --once` takes part in the election (file target): a node's run
/// writes its heartbeat, reads its peer's and archives only when elected;
/// otherwise it stands by for the run, follows the offloader's records
/// (its position, its copies deleted) and exits 0, saying who offloads and
/// why. Once the offloader's heartbeat is stale, the other node's next run
/// archives.
#[test]
fn run_once_archives_only_on_the_elected_node() {
    let dir = TestDir::new("replicas-once");
    let archive = dir.path.join("archive");
    fs::create_dir_all(&archive).unwrap();
    let target = format!("target = file://{}", archive.display());
    let nodes = [
        Replica::with_target(&dir.path, &target, "n1", None, None, "2s"),
        Replica::with_target(&dir.path, &target, "n2", None, None, "2s"),
    ];
    let expected = dir.path.join("expected");
    fs::create_dir_all(&expected).unwrap();
    let stored = || -> Vec<(PathBuf, std::time::SystemTime)> {
        ["s/batches", "s/manifest"]
            .iter()
            .flat_map(|sub| sorted_files(&archive.join(sub)))
            .map(|path| {
                let modified = fs::metadata(&path).unwrap().modified().unwrap();
                (path, modified)
            })
            .collect()
    };
    for position in 0..=3 {
        arrive(&[&nodes[0], &nodes[1]], &expected, position);
    }
    // n2 runs alone first: elected among itself.
    let out = nodes[1].walship(&["run", "--once"]);
    assert!(out.contains("stream s: this node (n2) offloads (elected n2 among n2, 1 caught up)"), "{out}");
    assert_eq!(nodes[1].archived(), Some(3));

    // n1 sees both; the stream's hash elects n2: n1 stands by and follows.
    let before = stored();
    let out = nodes[0].walship(&["run", "--once"]);
    assert_eq!(
        out,
        "stream s: stood by (elected n2 among n1,n2, 2 caught up); the archive holds position 3\n"
    );
    assert_eq!(stored(), before, "the standby wrote to the archive");
    assert_eq!(nodes[0].archived(), Some(3), "the standby follows");
    assert!(sorted_files(&nodes[0].src).is_empty(), "the standby deletes its archived copies (on_archived)");
    let status = nodes[0].walship(&["status"]);
    assert!(status.contains("n2 offloads; n1 stands by (elected n2 among n1,n2, 2 caught up)"), "{status}");

    // New segments: the standby leaves them to the offloader.
    for position in 4..=5 {
        arrive(&[&nodes[0], &nodes[1]], &expected, position);
    }
    let out = nodes[0].walship(&["run", "--once"]);
    assert!(out.starts_with("stream s: stood by (elected n2 among n1,n2"), "{out}");
    assert_eq!(stored(), before, "the standby archived");
    assert_eq!(sorted_files(&nodes[0].src).len(), 2);
    let out = nodes[1].walship(&["run", "--once"]);
    assert!(out.starts_with("stream s: archived 2 batches (2 segments"), "{out}");
    nodes[0].walship(&["run", "--once"]);
    assert_eq!(nodes[0].archived(), Some(5));
    assert!(sorted_files(&nodes[0].src).is_empty());

    // n2 runs no more: once its heartbeat is stale (3 intervals), n1 archives.
    let fleet = nodes[0].walship(&["fleet"]);
    assert!(fleet.contains("2 heartbeats of 1 stream on 2 nodes: 0 stale"), "{fleet}");
    std::thread::sleep(Duration::from_secs(7));
    arrive(&[&nodes[0]], &expected, 6);
    let out = nodes[0].walship(&["run", "--once"]);
    assert!(out.contains("stream s: this node (n1) offloads (elected n1 among n1, 1 caught up)"), "{out}");
    assert!(out.starts_with("stream s: archived 1 batch (1 segment"), "{out}");
    assert_archive_complete(&nodes[0], &expected, 6, &dir.path);
}

/// Two nodes that both believe they are elected (a handover's moment, here
/// for the whole test), through the library: each archives its own copy of
/// the same stream into
/// one file target, committing records and compacting them (every two
/// records) at the same time, while segments keep arriving, and a reader
/// that knows nothing (an empty state directory) loads the remote manifest
/// again and again. The reader always gets a complete manifest (contiguous
/// from 0, never shorter than before); at the end the archive holds every
/// position once, each node's journal says the same, and a fresh rebuild
/// too. (Found: a file target's listing failed when a compaction step of
/// the other node deleted a record object between reading the directory
/// and looking at the file.) Batches are full here: two nodes cutting a
/// short batch at different positions would record overlapping ranges,
/// which the handover grace (`fleet::member`) keeps them from.
fn two_offloaders_compacting_at_once(name: &str, last: u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use walship::catalog::reader::{ManifestReader, Reach};
    use walship::manifest::{Record, StreamRules};
    use walship::stream::{Hints, Stream};
    use walship::target::Target;

    let dir = TestDir::new(name);
    let archive = dir.path.join("archive");
    fs::create_dir_all(&archive).unwrap();
    let target: Arc<dyn Target> = Arc::new(walship::target::fs::FileTarget::new(archive.clone()));
    let node_config = |id: &str| {
        let home = dir.path.join(id);
        fs::create_dir_all(home.join("src")).unwrap();
        let text = format!(
            "[global]\nstate_dir = {0}/state\ntarget = file://{1}\n\n[stream s]\ndir = {0}/src\n\
             pattern = seg-{{seq}}.log\nseal = spool\nbatch_size = 2\nmanifest_compaction = 2\n",
            home.display(),
            archive.display()
        );
        walship::config::parse(Path::new("node.conf"), &text).unwrap()
    };
    let configs = [node_config("n1"), node_config("n2")];
    let arrived = AtomicBool::new(false);
    let errors = Mutex::new(Vec::new());
    let reads = Mutex::new(0usize);
    // Log records of a manifest: contiguous from 0, else why not.
    let contiguous = |log: &[Record]| -> Result<Option<u64>, String> {
        let mut next = 0;
        for record in log {
            if record.first() != next {
                return Err(format!("record {}..{} where {next} was next", record.first(), record.last()));
            }
            next = record.last() + 1;
        }
        Ok(next.checked_sub(1))
    };
    // The reader's visitor returns the library's `Error`, large as it is.
    #[allow(clippy::result_large_err)]
    let load = |state: &Path| -> Result<Vec<Record>, String> {
        let stream = &configs[0].streams[0];
        let rules = StreamRules::new("s", &stream.naming);
        let reader =
            ManifestReader::open(state, target.as_ref(), &rules, Reach::Whole).map_err(|e| e.to_string())?;
        let mut log = Vec::new();
        reader
            .each_live_record(|record| {
                log.push(record);
                Ok(true)
            })
            .map_err(|e| e.to_string())?;
        Ok(log)
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for position in 0..=last {
                let bytes = segment_bytes(position, 200);
                for config in &configs {
                    let src = &config.streams[0].dir;
                    fs::write(src.join(format!(".in-{position}")), &bytes).unwrap();
                    fs::rename(src.join(format!(".in-{position}")), src.join(segment_name(position)))
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            arrived.store(true, Ordering::SeqCst);
        });
        for config in &configs {
            let (target, errors, arrived) = (Arc::clone(&target), &errors, &arrived);
            scope.spawn(move || {
                let state = &config.global.state_dir;
                let status = Arc::new(walship::status::StatusCell::default());
                let lock = Arc::new(walship::statedir::lock_stream(state, "s").unwrap());
                let mut stream =
                    Stream::open(config.streams[0].clone(), state, target, status, lock).unwrap();
                loop {
                    let done = arrived.load(Ordering::SeqCst);
                    if let Err(error) = stream.pass(false, Hints::default(), &|| false) {
                        errors.lock().unwrap().push(format!("{}: {error}", state.display()));
                        return;
                    }
                    if done && stream.archived() == Some(last) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        scope.spawn(|| {
            let mut longest = None;
            let mut round = 0;
            while !arrived.load(Ordering::SeqCst) || errors.lock().unwrap().is_empty() && longest < Some(last)
            {
                round += 1;
                let state = dir.path.join(format!("reader-{round}"));
                let seen = load(&state).and_then(|log| contiguous(&log));
                match seen {
                    Ok(reached) if reached >= longest => longest = reached,
                    Ok(reached) => panic!("the manifest shrank from {longest:?} to {reached:?}"),
                    Err(why) => errors.lock().unwrap().push(format!("reader: {why}")),
                }
                let _ = fs::remove_dir_all(&state);
            }
            *reads.lock().unwrap() = round;
        });
    });
    let errors = errors.into_inner().unwrap();
    assert!(errors.is_empty(), "{errors:#?}");
    let rebuilt = load(&dir.path.join("rebuilt")).unwrap();
    assert_eq!(contiguous(&rebuilt), Ok(Some(last)), "{rebuilt:?}");
    for config in &configs {
        let journal = walship::manifest::journal::read_all(
            &walship::statedir::journal(&config.global.state_dir, "s"),
            &StreamRules::new("s", &config.streams[0].naming),
        )
        .unwrap();
        assert_eq!(journal.manifest.log, rebuilt, "a node's journal differs from the archive");
    }
    eprintln!("{name}: {} manifest reads while two nodes compacted", reads.into_inner().unwrap());
}

#[test]
fn two_offloaders_compacting_at_once_lose_and_duplicate_nothing() {
    two_offloaders_compacting_at_once("replicas-two-compacting", 240);
}

/// Regression (seen once in `three_replicas_never_elect_the_lagging_one`):
/// a standby whose journal ends inside a range the offloader compacted
/// after the standby last learned where compaction stood (its journal
/// through 2, then a level-2 object 0..6) listed after its last record,
/// missed the folded object, and was stuck on "positions 3..6 are
/// missing". Now it lists every record object once and follows.
#[test]
fn a_standby_follows_across_records_folded_over_its_journal_end() {
    use std::sync::Arc;
    use walship::stream::{Hints, Stream};
    use walship::target::Target;

    let dir = TestDir::new("replicas-folded-end");
    let archive = dir.path.join("archive");
    fs::create_dir_all(&archive).unwrap();
    let target: Arc<dyn Target> = Arc::new(walship::target::fs::FileTarget::new(archive.clone()));
    let config = |id: &str, compaction: u32| {
        let home = dir.path.join(id);
        fs::create_dir_all(home.join("src")).unwrap();
        let text = format!(
            "[global]\nstate_dir = {0}/state\ntarget = file://{1}\n\n[stream s]\ndir = {0}/src\n\
             pattern = seg-{{seq}}.log\nseal = spool\nbatch_size = 2\nmanifest_compaction = {compaction}\n",
            home.display(),
            archive.display()
        );
        walship::config::parse(Path::new("node.conf"), &text).unwrap()
    };
    let open = |config: &walship::Config| {
        let state = &config.global.state_dir;
        let status = Arc::new(walship::status::StatusCell::default());
        let lock = Arc::new(walship::statedir::lock_stream(state, "s").unwrap());
        Stream::open(config.streams[0].clone(), state, Arc::clone(&target), status, lock).unwrap()
    };
    let arrive = |configs: &[&walship::Config], positions: std::ops::RangeInclusive<u64>| {
        for position in positions {
            for config in configs {
                let path = config.streams[0].dir.join(segment_name(position));
                fs::write(path, segment_bytes(position, 200)).unwrap();
            }
        }
    };
    let (offloader, standby) = (config("n1", 0), config("n2", 2));
    arrive(&[&offloader, &standby], 0..=2);
    // The offloader records 0..2 without compacting yet; the standby follows.
    open(&offloader).pass(false, Hints::default(), &|| false).unwrap();
    let mut follower = open(&standby);
    follower.follow(true).unwrap();
    assert_eq!(follower.archived(), Some(2));
    // It compacts from now on: 0..6 folded into one level-2 object.
    let compacting = config("n1", 2);
    arrive(&[&compacting, &standby], 3..=6);
    open(&compacting).pass(false, Hints::default(), &|| false).unwrap();
    let names: Vec<String> = sorted_files(&archive.join("s/manifest"))
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".l2") && n.starts_with("0000000000000000-")), "{names:?}");
    follower.follow(true).unwrap();
    assert_eq!(follower.archived(), Some(6));
}
