//! The target contract, run against every available target: the file
//! target always, and each S3 test server the environment provides (Garage,
//! s3s-fs; see `S3Env::all`).

use std::sync::Arc;

use std::time::Duration;

use walship::target::fs::FileTarget;
use walship::target::s3::{Credentials, S3Settings, S3Target};
use walship::target::{Target, TargetError, Upload};

use crate::s3::{S3Env, unique_prefix};
use crate::util::TestDir;

/// Every target under test, each with a fresh, empty root: a directory for
/// the file target, a unique prefix in each test bucket for S3.
pub fn targets(name: &str) -> Vec<(String, Arc<dyn Target>, TestDir)> {
    targets_under(name, "")
}

/// [`targets`] with `sub` (a relative path) appended to each root: the
/// file target's directory, each S3 target's prefix.
pub fn targets_under(name: &str, sub: &str) -> Vec<(String, Arc<dyn Target>, TestDir)> {
    let dir = TestDir::new(name);
    let root = if sub.is_empty() { dir.path.clone() } else { dir.path.join(sub) };
    std::fs::create_dir_all(&root).unwrap();
    let file: Arc<dyn Target> = Arc::new(FileTarget::new(root));
    let mut all = vec![("file".to_string(), file, dir)];
    for env in S3Env::all() {
        let prefix =
            if sub.is_empty() { unique_prefix(name) } else { format!("{}/{sub}", unique_prefix(name)) };
        let settings = S3Settings {
            endpoint: env.endpoint.clone(),
            region: env.region.clone(),
            bucket: env.bucket.clone(),
            prefix,
            credentials: Credentials {
                access_key_id: env.key_id.clone(),
                secret_access_key: env.secret.clone(),
                session_token: None,
            },
            ca_file: None,
            part_size: S3_PART_SIZE,
            parallel_uploads: 2,
            streams: 1,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(200),
        };
        let s3: Arc<dyn Target> = Arc::new(S3Target::new(settings).unwrap());
        all.push((format!("s3 ({})", env.name), s3, TestDir::new(name)));
    }
    all
}

/// Part size for S3 conformance: the minimum, so multipart paths run.
const S3_PART_SIZE: u64 = 5 << 20;

