//! Percent-encoding of the manifest's free-text values (segment names, keys,
//! gap reasons), so that spaces, commas, '=', '%' and non-ASCII text cannot
//! break a record apart.
//!
//! Bytes in `[A-Za-z0-9._~-]` (and '/' where allowed) stay as they are;
//! every other byte becomes `%XX` with upper-case hex. Decoding accepts only
//! that canonical spelling, so every value has exactly one encoding and a
//! parsed record serializes back to the same bytes.

/// Whether `byte` is written as itself. `slash_plain` says whether '/' is.
fn is_plain(byte: u8, slash_plain: bool) -> bool {
    byte.is_ascii_alphanumeric() || b"._~-".contains(&byte) || (slash_plain && byte == b'/')
}

/// Encode `text`; '/' stays plain only when `slash_plain` is set.
pub(crate) fn encode(text: &str, slash_plain: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if is_plain(byte, slash_plain) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

/// Decode a value written by [`encode`] with the same `slash_plain`;
/// anything else (a raw special character, a non-canonical or cut-off
/// escape, bytes that are not UTF-8) is an error saying what is wrong.
pub(crate) fn decode(text: &str, slash_plain: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if is_plain(byte, slash_plain) {
            out.push(byte);
            i += 1;
        } else if byte == b'%' {
            out.push(decode_escape(bytes.get(i + 1..i + 3), slash_plain)?);
            i += 3;
        } else {
            return Err(format!("character `{}` must be percent-encoded", char::from(byte)));
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoded text is not valid UTF-8".to_string())
}

/// The byte of one `%XX` escape given its two hex digits.
fn decode_escape(digits: Option<&[u8]>, slash_plain: bool) -> Result<u8, String> {
    let Some(&[high, low]) = digits else {
        return Err("`%` must be followed by two hex digits".into());
    };
    let (Some(high), Some(low)) = (upper_hex_digit(high), upper_hex_digit(low)) else {
        return Err("`%` must be followed by two upper-case hex digits".into());
    };
    let byte = high << 4 | low;
    if is_plain(byte, slash_plain) {
        return Err(format!("`{}` must be written as itself, not percent-encoded", char::from(byte)));
    }
    Ok(byte)
}

fn upper_hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_round_trip() {
        for text in ["plain-name_1.log", "a b,c=d%e", "zürich ✓", "", "a/b", "%%", "\n\0"] {
            for slash_plain in [false, true] {
                let encoded = encode(text, slash_plain);
                assert!(!encoded.contains([' ', ',', '=']), "{encoded}");
                assert_eq!(decode(&encoded, slash_plain).as_deref(), Ok(text));
            }
        }
    }

    #[test]
    fn slash_is_encoded_only_in_names() {
        assert_eq!(encode("a/b c", true), "a/b%20c");
        assert_eq!(encode("a/b c", false), "a%2Fb%20c");
        assert!(decode("a/b", false).is_err());
    }

    #[test]
    fn non_canonical_or_broken_escapes_are_refused() {
        for bad in ["%61", "%2f", "%2", "%", "a b", "a,b", "%zz", "%FF"] {
            assert!(decode(bad, false).is_err(), "{bad}");
        }
    }
}
