//! A test double: the in-memory target, with hooks on the operations a
//! test wants to see or change (what a crash, a compaction running
//! meanwhile or a store's paging look like to the code under test).

use crate::target::memory::MemoryTarget;
use crate::target::{ObjectInfo, Target, TargetError, Upload};

/// A write (a put or a delete) that a hook runs, or not.
pub type PendingWrite<'w> = &'w mut dyn FnMut() -> Result<(), TargetError>;
pub type WriteHook<'a> = Box<dyn Fn(&str, PendingWrite<'_>) -> Result<(), TargetError> + Send + Sync + 'a>;
pub type BeforeGetHook<'a> = Box<dyn Fn(&str) + Send + Sync + 'a>;
pub type ListedHook<'a> = Box<dyn Fn(&mut Vec<ObjectInfo>) + Send + Sync + 'a>;
pub type PagesHook<'a> = Box<
    dyn Fn(&str, Option<&str>, &mut dyn FnMut(Vec<ObjectInfo>) -> bool) -> Result<(), TargetError>
        + Send
        + Sync
        + 'a,
>;

/// The memory target, but for the operations a test hooks: what a crash,
/// a compaction running meanwhile or a store's paging look like to the
/// code under test.
pub struct Hooked<'a> {
    pub inner: &'a MemoryTarget,
    /// Gets each put's and delete's key and the write itself, to run or not.
    pub write: Option<WriteHook<'a>>,
    /// Runs before each get, with its key.
    pub before_get: Option<BeforeGetHook<'a>>,
    /// Changes what each `list` returns (`list_pages` goes to the memory
    /// target unless `pages` is set).
    pub listed: Option<ListedHook<'a>>,
    /// Lists pages in place of the memory target.
    pub pages: Option<PagesHook<'a>>,
}

impl<'a> Hooked<'a> {
    pub fn new(inner: &'a MemoryTarget) -> Self {
        Hooked { inner, write: None, before_get: None, listed: None, pages: None }
    }

    fn write(
        &self,
        key: &str,
        mut write: impl FnMut() -> Result<(), TargetError>,
    ) -> Result<(), TargetError> {
        match &self.write {
            Some(hook) => hook(key, &mut write),
            None => write(),
        }
    }
}

impl Target for Hooked<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn place(&self) -> String {
        self.inner.place()
    }
    fn put(&self, key: &str, body: &Upload<'_>) -> Result<(), TargetError> {
        self.write(key, || self.inner.put(key, body))
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, TargetError> {
        self.inner.head(key)
    }
    fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, TargetError> {
        if let Some(hook) = &self.before_get {
            hook(key);
        }
        self.inner.get(key, range, out)
    }
    fn list(&self, prefix: &str, start_after: Option<&str>) -> Result<Vec<ObjectInfo>, TargetError> {
        let mut listed = self.inner.list(prefix, start_after)?;
        if let Some(hook) = &self.listed {
            hook(&mut listed);
        }
        Ok(listed)
    }
    fn list_pages(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> bool,
    ) -> Result<(), TargetError> {
        match &self.pages {
            Some(hook) => hook(prefix, start_after, visit),
            None => self.inner.list_pages(prefix, start_after, visit),
        }
    }
    fn delete(&self, keys: &[String]) -> Result<(), TargetError> {
        self.write(keys.first().map_or("", String::as_str), || self.inner.delete(keys))
    }
    fn check(&self) -> Result<(), TargetError> {
        self.inner.check()
    }
}
