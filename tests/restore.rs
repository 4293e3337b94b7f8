//! Restore and fetch as an attacker or an odd destination meets them: never
//! follow a link inside DIR, never replace an existing name, write devices
//! and pipes through, check every name before writing any, few syncs.

use std::fs;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

/// Five segments (1..=5) archived in one batch, plus 6..=10 in a second.
fn archived(name: &str) -> Setup {
    let setup = Setup::new(name, 5, "seal = spool");
    setup.write_segments(1..=10, 300);
    setup.ok(&["run", "--once"]);
    setup
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// A symlink planted at restore's temp name (once predictable:
/// `.NAME.restore.tmp`) made restore write through it, outside DIR.
#[test]
fn restore_does_not_follow_a_symlink_planted_at_its_temp_name() {
    let setup = archived("planted-temp");
    let outside = setup.dir.path.join("outside");
    fs::write(&outside, b"must stay").unwrap();
    let restored = setup.dir.path.join("restored");
    fs::create_dir_all(&restored).unwrap();
    for p in 1..=10 {
        symlink(&outside, restored.join(format!(".{}.restore.tmp", segment_name(p)))).unwrap();
    }
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_success(&out, &["restore"]);
    assert_eq!(fs::read(&outside).unwrap(), b"must stay");
    for p in 1..=10 {
        assert_eq!(fs::read(restored.join(segment_name(p))).unwrap(), segment_bytes(p, 300));
        let planted = restored.join(format!(".{}.restore.tmp", segment_name(p)));
        assert!(fs::symlink_metadata(planted).unwrap().file_type().is_symlink());
    }
}

/// A symlink at a final name (even a dangling one, which `exists()` does
/// not see) is refused before anything is written: never followed, never
/// replaced.
#[test]
fn restore_refuses_a_symlink_at_a_final_name_and_writes_nothing() {
    let setup = archived("planted-final");
    let outside = setup.dir.path.join("not-yet-there");
    let restored = setup.dir.path.join("restored");
    fs::create_dir_all(&restored).unwrap();
    let link = restored.join(segment_name(8));
    symlink(&outside, &link).unwrap();
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&segment_name(8)), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(!outside.exists(), "restore wrote through a symlink, outside DIR");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(names_in(&restored), [segment_name(8)], "restore wrote before refusing");
}

/// One colliding file in the second batch: restore used to write the whole
/// first batch before failing. Every destination name is checked first.
#[test]
fn restore_with_one_colliding_file_writes_nothing() {
    let setup = archived("collide");
    let restored = setup.dir.path.join("restored");
    fs::create_dir_all(&restored).unwrap();
    fs::write(restored.join(segment_name(9)), b"precious").unwrap();
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(names_in(&restored), [segment_name(9)]);
    assert_eq!(fs::read(restored.join(segment_name(9))).unwrap(), b"precious");
}

/// `restore` with nothing archived is an operational outcome, not a usage
/// error: exit 1 (it used to be 2).
#[test]
fn restore_of_an_empty_archive_exits_one() {
    let setup = Setup::new("empty-restore", 5, "seal = spool");
    let restored = setup.dir.path.join("restored");
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing is archived"), "{}", stderr(&out));
}

/// `--to` naming a regular file says so, instead of an I/O error.
#[test]
fn restore_into_a_regular_file_says_it_is_not_a_directory() {
    let setup = archived("to-file");
    let file = setup.dir.path.join("a-file");
    fs::write(&file, b"x").unwrap();
    let out = setup.walship(&["restore", "-s", "s", "--to", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

/// Restore of many small segments used one fsync per file (20,000 files
/// took 62 s); now a few filesystem syncs make a whole restore durable.
#[test]
fn restore_of_many_small_segments_syncs_a_few_times_not_once_per_file() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed (apt-get install strace)");
        return;
    }
    let setup = Setup::new("few-syncs", 100, "seal = spool");
    setup.write_segments(1..=600, 200);
    setup.ok(&["run", "--once"]);
    let restored = setup.dir.path.join("restored");
    let trace = setup.dir.path.join("strace.txt");
    let out = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=fsync,fdatasync,syncfs,sync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_walship"))
        .args(["restore", "-s", "s", "--to", restored.to_str().unwrap(), "-c"])
        .arg(&setup.config)
        .output()
        .unwrap();
    assert_success(&out, &["restore (under strace)"]);
    assert_same_files(&setup.src, &restored);
    let summary = fs::read_to_string(&trace).unwrap();
    let total: u64 = summary
        .lines()
        .filter(|l| {
            ["fsync", "fdatasync", "syncfs", "sync"].contains(&l.split_whitespace().last().unwrap_or(""))
        })
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors], syscall
            fields[3].parse::<u64>().unwrap()
        })
        .sum();
    assert!(total <= 20, "600 restored files took {total} sync calls:\n{summary}");
}

