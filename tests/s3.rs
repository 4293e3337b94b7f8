//! The S3 target against a real Garage server (started by `scripts/test`),
//! checked with the binary as a user runs it and with curl as an
//! independent S3 client.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::*;

/// One S3 test server: Garage (from `scripts/garage-env`, with the TLS
/// proxy of `scripts/tls-proxy-env`) or s3s-fs (from `scripts/s3s-env`), a
/// second implementation that is strict where Garage is lenient (multipart
/// parts of at least 5 MiB) and lacks some requests (ListMultipartUploads).
pub struct S3Env {
    /// `garage` or `s3s-fs`, for messages.
    pub name: &'static str,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
    pub tls_endpoint: Option<String>,
    pub ca_file: Option<String>,
    /// What the server does that not every S3 store does.
    pub checks_region: bool,
    pub stores_checksums: bool,
    pub lists_multipart_uploads: bool,
}

/// `name`'s value when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Env {
    /// Garage, or `None` (test skipped, with a note) when it is not set up
    /// — unless `WALSHIP_REQUIRE_S3` is set, as `scripts/test` does.
    pub fn get() -> Option<S3Env> {
        let env = S3Env::garage();
        if env.is_none() {
            assert!(
                std::env::var_os("WALSHIP_REQUIRE_S3").is_none(),
                "WALSHIP_REQUIRE_S3 is set but the Garage test environment is missing; run scripts/test"
            );
            eprintln!("skipping: no S3 test environment (run scripts/test to start Garage)");
        }
        env
    }

    /// Every S3 test server that is set up (Garage, s3s-fs); with
    /// `WALSHIP_REQUIRE_S3` set, both must be.
    pub fn all() -> Vec<S3Env> {
        let all: Vec<S3Env> = [S3Env::garage(), S3Env::s3s()].into_iter().flatten().collect();
        if std::env::var_os("WALSHIP_REQUIRE_S3").is_some() {
            assert_eq!(
                all.len(),
                2,
                "WALSHIP_REQUIRE_S3 is set but Garage or s3s-fs is missing; run scripts/test"
            );
        } else if all.len() < 2 {
            eprintln!("note: {} of 2 S3 test servers set up (run scripts/test to start both)", all.len());
        }
        all
    }

    fn garage() -> Option<S3Env> {
        Some(S3Env {
            name: "garage",
            endpoint: var("WALSHIP_TEST_S3_ENDPOINT")?,
            bucket: var("WALSHIP_TEST_S3_BUCKET")?,
            region: var("WALSHIP_TEST_S3_REGION").unwrap_or_else(|| "garage".into()),
            key_id: var("AWS_ACCESS_KEY_ID")?,
            secret: var("AWS_SECRET_ACCESS_KEY")?,
            tls_endpoint: var("WALSHIP_TEST_TLS_ENDPOINT"),
            ca_file: var("WALSHIP_TEST_CA_FILE"),
            checks_region: true,
            stores_checksums: true,
            lists_multipart_uploads: true,
        })
    }

    fn s3s() -> Option<S3Env> {
        Some(S3Env {
            name: "s3s-fs",
            endpoint: var("WALSHIP_TEST_S3S_ENDPOINT")?,
            bucket: var("WALSHIP_TEST_S3S_BUCKET")?,
            region: var("WALSHIP_TEST_S3S_REGION").unwrap_or_else(|| "us-east-1".into()),
            key_id: var("WALSHIP_TEST_S3S_KEY_ID")?,
            secret: var("WALSHIP_TEST_S3S_SECRET")?,
            tls_endpoint: None,
            ca_file: None,
            checks_region: false,
            stores_checksums: false,
            lists_multipart_uploads: false,
        })
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

/// The daemon archives to each S3 server (multipart for large batches),
/// restore is byte-identical, and curl sees the CRC32 checksum and the part
/// count where the server keeps them.
#[test]
fn daemon_archives_and_restores_byte_for_byte() {
    for env in S3Env::all() {
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
            assert!(Instant::now() < deadline, "daemon did not archive to {} in time", env.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        // SIGTERM: a clean stop with exit 0.
        let output = daemon.terminate();
        assert!(output.status.success(), "daemon exit {:?}: {}", output.status, stderr(&output));

        // --once ships the short final batch (21..25).
        let out = setup.ok(&["run", "--once"]);
        assert!(out.contains("archived 1 batch") && out.contains("(5 segments"), "{out}");
        let restored = setup.dir.path.join("restored");
        setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
        assert_same_files(&setup.src, &restored);
        setup.ok(&["verify", "--deep"]);

        // curl: the object carries a CRC32 checksum and came in several parts.
        let key = format!("{prefix}/s/batches/{:016x}-{:016x}", 1, 10);
        let head = env.curl("HEAD", &key, &["x-amz-checksum-mode: ENABLED"]);
        let text = stdout(&head);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        if env.stores_checksums {
            let expected: Vec<u8> =
                (1..=10u64).flat_map(|p| fs::read(setup.src.join(segment_name(p))).unwrap()).collect();
            let crc =
                header_value(&text, "x-amz-checksum-crc32").expect("x-amz-checksum-crc32 on the object");
            let crc_hex = format!("{:08x}", crc32fast::hash(&expected));
            assert_eq!(base64_to_hex(&crc), crc_hex, "stored checksum is the CRC32 of the batch");
        }
        let parts = env.curl("HEAD", &format!("{key}?partNumber=1"), &[]);
        let count = header_value(&stdout(&parts), "x-amz-mp-parts-count")
            .or_else(|| {
                header_value(&text, "etag")
                    .and_then(|e| e.trim_matches('"').rsplit_once('-').map(|(_, n)| n.to_string()))
            })
            .expect("a part count from partNumber=1 or the multipart ETag");
        assert!(count.parse::<u32>().unwrap() >= 3, "batch uploaded in {count} parts, expected 3 or more");
    }
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
    for env in S3Env::all() {
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
            if what == "wrong region" && !env.checks_region {
                continue; // s3s-fs signs and checks with any region
            }
            let what = format!("{}: {what}", env.name);
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
                assert!(
                    text.to_lowercase().contains(hint),
                    "{what}, {args:?}: message lacks '{hint}':\n{text}"
                );
                assert!(!text.contains(&env.secret), "{what}: the secret leaked into output");
                assert!(started.elapsed() < Duration::from_secs(90), "{what}: took {:?}", started.elapsed());
            }
        }
    }
}

