//! Per-segment zstd frames: how a `compression = zstd` batch object is
//! written and read back.
//!
//! The object is a sequence of zstd frames, one per segment in position
//! order, with nothing between them: `zstd -d` of it gives exactly the
//! segments' concatenation, and each segment's frame (its stored offset and
//! length are in the record) can be fetched alone with one ranged GET. A
//! frame is compressed by libzstd at the stream's level, with zstd's content
//! size and XXH64 content checksum in its header and trailer; or, when that
//! would not be smaller, written here as raw blocks: a valid frame that
//! holds the bytes as they are, costing 10 to 14 bytes plus 3 per 128 KiB,
//! and no compression work when it is produced again.
//!
//! An object is made in two passes over the memory-mapped segments:
//! [`plan_frame`] measures each frame (kind, stored length, CRC32), so the
//! record is complete and validated before the first byte is sent, and the
//! exists-check after a crash compares the stored size and CRC32 exactly as
//! for an uncompressed batch; then [`encode::FramesReader`] produces the
//! same bytes again while the target pulls them into its part buffers
//! (memory: one libzstd context and one 128 KiB chunk, whatever the batch).
//! Both passes run the same code with the same chunk size, and libzstd's
//! output is a function of its input, parameters and version, so the bytes
//! are the same; the target checks them against the planned CRC32 anyway.
//!
//! Reading back, [`decode::FrameChecker`] takes a batch's stored bytes in
//! any chunks and checks what a reader must trust: every recorded frame
//! ends exactly where the record says, decodes to the segment's raw length
//! and CRC32, and the whole object has the recorded CRC32. It never holds
//! more than one output chunk and libzstd's window (refused above 8 MiB,
//! more than any level walship writes needs).

pub mod check;
pub mod decode;
pub mod encode;

use std::io;

use zstd::zstd_safe::{self, CCtx, CParameter, ResetDirective};

/// The largest block a frame holds (zstd's own limit).
pub const BLOCK_MAX: usize = 128 * 1024;

/// A zstd frame's first four bytes, little-endian.
const MAGIC: u32 = 0xFD2F_B528;

/// The size of the chunks frames are produced in (one raw block and its
/// header fit in one).
const CHUNK: usize = BLOCK_MAX + 64;

/// How one segment's frame holds its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Compressed by libzstd.
    Compressed,
    /// Raw blocks: the bytes as they are.
    Raw,
}

/// One segment's frame, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePlan {
    pub kind: FrameKind,
    /// The frame's length in bytes.
    pub stored_len: u64,
    /// CRC32 of the frame's bytes.
    pub crc32: u32,
}

/// Produces frames in chunks: one libzstd context (compression level,
/// content checksum and size set once) and one chunk buffer, reused frame
/// after frame.
pub struct FrameEncoder {
    cctx: CCtx<'static>,
    chunk: Vec<u8>,
}

/// Where a frame being produced is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing produced yet.
    Start,
    /// libzstd has taken the input up to `consumed`.
    Compressing { consumed: usize },
    /// Raw blocks are written up to `written`.
    Raw { written: usize },
    /// The frame is complete.
    Done,
}

impl FrameEncoder {
    /// An encoder compressing at zstd `level`.
    pub fn new(level: i32) -> io::Result<FrameEncoder> {
        let mut cctx = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: out of memory"))?;
        for parameter in [
            CParameter::CompressionLevel(level),
            CParameter::ChecksumFlag(true),
            CParameter::ContentSizeFlag(true),
        ] {
            cctx.set_parameter(parameter).map_err(zstd_error)?;
        }
        Ok(FrameEncoder { cctx, chunk: Vec::with_capacity(CHUNK) })
    }

