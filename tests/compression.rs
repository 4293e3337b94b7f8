//! `compression = zstd`: batch objects are zstd frames, one per segment,
//! that the real `zstd` tool reads; restore, fetch and verify decode and
//! check them; archives that switch compression on and off; healing a crash.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::*;

/// Log lines as an application writes them (compressible, not repetitive).
pub fn log_lines(position: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 120);
    let mut state = position.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut n = 0u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let level = ["INFO", "INFO", "WARN", "DEBUG", "ERROR"][(state % 5) as usize];
        let line = format!(
            "2026-11-30T{:02}:{:02}:{:02}.{:03}Z {level} gw-{} sensor={} temp_c={}.{} rssi=-{} seq={}\n",
            position % 24,
            n / 60 % 60,
            n % 60,
            state >> 20 & 0x3ff,
            position % 17,
            state >> 30 & 0xff,
            state >> 40 & 0x3f,
            state >> 50 & 0x9,
            state >> 45 & 0x7f,
            n
        );
        out.extend_from_slice(line.as_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}

/// What the test writes at `position`: log text of varied lengths, plus an
/// empty, a one-byte and an incompressible segment.
fn content(position: u64) -> Vec<u8> {
    match position % 10 {
        3 => Vec::new(),
        4 => b"x".to_vec(),
        7 => segment_bytes(position, 40_000), // pseudo-random: incompressible
        _ => log_lines(position, 1_000 + (position as usize * 7_919) % 60_000),
    }
}

fn write(setup: &Setup, positions: std::ops::RangeInclusive<u64>) {
    for p in positions {
        fs::write(setup.src.join(segment_name(p)), content(p)).unwrap();
    }
}

/// Run the real `zstd` tool (Debian's; scripts/test installs it).
fn zstd_tool(args: &[&str], file: &Path) -> Vec<u8> {
    let out = Command::new("zstd")
        .args(args)
        .arg(file)
        .output()
        .expect("the zstd tool runs (apt-get install zstd; scripts/test installs it)");
    assert!(
        out.status.success(),
        "zstd {args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn is_zstd(object: &Path) -> bool {
    fs::read(object).unwrap().starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

fn restore_to(setup: &Setup, name: &str) -> std::path::PathBuf {
    let restored = setup.dir.path.join(name);
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    restored
}

/// Each batch object is a valid .zst whose `zstd -d` output is exactly the
/// segments' concatenation (empty, one-byte, incompressible and large ones
/// included), at least 4× smaller than the text; restore is byte-identical
/// and verify --deep finds nothing.
#[test]
fn compressed_batches_are_zstd_files_of_the_concatenation_and_restore_byte_for_byte() {
    let setup = Setup::new("zstd-round-trip", 10, "seal = spool\ncompression = zstd");
    write(&setup, 1..=29);
    // One large segment: many zstd blocks, several write chunks.
    fs::write(setup.src.join(segment_name(30)), log_lines(30, 6 << 20)).unwrap();
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 3 batches (30 segments"), "{out}");

    let (mut raw_total, mut stored_total) = (0, 0);
    for (i, object) in setup.batch_objects().iter().enumerate() {
        let expected: Vec<u8> = (i as u64 * 10 + 1..=i as u64 * 10 + 10)
            .flat_map(|p| fs::read(setup.src.join(segment_name(p))).unwrap())
            .collect();
        assert!(is_zstd(object), "{} is not zstd", object.display());
        let decompressed = zstd_tool(&["-d", "-c", "-q"], object);
        assert!(decompressed == expected, "zstd -d {} is not its segments concatenated", object.display());
        raw_total += expected.len();
        stored_total += fs::metadata(object).unwrap().len() as usize;
    }
    assert!(stored_total * 4 < raw_total, "{stored_total} bytes stored for {raw_total}");

    assert_same_files(&setup.src, &restore_to(&setup, "restored"));
    setup.ok(&["verify", "--deep"]);
    let list = setup.ok(&["list"]);
    assert!(list.contains("stream s: 3 batches, 30 segments"), "{list}");
}

/// fetch of a segment in the middle of a compressed batch reads its frame
/// alone and gives its bytes back, to a file and to standard output.
#[test]
fn fetch_of_a_middle_segment_decodes_its_frame() {
    let setup = Setup::new("zstd-fetch", 10, "seal = spool\ncompression = zstd");
    write(&setup, 1..=10);
    setup.ok(&["run", "--once"]);
    for p in [5, 6, 7, 3] {
        let dest = setup.dir.path.join(format!("fetched-{p}"));
        setup.ok(&["fetch", "-s", "s", &segment_name(p), dest.to_str().unwrap()]);
        assert!(fs::read(&dest).unwrap() == content(p), "segment {p}");
    }
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(6), "-"]);
    assert_success(&out, &["fetch"]);
    assert!(out.stdout == content(6));
}

/// A damaged compressed object is found by verify --deep (and, its CRC32
/// being the file target's to tell, by verify) and refused by restore and
/// by fetch of the damaged segment; nothing unverified is left restored.
#[test]
fn a_corrupted_compressed_object_is_caught_by_verify_restore_and_fetch() {
    let setup = Setup::new("zstd-corrupt", 10, "seal = spool\ncompression = zstd");
    write(&setup, 1..=10);
    setup.ok(&["run", "--once"]);
    let object = setup.batch_objects().pop().unwrap();
    let mut bytes = fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&object, &bytes).unwrap();

    let out = setup.walship(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("CORRUPT"), "{}", stdout(&out));

    let restored = setup.dir.path.join("restored");
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged") || stderr(&out).contains("CRC32"), "{}", stderr(&out));
    for entry in fs::read_dir(&restored).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue;
        }
        let p: u64 = name.trim_start_matches("seg-").trim_end_matches(".log").parse().unwrap();
        assert!(fs::read(restored.join(&name)).unwrap() == content(p), "{name} restored wrong");
    }

    // The segment whose frame holds the flipped byte cannot be fetched.
    let damaged = (1..=10).find(|&p| {
        let dest = setup.dir.path.join(format!("f{p}"));
        !setup.walship(&["fetch", "-s", "s", &segment_name(p), dest.to_str().unwrap()]).status.success()
    });
    assert!(damaged.is_some(), "every segment fetched despite the damage");
}

