//! CRC32 values in the forms S3 exchanges them.
//!
//! S3 carries a CRC32 as the base64 of its four big-endian bytes
//! (`x-amz-checksum-crc32`). A multipart object's checksum is either
//! full-object (the CRC32 of all its bytes, what walship asks for) or
//! composite: the CRC32 of the concatenated big-endian part CRCs, written
//! `BASE64-N` with N the number of parts. This module encodes, decodes and
//! computes those forms; base64 is implemented here (standard alphabet, with
//! padding) to avoid a dependency for eight bytes.

use std::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [n >> 18, n >> 12, n >> 6, n];
        for (i, sextet) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(sextet & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 (padding required, no whitespace); `None` on any
/// malformed input.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, quad) in bytes.chunks(4).enumerate() {
        let last = index + 1 == bytes.len() / 4;
        let padding = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &byte in &quad[..4 - padding] {
            n = (n << 6) | sextet_value(byte)?;
        }
        n <<= 6 * padding as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Some(out)
}

fn sextet_value(byte: u8) -> Option<u32> {
    ALPHABET.iter().position(|&c| c == byte).map(|p| p as u32)
}

/// The `x-amz-checksum-crc32` header value of a CRC32.
pub fn crc32_header(crc: u32) -> String {
    base64_encode(&crc.to_be_bytes())
}

/// A CRC32 as an S3 server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedCrc32 {
    /// CRC32 of the whole object's bytes.
    FullObject(u32),
    /// CRC32 of the concatenated big-endian part CRCs, over `parts` parts.
    Composite { crc: u32, parts: u32 },
}

impl fmt::Display for ReportedCrc32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportedCrc32::FullObject(crc) => write!(f, "{}", crc32_header(*crc)),
            ReportedCrc32::Composite { crc, parts } => write!(f, "{}-{parts}", crc32_header(*crc)),
        }
    }
}

/// Parse `BASE64` or `BASE64-N`; `None` when malformed.
pub fn parse_reported_crc32(value: &str) -> Option<ReportedCrc32> {
    let value = value.trim();
    let (encoded, parts) = match value.split_once('-') {
        Some((encoded, parts)) => (encoded, Some(parts.parse::<u32>().ok()?)),
        None => (value, None),
    };
    let bytes: [u8; 4] = base64_decode(encoded)?.try_into().ok()?;
    let crc = u32::from_be_bytes(bytes);
    Some(match parts {
        Some(parts) => ReportedCrc32::Composite { crc, parts },
        None => ReportedCrc32::FullObject(crc),
    })
}

/// CRC32 of byte slices taken in order as one sequence.
pub fn crc32_of_slices(slices: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for slice in slices {
        hasher.update(slice);
    }
    hasher.finalize()
}

/// The composite checksum of parts with these CRC32s, in part order.
pub fn composite_crc32(part_crcs: &[u32]) -> ReportedCrc32 {
    let mut hasher = crc32fast::Hasher::new();
    for crc in part_crcs {
        hasher.update(&crc.to_be_bytes());
    }
    ReportedCrc32::Composite {
        crc: hasher.finalize(),
        parts: u32::try_from(part_crcs.len()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*", "====", "Zm9v\n"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn crc32_header_is_big_endian_base64() {
        // CRC32 of "Hello, World!" is 0xec4ac3d0.
        let crc = crc32fast::hash(b"Hello, World!");
        assert_eq!(crc, 0xec4a_c3d0);
        assert_eq!(crc32_header(crc), "7ErD0A==");
        assert_eq!(crc32_header(0), "AAAAAA==");
    }

    #[test]
    fn parses_full_and_composite_forms() {
        assert_eq!(parse_reported_crc32("7ErD0A=="), Some(ReportedCrc32::FullObject(0xec4a_c3d0)));
        assert_eq!(
            parse_reported_crc32("7ErD0A==-3"),
            Some(ReportedCrc32::Composite { crc: 0xec4a_c3d0, parts: 3 })
        );
        assert_eq!(parse_reported_crc32("7ErD0A==-x"), None);
        assert_eq!(parse_reported_crc32("7ErD"), None);
        assert_eq!(parse_reported_crc32(""), None);
        assert_eq!(ReportedCrc32::Composite { crc: 0, parts: 2 }.to_string(), "AAAAAA==-2");
    }

    #[test]
    fn composite_is_the_crc_of_big_endian_part_crcs() {
        let parts: [&[u8]; 3] = [b"first part", b"second", b"third!"];
        let crcs: Vec<u32> = parts.iter().map(|p| crc32fast::hash(p)).collect();
        let mut concatenated = Vec::new();
        for crc in &crcs {
            concatenated.extend_from_slice(&crc.to_be_bytes());
        }
        assert_eq!(
            composite_crc32(&crcs),
            ReportedCrc32::Composite { crc: crc32fast::hash(&concatenated), parts: 3 }
        );
    }

    #[test]
    fn crc_of_slices_is_the_crc_of_their_concatenation() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(crc32_of_slices(&[&data[..10], &data[10..]]), crc32fast::hash(&data));
    }
}
