//! The data budget: `data_budget = 5GiB/month` caps the bytes uploaded in a
//! billing period ([`period`]), across restarts.
//!
//! Every upload byte is counted where it is written, before it is written
//! (`bandwidth::pace_upload`), retries included: they cross the link too.
//! The count lives in `STATE_DIR/.data-budget` ([`Ledger`]; hidden: no
//! stream is named with a leading dot), written through
//! [`crate::durable`] ahead of the bytes: the file holds a bound the count
//! may reach before the next write (the count plus a reserve of 1 % of the
//! budget, 64 KiB to 16 MiB), so the file is written once per reserve, not
//! once per part, and a crash can never leave bytes uncounted; it can
//! count at most one reserve that was never sent. A clean stop writes the
//! exact count.
//!
//! A stream asks [`held`] before each batch: once the period's count
//! reaches the budget, no new batch starts until the next period, and the
//! status says when that is. A batch already started is finished, so a
//! period may end over its budget by at most one batch per stream.
//!
//! One ledger per process, like the bandwidth throttle: [`configure`] sets
//! it up at start and on a reload (a new budget keeps the count of the
//! same period). The clock is passed in as a local date, which is how the
//! tests move across periods.

pub mod period;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::calendar::{Date, LocalTime};
use crate::durable;
use crate::error::Error;
use crate::statedir;
pub use period::{DataBudget, Period, parse_budget};

/// The first line of the ledger file.
const HEADER: &str = "walship data budget 1";

/// The count of one period, kept durable ahead of the bytes.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    budget: DataBudget,
    period_start: Date,
    /// Bytes counted in the period.
    spent: u64,
    /// What the file says: `spent` may grow up to it before the next write.
    recorded: u64,
}

impl Ledger {
    /// The ledger of `state_dir` under `budget`, as of `today`: the count
    /// of the file when it is of today's period (or of a later one, should
    /// the clock have gone back), else a new period from zero.
    pub fn open(state_dir: &Path, budget: DataBudget, today: Date) -> io::Result<Ledger> {
        durable::create_dir_all(state_dir)?; // a first `run --once` opens it before any stream
        let path = statedir::data_budget(state_dir);
        let period_start = budget.period_start(today);
        let (recorded_start, spent) = match fs::read_to_string(&path) {
            Ok(text) => parse_file(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a data budget record; remove it to count the period from zero",
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (period_start, 0),
            Err(e) => return Err(e),
        };
        let mut ledger = Ledger { path, budget, period_start, spent: 0, recorded: 0 };
        if recorded_start >= period_start {
            ledger.period_start = recorded_start;
            ledger.spent = spent;
        }
        ledger.write(ledger.spent)?;
        Ok(ledger)
    }

    /// Bytes counted in the current period.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// The budget it counts against.
    pub fn budget(&self) -> DataBudget {
        self.budget
    }

    /// Count `bytes` about to be uploaded, writing the file first when the
    /// count would pass what it records.
    pub fn count(&mut self, bytes: u64, today: Date) -> io::Result<()> {
        self.roll_over(today)?;
        let spent = self.spent.saturating_add(bytes);
        if spent > self.recorded {
            self.write(spent.saturating_add(self.reserve()))?;
        }
        self.spent = spent;
        Ok(())
    }

    /// Why no new upload may start `today`: `None` while the budget lasts.
    pub fn held(&mut self, today: Date) -> io::Result<Option<String>> {
        self.roll_over(today)?;
        if self.spent < self.budget.bytes {
            return Ok(None);
        }
        let resumes = self.budget.next_period_start(self.period_start);
        Ok(Some(format!(
            "data budget spent ({} of {}); uploads resume on {resumes}",
            crate::human::human_bytes(self.spent),
            self.budget
        )))
    }

    /// Write the exact count (at a clean stop).
    pub fn close(&mut self) -> io::Result<()> {
        self.write(self.spent)
    }

    /// Start a new period at zero once `today` is past the current one.
    fn roll_over(&mut self, today: Date) -> io::Result<()> {
        let start = self.budget.period_start(today);
        if start > self.period_start {
            log::info!(
                "data budget: a new period began on {start}; {} were uploaded in the last one",
                crate::human::human_bytes(self.spent)
            );
            self.period_start = start;
            self.spent = 0;
            self.write(0)?;
        }
        Ok(())
    }

    /// How far the count may run ahead of the file.
    fn reserve(&self) -> u64 {
        (self.budget.bytes / 100).clamp(64 << 10, 16 << 20)
    }

    fn write(&mut self, recorded: u64) -> io::Result<()> {
        let text = format!("{HEADER}\nperiod_start={}\nspent={recorded}\n", self.period_start);
        durable::write_file(&self.path, text.as_bytes())?;
        self.recorded = recorded;
        Ok(())
    }
}

/// The period start and count of a ledger file.
fn parse_file(text: &str) -> Option<(Date, u64)> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return None;
    }
    let start = lines.next()?.strip_prefix("period_start=")?;
    let spent = lines.next()?.strip_prefix("spent=")?.parse().ok()?;
    let mut parts = start.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let date = Date::new(year.parse().ok()?, month.parse().ok()?, day.parse().ok()?)?;
    Some((date, spent))
}

/// The process's ledger, when a budget is configured.
static LEDGER: Mutex<Option<Ledger>> = Mutex::new(None);

fn ledger() -> MutexGuard<'static, Option<Ledger>> {
    LEDGER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set up (or change, or remove) the process's data budget.