/// `fetch … /dev/stdout` replaced the device link with a regular file: a
/// DEST that is not a regular file is written through, never replaced.
#[test]
fn fetch_writes_through_a_link_to_a_device_and_keeps_the_link() {
    let setup = archived("fetch-device");
    let link = setup.dir.path.join("to-null");
    symlink("/dev/null", &link).unwrap();
    setup.ok(&["fetch", "-s", "s", &segment_name(3), link.to_str().unwrap()]);
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());
}

/// A FIFO as DEST gets the segment's bytes, and stays a FIFO.
#[test]
fn fetch_writes_through_a_fifo() {
    let setup = archived("fetch-fifo");
    let fifo = setup.dir.path.join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    setup.ok(&["fetch", "-s", "s", &segment_name(4), fifo.to_str().unwrap()]);
    // Checked first: were the FIFO replaced, the reader would wait forever.
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    assert_eq!(reader.join().unwrap(), segment_bytes(4, 300));
}

/// DEST `-` is standard output (it used to create a file called `-`).
#[test]
fn fetch_to_dash_writes_to_stdout() {
    let setup = archived("fetch-dash");
    let out = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["fetch", "-s", "s", &segment_name(6), "-", "-c", setup.config.to_str().unwrap()])
        .current_dir(&setup.dir.path)
        .output()
        .unwrap();
    assert_success(&out, &["fetch … -"]);
    assert_eq!(out.stdout, segment_bytes(6, 300));
    assert!(!setup.dir.path.join("-").exists());
}

/// An existing DEST was silently overwritten. PostgreSQL removes the file
/// before it runs restore_command, so an existing DEST is refused.
#[test]
fn fetch_refuses_an_existing_dest() {
    let setup = archived("fetch-exists");
    let dest = setup.dir.path.join("dest");
    fs::write(&dest, b"precious").unwrap();
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(2), dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(fs::read(&dest).unwrap(), b"precious");

    // A dangling symlink is an existing name too: not replaced, not followed.
    let link = setup.dir.path.join("link");
    let outside = setup.dir.path.join("outside");
    symlink(&outside, &link).unwrap();
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(2), link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!outside.exists());
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}

/// A corrupt object: no DEST appears for a file path; written through to
/// stdout, the bytes may be out but the exit status is 1 and says so.
#[test]
fn fetch_of_a_corrupt_segment_reports_failure_and_leaves_no_dest() {
    let setup = archived("fetch-corrupt");
    let object = &setup.batch_objects()[0];
    let mut bytes = fs::read(object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // inside segment 5
    fs::write(object, bytes).unwrap();
    let dest = setup.dir.path.join("dest");
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(5), dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("CRC32"), "{}", stderr(&out));
    assert!(!dest.exists());
    assert_eq!(names_in(&setup.dir.path).iter().filter(|n| n.starts_with('.')).count(), 0);

    let out = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["fetch", "-s", "s", &segment_name(5), "-", "-c", setup.config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("discard"), "{}", stderr(&out));
}

/// A corrupt batch stops restore with exit 1: the files of the batches
/// before it are complete under their names, nothing of the corrupt segment
/// is, and no temp file is left behind.
#[test]
fn restore_stops_at_a_corrupt_batch_keeping_only_verified_files() {
    let setup = archived("restore-corrupt");
    let object = &setup.batch_objects()[1]; // segments 6..=10
    let mut bytes = fs::read(object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // inside segment 10
    fs::write(object, bytes).unwrap();
    let restored = setup.dir.path.join("restored");
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("CRC32 mismatch"), "{}", stderr(&out));
    let names = names_in(&restored);
    assert!(!names.iter().any(|n| n.starts_with('.')), "temp files left: {names:?}");
    assert!(!names.contains(&segment_name(10)), "{names:?}");
    for name in &names {
        let p: u64 = name.trim_start_matches("seg-").trim_end_matches(".log").parse().unwrap();
        assert_eq!(fs::read(restored.join(name)).unwrap(), segment_bytes(p, 300), "{name}");
    }
    assert!(names.len() >= 5, "the verified first batch is kept: {names:?}");
}

