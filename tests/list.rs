//! `walship list` of a long archive: a summary first, then every line into
//! a pipe, the first and last lines on a terminal, `--all` and `--range`;
//! and over a long generated journal, streamed.

use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use crate::util::*;

/// Run `walship ARGS -c CONFIG` with stdout on a terminal (a pty); its
/// output.
fn on_a_terminal(setup: &Setup, args: &[&str]) -> String {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the integers given; the
    // other arguments may be null.
    let opened = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(args)
        .args(["-c", setup.config.to_str().unwrap()])
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn walship");
    let status = child.wait().expect("wait");
    assert!(status.success(), "walship {args:?} failed");
    let mut output = Vec::new();
    let mut master = fs::File::from(master);
    // Everything written is buffered in the pty; the read ends with EIO
    // once it is drained and the slave is closed.
    let mut buf = [0u8; 65536];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&output).replace("\r\n", "\n")
}

fn rows(text: &str) -> Vec<&str> {
    text.lines().filter(|line| line.contains("/batches/")).collect()
}

#[test]
fn a_long_list_shows_its_ends_on_a_terminal_and_everything_into_a_pipe() {
    let setup = Setup::new("list-paging", 1, "seal = spool");
    setup.write_segments(1..=40, 100);
    setup.ok(&["run", "--once"]);

    let piped = setup.ok(&["list", "-s", "s"]);
    assert!(piped.starts_with("stream s: 40 batches, 40 segments"), "{piped}");
    assert_eq!(rows(&piped).len(), 40, "{piped}");

    let paged = on_a_terminal(&setup, &["list", "-s", "s"]);
    assert!(paged.starts_with("stream s: 40 batches, 40 segments"), "{paged}");
    let shown = rows(&paged);
    assert_eq!(shown.len(), 20, "{paged}");
    assert!(shown[0].trim_start().starts_with("1..1 ") && shown[19].trim_start().starts_with("40..40 "));
    assert!(paged.contains("… 20 lines not shown: `walship list --all`"), "{paged}");

    let all = on_a_terminal(&setup, &["list", "-s", "s", "--all"]);
    assert_eq!(rows(&all).len(), 40, "{all}");

    // With no state directory the manifest is read from the target alone.
    let state = setup.state.clone();
    fs::rename(&state, setup.dir.path.join("state-aside")).unwrap();
    let remote_only = setup.ok(&["list", "-s", "s"]);
    assert_eq!(remote_only, piped, "the target's records list otherwise than the journal");
    let fetched = setup.dir.path.join("fetched");
    setup.ok(&["fetch", "-s", "s", &segment_name(17), fetched.to_str().unwrap()]);
    assert_eq!(fs::read(&fetched).unwrap(), fs::read(setup.src.join(segment_name(17))).unwrap());
    fs::rename(setup.dir.path.join("state-aside"), &state).unwrap();

    let range = setup.ok(&["list", "-s", "s", "--range", "5..7"]);
    assert!(range.starts_with("stream s: 3 batches, 3 segments"), "{range}");
    let shown: Vec<&str> = rows(&range).iter().map(|line| line.split_whitespace().next().unwrap()).collect();
    assert_eq!(shown, ["5..5", "6..6", "7..7"]);
}

/// A long generated journal is listed whole, in order, verified (every gap
/// reported) and searched by `fetch`, each streamed from the journal.
#[test]
fn a_long_generated_journal_is_listed_verified_and_searched_whole() {
    let setup = Setup::new("list-long", 1, "seal = spool\nmanifest_compaction = 0");
    setup.write_segments(1..=1, 10);
    setup.ok(&["run", "--once"]);
    let journal = fs::read_to_string(setup.journal()).unwrap();
    let header = journal.lines().next().unwrap();
    let total = 50_000u64;
    let mut text = format!("{header}\n");
    for position in 1..=total {
        let body = format!("gap first={position} last={position} reason=generated%20for%20the%20test");
        text.push_str(&format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes())));
    }
    fs::write(setup.journal(), text).unwrap();
    let listed = setup.ok(&["list", "-s", "s"]);
    assert!(
        listed.starts_with(&format!(
            "stream s: 0 batches, 0 segments, 0 B, {total} gaps, positions 1..{total}"
        )),
        "{}",
        &listed[..200]
    );
    let gaps: Vec<&str> = listed.lines().filter(|line| line.contains("GAP:")).collect();
    assert_eq!(gaps.len() as u64, total);
    assert!(gaps[total as usize - 1].trim_start().starts_with(&format!("{total}..{total} ")));

    let verified = setup.walship(&["verify", "-s", "s"]);
    let report = stdout(&verified);
    assert_eq!(
        report.lines().filter(|line| line.contains(": gap ")).count() as u64,
        total,
        "{}",
        stderr(&verified)
    );
    assert!(
        report.contains("stream s: 0 batches checked"),
        "{}",
        &report[report.len().saturating_sub(300)..]
    );
    let fetched = setup.walship(&["fetch", "-s", "s", &segment_name(total), "-"]);
    assert_eq!(fetched.status.code(), Some(3), "a gap holds no segment: {}", stderr(&fetched));
}
