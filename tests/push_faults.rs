//! `walship push` (archive_command) of a multipart WAL segment, against
//! Garage through the fault proxy, with no daemon: parts that finish out of
//! order still make the object in order; a part that keeps failing aborts
//! the upload and fails the push, recording nothing; a push killed in the
//! middle of its upload heals when PostgreSQL retries it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::faultproxy::{Fault, FaultProxy, Kind, Rule};
use crate::s3::{S3Env, unique_prefix};
use crate::util::*;

/// 8 MiB WAL segments: with `part_size = 5MiB`, a multipart upload of two
/// parts (5 and 3 MiB) sent in parallel.
const SEGMENT: usize = 8 << 20;

/// A `pg` stream of 8 MiB WAL segments archiving to Garage through a proxy.
struct PushRig {
    env: S3Env,
    proxy: FaultProxy,
    dir: TestDir,
    pg_wal: PathBuf,
    config: PathBuf,
    prefix: String,
}

impl PushRig {
    /// A rig, or `None` when there is no S3 test environment.
    fn new(name: &str) -> Option<PushRig> {
        let env = S3Env::get()?;
        let proxy = FaultProxy::start(&env.endpoint);
        let prefix = unique_prefix(name);
        let dir = TestDir::new(name);
        let pg_wal = dir.path.join("pg_wal");
        fs::create_dir_all(&pg_wal).unwrap();
        let credentials = env.credentials_file(&dir.path, &env.secret);
        let config = dir.path.join("walship.conf");
        fs::write(
            &config,
            format!(
                "[global]\nstate_dir = {}\ntarget = s3://{}/{prefix}\nendpoint = {}\nregion = {}\n\
                 credentials_file = {}\npart_size = 5MiB\nparallel_uploads = 2\nconnect_timeout = 1s\n\
                 io_timeout = 1s\n\n[stream pg]\ndir = {}\nnaming = postgres\nwal_segment_size = 8MiB\n\
                 batch_size = 16\n",
                dir.path.join("state").display(),
                env.bucket,
                proxy.endpoint(),
                env.region,
                credentials.display(),
                pg_wal.display()
            ),
        )
        .unwrap();
        Some(PushRig { env, proxy, dir, pg_wal, config, prefix })
    }

    /// Write the segment `name`, its bytes derived from `seed`.
    fn segment(&self, name: &str, seed: u64) -> PathBuf {
        let mut bytes = segment_bytes(seed + 1, 4096).repeat(SEGMENT / 1024);
        bytes.resize(SEGMENT, (seed % 251) as u8);
        let path = self.pg_wal.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(["-c", self.config.to_str().unwrap()]);
        all
    }

    fn push(&self, path: &Path) -> Output {
        walship_within(&self.args(&["push", "-s", "pg", path.to_str().unwrap()]), Duration::from_secs(60))
    }

    /// The segment `name` fetched from the archive (with the proxy healed).
    fn fetched(&self, name: &str) -> Vec<u8> {
        let dest = self.dir.path.join(format!("fetched-{name}"));
        let out = walship_within(
            &self.args(&["fetch", "-s", "pg", name, dest.to_str().unwrap()]),
            Duration::from_secs(60),
        );
        assert_success(&out, &["fetch", name]);
        fs::read(dest).unwrap()
    }

    /// How many local journal records hold the segment `name`.
    fn records_of(&self, name: &str) -> usize {
        let journal = fs::read_to_string(self.dir.path.join("state/pg/manifest")).unwrap_or_default();
        journal.lines().filter(|line| line.contains(&format!(",{name},"))).count()
    }

    /// Unfinished multipart uploads under the rig's prefix.
    fn open_uploads(&self) -> usize {
        // curl signs the query as written: parameters in sorted order.
        let query = format!("?prefix={}%2F&uploads=", self.prefix.replace('/', "%2F"));
        let text = stdout(&self.env.curl("GET", &query, &[]));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.matches("<UploadId>").count()
    }