/// Batches download in parallel: a corrupt one in the middle still stops
/// restore at its bad segment, keeping exactly the verified prefix (the
/// segments before it, in its batch too), and nothing of the batches
/// downloaded past it, not even a temp file.
#[test]
fn restore_stops_in_the_middle_keeping_exactly_the_verified_prefix() {
    let setup = Setup::new("restore-parallel-corrupt", 5, "seal = spool");
    setup.write_segments(1..=40, 300);
    setup.ok(&["run", "--once"]);
    let object = &setup.batch_objects()[1]; // segments 6..=10
    let mut bytes = fs::read(object).unwrap();
    let at: usize = (6..=7).map(|p| segment_bytes(p, 300).len()).sum();
    bytes[at] ^= 0xff; // the first byte of segment 8
    fs::write(object, bytes).unwrap();
    let restored = setup.dir.path.join("restored");
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("CRC32 mismatch"), "{}", stderr(&out));
    let expected: Vec<String> = (1..=7).map(segment_name).collect();
    assert_eq!(names_in(&restored), expected);
    for p in 1..=7 {
        assert_eq!(fs::read(restored.join(segment_name(p))).unwrap(), segment_bytes(p, 300));
    }
}

/// `fetch … /dev/stdout` with stdout redirected to a file: the link leads to
/// walship's own stdout, so the segment is written there, as for `-`; the
/// link is left alone. (The same file named by a plain path is refused.)
/// The test uses its own link like `/dev/stdout`, so that a regression
/// cannot replace the machine's.
#[test]
fn fetch_to_dev_stdout_redirected_to_a_file_writes_there() {
    let setup = archived("fetch-dev-stdout");
    let dev_stdout = setup.dir.path.join("stdout-link");
    symlink("/proc/self/fd/1", &dev_stdout).unwrap();
    let out_path = setup.dir.path.join("out.bin");
    let out_file = fs::File::create(&out_path).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["fetch", "-s", "s", &segment_name(7), dev_stdout.to_str().unwrap()])
        .args(["-c", setup.config.to_str().unwrap()])
        .stdout(out_file)
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(fs::read(&out_path).unwrap(), segment_bytes(7, 300));
    assert!(fs::symlink_metadata(&dev_stdout).unwrap().file_type().is_symlink());

    let out_file = fs::File::create(&out_path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(["fetch", "-s", "s", &segment_name(7), out_path.to_str().unwrap()])
        .args(["-c", setup.config.to_str().unwrap()])
        .stdout(out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(fs::read(&out_path).unwrap(), b"");
}

/// Segments from 1 MiB on are written around the page cache (`O_DIRECT`,
/// aligned 1 MiB writes, the last partial block written normally): lengths
/// on and off the block and buffer boundaries, in batches of several, come
/// back byte for byte.
#[test]
fn restore_of_large_segments_writes_them_directly_byte_for_byte() {
    let setup = Setup::new("restore-direct", 3, "seal = spool");
    let mib = 1 << 20;
    let lengths = [mib - 1, mib, mib + 1, 3 * mib + 4097, 2 * mib, 5000, 4 * mib + 4095];
    for (p, len) in (1..).zip(lengths) {
        let mut bytes = segment_bytes(p, 4000);
        bytes.resize(len, (p * 31) as u8);
        bytes[len - 1] ^= 0x5a;
        fs::write(setup.src.join(segment_name(p)), bytes).unwrap();
    }
    setup.ok(&["run", "--once"]);
    let restored = setup.dir.path.join("restored");
    let to = restored.to_str().unwrap();
    let traced = Command::new("strace").arg("-V").output().is_ok();
    if traced {
        let trace = setup.dir.path.join("strace.txt");
        let out = Command::new("strace")
            .args(["-f", "-e", "trace=fcntl", "-o"])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_walship"))
            .args(["restore", "-s", "s", "--to", to, "-c"])
            .arg(&setup.config)
            .output()
            .unwrap();
        assert_success(&out, &["restore (under strace)"]);
        let calls = fs::read_to_string(&trace).unwrap();
        let direct = calls.lines().filter(|l| l.contains("F_SETFL") && l.contains("O_DIRECT")).count();
        assert_eq!(direct, 5, "one direct file per segment from 1 MiB on:\n{calls}");
    } else {
        eprintln!("strace is not installed: not checking that O_DIRECT was used");
        setup.ok(&["restore", "-s", "s", "--to", to]);
    }
    assert_same_files(&setup.src, &restored);
    assert_eq!(names_in(&restored).len(), lengths.len(), "no temp file left");
}
