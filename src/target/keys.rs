//! The one place object keys are built and parsed.
//!
//! Layout under a target's root, per stream:
//!
//! ```text
//! STREAM/batches/FIRST-LAST            batch object: its segments concatenated
//! STREAM/manifest/FIRST-LAST.batch     remote manifest record of that batch
//! STREAM/manifest/FIRST-LAST.gap       remote manifest record of a gap
//! ```
//!
//! FIRST and LAST are positions as 16 lower-case hex digits, so a lexical
//! listing is a listing in position order.

/// Key of the batch object covering positions `first..=last`.
pub fn batch_key(stream: &str, first: u64, last: u64) -> String {
    format!("{stream}/batches/{first:016x}-{last:016x}")
}

/// Prefix under which a stream's remote manifest records live.
pub fn records_prefix(stream: &str) -> String {
    format!("{stream}/manifest/")
}

/// Key of the remote manifest record for `first..=last` of `kind`
/// (`"batch"` or `"gap"`).
pub fn record_key(stream: &str, first: u64, last: u64, kind: &str) -> String {
    format!("{stream}/manifest/{first:016x}-{last:016x}.{kind}")
}

/// Parse the `(first, last, kind)` of a record key made by [`record_key`];
/// `None` for anything else (foreign objects under the prefix are ignored).
pub fn parse_record_key(stream: &str, key: &str) -> Option<(u64, u64, String)> {
    let rest = key.strip_prefix(&records_prefix(stream))?;
    let (range, kind) = rest.split_once('.')?;
    let (first, last) = range.split_once('-')?;
    if first.len() != 16 || last.len() != 16 {
        return None;
    }
    let first = u64::from_str_radix(first, 16).ok()?;
    let last = u64::from_str_radix(last, 16).ok()?;
    Some((first, last, kind.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_position_order() {
        let mut keys: Vec<String> = [(0, 0), (1, 100), (101, 200), (0xff, 0x100), (1000, 1999)]
            .iter()
            .map(|&(a, b)| batch_key("s", a, b))
            .collect();
        let positions: Vec<String> = keys.clone();
        keys.sort();
        assert_eq!(keys[0], positions[0]);
        assert_eq!(keys.last().unwrap(), &batch_key("s", 1000, 1999));
        assert!(batch_key("s", 9, 9) < batch_key("s", 10, 10));
    }

    #[test]
    fn record_keys_round_trip() {
        let key = record_key("sensors", 101, 200, "batch");
        assert_eq!(key, "sensors/manifest/0000000000000065-00000000000000c8.batch");
        assert_eq!(parse_record_key("sensors", &key), Some((101, 200, "batch".into())));
        assert_eq!(parse_record_key("other", &key), None);
        assert_eq!(parse_record_key("sensors", "sensors/manifest/junk"), None);
    }
}