fn upload<'a>(pieces: &'a [&'a [u8]]) -> Upload<'a> {
    let mut hasher = crc32fast::Hasher::new();
    pieces.iter().for_each(|p| hasher.update(p));
    Upload::pieces(pieces, pieces.iter().map(|p| p.len() as u64).sum(), hasher.finalize())
}

fn get(target: &dyn Target, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, TargetError> {
    let mut out = Vec::new();
    target.get(key, range, &mut out)?;
    Ok(out)
}

#[test]
fn put_then_head_get_and_ranges() {
    for (name, target, _dir) in targets("conf-put") {
        let body = upload(&[b"hello ", b"", b"world"]);
        target.put("s/batches/a", &body).unwrap();
        let info = target.head("s/batches/a").unwrap().expect(&name);
        assert_eq!(info.size, 11, "{name}");
        if let Some(crc) = info.crc32 {
            assert_eq!(crc, crc32fast::hash(b"hello world"), "{name}");
        }
        assert_eq!(get(target.as_ref(), "s/batches/a", None).unwrap(), b"hello world", "{name}");
        assert_eq!(get(target.as_ref(), "s/batches/a", Some((6, 5))).unwrap(), b"world", "{name}");
        assert_eq!(get(target.as_ref(), "s/batches/a", Some((0, 0))).unwrap(), b"", "{name}");
        // Overwrite is allowed at this layer (policy lives above).
        target.put("s/batches/a", &upload(&[b"x"])).unwrap();
        assert_eq!(get(target.as_ref(), "s/batches/a", None).unwrap(), b"x", "{name}");
    }
}

#[test]
fn missing_objects_are_not_found() {
    for (name, target, _dir) in targets("conf-missing") {
        assert_eq!(target.head("s/nope").unwrap(), None, "{name}");
        assert!(matches!(get(target.as_ref(), "s/nope", None), Err(TargetError::NotFound { .. })), "{name}");
        target.delete(&["s/nope".to_string()]).unwrap();
    }
}

#[test]
fn list_is_in_key_order_with_prefix_and_start_after() {
    for (name, target, _dir) in targets("conf-list") {
        for key in ["s/m/0003", "s/m/0001", "s/m/0002", "s/other/0001", "t/m/0001"] {
            target.put(key, &upload(&[key.as_bytes()])).unwrap();
        }
        let keys = |after: Option<&str>| -> Vec<String> {
            target.list("s/m/", after).unwrap().into_iter().map(|o| o.key).collect()
        };
        assert_eq!(keys(None), ["s/m/0001", "s/m/0002", "s/m/0003"], "{name}");
        assert_eq!(keys(Some("s/m/0001")), ["s/m/0002", "s/m/0003"], "{name}");
        assert!(keys(Some("s/m/0003")).is_empty(), "{name}");
        let sizes: Vec<u64> = target.list("s/m/", None).unwrap().iter().map(|o| o.size).collect();
        assert_eq!(sizes, [8, 8, 8], "{name}");
        assert!(target.list("nothing/", None).unwrap().is_empty(), "{name}");
    }
}

/// What heartbeats need: objects listed with their Last-Modified and the
/// store's time of the listing (the two agree within a few seconds here,
/// where store and test share a clock), and the names one level down.
#[test]
fn dated_listing_and_directories() {
    for (name, target, _dir) in targets("conf-dated") {
        let before = std::time::SystemTime::now() - Duration::from_secs(5);
        for key in ["a/nodes/n2", "a/nodes/n1", "a/batches/x", "b/nodes/n1"] {
            target.put(key, &upload(&[key.as_bytes()])).unwrap();
        }
        let listing = target.list_dated("a/nodes/").unwrap();
        let after = std::time::SystemTime::now() + Duration::from_secs(5);
        let keys: Vec<(&str, u64)> = listing.objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!(keys, [("a/nodes/n1", 10), ("a/nodes/n2", 10)], "{name}");
        for object in &listing.objects {
            assert!(object.modified > before && object.modified < after, "{name}: {object:?}");
            assert!(object.modified <= listing.store_now + Duration::from_secs(1), "{name}: {listing:?}");
        }
        assert!(listing.store_now > before && listing.store_now < after, "{name}: {listing:?}");
        assert!(target.list_dated("nothing/").unwrap().objects.is_empty(), "{name}");
        assert_eq!(target.list_dirs("").unwrap(), ["a", "b"], "{name}");
        assert_eq!(target.list_dirs("a/").unwrap(), ["batches", "nodes"], "{name}");
        assert!(target.list_dirs("nothing/").unwrap().is_empty(), "{name}");
    }
}

#[test]
fn delete_removes_objects() {
    for (name, target, _dir) in targets("conf-delete") {
        target.put("s/d/1", &upload(&[b"1"])).unwrap();
        target.put("s/d/2", &upload(&[b"2"])).unwrap();
        target.delete(&["s/d/1".to_string(), "s/d/2".to_string()]).unwrap();
        assert!(target.list("s/d/", None).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn a_body_that_does_not_match_its_crc_is_refused_and_not_stored() {
    for (name, target, _dir) in targets("conf-crc") {
        let mut body = upload(&[b"honest bytes"]);
        body.crc32 ^= 1;
        let err = target.put("s/batches/bad", &body).unwrap_err();
        assert!(!err.is_transient(), "{name}: {err}");
        assert_eq!(target.head("s/batches/bad").unwrap(), None, "{name}: a refused object was stored");
    }
}

#[test]
fn check_succeeds_on_a_usable_target() {
    for (name, target, _dir) in targets("conf-check") {
        target.check().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn bigger_objects_round_trip_with_many_pieces() {
    for (name, target, _dir) in targets("conf-big") {
        // Over two S3 parts of 5 MiB: the multipart path, pieces straddling parts.
        let data: Vec<u8> = (0..12_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let pieces: Vec<&[u8]> = data.chunks(700_001).collect();
        target.put("s/batches/big", &upload(&pieces)).unwrap();
        assert!(get(target.as_ref(), "s/batches/big", None).unwrap() == data, "{name}");
        let range = get(target.as_ref(), "s/batches/big", Some((5_234_567, 1_000_000))).unwrap();
        assert!(range == data[5_234_567..6_234_567], "{name}");
        let info = target.head("s/batches/big").unwrap().unwrap();
        assert_eq!(info.size, data.len() as u64, "{name}");
        if let Some(crc) = info.crc32 {
            assert_eq!(crc, crc32fast::hash(&data), "{name}: whole-object CRC32 after multipart");
        }
    }
}

/// Regression: the file target's listing hid keys ending in `.part`, `.tmp`
/// or `~` (it used the source's ignore rule for segment names). A target
/// lists every key it holds; only its own in-flight temp files are hidden.
#[test]
fn listing_shows_keys_that_look_like_temporary_files() {
    for (name, target, _dir) in targets("conf-temp-names") {
        let keys = ["s/x/.hidden", "s/x/a.part", "s/x/b.tmp", "s/x/c~", "s/x/d.partial", "s/x/e.archived"];
        for key in keys {
            target.put(key, &upload(&[key.as_bytes()])).unwrap();
        }
        let listed: Vec<String> = target.list("s/x/", None).unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(listed, keys, "{name}");
    }
}

/// S3 accepts any UTF-8 in keys, and fleets name prefixes after hosts,
/// ports and dates: such prefixes and keys round-trip (put, list with
/// start-after, ranged get, delete) on every target, percent-encoded on
/// the wire and for signing.
#[test]
fn prefixes_and_keys_with_any_utf8_round_trip() {
    for sub in ["site+7:edge/wal", "ünï cödé/x y", " lead/trail "] {
        for (name, target, _dir) in targets_under("conf-utf8", sub) {
            // Spaces at either end of a key or a segment are part of it.
            let keys = ["s/ a ", "s/a+b:c", "s/d e/f=g&h?i#j", "s/ü/中/🦀~*'()!$,;@", "s/z%20"];
            for key in keys {
                target.put(key, &upload(&[key.as_bytes()])).unwrap_or_else(|e| panic!("{name} {sub}: {e}"));
            }
            let listed: Vec<String> = target.list("s/", None).unwrap().into_iter().map(|o| o.key).collect();
            let mut sorted = keys.map(String::from).to_vec();
            sorted.sort();
            assert_eq!(listed, sorted, "{name} {sub}");
            let after: Vec<String> =
                target.list("s/", Some(&sorted[0])).unwrap().into_iter().map(|o| o.key).collect();
            assert_eq!(after, sorted[1..], "{name} {sub}: start-after");
            for key in keys {
                assert_eq!(get(target.as_ref(), key, None).unwrap(), key.as_bytes(), "{name} {sub} {key}");
                assert_eq!(get(target.as_ref(), key, Some((2, 3))).unwrap(), &key.as_bytes()[2..5], "{name}");
                assert_eq!(target.head(key).unwrap().map(|i| i.size), Some(key.len() as u64), "{name} {key}");
            }
            target.delete(&sorted).unwrap();
            assert!(target.list("s/", None).unwrap().is_empty(), "{name} {sub}");
        }
    }
}