/// A group-readable credentials file is refused, naming the fix.
#[test]
fn credentials_file_must_be_private() {
    for env in S3Env::all() {
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

/// SIGKILL the daemon while it uploads multipart batches, ten times; then
/// one pass finishes the job: the manifest is contiguous, every object
/// verifies, restore is byte-identical, and (where the server lists them)
/// no unfinished multipart upload is left behind (stale ones are aborted at
/// start).
#[test]
fn sigkill_during_multipart_uploads_loses_nothing_and_leaves_no_stale_uploads() {
    for env in S3Env::all() {
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
            interrupted += unfinished_uploads(&env, &prefix).unwrap_or(1);
        }
        assert!(interrupted > 0, "no kill landed inside a multipart upload; the test proved nothing");
        setup.ok(&["run", "--once"]);

        let list = setup.ok(&["list"]);
        assert!(list.contains("6 batches, 24 segments"), "{list}");
        setup.ok(&["verify", "--deep"]);
        let restored = setup.dir.path.join("restored");
        setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
        assert_same_files(&setup.src, &restored);
        if let Some(left) = unfinished_uploads(&env, &prefix) {
            assert_eq!(left, 0, "{}: unfinished multipart uploads remain", env.name);
        }
    }
}

/// How many multipart uploads under `prefix` are unfinished; `None` when
/// the server cannot list them.
fn unfinished_uploads(env: &S3Env, prefix: &str) -> Option<usize> {
    if !env.lists_multipart_uploads {
        return None;
    }
    // curl signs the query as written: parameters in sorted order, '/' encoded.
    let uploads = env.curl("GET", &format!("?prefix={}%2F&uploads=", prefix.replace('/', "%2F")), &[]);
    let text = stdout(&uploads);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    Some(text.matches("<UploadId>").count())
}

/// Without `credentials_file`, credentials come from the environment, or
/// from systemd's `$CREDENTIALS_DIRECTORY`; with none at all, the error says
/// where to put them.
#[test]
fn credentials_from_environment_and_credentials_directory() {
    for env in S3Env::all() {
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
}

/// Regression: a prefix such as `site+7:edge/wal` was refused by the config
/// ("may use only letters, digits, '/' and !-_.*'()"). Prefixes with any
/// UTF-8 archive, list, verify and restore through the binary, on each
/// server.
#[test]
fn prefixes_with_any_utf8_archive_and_restore() {
    for env in S3Env::all() {
        for sub in ["site+7:edge/wal", "ünï cödé/x y"] {
            let prefix = format!("{}/{sub}", unique_prefix("utf8"));
            let mut setup = Setup::new("s3-utf8", 3, "seal = spool");
            setup.write_segments(1..=7, 3000);
            setup.target_lines = env.target_lines(&setup.dir.path, &prefix);
            setup.write_config(3, "seal = spool", "");
            let what = format!("{} {sub}", env.name);
            setup.ok(&["check"]);
            let out = setup.ok(&["run", "--once"]);
            assert!(out.contains("archived 3 batches (7 segments"), "{what}: {out}");
            let list = setup.ok(&["list"]);
            assert!(list.contains("3 batches, 7 segments") && list.contains("s/batches/"), "{what}: {list}");
            setup.ok(&["verify", "--deep"]);
            // The state directory gone: the records are found again under the prefix.
            fs::remove_dir_all(&setup.state).unwrap();
            let list = setup.ok(&["list"]);
            assert!(list.contains("3 batches, 7 segments"), "{what}: {list}");
            let restored = setup.dir.path.join("restored");
            setup.ok(&["restore", "-s", "s", "--to", restored.to_str().unwrap()]);
            assert_same_files(&setup.src, &restored);
            // curl, an independent client, finds the object under the prefix as written.
            let key = format!("{prefix}/s/batches/{:016x}-{:016x}", 1, 3);
            let encoded: String = key.split('/').map(encode_segment).collect::<Vec<_>>().join("/");
            let head = stdout(&env.curl("HEAD", &encoded, &[]));
            assert!(head.starts_with("HTTP/1.1 200"), "{what}: {head}");
        }
    }
}

/// One key segment percent-encoded as SigV4 wants it (unreserved kept).
fn encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Regression: `endpoint = https://s3.example.net/base` passed the config
/// (`check` printed "ok" for it) and every request then failed at run time
/// with exit 1. It is refused at load, by every command, with file:line.
/// Needs no S3 server.
#[test]
fn an_endpoint_with_a_path_is_refused_at_load_with_file_and_line() {
    let setup = Setup::with_target(
        "s3-endpoint-path",
        5,
        "",
        "target = s3://bucket/prefix\nendpoint = https://s3.example.net/base",
    );
    let config = setup.config.display().to_string();
    for args in [&["check"][..], &["run", "--once"], &["list"]] {
        let out = setup.walship(args);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}{}", stdout(&out));
        assert!(text.contains(&format!("{config}:4: [global] endpoint:")), "{args:?}: {text}");
        assert!(text.contains("takes no path"), "{args:?}: {text}");
    }
}
