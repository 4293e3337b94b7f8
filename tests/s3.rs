//! The S3 target against a real Garage server (started by `scripts/test`),
//! checked with the binary as a user runs it and with curl as an
//! independent S3 client.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::*;

/// The S3 test environment from `scripts/garage-env` and `scripts/tls-proxy-env`.
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
    pub tls_endpoint: Option<String>,
    pub ca_file: Option<String>,
}

impl S3Env {
    /// The environment, or `None` (test skipped, with a note) when it is not
    /// set up — unless `WALSHIP_REQUIRE_S3` is set, as `scripts/test` does.
    pub fn get() -> Option<S3Env> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let env = (|| {
            Some(S3Env {
                endpoint: var("WALSHIP_TEST_S3_ENDPOINT")?,
                bucket: var("WALSHIP_TEST_S3_BUCKET")?,
                region: var("WALSHIP_TEST_S3_REGION").unwrap_or_else(|| "garage".into()),
                key_id: var("AWS_ACCESS_KEY_ID")?,
                secret: var("AWS_SECRET_ACCESS_KEY")?,
                tls_endpoint: var("WALSHIP_TEST_TLS_ENDPOINT"),
                ca_file: var("WALSHIP_TEST_CA_FILE"),
            })
        })();
        if env.is_none() {
            assert!(
                std::env::var_os("WALSHIP_REQUIRE_S3").is_none(),
                "WALSHIP_REQUIRE_S3 is set but the S3 test environment is missing; run scripts/test"
            );
            eprintln!("skipping: no S3 test environment (run scripts/test to start Garage)");
        }
        env
    }

    /// A credentials file (mode 0600) in `dir` holding `secret`.
    pub fn credentials_file(&self, dir: &Path, secret: &str) -> PathBuf {
        let path = dir.join("credentials");
        let text =
            format!("[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n", self.key_id);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `[global]` lines for an s3 target under a unique `prefix`.
    pub fn target_lines(&self, setup_dir: &Path, prefix: &str) -> String {
        let creds = self.credentials_file(setup_dir, &self.secret);
        format!(
            "target = s3://{}/{prefix}\nendpoint = {}\nregion = {}\ncredentials_file = {}\npart_size = 5MiB\n",
            self.bucket,
            self.endpoint,
            self.region,
            creds.display()
        )
    }

    /// A signed request with curl, an S3 client independent of walship.
    pub fn curl(&self, method: &str, path_and_query: &str, headers: &[&str]) -> Output {
        let mut cmd = Command::new("curl");
        // Garage requires x-amz-content-sha256, which curl 7.88 does not add.
        cmd.args(["-sS", "-i", "-X", method, "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--aws-sigv4"])
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.key_id, self.secret));
        if method == "HEAD" {
            cmd.arg("-I");
        }
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(format!("{}/{}/{path_and_query}", self.endpoint, self.bucket));
        cmd.output().expect("run curl")
    }
}

/// A unique key prefix per test run, so runs never see each other's objects.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("tests/{name}-{}-{nanos}", std::process::id())
}

