//! Heartbeats and `walship fleet`: nodes with `node_id` keep
//! `STREAM/nodes/NODE_ID` and their fleet index object `.walship/fleet/NODE_ID`
//! current; `fleet` reads the index from the target alone (`--deep`: every
//! stream's heartbeats), stale and failing first — on a file target and on
//! Garage, where a proxy counts what it costs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::faultproxy::{FaultProxy, Kind};
use crate::s3::{S3Env, unique_prefix};
use crate::util::*;

/// A node: its own state directory, stream directories and config, archiving
/// into the shared target that `target_lines` names.
struct Node {
    config: PathBuf,
    src: PathBuf,
}

impl Node {
    /// Node `id` with streams `streams` (a name with "missing" in it gets a
    /// directory that does not exist, so that stream fails).
    fn new(dir: &Path, id: &str, target_lines: &str, streams: &[&str]) -> Node {
        let home = dir.join(id);
        let src = home.join("src");
        fs::create_dir_all(&src).unwrap();
        let mut text = format!(
            "[global]\nstate_dir = {}\n{target_lines}\npoll_interval = 50ms\nbackoff_min = 10ms\n\
             backoff_max = 50ms\nnode_id = {id}\nheartbeat_interval = 1s\n",
            home.join("state").display()
        );
        for stream in streams {
            let stream_dir = if stream.contains("missing") { home.join("nowhere") } else { src.join(stream) };
            fs::create_dir_all(src.join(stream)).unwrap();
            text.push_str(&format!(
                "\n[stream {stream}]\ndir = {}\npattern = seg-{{seq}}.log\nseal = spool\nbatch_size = 1\n",
                stream_dir.display()
            ));
        }
        let config = home.join("walship.conf");
        fs::write(&config, text).unwrap();
        Node { config, src }
    }

    fn fleet(&self, args: &[&str]) -> String {
        let mut all = vec!["fleet"];
        all.extend(args);
        all.extend(["-c", self.config.to_str().unwrap()]);
        let out = walship(&all);
        assert_success(&out, &all);
        stdout(&out)
    }
}

/// Poll `fleet` until its output satisfies `done`.
fn wait_for_fleet(node: &Node, args: &[&str], what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = node.fleet(args);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "fleet never showed {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The line of `fleet`'s text output for `stream` on `node`.
fn line_of<'t>(text: &'t str, stream: &str, node: &str) -> &'t str {
    text.lines()
        .find(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.get(1) == Some(&stream) && cells.get(2) == Some(&node)
        })
        .unwrap_or_else(|| panic!("no line for {stream} on {node}:\n{text}"))
}

