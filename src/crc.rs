//! CRC32 arithmetic shared by every module that needs the checksum of a
//! concatenation without reading its bytes twice: a batch's whole-object
//! CRC32 from its segments', a multipart object's from its parts'.
//!
//! CRC32 here is always IEEE (`crc32fast`), the checksum S3 and the manifest
//! carry. Hashing bytes stays with `crc32fast` itself.

/// CRC32 of `a || b` from `crc_a = crc32(a)`, `crc_b = crc32(b)` and
/// `len_b = b.len()`, without the bytes.
pub fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(crc_a);
    hasher.combine(&crc32fast::Hasher::new_with_initial_len(crc_b, len_b));
    hasher.finalize()
}

/// Length and CRC32 of consecutive pieces given as `(crc32, length)`, in
/// order. `None` when the lengths overflow a u64 (only hostile input can).
pub fn concatenation(pieces: impl IntoIterator<Item = (u32, u64)>) -> Option<(u64, u32)> {
    pieces.into_iter().try_fold((0u64, 0u32), |(len, crc), (piece_crc, piece_len)| {
        Some((len.checked_add(piece_len)?, combine(crc, piece_crc, piece_len)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_matches_crc_of_concatenation() {
        let (a, b) = (b"hello ".as_slice(), b"world".as_slice());
        let combined = combine(crc32fast::hash(a), crc32fast::hash(b), b.len() as u64);
        assert_eq!(combined, crc32fast::hash(b"hello world"));
        assert_eq!(combine(0, crc32fast::hash(b), 5), crc32fast::hash(b));
        assert_eq!(combine(crc32fast::hash(a), 0, 0), crc32fast::hash(a));
    }

    #[test]
    fn concatenation_of_pieces() {
        let pieces: [&[u8]; 4] = [b"one ", b"", b"two ", b"three"];
        let parts = pieces.iter().map(|p| (crc32fast::hash(p), p.len() as u64));
        assert_eq!(concatenation(parts), Some((13, crc32fast::hash(b"one two three"))));
        assert_eq!(concatenation([]), Some((0, 0)));
        assert_eq!(concatenation([(0, u64::MAX), (0, 1)]), None);
    }
}
