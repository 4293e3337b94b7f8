//! The second pass: a batch's frames produced again, in order, as a reader
//! the target pulls its part buffers from.

use std::io::{self, Read};

use super::{FrameEncoder, FrameKind, Stage};

/// Reads as the frames of `segments`, each of its planned kind, one after
/// another: the bytes of a `compression = zstd` batch object. Holds one
/// chunk at a time.
pub struct FramesReader<'a> {
    encoder: FrameEncoder,
    segments: Vec<(&'a [u8], FrameKind)>,
    /// The segment whose frame is being produced.
    index: usize,
    stage: Stage,
    /// Bytes of the current chunk not yet read.
    pending: std::ops::Range<usize>,
}

impl<'a> FramesReader<'a> {
    /// The frames of `segments` (bytes and the kind `plan_frame` chose).
    pub fn new(encoder: FrameEncoder, segments: Vec<(&'a [u8], FrameKind)>) -> FramesReader<'a> {
        FramesReader { encoder, segments, index: 0, stage: Stage::Start, pending: 0..0 }
    }

    /// Make the next chunk pending; false once every frame is complete.
    fn refill(&mut self) -> io::Result<bool> {
        while let Some(&(bytes, kind)) = self.segments.get(self.index) {
            match self.encoder.next_chunk(bytes, kind, &mut self.stage)? {
                Some(chunk) => {
                    self.pending = 0..chunk.len();
                    if !chunk.is_empty() {
                        return Ok(true);
                    }
                }
                None => {
                    self.index += 1;
                    self.stage = Stage::Start;
                }
            }
        }
        Ok(false)
    }
}

impl Read for FramesReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() && !self.refill()? {
            return Ok(0);
        }
        let take = self.pending.len().min(buf.len());
        let start = self.pending.start;
        buf[..take].copy_from_slice(&self.encoder.chunk[start..start + take]);
        self.pending.start += take;
        Ok(take)
    }
}