    /// Produce the next chunk of `bytes`' frame of `kind`, advancing
    /// `stage`; `None` once the frame is complete.
    fn next_chunk(&mut self, bytes: &[u8], kind: FrameKind, stage: &mut Stage) -> io::Result<Option<&[u8]>> {
        self.chunk.clear();
        match (*stage, kind) {
            (Stage::Done, _) => return Ok(None),
            (Stage::Start, FrameKind::Compressed) => {
                self.cctx.reset(ResetDirective::SessionOnly).map_err(zstd_error)?;
                self.cctx.set_pledged_src_size(Some(bytes.len() as u64)).map_err(zstd_error)?;
                *stage = Stage::Compressing { consumed: 0 };
                return self.next_chunk(bytes, kind, stage);
            }
            (Stage::Compressing { consumed }, _) => {
                let mut input = zstd_safe::InBuffer::around(&bytes[consumed..]);
                let mut output = zstd_safe::OutBuffer::around(&mut self.chunk);
                let end = zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end;
                let left = self.cctx.compress_stream2(&mut output, &mut input, end).map_err(zstd_error)?;
                let consumed = consumed + input.pos();
                *stage = if left == 0 { Stage::Done } else { Stage::Compressing { consumed } };
            }
            (Stage::Start, FrameKind::Raw) => {
                self.chunk.extend_from_slice(&raw_header(bytes.len() as u64));
                *stage = Stage::Raw { written: 0 };
            }
            (Stage::Raw { written }, _) => {
                let block = (bytes.len() - written).min(BLOCK_MAX);
                let last = written + block == bytes.len();
                // Block header: size << 3 | type (0: raw) << 1 | last.
                let header = ((block as u32) << 3) | u32::from(last);
                self.chunk.extend_from_slice(&header.to_le_bytes()[..3]);
                self.chunk.extend_from_slice(&bytes[written..written + block]);
                *stage = if last { Stage::Done } else { Stage::Raw { written: written + block } };
            }
        }
        Ok(Some(&self.chunk))
    }

    /// Length and CRC32 of `bytes`' frame of `kind`, produced and dropped.
    fn measure(&mut self, bytes: &[u8], kind: FrameKind) -> io::Result<(u64, u32)> {
        let (mut len, mut hasher) = (0u64, crc32fast::Hasher::new());
        let mut stage = Stage::Start;
        while let Some(chunk) = self.next_chunk(bytes, kind, &mut stage)? {
            len += chunk.len() as u64;
            hasher.update(chunk);
        }
        Ok((len, hasher.finalize()))
    }
}

/// Measure the frame `bytes` will be stored as: compressed, unless that is
/// not smaller than raw blocks (incompressible data), then raw.
pub fn plan_frame(encoder: &mut FrameEncoder, bytes: &[u8]) -> io::Result<FramePlan> {
    let (stored_len, crc32) = encoder.measure(bytes, FrameKind::Compressed)?;
    if stored_len < raw_frame_len(bytes.len() as u64) {
        return Ok(FramePlan { kind: FrameKind::Compressed, stored_len, crc32 });
    }
    let (stored_len, crc32) = encoder.measure(bytes, FrameKind::Raw)?;
    Ok(FramePlan { kind: FrameKind::Raw, stored_len, crc32 })
}

/// The header of a raw frame of `len` bytes: magic; descriptor (content
/// size in 4 or 8 bytes, not single-segment, no checksum, no dictionary);
/// a 128 KiB window, so any decoder accepts it whatever `len`; content size.
fn raw_header(len: u64) -> Vec<u8> {
    let (size_flag, size_bytes) = if len <= u64::from(u32::MAX) { (2u8, 4) } else { (3, 8) };
    let mut header = MAGIC.to_le_bytes().to_vec();
    header.push(size_flag << 6);
    // Window descriptor: exponent (window log - 10) << 3, mantissa 0.
    header.push((17 - 10) << 3);
    header.extend_from_slice(&len.to_le_bytes()[..size_bytes]);
    header
}

/// The length of a raw frame of `len` bytes: header, then one 3-byte block
/// header per 128 KiB (at least one block, empty for an empty segment).
pub fn raw_frame_len(len: u64) -> u64 {
    let blocks = len.div_ceil(BLOCK_MAX as u64).max(1);
    raw_header(len).len() as u64 + 3 * blocks + len
}

/// The largest frame any zstd encoder makes of `len` bytes: raw blocks of
/// 128 KiB under the largest header (18 bytes) and a content checksum (4).
/// Compressed blocks are only used when smaller than raw ones.
pub fn max_frame_len(len: u64) -> u64 {
    let blocks = len.div_ceil(BLOCK_MAX as u64).max(1);
    len + 3 * blocks + 18 + 4
}

/// libzstd's refusal as an I/O error. Its error names are not built in
/// (the `thin` build), and with parameters walship validated the only
/// failure left is memory.
fn zstd_error(_code: usize) -> io::Error {
    io::Error::other("libzstd failed (it could not get memory)")
}

#[cfg(test)]
mod tests;
