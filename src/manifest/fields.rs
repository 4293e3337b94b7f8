//! Reading one record body (a line without its CRC32) into an entry, for
//! both format versions; the grammar is in [`super::format`]. Every value
//! has one spelling: canonical decimals, lower-case CRCs, canonical
//! percent-escapes. Validation is not done here.

use super::percent;
use super::validate::MAX_SEGMENTS;
use super::{
    BatchRecord, Encoding, Entry, GapRecord, PruneRecord, Record, SegmentEntry, SnapshotRecord, StoredObject,
    Version, shown,
};

/// Parse a record body written in `version`'s grammar.
pub(super) fn parse_body(body: &str, version: Version) -> Result<Entry, String> {
    if let Some(byte) = body.bytes().find(|byte| !(b' '..=b'~').contains(byte)) {
        return Err(format!("record contains byte {byte:#04x}, outside printable ASCII"));
    }
    let mut tokens = body.split(' ');
    let kind = tokens.next().unwrap_or_default();
    match (version, kind) {
        (_, "gap") => parse_gap(tokens).map(|gap| Entry::Log(Record::Gap(gap))),
        (Version::V1, "batch") => parse_batch_v1(tokens).map(|b| Entry::Log(Record::Batch(b))),
        (Version::V2, "batch") => parse_batch_v2(tokens).map(|b| Entry::Log(Record::Batch(b))),
        (Version::V2, "snapshot") => parse_snapshot(tokens).map(Entry::Snapshot),
        (Version::V2, "prune") => parse_prune(tokens).map(Entry::Prune),
        (Version::V1, kind) => {
            Err(format!("unknown record kind `{}` (manifest v1 knows batch and gap)", shown(kind)))
        }
        (Version::V2, kind) => Err(format!(
            "unknown record kind `{}` (manifest v2 knows batch, gap, snapshot and prune)",
            shown(kind)
        )),
    }
}

fn parse_gap<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<GapRecord, String> {
    let fields = Fields::collect(tokens, &["first", "last", "reason"], None)?;
    Ok(GapRecord {
        first: decimal("first", fields.get("first")?)?,
        last: decimal("last", fields.get("last")?)?,
        reason: text("reason", fields.get("reason")?, true)?,
    })
}

/// v1: `seg=POSITION,NAME,OFFSET,LENGTH,CRC32`, stored as the plain
/// concatenation; upgraded to the v2 model without loss.
fn parse_batch_v1<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<BatchRecord, String> {
    let fields = Fields::collect(tokens, &["first", "last", "size", "crc32", "key"], Some("seg"))?;
    let segments = fields.repeated_nonempty("seg", "a batch lists its segments")?;
    let segments = segments.iter().map(|value| {
        let [position, name, offset, len, crc32] = split_parts(value, "POSITION,NAME,OFFSET,LENGTH,CRC32")?;
        Ok(SegmentEntry::identity(
            decimal("seg position", position)?,
            text("seg name", name, false)?,
            decimal("seg offset", offset)?,
            decimal("seg length", len)?,
            crc("seg crc32", crc32)?,
        ))
    });
    let size = decimal("size", fields.get("size")?)?;
    let crc32 = crc("crc32", fields.get("crc32")?)?;
    Ok(BatchRecord {
        first: decimal("first", fields.get("first")?)?,
        last: decimal("last", fields.get("last")?)?,
        key: text("key", fields.get("key")?, true)?,
        size,
        crc32,
        stored: StoredObject { size, crc32, encoding: Encoding::Identity },
        segments: segments.collect::<Result<_, String>>()?,
    })
}

/// v2: `seg=POSITION,NAME,LENGTH,CRC32,STORED_OFFSET,STORED_LENGTH`.
fn parse_batch_v2<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<BatchRecord, String> {
    let names = ["first", "last", "size", "crc32", "key", "encoding", "stored_size", "stored_crc32"];
    let fields = Fields::collect(tokens, &names, Some("seg"))?;
    let segments = fields.repeated_nonempty("seg", "a batch lists its segments")?;
    let segments = segments.iter().map(|value| {
        let [position, name, len, crc32, offset, stored_len] =
            split_parts(value, "POSITION,NAME,LENGTH,CRC32,STORED_OFFSET,STORED_LENGTH")?;
        Ok(SegmentEntry {
            position: decimal("seg position", position)?,
            name: text("seg name", name, false)?,
            len: decimal("seg length", len)?,
            crc32: crc("seg crc32", crc32)?,
            offset: decimal("seg stored offset", offset)?,
            stored_len: decimal("seg stored length", stored_len)?,
        })
    });
    Ok(BatchRecord {
        first: decimal("first", fields.get("first")?)?,
        last: decimal("last", fields.get("last")?)?,
        key: text("key", fields.get("key")?, true)?,
        size: decimal("size", fields.get("size")?)?,
        crc32: crc("crc32", fields.get("crc32")?)?,
        stored: stored(&fields)?,
        segments: segments.collect::<Result<_, String>>()?,
    })
}