pub fn configure(state_dir: &Path, budget: Option<DataBudget>) -> Result<(), Error> {
    let mut current = ledger();
    let unchanged =
        current.as_ref().is_some_and(|l| Some(l.budget) == budget && l.path.parent() == Some(state_dir));
    if unchanged {
        return Ok(());
    }
    if let Some(old) = current.as_mut() {
        old.close().map_err(|e| Error::local("write the data budget count", &old.path, e))?;
    }
    *current = match budget {
        None => None,
        Some(budget) => {
            let path = statedir::data_budget(state_dir);
            Some(
                Ledger::open(state_dir, budget, LocalTime::now().date)
                    .map_err(|e| Error::local("read the data budget count", &path, e))?,
            )
        }
    };
    Ok(())
}

/// Count `bytes` about to be uploaded (nothing without a budget).
pub fn count(bytes: u64) -> io::Result<()> {
    match ledger().as_mut() {
        Some(ledger) => ledger.count(bytes, LocalTime::now().date),
        None => Ok(()),
    }
}

/// Why no new upload may start now: `None` while the budget lasts (or
/// without one). A ledger that cannot be written holds uploads too.
pub fn held(now: LocalTime) -> Option<String> {
    let mut current = ledger();
    let ledger = current.as_mut()?;
    ledger.held(now.date).unwrap_or_else(|e| {
        Some(format!("cannot write the data budget count {}: {e}", ledger.path.display()))
    })
}

/// The budget and what is spent of it, for metrics.
pub fn usage() -> Option<(u64, u64)> {
    ledger().as_ref().map(|l| (l.budget.bytes, l.spent))
}

/// Write the exact count (the process is stopping).
pub fn close() {
    if let Some(ledger) = ledger().as_mut()
        && let Err(e) = ledger.close()
    {
        log::warn!("cannot write the data budget count {}: {e}", ledger.path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn date(year: i32, month: u8, day: u8) -> Date {
        Date::new(year, month, day).expect("valid date")
    }

    const MONTHLY: DataBudget = DataBudget { bytes: 10 << 20, period: Period::Month, start_day: 1 };

    fn file_count(dir: &Path) -> u64 {
        let text = fs::read_to_string(statedir::data_budget(dir)).expect("ledger file");
        parse_file(&text).expect("valid ledger").1
    }

    /// The count survives a restart, bounded ahead by the reserve; a
    /// clean stop records it exactly; a new period starts from zero.
    #[test]
    fn the_count_survives_a_restart_and_a_period_change() {
        let dir = TempDir::new("budget-restart");
        let today = date(2026, 11, 30);
        let mut ledger = Ledger::open(dir.0.as_path(), MONTHLY, today).expect("open");
        ledger.count(4 << 20, today).expect("count");
        // A crash now: the file already covers every byte counted.
        let on_disk = file_count(dir.0.as_path());
        assert!(on_disk >= 4 << 20 && on_disk <= (4 << 20) + ledger.reserve(), "{on_disk}");
        drop(ledger);
        let mut ledger = Ledger::open(dir.0.as_path(), MONTHLY, today).expect("reopen");
        assert_eq!(ledger.spent(), on_disk);
        ledger.close().expect("close");
        assert_eq!(file_count(dir.0.as_path()), on_disk);
        // Spend the rest: held, with the day it resumes.
        ledger.count(6 << 20, today).expect("count");
        let held = ledger.held(today).expect("held").expect("budget spent");
        assert!(held.contains("uploads resume on 2026-12-01"), "{held}");
        // The next period: nothing spent.
        let next = date(2026, 12, 1);
        assert_eq!(ledger.held(next).expect("held"), None);
        assert_eq!(ledger.spent(), 0);
        assert_eq!(file_count(dir.0.as_path()), 0);
        // Reopened in the new period, an old file counts nothing.
        let stale_dir = TempDir::new("budget-stale");
        let mut old = Ledger::open(stale_dir.0.as_path(), MONTHLY, today).expect("open");
        old.count(5 << 20, today).expect("count");
        drop(old);
        assert_eq!(Ledger::open(stale_dir.0.as_path(), MONTHLY, next).expect("open").spent(), 0);
    }

    #[test]
    fn the_file_is_written_once_per_reserve_not_per_chunk() {
        let dir = TempDir::new("budget-reserve");
        let today = date(2026, 11, 30);
        let mut ledger = Ledger::open(dir.0.as_path(), MONTHLY, today).expect("open");
        let reserve = ledger.reserve();
        assert_eq!(reserve, 104_857); // 1 % of 10 MiB
        ledger.count(1, today).expect("count");
        let first = file_count(dir.0.as_path());
        for _ in 0..100 {
            ledger.count(1000, today).expect("count"); // 100 KB < the reserve
        }
        assert_eq!(file_count(dir.0.as_path()), first, "rewritten within the reserve");
        ledger.count(10_000, today).expect("count");
        assert!(file_count(dir.0.as_path()) >= ledger.spent());
    }

    #[test]
    fn a_clock_gone_back_keeps_the_later_count() {
        let dir = TempDir::new("budget-clock");
        let mut ledger = Ledger::open(dir.0.as_path(), MONTHLY, date(2026, 12, 2)).expect("open");
        ledger.count(1 << 20, date(2026, 12, 2)).expect("count");
        ledger.close().expect("close");
        let reopened = Ledger::open(dir.0.as_path(), MONTHLY, date(2026, 11, 30)).expect("reopen");
        assert_eq!(reopened.spent(), 1 << 20);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_zero() {
        let dir = TempDir::new("budget-damaged");
        fs::write(statedir::data_budget(dir.0.as_path()), "spent=lots\n").expect("write");
        let error = Ledger::open(dir.0.as_path(), MONTHLY, date(2026, 11, 30)).expect_err("damaged");
        assert!(error.to_string().contains("remove it"), "{error}");
    }
}
