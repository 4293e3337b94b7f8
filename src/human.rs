//! Numbers for people: byte sizes (`1.2 MiB`), counted nouns (`1
//! segment`, `2 segments`) and durations (`1h 30m`). Pure functions, used by every command's output.

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

/// A duration as a config file spells it: `500ms`, `30s`, `1h`, `1h 30m 5s`.
pub fn duration(d: std::time::Duration) -> String {
    if d.as_secs() == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (hours, minutes, seconds) = (d.as_secs() / 3600, d.as_secs() / 60 % 60, d.as_secs() % 60);
    let parts: Vec<String> = [(hours, "h"), (minutes, "m"), (seconds, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_secs(5405)), "1h 30m 5s");
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
