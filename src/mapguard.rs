//! Surviving a segment truncated while it is memory-mapped.
//!
//! Reading a mapped page that lies past the end of a truncated file raises
//! SIGBUS, which would kill the daemon. Every segment map registers its
//! address range here; a process-wide SIGBUS handler that finds the faulting
//! address inside a registered range replaces that page with an anonymous
//! zero page (so the faulting read completes) and flags the range. The
//! reader then sees [`Registration::faulted`], and the size re-check after
//! upload reports the segment as changed; nothing is recorded. A SIGBUS
//! anywhere else gets the default action (the process dies, as it should).
//!
//! The handler only touches atomics and calls `mmap`, a plain system call on
//! Linux: it cannot lock or allocate. Ranges therefore live in a chain of
//! fixed-size tables of atomics: a static first table, and more tables
//! allocated (outside the handler) when every slot is taken and linked in
//! with one atomic store, never freed, so the handler can always walk the
//! chain. Every map is guarded, whatever the batch size; the chain only
//! grows to the largest number of maps held at once.

use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Slots per table.
const SLOTS: usize = 1024;

struct Slot {
    /// Start address; 0 when the slot is free.
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

/// One table of slots, and the next one in the chain (null at the end).
struct Table {
    slots: [Slot; SLOTS],
    next: AtomicPtr<Table>,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot =
    Slot { start: AtomicUsize::new(0), len: AtomicUsize::new(0), faulted: AtomicBool::new(false) };
static FIRST: Table = Table { slots: [FREE; SLOTS], next: AtomicPtr::new(ptr::null_mut()) };
static INSTALL: Once = Once::new();

/// The tables of the chain, in order.
fn tables() -> impl Iterator<Item = &'static Table> {
    std::iter::successors(Some(&FIRST), |table| {
        // SAFETY: a non-null `next` points to a leaked table, never freed.
        unsafe { table.next.load(Ordering::SeqCst).as_ref() }
    })
}

/// A guarded address range; unregisters on drop. Drop it before the map.
pub struct Registration {
    slot: &'static Slot,
}

impl Registration {
    /// Whether a read in the range hit a page past the end of the file.
    pub fn faulted(&self) -> bool {
        self.slot.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.slot.len.store(0, Ordering::SeqCst);
        self.slot.start.store(0, Ordering::SeqCst);
    }
}

/// Guard `len` bytes mapped at `start`.
pub fn register(start: *const u8, len: usize) -> Registration {
    INSTALL.call_once(install_handler);
    let start = start as usize;
    let claim = |slot: &'static Slot| {
        let free = slot.start.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        free.then(|| {
            slot.faulted.store(false, Ordering::SeqCst);
            slot.len.store(len, Ordering::SeqCst);
            Registration { slot }
        })
    };
    loop {
        let mut last = &FIRST;
        for table in tables() {
            if let Some(registration) = table.slots.iter().find_map(claim) {
                return registration;
            }
            last = table;
        }
        // Every slot is taken: link a new table after the last one (or, if
        // another thread just did, look again).
        let table: &'static Table =
            Box::leak(Box::new(Table { slots: [FREE; SLOTS], next: AtomicPtr::new(ptr::null_mut()) }));
        let linked = last.next.compare_exchange(
            ptr::null_mut(),
            ptr::from_ref(table).cast_mut(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if linked.is_ok() {
            log::debug!("more than {} segment maps at once: guard table grown", SLOTS);
        }
        // A table that lost the race stays unused (a few KiB, once).
    }
}

fn install_handler() {
    // SAFETY: a fully initialised sigaction; the handler is written to be
    // async-signal-safe (atomics and one mmap system call).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    for slot in tables().flat_map(|table| table.slots.iter()) {
        let start = slot.start.load(Ordering::SeqCst);
        let len = slot.len.load(Ordering::SeqCst);
        if start != 0 && address >= start && address < start + len {
            slot.faulted.store(true, Ordering::SeqCst);
            // SAFETY: sysconf and mmap are plain system calls; MAP_FIXED
            // replaces exactly the faulting page of a mapping we own (it
            // lies inside a registered segment map, which stays mapped
            // until its registration is dropped).
            unsafe {
                let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
                let page_start = address & !(page - 1);
                let replaced = libc::mmap(
                    page_start as *mut libc::c_void,
                    page,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                );
                if replaced != libc::MAP_FAILED {
                    return;
                }
            }
        }
    }
    // Not ours (or the page could not be replaced): default action.
    // SAFETY: restoring the default disposition and re-raising is the
    // documented way to die of the original signal.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    #[test]
    fn reading_a_truncated_map_is_survived_and_flagged() {
        let dir = std::env::temp_dir().join(format!("walship-mapguard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("segment");
        let mut file =
            OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        file.write_all(&vec![7u8; 64 * 1024]).unwrap();
        // SAFETY: test-only map of a file this test owns.
        let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
        let guard = register(map.as_ptr(), map.len());
        assert!(!guard.faulted());
        assert_eq!(map[100], 7);

        file.set_len(4096).unwrap(); // truncate under the map
        let sum: u64 = map.iter().map(|&b| b as u64).sum();
        assert!(guard.faulted(), "reading past the new end should have been caught");
        assert!(sum >= 7 * 4096, "the part still in the file reads as before");
        drop(guard);
        drop(map);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression: the table had 4,096 slots while a batch may map 100,000
    /// segments; maps beyond the slots ran unguarded, and a segment
    /// truncated under one killed the daemon with SIGBUS.
    #[test]
    fn maps_beyond_the_first_table_are_guarded_too() {
        // Fill more than four tables (more than the old fixed table) with ranges far below any mapping.
        let fillers: Vec<Registration> =
            (0..4 * SLOTS + 5).map(|i| register((16 + i * 8) as *const u8, 8)).collect();
        let dir = std::env::temp_dir().join(format!("walship-mapguard-many-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("segment");
        let mut file =
            OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        file.write_all(&vec![7u8; 64 * 1024]).unwrap();
        // SAFETY: test-only map of a file this test owns.
        let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
        let guard = register(map.as_ptr(), map.len());
        file.set_len(0).unwrap();
        let sum: u64 = map.iter().map(|&b| b as u64).sum();
        assert!(guard.faulted(), "a map registered after {} others must be guarded", fillers.len());
        assert_eq!(sum, 0);
        drop(guard);
        drop(map);
        drop(fillers);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
