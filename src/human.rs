//! Numbers for people: byte sizes (`1.2 MiB`), durations (`3m05s`) and
//! counted nouns (`1 segment`, `2 segments`). Pure functions, used by every command's output.

/// `1234567` → `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A duration for people, to the second: `42s`, `3m05s`, `2h00m`.
pub fn human_duration(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds / 60 % 60),
    }
}

/// `count(1, "batch")` → `1 batch`, `count(2, "batch")` → `2 batches`.
/// Knows the plurals walship's output uses: add `-es` after `ch`, `s`, `x`,
/// `-s` otherwise.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let suffix = if noun.ends_with("ch") || noun.ends_with('s') || noun.ends_with('x') { "es" } else { "s" };
    format!("{n} {noun}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(human_duration(Duration::from_millis(999)), "0s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h00m");
        assert_eq!(human_duration(Duration::from_secs(3600 * 30 + 61)), "30h01m");
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "batch"), "1 batch");
        assert_eq!(count(0, "batch"), "0 batches");
        assert_eq!(count(2, "segment"), "2 segments");
        assert_eq!(count(1, "stream"), "1 stream");
        assert_eq!(count(21, "gap"), "21 gaps");
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
