//! Local civil time, for the rules that follow the operator's clock (the
//! bandwidth schedule's windows, the data budget's periods): a [`Date`]
//! with the arithmetic those rules need (pure, proleptic Gregorian), and
//! [`LocalTime`], read from the system clock through libc's `localtime_r`,
//! so the time zone is the system's (`TZ`, `/etc/localtime`) and daylight
//! saving changes are libc's. The rules take a `LocalTime` as a value,
//! which is how their tests choose the time.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    /// 1..=12.
    pub month: u8,
    /// 1..=31, valid for the month.
    pub day: u8,
}

/// Minutes in a day.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

impl Date {
    /// The date, when `month` and `day` exist in that year.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        let valid = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
        valid.then_some(Date { year, month, day })
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let year = i64::from(self.year) - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month = i64::from(self.month);
        let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days_since_epoch(days: i64) -> Date {
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let mp = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (year_of_era + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// The date `days` later (earlier when negative).
    pub fn add_days(self, days: i64) -> Date {
        Date::from_days_since_epoch(self.days_since_epoch() + days)
    }

    /// Day of the week, 0 = Monday … 6 = Sunday.
    pub fn weekday(self) -> u8 {
        // 1970-01-01 was a Thursday (3).
        (self.days_since_epoch() + 3).rem_euclid(7) as u8
    }

    /// Day `day` of this date's month, or the month's last day when it is
    /// shorter (day 31 of April is April 30).
    pub fn with_day_clamped(self, day: u8) -> Date {
        Date { day: day.clamp(1, days_in_month(self.year, self.month)), ..self }
    }

    /// The same day (clamped) `months` months later.
    pub fn add_months(self, months: i32) -> Date {
        let index = self.year * 12 + i32::from(self.month) - 1 + months;
        let first = Date { year: index.div_euclid(12), month: (index.rem_euclid(12) + 1) as u8, day: 1 };
        first.with_day_clamped(self.day)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Days in `month` of `year`.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// A moment as the local clock shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub date: Date,
    /// Minutes since local midnight, 0..1440.
    pub minute_of_day: u16,
}

impl LocalTime {
    /// The local time now.
    pub fn now() -> LocalTime {
        LocalTime::at(SystemTime::now())
    }

    /// The local time at `moment`, through `localtime_r`. A moment libc
    /// cannot convert reads as midnight of 1970-01-01, which no schedule
    /// or budget is confused by for long.
    pub fn at(moment: SystemTime) -> LocalTime {
        let time: libc::time_t = match moment.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_secs() as libc::time_t,
            Err(before) => -(before.duration().as_secs() as libc::time_t),
        };
        let fallback = LocalTime { date: Date { year: 1970, month: 1, day: 1 }, minute_of_day: 0 };
        // SAFETY: `tm` is plain old data, zeroed is a valid value, and
        // localtime_r writes only into it (the reentrant form: no shared
        // static buffer).
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let converted = unsafe { libc::localtime_r(&time, &mut tm) };
        if converted.is_null() {
            return fallback;
        }
        let date = Date::new(tm.tm_year + 1900, (tm.tm_mon + 1) as u8, tm.tm_mday as u8);
        let minute_of_day = (tm.tm_hour * 60 + tm.tm_min).clamp(0, i32::from(MINUTES_PER_DAY) - 1) as u16;
        match date {
            Some(date) => LocalTime { date, minute_of_day },
            None => fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: u8, day: u8) -> Date {
        Date::new(year, month, day).expect("valid date")
    }

    #[test]
    fn days_round_trip_and_known_points() {
        assert_eq!(date(1970, 1, 1).days_since_epoch(), 0);
        assert_eq!(date(2000, 3, 1).days_since_epoch(), 11_017);
        assert_eq!(date(1969, 12, 31).days_since_epoch(), -1);
        for days in [-800_000, -1, 0, 59, 10_957, 20_000, 2_932_896] {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
        assert_eq!(date(2024, 2, 28).add_days(1), date(2024, 2, 29));
        assert_eq!(date(2023, 2, 28).add_days(1), date(2023, 3, 1));
        assert_eq!(date(2026, 12, 31).add_days(1), date(2027, 1, 1));
    }

    #[test]
    fn weekdays_and_months() {
        assert_eq!(date(1970, 1, 1).weekday(), 3); // Thursday
        assert_eq!(date(2026, 11, 30).weekday(), 0); // Monday
        assert_eq!(date(2026, 1, 31).add_months(1), date(2026, 2, 28));
        assert_eq!(date(2026, 12, 15).add_months(1), date(2027, 1, 15));
        assert_eq!(date(2026, 1, 15).add_months(-1), date(2025, 12, 15));
        assert_eq!(Date::new(2026, 2, 29), None);
        assert_eq!(Date::new(2026, 13, 1), None);
        assert_eq!(date(2026, 4, 1).with_day_clamped(31), date(2026, 4, 30));
        assert_eq!(date(2026, 5, 9).to_string(), "2026-05-09");
    }

    #[test]
    fn the_clock_reads_as_a_valid_local_time() {
        let now = LocalTime::now();
        assert!(now.minute_of_day < MINUTES_PER_DAY);
        assert!(now.date.year >= 2024, "{now:?}");
    }
}