fn header_value(response: &str, name: &str) -> Option<String> {
    response.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

/// The daemon archives to Garage (multipart for large batches), restore is
/// byte-identical, and curl sees the CRC32 checksum and the part count.
#[test]
fn daemon_archives_to_garage_and_restores_byte_for_byte() {
    let Some(env) = S3Env::get() else { return };
    let prefix = unique_prefix("e2e");
    let setup = Setup::new("s3-e2e", 10, "seal = spool");
    let lines = env.target_lines(&setup.dir.path, &prefix);
    let setup = Setup { target_lines: lines, ..setup };
    setup.write_config(10, "seal = spool", "");
    // 25 segments of ~1.5-2 MiB: batches of ~17 MiB go in 4 parts of 5 MiB.
    for p in 1..=25u64 {
        let mut bytes = segment_bytes(p, 4096);
        bytes.resize(1_500_000 + (p as usize * 20_011) % 500_000, (p % 251) as u8);
        fs::write(setup.src.join(segment_name(p)), bytes).unwrap();
    }

    let daemon = Daemon::start(&setup.config, true);
    let position = setup.state.join("s/archived_position");
    let deadline = Instant::now() + Duration::from_secs(120);
    while fs::read_to_string(&position).unwrap_or_default() != "20\n" {
        assert!(Instant::now() < deadline, "daemon did not archive to Garage in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM: a clean stop with exit 0.
    let output = daemon.terminate();
    assert!(output.status.success(), "daemon exit {:?}: {}", output.status, stderr(&output));

    // --once ships the short final batch (21..25).
    let out = setup.ok(&["run", "--once"]);
    assert!(out.contains("archived 1 batch (5 segments"), "{out}");
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
    setup.ok(&["verify", "--deep"]);

    // curl: the object carries a CRC32 checksum and came in several parts.
    let key = format!("{prefix}/s/batches/{:016x}-{:016x}", 1, 10);
    let head = env.curl("HEAD", &key, &["x-amz-checksum-mode: ENABLED"]);
    let text = stdout(&head);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let expected: Vec<u8> =
        (1..=10u64).flat_map(|p| fs::read(setup.src.join(segment_name(p))).unwrap()).collect();
    let crc = header_value(&text, "x-amz-checksum-crc32").expect("x-amz-checksum-crc32 on the object");
    let crc_hex = format!("{:08x}", crc32fast::hash(&expected));
    assert_eq!(base64_to_hex(&crc), crc_hex, "stored checksum is the CRC32 of the batch");
    let parts = env.curl("HEAD", &format!("{key}?partNumber=1"), &[]);
    let count = header_value(&stdout(&parts), "x-amz-mp-parts-count")
        .or_else(|| {
            header_value(&text, "etag")
                .and_then(|e| e.trim_matches('"').rsplit_once('-').map(|(_, n)| n.to_string()))
        })
        .expect("a part count from partNumber=1 or the multipart ETag");
    assert!(count.parse::<u32>().unwrap() >= 3, "batch uploaded in {count} parts, expected 3 or more");
}

fn base64_to_hex(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = String::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push_str(&format!("{:02x}", (bits >> nbits) & 0xff));
        }
    }
    out
}

/// Each misconfiguration gives exit 1 from `check` and `run --once`, with a
/// message that says what to fix.
#[test]
fn misconfigurations_give_actionable_messages() {
    let Some(env) = S3Env::get() else { return };
    let mut setup = Setup::new("s3-errors", 5, "seal = spool");
    setup.write_segments(1..=3, 100);
    let good_creds = env.credentials_file(&setup.dir.path, &env.secret);
    let wrong_secret_dir = setup.dir.path.join("wrong");
    fs::create_dir_all(&wrong_secret_dir).unwrap();
    let bad_creds = env.credentials_file(&wrong_secret_dir, &"0".repeat(64));
    let prefix = unique_prefix("errors");
    let cases = [
        (
            "wrong key",
            env.endpoint.clone(),
            env.region.clone(),
            env.bucket.clone(),
            bad_creds.clone(),
            "secret",
        ),
        (
            "wrong region",
            env.endpoint.clone(),
            "eu-west-7".into(),
            env.bucket.clone(),
            good_creds.clone(),
            "region",
        ),
        (
            "missing bucket",
            env.endpoint.clone(),
            env.region.clone(),
            "no-such-bucket-walship".into(),
            good_creds.clone(),
            "bucket",
        ),
        (
            "unreachable endpoint",
            "http://127.0.0.1:9".into(),
            env.region.clone(),
            env.bucket.clone(),
            good_creds.clone(),
            "reachable",
        ),
    ];
    for (what, endpoint, region, bucket, creds, hint) in cases {
        setup.target_lines = format!(
            "target = s3://{bucket}/{prefix}\nendpoint = {endpoint}\nregion = {region}\ncredentials_file = {}\n",
            creds.display()
        );
        setup.write_config(5, "seal = spool", "");
        for args in [&["check"][..], &["run", "--once"]] {
            let started = Instant::now();
            let out = setup.walship(args);
            let text = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(out.status.code(), Some(1), "{what}, {args:?}: {text}");
            assert!(text.to_lowercase().contains(hint), "{what}, {args:?}: message lacks '{hint}':\n{text}");
            assert!(!text.contains(&env.secret), "{what}: the secret leaked into output");
            assert!(started.elapsed() < Duration::from_secs(90), "{what}: took {:?}", started.elapsed());
        }
    }
}

/// A group-readable credentials file is refused, naming the fix.
#[test]
fn credentials_file_must_be_private() {
    let Some(env) = S3Env::get() else { return };
    let setup = Setup::new("s3-creds", 5, "");
    let lines = env.target_lines(&setup.dir.path, &unique_prefix("creds"));
    let setup = Setup { target_lines: lines, ..setup };
    setup.write_config(5, "", "");
    let creds = setup.dir.path.join("credentials");
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o644)).unwrap();
    let out = setup.walship(&["check"]);
    assert_ne!(out.status.code(), Some(0));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("chmod 600"), "{text}");
    assert!(!text.contains(&env.secret), "the secret leaked into output");
}

