//! Hostile conditions on the local side: segments that change while being
//! archived, and a full disk under the state directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use walship::error::Error;
use walship::status::StatusCell;
use walship::stream::{Hints, Stream};
use walship::target::fs::FileTarget;
use walship::target::{ObjectInfo, Target, TargetError, Upload};

use crate::util::*;

/// A file target that runs `tamper` once, inside the first batch `put`,
/// before storing: the source changes while its bytes are being uploaded.
struct TamperingTarget {
    inner: FileTarget,
    tamper: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Target for TamperingTarget {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn place(&self) -> String {
        self.inner.place()
    }
    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
        let tamper = if key.contains("/batches/") { self.tamper.lock().unwrap().take() } else { None };
        if let Some(tamper) = tamper {
            tamper();
        }
        self.inner.put(key, body)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
        self.inner.head(key)
    }
    fn get(&self, key: &str, range: Option<(u64, u64)>, out: &mut dyn Write) -> Result<u64, TargetError> {
        self.inner.get(key, range, out)
    }
    fn list(&self, prefix: &str, after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError> {
        self.inner.list(prefix, after)
    }
    fn delete(&self, keys: &[String]) -> Result<(), TargetError> {
        self.inner.delete(keys)
    }
    fn check(&self) -> Result<(), TargetError> {
        self.inner.check()
    }
}

fn open_stream(setup: &Setup, target: Arc<dyn Target>) -> Stream {
    let text = fs::read_to_string(&setup.config).unwrap();
    let config = walship::config::parse(&setup.config, &text).unwrap();
    let status = Arc::new(StatusCell::default());
    let lock = Arc::new(walship::statedir::lock_stream(&config.global.state_dir, "s").unwrap());
    Stream::open(config.streams[0].clone(), &config.global.state_dir, target, status, lock).unwrap()
}

/// Change segment `position` during the upload with `change`, then check the
/// batch is refused with a clear error, nothing is recorded or left stored,
/// and the next pass archives the segment's new content.
fn assert_change_is_caught(name: &str, change: fn(&Path)) {
    let setup = Setup::new(name, 5, "seal = spool");
    setup.write_segments(1..=5, 200_000);
    let victim: PathBuf = setup.src.join(segment_name(3));
    let tamper_path = victim.clone();
    let target = Arc::new(TamperingTarget {
        inner: FileTarget::new(setup.archive.clone()),
        tamper: Mutex::new(Some(Box::new(move || change(&tamper_path)))),
    });
    let mut stream = open_stream(&setup, target);

    let error = stream.pass(true, Hints::default(), &|| false).unwrap_err();
    assert!(matches!(error, Error::SegmentChanged { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("changed after it was sealed"), "{message}");
    assert_eq!(stream.archived(), None, "a changed batch was recorded");
    assert!(setup.batch_objects().is_empty(), "a changed batch was left in the archive");

    // The next pass stores what the files hold now.
    let report = stream.pass(true, Hints::default(), &|| false).unwrap();
    assert_eq!(report.batches, 1);
    drop(stream);
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
}

#[test]
fn segment_truncated_while_uploading_is_refused_without_crashing() {
    // Reads past the new end would be SIGBUS without the map guard.
    assert_change_is_caught("truncated", |path| {
        fs::OpenOptions::new().write(true).open(path).unwrap().set_len(10).unwrap()
    });
}

#[test]
fn segment_appended_while_uploading_is_refused() {
    assert_change_is_caught("appended", |path| {
        fs::OpenOptions::new().append(true).open(path).unwrap().write_all(b"late bytes").unwrap()
    });
}

#[test]
fn segment_rewritten_in_place_while_uploading_is_refused() {
    assert_change_is_caught("rewritten", |path| {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        let len = file.metadata().unwrap().len();
        file.write_all_at(b"overwritten", len / 2).unwrap();
    });
}

/// A tmpfs small enough to fill; unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> Option<SmallDisk> {
        fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { path }),
            _ => {
                // SAFETY: geteuid has no preconditions.
                let root = unsafe { libc::geteuid() } == 0;
                assert!(!root, "running as root, yet a tmpfs could not be mounted at {}", path.display());
                eprintln!("skipping the full-disk test: mounting a tmpfs needs root");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fill the filesystem at `dir` up to the last few bytes.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    let small = [0u8; 1];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    filler
}

/// A full disk under the state directory: a clear error naming the file and
/// the fix, exit 1, and once space is back everything is archived with a
/// consistent manifest.
#[test]
fn full_state_disk_gives_a_clear_error_and_corrupts_nothing() {
    let setup = Setup::new("fulldisk", 5, "seal = spool");
    let Some(disk) = SmallDisk::mount(setup.state.clone(), "256k") else { return };
    setup.write_segments(1..=20, 300);
    setup.ok(&["run", "--once"]); // creates the journal and state files
    let filler = fill(&disk.path);
    setup.write_segments(21..=60, 300);

    let out = setup.walship(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(disk.path.to_str().unwrap()), "the message should name the file: {err}");
    assert!(err.contains("free space"), "the message should say what to do: {err}");

    fs::remove_file(filler).unwrap();
    let out = setup.walship(&["run", "--once"]);
    assert_success(&out, &["run", "--once"]);
    let list = setup.ok(&["list"]);
    assert!(list.contains("12 batches, 60 segments"), "{list}");
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
    drop(disk);
}

/// A restore destination that fills up while a large segment is written
/// directly (a 2 MiB tmpfs, segments of 1.5 MiB): exit 1 naming the disk
/// error, the segment before it kept whole, no half file or temp name left.
#[test]
fn full_restore_disk_during_a_direct_write_leaves_no_half_file() {
    let setup = Setup::new("fullrestore", 3, "seal = spool");
    let restored = setup.dir.path.join("restored");
    let Some(disk) = SmallDisk::mount(restored.clone(), "2m") else { return };
    let len = 3 << 19;
    for p in 1..=3 {
        let mut bytes = segment_bytes(p, 1000);
        bytes.resize(len, p as u8);
        fs::write(setup.src.join(segment_name(p)), bytes).unwrap();
    }
    setup.ok(&["run", "--once"]);
    let out = setup.walship(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("No space left on device"), "{}", stderr(&out));
    let mut names: Vec<String> =
        fs::read_dir(&disk.path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [segment_name(1)]);
    assert_eq!(
        fs::read(disk.path.join(segment_name(1))).unwrap(),
        fs::read(setup.src.join(segment_name(1))).unwrap()
    );
    drop(disk);
}
