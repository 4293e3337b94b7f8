//! The data budget's setting and billing periods (pure): `data_budget =
//! 5GiB/month` (or `/week`, `/day`), and which period a local date falls
//! in. A month period starts on `budget_period_start` (day 1 by default;
//! a day the month lacks means its last day), a week on Monday, a day at
//! local midnight.

use std::fmt;

use crate::calendar::Date;
use crate::config::parse_size;

/// How long a billing period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

/// A `data_budget` setting, with its `budget_period_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataBudget {
    /// Upload bytes allowed per period, more than 0.
    pub bytes: u64,
    pub period: Period,
    /// Day of the month a month period starts on, 1..=31.
    pub start_day: u8,
}

impl fmt::Display for DataBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period = match self.period {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        };
        write!(f, "{} a {period}", crate::human::human_bytes(self.bytes))
    }
}

/// Parse `5GiB/month`, `500MiB/week`, `100MiB/day`.
pub fn parse_budget(text: &str) -> Result<(u64, Period), String> {
    let expected = || format!("expected a size per period such as 5GiB/month (or /week, /day), got `{text}`");
    let (size, period) = text.trim().rsplit_once('/').ok_or_else(expected)?;
    let period = match period.trim() {
        "month" => Period::Month,
        "week" => Period::Week,
        "day" => Period::Day,
        _ => return Err(expected()),
    };
    let bytes = parse_size(size)?;
    if bytes == 0 {
        return Err(format!("expected a budget above 0, got `{text}`; remove the key for no budget"));
    }
    Ok((bytes, period))
}

impl DataBudget {
    /// The first day of the period that `today` falls in.
    pub fn period_start(&self, today: Date) -> Date {
        match self.period {
            Period::Day => today,
            Period::Week => today.add_days(-i64::from(today.weekday())),
            Period::Month => {
                let this_month = today.with_day_clamped(self.start_day);
                if this_month <= today {
                    this_month
                } else {
                    today.add_months(-1).with_day_clamped(self.start_day)
                }
            }
        }
    }

    /// The first day of the period after the one that `today` falls in.
    pub fn next_period_start(&self, today: Date) -> Date {
        let start = self.period_start(today);
        match self.period {
            Period::Day => start.add_days(1),
            Period::Week => start.add_days(7),
            // From the start's month, not the start itself: a start clamped
            // to a short month's end (the 28th for day 31) must not stick.
            Period::Month => start.with_day_clamped(1).add_months(1).with_day_clamped(self.start_day),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        let parts: Vec<&str> = text.split('-').collect();
        Date::new(parts[0].parse().unwrap(), parts[1].parse().unwrap(), parts[2].parse().unwrap())
            .expect("valid date")
    }

    #[test]
    fn settings() {
        assert_eq!(parse_budget("5GiB/month"), Ok((5 << 30, Period::Month)));
        assert_eq!(parse_budget("100 MiB / day"), Ok((100 << 20, Period::Day)));
        assert_eq!(parse_budget("1GB/week"), Ok((1_000_000_000, Period::Week)));
        for (text, part) in [
            ("5GiB", "size per period"),
            ("5GiB/year", "size per period"),
            ("0/day", "above 0"),
            ("x/day", "size"),
        ] {
            let message = parse_budget(text).expect_err(text);
            assert!(message.contains(part), "{text}: {message}");
        }
    }

    /// (period, start day, today, period start, next period start)
    #[test]
    fn periods() {
        use Period::*;
        #[rustfmt::skip]
        let cases = [
            (Month, 1,  "2026-11-30", "2026-11-01", "2026-12-01"),
            (Month, 1,  "2026-12-31", "2026-12-01", "2027-01-01"),
            (Month, 15, "2026-11-14", "2026-10-15", "2026-11-15"),
            (Month, 15, "2026-11-15", "2026-11-15", "2026-12-15"),
            (Month, 15, "2026-01-03", "2025-12-15", "2026-01-15"),
            (Month, 31, "2026-02-28", "2026-02-28", "2026-03-31"), // a short month ends its period early
            (Month, 31, "2026-03-30", "2026-02-28", "2026-03-31"),
            (Month, 31, "2026-03-31", "2026-03-31", "2026-04-30"),
            (Month, 30, "2024-02-29", "2024-02-29", "2024-03-30"), // leap day
            (Week,  1,  "2026-11-30", "2026-11-30", "2026-12-07"), // a Monday
            (Week,  1,  "2026-12-06", "2026-11-30", "2026-12-07"), // the Sunday after
            (Week,  1,  "2027-01-01", "2026-12-28", "2027-01-04"), // across the year
            (Day,   1,  "2026-12-31", "2026-12-31", "2027-01-01"),
        ];
        for (period, start_day, today, start, next) in cases {
            let budget = DataBudget { bytes: 1, period, start_day };
            assert_eq!(budget.period_start(date(today)), date(start), "{period:?} {start_day} {today}");
            assert_eq!(budget.next_period_start(date(today)), date(next), "{period:?} {start_day} {today}");
        }
    }
}