    /// Wait until the proxy has injected a fault, or panic after 30 s.
    fn wait_injected(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.proxy.injected().is_empty() {
            assert!(Instant::now() < deadline, "no fault injected; requests: {}", self.proxy.requests());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One part is held by the proxy until walship's io_timeout and sent again,
/// so it completes after the other part: the push succeeds, and the object
/// is the segment's bytes in order, recorded once.
#[test]
fn parts_finishing_out_of_order_make_the_object_in_order() {
    let Some(rig) = PushRig::new("push-parts-order") else { return };
    let name = "000000010000000000000001";
    let segment = rig.segment(name, 1);
    rig.proxy.push(Rule::burst(Fault::Stall, Kind::PutPart, 1));
    let out = rig.push(&segment);
    assert_success(&out, &["push", name]);
    assert_eq!(rig.proxy.injected().len(), 1, "one part was held back");
    assert_eq!(rig.proxy.seen(Kind::PutPart).len(), 3, "two parts, one of them twice");
    rig.proxy.heal();
    assert!(rig.fetched(name) == fs::read(&segment).unwrap(), "the fetched segment differs");
    assert_eq!(rig.records_of(name), 1);
}

/// A part that fails every attempt fails the push (PostgreSQL keeps the
/// segment and retries), the multipart upload is aborted, and nothing is
/// recorded; the retry through a healed link archives it.
#[test]
fn a_part_that_keeps_failing_aborts_the_upload_and_fails_the_push() {
    let Some(rig) = PushRig::new("push-part-fails") else { return };
    let name = "000000010000000000000001";
    let segment = rig.segment(name, 2);
    rig.proxy.push(Rule::every(Fault::Status(500), Kind::PutPart, 1, 1_000_000));
    let out = rig.push(&segment);
    assert!(!out.status.success(), "push succeeded with every part failing");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(rig.proxy.seen(Kind::Abort).len(), 1, "the upload is aborted once");
    assert_eq!(rig.proxy.seen(Kind::Complete).len(), 0);
    assert_eq!(rig.open_uploads(), 0, "an unfinished upload is left");
    assert_eq!(rig.records_of(name), 0, "recorded without its object");

    rig.proxy.heal();
    assert_success(&rig.push(&segment), &["push again", name]);
    assert!(rig.fetched(name) == fs::read(&segment).unwrap(), "the fetched segment differs");
    assert_eq!(rig.records_of(name), 1);
}

/// SIGKILL while the parts are in flight (held by the proxy): PostgreSQL
/// runs archive_command again, which aborts the killed push's upload as a
/// stale one, archives the segment and exits 0; it is recorded once and
/// fetched byte for byte, and no unfinished upload is left.
#[test]
fn a_push_killed_mid_upload_heals_on_retry() {
    let Some(rig) = PushRig::new("push-killed") else { return };
    let name = "000000010000000000000001";
    let segment = rig.segment(name, 3);
    rig.proxy.push(Rule::every(Fault::Stall, Kind::PutPart, 1, 1_000_000));
    let mut killed = Command::new(env!("CARGO_BIN_EXE_walship"))
        .args(rig.args(&["push", "-s", "pg", segment.to_str().unwrap()]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rig.wait_injected();
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(rig.records_of(name), 0, "recorded by a push killed before its parts were stored");
    assert_eq!(rig.proxy.seen(Kind::Abort).len(), 0, "the killed push could not abort");

    rig.proxy.heal();
    let out = rig.push(&segment);
    assert_success(&out, &["push after the kill", name]);
    assert!(!rig.proxy.seen(Kind::Abort).is_empty(), "the killed push's upload was not aborted");
    assert_eq!(rig.open_uploads(), 0, "an unfinished upload is left");
    assert_eq!(rig.records_of(name), 1);
    assert!(rig.fetched(name) == fs::read(&segment).unwrap(), "the fetched segment differs");
    // PostgreSQL may run it once more: the same bytes succeed.
    assert_success(&rig.push(&segment), &["push once more", name]);
    assert_eq!(rig.records_of(name), 1);
}