/// A stream switched from none to zstd and back: list, restore and verify
/// read every batch, each as it was stored.
#[test]
fn an_archive_switched_from_none_to_zstd_and_back_lists_restores_and_verifies() {
    let setup = Setup::new("zstd-mixed", 10, "seal = spool");
    write(&setup, 1..=10);
    setup.ok(&["run", "--once"]);
    setup.write_config(10, "seal = spool\ncompression = zstd\ncompression_level = 9", "");
    write(&setup, 11..=20);
    setup.ok(&["run", "--once"]);
    setup.write_config(10, "seal = spool\ncompression = none", "");
    write(&setup, 21..=30);
    setup.ok(&["run", "--once"]);

    let objects = setup.batch_objects();
    let kinds: Vec<bool> = objects.iter().map(|o| is_zstd(o)).collect();
    assert_eq!(kinds, [false, true, false]);
    let list = setup.ok(&["list"]);
    assert!(list.contains("stream s: 3 batches, 30 segments"), "{list}");
    let zstd_lines: Vec<&str> = list.lines().filter(|l| l.contains("(zstd frames, ")).collect();
    assert_eq!(zstd_lines.len(), 1, "{list}");
    assert!(zstd_lines[0].contains("11..20"), "{list}");
    assert_same_files(&setup.src, &restore_to(&setup, "restored"));
    setup.ok(&["verify", "--deep"]);
    for p in [5, 15, 25] {
        let out = setup.walship(&["fetch", "-s", "s", &segment_name(p), "-"]);
        assert!(out.status.success() && out.stdout == content(p), "segment {p}");
    }
}