/// Two nodes, three streams: heartbeats appear with positions, a failing
/// stream shows its error, a killed node goes stale and sorts first, and
/// the JSON form says the same.
fn two_nodes_show_up_and_a_dead_one_goes_stale(name: &str, target_lines: &dyn Fn(&Path) -> String) {
    let dir = TestDir::new(name);
    let target = target_lines(&dir.path);
    let n1 = Node::new(&dir.path, "n1", &target, &["a", "c-missing"]);
    let n2 = Node::new(&dir.path, "n2", &target, &["b"]);
    for (node, stream) in [(&n1, "a"), (&n2, "b")] {
        for p in 0..=2 {
            fs::write(node.src.join(stream).join(segment_name(p)), segment_bytes(p, 100)).unwrap();
        }
    }
    // A temp file of an index write a crash interrupted (file target).
    let leftover = target
        .strip_prefix("target = file://")
        .map(|root| Path::new(root).join(".walship/fleet/.n1.999999-1.tmp"));
    if let Some(leftover) = &leftover {
        fs::create_dir_all(leftover.parent().unwrap()).unwrap();
        fs::write(leftover, "half an index").unwrap();
    }
    let _d1 = Daemon::start(&n1.config, false);
    let d2 = Daemon::start(&n2.config, false);

    let text = wait_for_fleet(&n1, &[], "both nodes archived", |t| {
        t.lines().any(|l| l.starts_with("ok ") && l.contains(" a ") && l.contains(" 2 "))
            && t.lines().any(|l| l.starts_with("ok ") && l.contains(" b ") && l.contains(" 2 "))
            && t.lines().any(|l| l.starts_with("failing "))
    });
    assert!(leftover.is_none_or(|leftover| !leftover.exists()), "the index's temp file stays");
    let failing = line_of(&text, "c-missing", "n1");
    assert!(failing.starts_with("failing") && failing.contains("nowhere"), "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("failing"), "failing first:\n{text}");
    assert!(
        text.ends_with(
            "3 heartbeats of 3 streams on 2 nodes: 0 stale (older than 3s), 1 failing, 0 stopped, 2 ok\n"
        ),
        "{text}"
    );
    assert!(line_of(&text, "b", "n2").contains(env!("CARGO_PKG_VERSION")), "{text}");

    // n2 dies: within the stale limit its line turns stale and comes first.
    d2.kill();
    let text =
        wait_for_fleet(&n1, &["--stale", "2s"], "n2 stale", |t| line_of(t, "b", "n2").starts_with("stale"));
    assert_eq!(text.lines().nth(1), Some(line_of(&text, "b", "n2")), "stale first:\n{text}");
    assert!(line_of(&text, "a", "n1").starts_with("ok"), "{text}");

    let json = n1.fleet(&["--json", "--stale", "2s"]);
    assert!(
        json.starts_with("[{\"state\":\"stale\",\"stream\":\"b\",\"node\":\"n2\",\"age_seconds\":"),
        "{json}"
    );
    assert!(json.contains("\"stream\":\"a\",\"node\":\"n1\""), "{json}");
    assert!(json.contains("\"archived_position\":2,\"committed_position\":2"), "{json}");
    assert_eq!(json.matches("\"state\":").count(), 3, "{json}");
}

#[test]
fn heartbeats_and_fleet_on_a_file_target() {
    two_nodes_show_up_and_a_dead_one_goes_stale("fleet-file", &|dir| {
        let archive = dir.join("archive");
        fs::create_dir_all(&archive).unwrap();
        format!("target = file://{}", archive.display())
    });
}

#[test]
fn heartbeats_and_fleet_on_garage() {
    let Some(env) = S3Env::get() else { return };
    let prefix = unique_prefix("fleet");
    two_nodes_show_up_and_a_dead_one_goes_stale("fleet-s3", &|dir| env.target_lines(dir, &prefix));
}

/// A heartbeat object that is not one (garbage, another node's, too big)
/// is listed as unreadable by `fleet --deep`, not a failure of the whole
/// view, and so is a damaged fleet index object by `fleet`; an empty
/// target says there is nothing yet.
#[test]
fn fleet_lists_damaged_heartbeats_as_unreadable() {
    let dir = TestDir::new("fleet-damaged");
    let archive = dir.path.join("archive");
    fs::create_dir_all(&archive).unwrap();
    let node = Node::new(&dir.path, "n1", &format!("target = file://{}", archive.display()), &["a"]);
    let empty = node.fleet(&[]);
    assert!(empty.starts_with("no heartbeats on ") && empty.contains("--deep"), "{empty}");
    fs::create_dir_all(archive.join(".walship/fleet")).unwrap();
    fs::write(archive.join(".walship/fleet/n4"), "walship-heartbeat 1\nnode=n4\n").unwrap();
    let text = node.fleet(&[]);
    assert!(line_of(&text, "-", "n4").contains("unreadable: .walship/fleet/n4: not a fleet index"), "{text}");
    fs::remove_file(archive.join(".walship/fleet/n4")).unwrap();
    fs::create_dir_all(archive.join("a/nodes")).unwrap();
    fs::write(archive.join("a/nodes/n1"), "not a heartbeat\n").unwrap();
    fs::write(archive.join("a/nodes/n2"), "x".repeat(5000)).unwrap();
    let other = "walship-heartbeat 1\nnode=n9\nstream=a\nversion=0.1.0\n";
    fs::write(archive.join("a/nodes/n3"), other).unwrap();
    assert!(node.fleet(&[]).starts_with("no heartbeats on "), "the index holds none");
    let text = node.fleet(&["--deep"]);
    assert!(line_of(&text, "a", "n1").contains("unreadable: a/nodes/n1: not a heartbeat: line 1"), "{text}");
    assert!(line_of(&text, "a", "n2").contains("more than a heartbeat holds"), "{text}");
    assert!(line_of(&text, "a", "n3").contains("holds the heartbeat of node n9"), "{text}");
    assert!(text.ends_with("3 stale (older than 3s), 0 failing, 0 stopped, 0 ok\n"), "{text}");
}

/// What `fleet` costs, counted by a proxy between it and Garage: three
/// nodes of two streams each (six heartbeats). `--deep` (how `fleet` read
/// before the index) takes a LIST for the streams, one per stream and a
/// GET per heartbeat; `fleet` takes one LIST and a GET per node, then, with
/// nothing changed, one LIST alone; a node that writes again costs one GET.
#[test]
fn fleet_costs_one_list_and_the_gets_of_changed_nodes_on_garage() {
    let Some(env) = S3Env::get() else { return };
    let dir = TestDir::new("fleet-cost");
    let prefix = unique_prefix("fleet-cost");
    let target = env.target_lines(&dir.path, &prefix);
    let nodes: Vec<Node> =
        ["n1", "n2", "n3"].iter().map(|id| Node::new(&dir.path, id, &target, &["a", "b"])).collect();
    let written = |node: &Node, id: &str| {
        wait_for_fleet(node, &[], "its heartbeats", |t| {
            ["a", "b"].iter().all(|stream| {
                t.lines().any(|l| {
                    l.starts_with("ok ")
                        && l.split_whitespace().nth(1) == Some(stream)
                        && l.contains(&format!(" {id} "))
                })
            })
        });
    };
    for (node, id) in nodes.iter().zip(["n1", "n2", "n3"]) {
        fs::write(node.src.join("a").join(segment_name(0)), segment_bytes(0, 100)).unwrap();
        let daemon = Daemon::start(&node.config, false);
        written(node, id);
        // A clean stop writes the last heartbeats: then nothing changes.
        assert!(daemon.terminate().status.success());
    }
    let proxy = FaultProxy::start(&env.endpoint);
    let observer_target = target.replace(&env.endpoint, &proxy.endpoint());
    let observer = Node::new(&dir.path, "observer", &observer_target, &["a"]);
    // Where `fleet` keeps what it read (without a state directory: no cache).
    fs::create_dir_all(observer.config.with_file_name("state")).unwrap();
    let cost = |args: &[&str]| {
        let (lists, gets) = (proxy.seen(Kind::List).len(), proxy.seen(Kind::Get).len());
        let text = observer.fleet(args);
        (proxy.seen(Kind::List).len() - lists, proxy.seen(Kind::Get).len() - gets, text)
    };
    let (lists, gets, deep) = cost(&["--deep"]);
    assert_eq!((lists, gets), (1 + 2, 6), "before the index:\n{deep}");
    let (lists, gets, first) = cost(&[]);
    assert_eq!((lists, gets), (1, 3), "a first run GETs each node's index:\n{first}");
    assert!(
        first.contains("6 heartbeats of 2 streams on 3 nodes: ") && first.contains(" 6 stopped"),
        "{first}"
    );
    // State, stream, node, archived and committed of each line (ages move).
    let rows = |text: &str| -> Vec<String> {
        let lines = text.lines().skip(1).filter(|l| !l.contains(" heartbeats of "));
        lines
            .map(|l| {
                l.split_whitespace().enumerate().filter(|(i, _)| *i != 3).take(5).map(|(_, c)| c).collect()
            })
            .collect()
    };
    assert_eq!(rows(&first), rows(&deep), "the index shows what the heartbeats do:\n{first}\n{deep}");
    let (lists, gets, _) = cost(&[]);
    assert_eq!((lists, gets), (1, 0), "nothing changed: one LIST alone");

    // A second later, so that n2's heartbeats say something new: within
    // the same second (`written=`), a restart writes the same bytes again,
    // the same ETag, and rightly no GET follows (1 run in 3 failed so).
    std::thread::sleep(Duration::from_millis(1_100));
    let n2 = Daemon::start(&nodes[1].config, false);
    written(&nodes[1], "n2");
    assert!(n2.terminate().status.success());
    // One GET, once the store's listing shows the new object (should a
    // listing lag the write for a moment: no GET until then).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (lists, gets, _) = cost(&[]);
        assert!(lists == 1 && gets <= 1, "one node wrote again: {lists} LISTs, {gets} GETs");
        if gets == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the listing never showed n2's new index object");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cost(&[]).1, 0, "read once");
    eprintln!(
        "fleet on 3 nodes x 2 streams: --deep 3 LIST + 6 GET; index 1 LIST + 3 GET, then 1 LIST + 0 GET"
    );
}
