//! Request bodies read straight from borrowed byte slices.
//!
//! An object or part is a list of sub-slices of memory-mapped segments
//! ([`crate::target::Upload::slices`]); [`SliceReader`] hands them to the HTTP
//! client through `std::io::Read`, so segment bytes are never copied into a
//! heap buffer of their own (only through the client's fixed-size socket
//! buffer).
//!
//! Every request body passes through here, so this is where S3 uploads are
//! paced and counted ([`crate::bandwidth::pace_upload`]), a small chunk at
//! a time.

use std::io::{self, Read};

/// `Read` over byte slices taken in order as one stream.
pub struct SliceReader<'a> {
    slices: Vec<&'a [u8]>,
    /// Index of the slice being read.
    current: usize,
    /// Bytes of `slices[current]` already read.
    offset: usize,
}

impl<'a> SliceReader<'a> {
    /// A reader positioned at the first byte of `slices`.
    pub fn new(slices: Vec<&'a [u8]>) -> SliceReader<'a> {
        SliceReader { slices, current: 0, offset: 0 }
    }
}

impl Read for SliceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(slice) = self.slices.get(self.current) {
            let remaining = slice.get(self.offset..).unwrap_or(&[]);
            if remaining.is_empty() {
                self.current += 1;
                self.offset = 0;
                continue;
            }
            let n = crate::bandwidth::uploads().chunk_len(remaining.len().min(buf.len()));
            crate::bandwidth::pace_upload(n)?;
            buf[..n].copy_from_slice(&remaining[..n]);
            self.offset += n;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_slices_in_order() {
        let slices: Vec<&[u8]> = vec![b"hello ", b"", b"wide ", b"world"];
        let mut reader = SliceReader::new(slices);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello wide world");
    }

    #[test]
    fn small_buffers_cross_slice_boundaries() {
        let mut reader = SliceReader::new(vec![b"abc", b"defg"]);
        let mut buf = [0u8; 2];
        let mut out = Vec::new();
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"abcdefg");
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn empty_reader_is_at_end() {
        let mut reader = SliceReader::new(Vec::new());
        assert_eq!(reader.read(&mut [0u8; 8]).unwrap(), 0);
    }
}