/// A crash between upload and commit of a compressed batch heals: the
/// restart makes the same frames, finds the object with the same stored size
/// and CRC32, and records it without sending it again.
#[test]
fn a_crash_between_upload_and_commit_of_a_compressed_batch_heals_without_resending() {
    let setup = Setup::new("zstd-heal", 10, "seal = spool\ncompression = zstd");
    write(&setup, 1..=20);
    setup.ok(&["run", "--once"]);
    forget_last_commit(&setup);
    let object = setup.batch_objects().pop().unwrap();
    let before = identity(&object);

    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("1 already in the archive"), "{out}");
    assert_eq!(identity(&object), before, "the stored batch was sent again");
    assert_same_files(&setup.src, &restore_to(&setup, "restored"));
    setup.ok(&["verify", "--deep"]);
}

/// The same, when the stored frames came from another zstd (here the
/// `zstd` tool at another level): they differ byte for byte, so the
/// segments they hold are compared instead, and the object is recorded
/// with its own layout, not sent again.
#[test]
fn a_stored_batch_made_by_another_zstd_heals_on_what_it_holds() {
    let setup = Setup::new("zstd-heal-other", 10, "seal = spool\ncompression = zstd");
    write(&setup, 1..=10);
    setup.ok(&["run", "--once"]);
    forget_last_commit(&setup);
    let object = setup.batch_objects().pop().unwrap();
    // Frames the zstd tool makes at level 19, one per segment.
    let mut other = Vec::new();
    for p in 1..=10 {
        other.extend(zstd_tool(&["-19", "-c", "-q"], &setup.src.join(segment_name(p))));
    }
    assert_ne!(other, fs::read(&object).unwrap(), "level 19 should differ from level 3");
    fs::write(&object, &other).unwrap();
    let before = identity(&object);

    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    assert!(stdout(&out).contains("1 already in the archive"), "{}", stdout(&out));
    assert!(stderr(&out).contains("holds these segments in zstd frames of"), "{}", stderr(&out));
    assert_eq!(identity(&object), before, "the stored batch was sent again");
    assert_same_files(&setup.src, &restore_to(&setup, "restored"));
    setup.ok(&["verify", "--deep"]);
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(8), "-"]);
    assert!(out.status.success() && out.stdout == content(8));

    // Other segments than the local ones, even in valid frames, stay a conflict.
    let setup = Setup::new("zstd-heal-conflict", 10, "seal = spool\ncompression = zstd");
    write(&setup, 1..=10);
    setup.ok(&["run", "--once"]);
    forget_last_commit(&setup);
    fs::write(setup.src.join(segment_name(10)), b"other content").unwrap();
    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("different content"), "{}", stderr(&out));
}

/// Remove the last commit's remote record and journal line, keeping its
/// object: what a crash between upload and commit leaves.
fn forget_last_commit(setup: &Setup) {
    fs::remove_file(setup.record_objects().pop().unwrap()).unwrap();
    let journal = fs::read_to_string(setup.journal()).unwrap();
    let kept: Vec<&str> = journal.lines().collect();
    fs::write(setup.journal(), kept[..kept.len() - 1].join("\n") + "\n").unwrap();
}

/// (inode, mtime): a rewrite changes them.
fn identity(path: &Path) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// Levels are checked at load: 20 and above are refused with the range.
#[test]
fn compression_level_out_of_range_is_refused_at_load() {
    let setup = Setup::new("zstd-level", 10, "compression = zstd\ncompression_level = 22");
    let out = setup.walship(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("compression_level") && stderr(&out).contains("1 to 19"),
        "{}",
        stderr(&out)
    );
}

