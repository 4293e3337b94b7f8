//! The `[global]` keys for metered links: `bandwidth_limit`,
//! `bandwidth_schedule`, `restore_bandwidth_limit`, `data_budget` and
//! `budget_period_start`. The values are read by the rules' own parsers
//! ([`crate::bandwidth::schedule`], [`crate::budget::period`]); this file
//! places them in the file and checks the rules that tie them together.

use crate::bandwidth::schedule::{self, Rate, Schedule};
use crate::budget::{DataBudget, Period, parse_budget};

use super::ConfigError;
use super::ini::Fields;
use super::values::number_in;

/// How much a node may send, and how fast. All optional: unset, nothing is
/// limited. These apply on a reload without restarting any stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metered {
    /// Upload bytes per second for the whole process; `None`: unlimited.
    pub bandwidth_limit: Option<u64>,
    /// Upload rates by local time of day, each capped by `bandwidth_limit`.
    pub bandwidth_schedule: Option<Schedule>,
    /// Download bytes per second of `restore` and `fetch`; `None`: unlimited.
    pub restore_bandwidth_limit: Option<u64>,
    /// Upload bytes per billing period.
    pub data_budget: Option<DataBudget>,
}

/// Read the metered-link keys of `[global]`.
pub fn parse_metered(f: &Fields) -> Result<Metered, ConfigError> {
    let limit = |value: &str| match schedule::parse_rate(value, false)? {
        Rate::PerSecond(rate) => Ok(Some(rate)),
        Rate::Unlimited | Rate::Paused => Ok(None),
    };
    let bandwidth_limit = f.optional("bandwidth_limit", limit)?.flatten();
    let bandwidth_schedule = f.optional("bandwidth_schedule", Schedule::parse)?;
    let restore_bandwidth_limit = f.optional("restore_bandwidth_limit", limit)?.flatten();
    let data_budget = f.optional("data_budget", parse_budget)?;
    let start_day = f.optional("budget_period_start", |v| number_in(v, 1, 31))?;
    let data_budget = match (data_budget, start_day) {
        (None, Some(_)) => {
            return Err(f.error(
                "budget_period_start",
                "only applies with a monthly data_budget; add `data_budget = 5GiB/month` or remove this line"
                    .into(),
            ));
        }
        (Some((_, period)), Some(_)) if period != Period::Month => {
            return Err(f.error(
                "budget_period_start",
                "only applies to a monthly data_budget (a week starts on Monday, a day at midnight); \
                 remove this line"
                    .into(),
            ));
        }
        (Some((bytes, period)), start_day) => {
            Some(DataBudget { bytes, period, start_day: start_day.unwrap_or(1) as u8 })
        }
        (None, None) => None,
    };
    Ok(Metered { bandwidth_limit, bandwidth_schedule, restore_bandwidth_limit, data_budget })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn metered_settings() {
        let config = parse_text(&config_text(
            "bandwidth_schedule = 08:00=256KiB/s 19:00=2MiB/s 23:00=off\n\
             restore_bandwidth_limit = 10MiB/s\ndata_budget = 5GiB/month\nbudget_period_start = 15",
            "",
        ))
        .expect("valid");
        let metered = &config.global.metered;
        assert!(metered.bandwidth_schedule.is_some());
        assert_eq!(metered.bandwidth_limit, None);
        assert_eq!(metered.restore_bandwidth_limit, Some(10 << 20));
        let budget = metered.data_budget.expect("a budget");
        assert_eq!((budget.bytes, budget.start_day), (5 << 30, 15));
        let plain = parse_text(&config_text("bandwidth_limit = 2MiB/s", "")).expect("valid");
        assert_eq!(plain.global.metered.bandwidth_limit, Some(2 << 20));
        let both = "bandwidth_limit = 2MiB/s\nbandwidth_schedule = 08:00=256KiB/s 19:00=2MiB/s 23:00=off";
        let both = parse_text(&config_text(both, "")).expect("SPEC's example: the limit caps the schedule");
        assert_eq!(both.global.metered.bandwidth_limit, Some(2 << 20));
        assert!(both.global.metered.bandwidth_schedule.is_some());
        let off = parse_text(&config_text("bandwidth_limit = off", "")).expect("valid");
        assert_eq!(off.global.metered.bandwidth_limit, None);
    }

    #[test]
    fn metered_errors() {
        #[rustfmt::skip]
        let cases = [
            ("bandwidth_limit = 0", "bandwidth_limit", "0 would stop every transfer"),
            ("bandwidth_limit = 2MiB", "bandwidth_limit", "a size per second"),
            ("bandwidth_schedule = 8am=1MiB/s", "bandwidth_schedule", "HH:MM"),
            ("restore_bandwidth_limit = 10", "restore_bandwidth_limit", "a size per second"),
            ("data_budget = 5GiB", "data_budget", "size per period"),
            ("budget_period_start = 3", "budget_period_start", "only applies with a monthly data_budget"),
        ];
        for (line, key, part) in cases {
            assert_error(&config_text(line, ""), Some(4), Some(&format!("[global] {key}")), part);
        }
        let weekly = config_text("data_budget = 1GiB/week\nbudget_period_start = 3", "");
        assert_error(&weekly, Some(5), Some("[global] budget_period_start"), "a week starts on Monday");
        let day = config_text("data_budget = 1GiB/month\nbudget_period_start = 32", "");
        assert_error(&day, Some(5), Some("[global] budget_period_start"), "from 1 to 31");
    }
}