fn parse_snapshot<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<SnapshotRecord, String> {
    let names = ["position", "size", "crc32", "key", "encoding", "stored_size", "stored_crc32"];
    let fields = Fields::collect(tokens, &names, None)?;
    Ok(SnapshotRecord {
        position: decimal("position", fields.get("position")?)?,
        key: text("key", fields.get("key")?, true)?,
        size: decimal("size", fields.get("size")?)?,
        crc32: crc("crc32", fields.get("crc32")?)?,
        stored: stored(&fields)?,
    })
}

fn parse_prune<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<PruneRecord, String> {
    let fields = Fields::collect(tokens, &["seq", "before"], Some("delete"))?;
    let deleted = fields.repeated.iter().map(|value| text("delete", value, true));
    Ok(PruneRecord {
        sequence: decimal("seq", fields.get("seq")?)?,
        before: decimal("before", fields.get("before")?)?,
        deleted: deleted.collect::<Result<_, String>>()?,
    })
}

fn stored(fields: &Fields<'_>) -> Result<StoredObject, String> {
    let encoding = fields.get("encoding")?;
    Ok(StoredObject {
        size: decimal("stored_size", fields.get("stored_size")?)?,
        crc32: crc("stored_crc32", fields.get("stored_crc32")?)?,
        encoding: Encoding::from_name(encoding).ok_or_else(|| {
            format!("unknown encoding `{}` (this walship knows identity and zstd-frames)", shown(encoding))
        })?,
    })
}

/// Exactly `N` comma-separated parts.
fn split_parts<'a, const N: usize>(value: &'a str, shape: &str) -> Result<[&'a str; N], String> {
    let parts: Vec<&str> = value.splitn(N + 1, ',').collect();
    parts.try_into().map_err(|_| format!("segment `{}` is not {shape}", shown(value)))
}

/// The `name=value` fields of one record body.
struct Fields<'a> {
    named: Vec<(&'a str, &'a str)>,
    /// Values of the one field that may repeat (in order).
    repeated: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// Split `tokens` into fields, refusing names not in `allowed` (nor
    /// `repeatable`), duplicates, and more than [`MAX_SEGMENTS`] repeats.
    fn collect(
        tokens: impl Iterator<Item = &'a str>,
        allowed: &[&str],
        repeatable: Option<&str>,
    ) -> Result<Self, String> {
        let mut fields = Fields { named: Vec::new(), repeated: Vec::new() };
        for token in tokens {
            let Some((name, value)) = token.split_once('=') else {
                return Err(if token.is_empty() {
                    "empty field (two spaces in a row, or a space at the end)".into()
                } else {
                    format!("field `{}` has no `=`", shown(token))
                });
            };
            if repeatable == Some(name) {
                if fields.repeated.len() == MAX_SEGMENTS {
                    return Err(format!("more than {MAX_SEGMENTS} `{name}` fields in one record"));
                }
                fields.repeated.push(value);
            } else if !allowed.contains(&name) {
                return Err(format!("unknown field `{}`", shown(name)));
            } else if fields.named.iter().any(|&(seen, _)| seen == name) {
                return Err(format!("duplicate field `{name}`"));
            } else {
                fields.named.push((name, value));
            }
        }
        Ok(fields)
    }

    fn get(&self, name: &str) -> Result<&'a str, String> {
        self.named
            .iter()
            .find(|&&(seen, _)| seen == name)
            .map(|&(_, value)| value)
            .ok_or_else(|| format!("missing field `{name}`"))
    }

    fn repeated_nonempty(&self, name: &str, why: &str) -> Result<&[&'a str], String> {
        if self.repeated.is_empty() {
            return Err(format!("missing field `{name}` ({why})"));
        }
        Ok(&self.repeated)
    }
}

/// A canonical decimal u64: digits only, no leading zeros.
fn decimal(field: &str, value: &str) -> Result<u64, String> {
    let digits_only = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    if !digits_only || (value.len() > 1 && value.starts_with('0')) {
        return Err(format!(
            "field `{field}` must be a decimal number without sign or leading zeros, not `{}`",
            shown(value)
        ));
    }
    value.parse().map_err(|_| format!("field `{field}` value {} does not fit in 64 bits", shown(value)))
}

/// A CRC32 written as exactly 8 lower-case hex digits.
fn crc(field: &str, value: &str) -> Result<u32, String> {
    parse_crc(value.as_bytes())
        .ok_or_else(|| format!("field `{field}` must be 8 lower-case hex digits, not `{}`", shown(value)))
}

/// Exactly 8 lower-case hex digits.
pub(super) fn parse_crc(digits: &[u8]) -> Option<u32> {
    if digits.len() != 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |crc, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(crc << 4 | u32::from(nibble))
    })
}

fn text(field: &str, value: &str, slash_plain: bool) -> Result<String, String> {
    percent::decode(value, slash_plain).map_err(|why| format!("field `{field}`: {why}"))
}