/// On each S3 server: a compressed batch larger than a part goes up as a
/// multipart upload of streamed parts; restore, fetch of a middle segment
/// and verify --deep read it back; curl's copy of it is a .zst file of the
/// segments' concatenation.
#[test]
fn compressed_multipart_batches_on_s3_restore_fetch_and_verify() {
    for env in crate::s3::S3Env::all() {
        let extra = "seal = spool\ncompression = zstd";
        let prefix = crate::s3::unique_prefix("zstd");
        let setup = Setup::new("s3-zstd", 10, extra);
        let setup = Setup { target_lines: env.target_lines(&setup.dir.path, &prefix), ..setup };
        setup.write_config(10, extra, "");
        for p in 1..=10u64 {
            fs::write(setup.src.join(segment_name(p)), log_lines(p, 1 << 20)).unwrap();
        }
        // About 15 MiB that do not compress: the stored object needs 4 parts of 5 MiB.
        let noise: Vec<u8> = (1000..1004).flat_map(|p| segment_bytes(p, 4 << 20)).collect();
        fs::write(setup.src.join(segment_name(5)), &noise).unwrap();

        let out = setup.ok(&["run", "--once"]);
        assert!(out.contains("archived 1 batch (10 segments"), "{}: {out}", env.name);
        assert_same_files(&setup.src, &restore_to(&setup, "restored"));
        setup.ok(&["verify", "--deep"]);
        for p in [4, 5, 6] {
            let out = setup.walship(&["fetch", "-s", "s", &segment_name(p), "-"]);
            assert_success(&out, &["fetch", &segment_name(p)]);
            assert!(
                out.stdout == fs::read(setup.src.join(segment_name(p))).unwrap(),
                "{}: segment {p}",
                env.name
            );
        }

        let key = format!("{prefix}/s/batches/{:016x}-{:016x}", 1, 10);
        let response = env.curl("GET", &key, &[]).stdout;
        let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").expect("headers end") + 4;
        let object = setup.dir.path.join("object.zst");
        fs::write(&object, &response[body_at..]).unwrap();
        assert!(fs::metadata(&object).unwrap().len() > 10 << 20, "{}: not multipart-sized", env.name);
        let concatenation: Vec<u8> =
            (1..=10).flat_map(|p| fs::read(setup.src.join(segment_name(p))).unwrap()).collect();
        assert!(zstd_tool(&["-d", "-c", "-q"], &object) == concatenation, "{}: zstd -d", env.name);
    }
}

/// Through a proxy that sees every request: fetch of a segment in the
/// middle of a compressed batch on S3 reads the batch object once, with a
/// Range of exactly its frame.
#[test]
fn fetch_from_s3_is_one_ranged_get_of_the_frame() {
    let Some(env) = crate::s3::S3Env::get() else { return };
    let proxy = crate::faultproxy::FaultProxy::start(&env.endpoint);
    let prefix = crate::s3::unique_prefix("zstd-fetch");
    let extra = "seal = spool\ncompression = zstd";
    let setup = Setup::new("s3-zstd-fetch", 10, extra);
    let credentials = env.credentials_file(&setup.dir.path, &env.secret);
    let target_lines = format!(
        "target = s3://{}/{prefix}\nendpoint = {}\nregion = {}\ncredentials_file = {}\n",
        env.bucket,
        proxy.endpoint(),
        env.region,
        credentials.display()
    );
    let setup = Setup { target_lines, ..setup };
    setup.write_config(10, extra, "");
    write(&setup, 1..=10);
    setup.ok(&["run", "--once"]);

    let batch = format!("/{}/{prefix}/s/batches/{:016x}-{:016x}", env.bucket, 1, 10);
    let gets_before = proxy.seen(crate::faultproxy::Kind::Get).len();
    let out = setup.walship(&["fetch", "-s", "s", &segment_name(6), "-"]);
    assert_success(&out, &["fetch", "-s", "s", &segment_name(6), "-"]);
    assert!(out.stdout == content(6));
    let gets: Vec<String> = proxy.seen(crate::faultproxy::Kind::Get)[gets_before..]
        .iter()
        .filter(|line| line.contains(&batch))
        .cloned()
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    // The frame's place, from the journal's record of segment 6.
    let journal = fs::read_to_string(setup.journal()).unwrap();
    let seg = journal.split(" seg=").find(|s| s.starts_with("6,")).expect("segment 6 in the journal");
    let fields: Vec<u64> = seg.split(',').skip(4).take(2).map(|f| f.trim().parse().unwrap()).collect();
    let range = format!("range: bytes={}-{}", fields[0], fields[0] + fields[1] - 1);
    assert!(gets[0].ends_with(&range), "{} instead of {range}", gets[0]);
}