/// Through a TLS proxy with a private CA: works with `ca_file`, and without
/// it fails with a message pointing at `ca_file`.
#[test]
fn tls_with_a_private_ca() {
    let Some(env) = S3Env::get() else { return };
    let (Some(tls), Some(ca)) = (env.tls_endpoint.clone(), env.ca_file.clone()) else {
        assert!(std::env::var_os("WALSHIP_REQUIRE_S3").is_none(), "TLS proxy environment missing");
        return;
    };
    let setup = Setup::new("s3-tls", 5, "seal = spool");
    setup.write_segments(1..=7, 3000);
    let creds = env.credentials_file(&setup.dir.path, &env.secret);
    let base = format!(
        "target = s3://{}/{}\nendpoint = {tls}\nregion = {}\ncredentials_file = {}\n",
        env.bucket,
        unique_prefix("tls"),
        env.region,
        creds.display()
    );

    let without = Setup { target_lines: base.clone(), ..setup };
    without.write_config(5, "seal = spool", "");
    let out = without.walship(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("ca_file"), "{text}");

    let with = Setup { target_lines: format!("{base}ca_file = {ca}\n"), ..without };
    with.write_config(5, "seal = spool", "");
    with.ok(&["check"]);
    with.ok(&["run", "--once"]);
    let restored = with.dir.path.join("restored");
    with.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&with.src, &restored);
}

/// SIGKILL the daemon while it uploads multipart batches to Garage, ten
/// times; then one pass finishes the job: the manifest is contiguous, every
/// object verifies, restore is byte-identical, and no unfinished multipart
/// upload is left behind (stale ones are aborted at start).
#[test]
fn sigkill_during_multipart_uploads_loses_nothing_and_leaves_no_stale_uploads() {
    let Some(env) = S3Env::get() else { return };
    let prefix = unique_prefix("kill");
    let mut setup = Setup::new("s3-kill", 4, "seal = spool");
    setup.target_lines = env.target_lines(&setup.dir.path, &prefix);
    setup.write_config(4, "seal = spool", "");
    // 3 MiB segments, 4 per batch: 12 MiB batches in 3 parts of 5 MiB.
    for p in 1..=24u64 {
        let mut bytes = segment_bytes(p, 4096);
        bytes.resize(3 << 20, (p * 7 % 251) as u8);
        fs::write(setup.src.join(segment_name(p)), bytes).unwrap();
    }
    let mut seed = 99u64;
    let mut interrupted = 0;
    for _ in 0..10 {
        let daemon = Daemon::start(&setup.config, false);
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(30 + (seed >> 33) % 250));
        daemon.kill();
        interrupted += unfinished_uploads(&env, &prefix);
    }
    assert!(interrupted > 0, "no kill landed inside a multipart upload; the test proved nothing");
    setup.ok(&["run", "--once"]);

    let list = setup.ok(&["list"]);
    assert!(list.contains("6 batches, 24 segments"), "{list}");
    setup.ok(&["verify", "--deep"]);
    let restored = setup.dir.path.join("restored");
    setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
    assert_same_files(&setup.src, &restored);
    assert_eq!(unfinished_uploads(&env, &prefix), 0, "unfinished multipart uploads remain");
}

/// How many multipart uploads under `prefix` are unfinished.
fn unfinished_uploads(env: &S3Env, prefix: &str) -> usize {
    // curl signs the query as written: parameters in sorted order, '/' encoded.
    let uploads = env.curl("GET", &format!("?prefix={}%2F&uploads=", prefix.replace('/', "%2F")), &[]);
    let text = stdout(&uploads);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.matches("<UploadId>").count()
}

/// Without `credentials_file`, credentials come from the environment, or
/// from systemd's `$CREDENTIALS_DIRECTORY`; with none at all, the error says
/// where to put them.
#[test]
fn credentials_from_environment_and_credentials_directory() {
    let Some(env) = S3Env::get() else { return };
    let mut setup = Setup::new("s3-cred-sources", 5, "seal = spool");
    setup.target_lines = format!(
        "target = s3://{}/{}\nendpoint = {}\nregion = {}\n",
        env.bucket,
        unique_prefix("cred-sources"),
        env.endpoint,
        env.region
    );
    setup.write_config(5, "seal = spool", "");
    let config = setup.config.to_str().unwrap();
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_walship"));
        cmd.args(["check", "-c", config])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("CREDENTIALS_DIRECTORY");
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    };

    let out = run(&[("AWS_ACCESS_KEY_ID", &env.key_id), ("AWS_SECRET_ACCESS_KEY", &env.secret)]);
    assert_success(&out, &["check (environment)"]);

    let dir = setup.dir.path.join("creds.d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("aws_access_key_id"), &env.key_id).unwrap();
    fs::write(dir.join("aws_secret_access_key"), &env.secret).unwrap();
    let out = run(&[("CREDENTIALS_DIRECTORY", dir.to_str().unwrap())]);
    assert_success(&out, &["check ($CREDENTIALS_DIRECTORY)"]);

    let out = run(&[]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "missing credentials are a configuration error: {text}");
    assert!(text.contains("credentials_file") && text.contains("AWS_ACCESS_KEY_ID"), "{text}");
}
