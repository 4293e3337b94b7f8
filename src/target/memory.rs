//! A target in memory with injectable faults: the test double for the
//! stream's policy code (healing, conflicts, gaps, commit order, retries),
//! beside the real file and S3 targets. Test builds only.
//!
//! Every request is logged in order (method and key: what an object store
//! would bill), every successful `put` too; faults make the next puts of a
//! kind fail as transient errors, and a hook runs before each put reads its
//! body (to change a segment under an upload).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

use super::{ObjectInfo, Target, TargetError, Upload};

/// A hook run before a put reads its body, with the key.
pub type PutHook = Box<dyn Fn(&str) + Send + Sync>;

/// What the next puts do wrong.
#[derive(Default)]
pub struct Faults {
    /// Fail this many of the next batch-object puts.
    pub failing_batch_puts: u32,
    /// Fail this many of the next manifest-record puts.
    pub failing_record_puts: u32,
    /// Called with the key before each put reads its body.
    pub before_put: Option<PutHook>,
}

/// Objects in a map, in key order.
#[derive(Default)]
pub struct MemoryTarget {
    pub objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Keys of the successful puts, in order.
    pub puts: Mutex<Vec<String>>,
    /// Every request, as `METHOD key` (`LIST prefix`), in order.
    pub requests: Mutex<Vec<String>>,
    pub faults: Mutex<Faults>,
}

impl MemoryTarget {
    /// Store `bytes` at `key` directly (as an earlier run would have).
    pub fn insert(&self, key: &str, bytes: &[u8]) {
        self.objects.lock().unwrap().insert(key.into(), bytes.to_vec());
    }

    /// The bytes at `key`.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().unwrap().get(key).cloned()
    }

    /// Keys of the successful puts so far.
    pub fn put_log(&self) -> Vec<String> {
        self.puts.lock().unwrap().clone()
    }

    /// The requests logged since the last call, as `METHOD key`.
    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    fn request(&self, method: &str, key: &str) {
        self.requests.lock().unwrap().push(format!("{method} {key}"));
    }

    /// Whether this put is one the faults make fail.
    fn injected_failure(&self, key: &str) -> bool {
        let mut faults = self.faults.lock().unwrap();
        let counter = if key.contains("/manifest/") {
            &mut faults.failing_record_puts
        } else {
            &mut faults.failing_batch_puts
        };
        let fail = *counter > 0;
        *counter = counter.saturating_sub(1);
        fail
    }
}

impl Target for MemoryTarget {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn place(&self) -> String {
        "memory".into()
    }

    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
        self.request("PUT", key);
        if let Some(hook) = &self.faults.lock().unwrap().before_put {
            hook(key);
        }
        if self.injected_failure(key) {
            let detail = "injected failure".into();
            return Err(TargetError::Transient { op: "put".into(), key: key.into(), detail });
        }
        let mut buffer = Vec::new();
        let bytes: Vec<u8> = body
            .part(0, body.size, &mut buffer)
            .map_err(|e| TargetError::Transient { op: "put".into(), key: key.into(), detail: e.to_string() })?
            .concat();
        let actual = crc32fast::hash(&bytes);
        if actual != body.crc32 {
            return Err(TargetError::Checksum { key: key.into(), expected: body.crc32, actual });
        }
        self.objects.lock().unwrap().insert(key.into(), bytes);
        self.puts.lock().unwrap().push(key.into());
        Ok(())
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
        self.request("HEAD", key);
        let objects = self.objects.lock().unwrap();
        Ok(objects.get(key).map(|b| ObjectInfo {
            key: key.into(),
            size: b.len() as u64,
            crc32: Some(crc32fast::hash(b)),
        }))
    }

    fn get(&self, key: &str, range: Option<(u64, u64)>, out: &mut dyn Write) -> Result<u64, TargetError> {
        self.request("GET", key);
        let bytes = self.object(key).ok_or_else(|| TargetError::NotFound { key: key.into() })?;
        let (offset, len) = range.unwrap_or((0, bytes.len() as u64));
        let slice = &bytes[offset as usize..(offset + len) as usize];
        out.write_all(slice).map_err(|e| TargetError::Transient {
            op: "get".into(),
            key: key.into(),
            detail: e.to_string(),
        })?;
        Ok(len)
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError> {
        self.request("LIST", prefix);
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && start_after.is_none_or(|after| k.as_str() > after))
            .map(|(k, b)| ObjectInfo { key: k.clone(), size: b.len() as u64, crc32: None })
            .collect())
    }

    fn delete(&self, keys: &[String]) -> Result<(), TargetError> {
        keys.iter().for_each(|key| self.request("DELETE", key));
        let mut objects = self.objects.lock().unwrap();
        for key in keys {
            objects.remove(key);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TargetError> {
        Ok(())
    }
}