/// A wiped state directory: the compressed batches' remote records are
/// adopted (checked against the local segments on their raw CRC32s) and
/// nothing is sent again; a restore to a position inside a compressed
/// batch stops there.
#[test]
fn a_wiped_state_directory_adopts_compressed_batches_and_restore_stops_inside_one() {
    let setup = Setup::new("zstd-wiped", 10, "seal = spool\ncompression = zstd");
    write(&setup, 1..=20);
    setup.ok(&["run", "--once"]);
    let before: Vec<_> = setup.batch_objects().iter().map(|o| identity(o)).collect();
    fs::remove_dir_all(&setup.state).unwrap();
    write(&setup, 21..=25);
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 1 batch (5 segments"), "{out}");
    let after: Vec<_> = setup.batch_objects().iter().take(2).map(|o| identity(o)).collect();
    assert_eq!(before, after, "a batch was sent again");

    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap(), "--position", "15"]);
    let mut names: Vec<String> =
        fs::read_dir(&restored).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, (1..=15).map(segment_name).collect::<Vec<_>>());
    for p in 1..=15 {
        assert!(fs::read(restored.join(segment_name(p))).unwrap() == content(p), "segment {p}");
    }
}

/// A crash between upload and commit, then the stream's `compression`
/// switched before the restart: the stored object holds the same segments
/// in the other encoding, so it is recorded as stored (not sent again, not
/// a conflict), and restore and verify --deep read it.
#[test]
fn a_stored_batch_heals_after_compression_was_switched_either_way() {
    for (before, after) in
        [("compression = zstd", "compression = none"), ("compression = none", "compression = zstd")]
    {
        let setup = Setup::new("zstd-switched-heal", 10, &format!("seal = spool\n{before}"));
        write(&setup, 1..=20);
        setup.ok(&["run", "--once"]);
        forget_last_commit(&setup);
        let object = setup.batch_objects().pop().unwrap();
        let stored = identity(&object);
        setup.write_config(10, &format!("seal = spool\n{after}"), "");

        let out = setup.walship(&["run", "--once"]);
        assert_success(&out, &["run", "--once", after]);
        assert!(stdout(&out).contains("1 already in the archive"), "{after}: {}", stdout(&out));
        assert!(stderr(&out).contains("recording it as it is stored"), "{after}: {}", stderr(&out));
        assert_eq!(identity(&object), stored, "{after}: the stored batch was sent again");
        let list = setup.ok(&["list"]);
        assert_eq!(list.contains("(zstd frames, "), before.ends_with("zstd"), "{after}: {list}");
        assert_same_files(&setup.src, &restore_to(&setup, "restored"));
        setup.ok(&["verify", "--deep"]);
    }
}

/// With compression = zstd a snapshot is stored as one zstd frame of its
/// image: `zstd -d` gives the image, restore writes it as
/// walship-snapshot-POSITION, verify --deep decodes it and finds damage.
#[test]
fn a_snapshot_of_a_compressed_stream_is_one_zstd_frame() {
    use crate::util::kvapp::{self, snapshot_command, state_at, state_text};
    let setup = Setup::new("zstd-snapshot", 10, "");
    let lines = format!(
        "seal = spool\nsnapshot_interval = 1000\nsnapshot_command = {}\ncompression = zstd",
        snapshot_command("", &setup.src)
    );
    setup.write_config(10, &lines, "");
    kvapp::write_segments(&setup.src, 0..=25);
    setup.ok(&["run", "--once"]); // archives 0..=25, takes the snapshot due at 0
    let out = setup.ok(&["snapshot", "-s", "s"]);
    assert!(out.contains("at position 25 succeeded"), "{out}");
    let object = setup.archive.join(format!("s/snapshots/{:016x}", 25));
    assert!(is_zstd(&object), "the snapshot is not a zstd frame");
    let image = state_text(&state_at(25));
    assert_eq!(zstd_tool(&["-d", "-c", "-q"], &object), image.as_bytes());
    assert!(setup.ok(&["list"]).contains("/snapshots/"));

    let restored = restore_to(&setup, "restored");
    let file = restored.join(format!("walship-snapshot-{:016x}", 25));
    assert_eq!(fs::read_to_string(&file).unwrap(), image);
    setup.ok(&["verify", "--deep"]);

    let mut bytes = fs::read(&object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&object, &bytes).unwrap();
    let out = setup.walship(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("snapshot") && stdout(&out).contains("CORRUPT"), "{}", stdout(&out));
}
