//! Reading frames back: a writer that takes a batch's stored bytes (whole,
//! or one segment's frame) in any chunks, decodes them frame by frame, checks
//! every frame against what is expected of it, and passes the raw bytes of
//! the first frames on; and [`read_frames`], the download through it that
//! restore, fetch, verify and the exists-check use.

use std::fmt;
use std::io::{self, Write};

use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

use crate::manifest::SegmentEntry;
use crate::target::{Target, TargetError};

/// The largest window a frame may ask for: 8 MiB, what zstd's level 19
/// uses at most (walship refuses levels above it).
const WINDOW_LOG_MAX: u32 = 23;

/// What one frame must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The segment's raw length and CRC32.
    pub len: u64,
    pub crc32: u32,
    /// The frame's recorded stored length; `None` to find it (the heal
    /// path reads the layout of an object stored by another libzstd).
    pub stored_len: Option<u64>,
}

/// Why stored bytes are not the frames expected of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Frame `index` (0-based, in the expected order) is damaged.
    Frame { index: usize, detail: String },
    /// More stored bytes than the expected frames hold.
    Trailing { bytes: u64 },
    /// The stored bytes ended inside frame `index`, or before it.
    Truncated { index: usize },
    /// Every frame is sound but the object as a whole is not the one
    /// recorded.
    Stored { size: u64, crc32: u32, recorded_size: u64, recorded_crc32: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Frame { index, detail } => write!(f, "frame {} of the object: {detail}", index + 1),
            FrameError::Trailing { bytes } => {
                write!(f, "{bytes} bytes follow the last recorded frame")
            }
            FrameError::Truncated { index } => {
                write!(f, "the object ends before frame {} is complete", index + 1)
            }
            FrameError::Stored { size, crc32, recorded_size, recorded_crc32 } => write!(
                f,
                "the object is {size} bytes with CRC32 {crc32:08x}, recorded as {recorded_size} bytes \
                 with CRC32 {recorded_crc32:08x}"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// What the whole stored input was, once [`FrameChecker::finish`]ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Stored bytes and their CRC32.
    pub stored_size: u64,
    pub stored_crc32: u32,
    /// Each frame's stored length, in order.
    pub stored_lens: Vec<u64>,
}

/// Decodes and checks frames (see the module doc); raw bytes of the first
/// `deliver` frames go to `sink`, the others are checked and dropped.
pub struct FrameChecker<'e, W: Write> {
    dctx: DCtx<'static>,
    expected: &'e [Expected],
    deliver: usize,
    sink: W,
    /// The frame being decoded, its stored bytes so far, its raw bytes so
    /// far and their CRC32.
    index: usize,
    stored_in_frame: u64,
    raw_in_frame: u64,
    raw_crc: crc32fast::Hasher,
    stored_size: u64,
    stored_crc: crc32fast::Hasher,
    stored_lens: Vec<u64>,
    output: Vec<u8>,
    /// This checker's own complaint, when a write failed because of it
    /// (not because of `sink`).
    failure: Option<FrameError>,
}

impl<'e, W: Write> FrameChecker<'e, W> {
    /// A checker for frames holding `expected`, passing the raw bytes of the
    /// first `deliver` of them to `sink`.
    pub fn new(expected: &'e [Expected], deliver: usize, sink: W) -> io::Result<FrameChecker<'e, W>> {
        let mut dctx = DCtx::try_create().ok_or_else(|| io::Error::other("zstd: out of memory"))?;
        dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX)).map_err(super::zstd_error)?;
        Ok(FrameChecker {
            dctx,
            expected,
            deliver,
            sink,
            index: 0,
            stored_in_frame: 0,
            raw_in_frame: 0,
            raw_crc: crc32fast::Hasher::new(),
            stored_size: 0,
            stored_crc: crc32fast::Hasher::new(),
            stored_lens: Vec::with_capacity(expected.len()),
            output: Vec::with_capacity(DCtx::out_size()),
            failure: None,
        })
    }

    /// This checker's complaint if a write failed because of the stored
    /// bytes (`None`: the sink failed, or nothing did).
    pub fn failure(&mut self) -> Option<FrameError> {
        self.failure.take()
    }

    /// Every frame must be complete: what the input was, or why not.
    pub fn finish(mut self) -> Result<(Checked, W), FrameError> {
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        if self.index < self.expected.len() {
            return Err(FrameError::Truncated { index: self.index });
        }
        let checked = Checked {
            stored_size: self.stored_size,
            stored_crc32: self.stored_crc.finalize(),
            stored_lens: self.stored_lens,
        };
        Ok((checked, self.sink))
    }

    fn fail(&mut self, error: FrameError) -> io::Error {
        let shown = io::Error::new(io::ErrorKind::InvalidData, error.to_string());
        self.failure = Some(error);
        shown
    }

    fn frame_error(&mut self, detail: String) -> io::Error {
        self.fail(FrameError::Frame { index: self.index, detail })
    }

    /// Feed `input` (all of it within the current frame's recorded length)
    /// to the decoder; returns how much it took (less than all when the
    /// frame ended) and whether the frame ended.
    fn decode(&mut self, input: &[u8]) -> io::Result<(usize, bool)> {
        let mut input = InBuffer::around(input);
        loop {
            self.output.clear();
            let (step, full) = {
                let mut output = OutBuffer::around(&mut self.output);
                let step = self.dctx.decompress_stream(&mut output, &mut input);
                (step, output.pos() == output.capacity())
            };
            let left = match step {
                Ok(left) => left,
                Err(_) => return Err(self.frame_error("is not a valid zstd frame".into())),
            };
            self.take_raw()?;
            if left == 0 {
                self.stored_in_frame += input.pos() as u64;
                self.end_frame()?;
                return Ok((input.pos(), true));
            }
            if input.pos() == input.src.len() && !full {
                self.stored_in_frame += input.pos() as u64;
                return Ok((input.pos(), false));
            }
        }
    }

    /// Check and pass on the raw bytes just decoded.
    fn take_raw(&mut self) -> io::Result<()> {
        let expected = self.expected[self.index];
        self.raw_in_frame += self.output.len() as u64;
        if self.raw_in_frame > expected.len {
            let detail = format!("decodes to more than the segment's {} bytes", expected.len);
            return Err(self.frame_error(detail));
        }
        self.raw_crc.update(&self.output);
        if self.index < self.deliver {
            self.sink.write_all(&self.output)?;
        }
        Ok(())
    }

    /// The current frame ended: check it, move to the next.
    fn end_frame(&mut self) -> io::Result<()> {
        let expected = self.expected[self.index];
        if let Some(recorded) = expected.stored_len
            && recorded != self.stored_in_frame
        {
            let detail =
                format!("ends after {} stored bytes, not the {recorded} recorded", self.stored_in_frame);
            return Err(self.frame_error(detail));
        }
        if self.raw_in_frame != expected.len {
            let detail =
                format!("decodes to {} bytes, not the segment's {}", self.raw_in_frame, expected.len);
            return Err(self.frame_error(detail));
        }
        let crc = std::mem::take(&mut self.raw_crc).finalize();
        if crc != expected.crc32 {
            let detail = format!("decodes to CRC32 {crc:08x}, not the segment's {:08x}", expected.crc32);
            return Err(self.frame_error(detail));
        }
        self.stored_lens.push(self.stored_in_frame);
        self.index += 1;
        self.stored_in_frame = 0;
        self.raw_in_frame = 0;
        Ok(())
    }
}

impl<W: Write> Write for FrameChecker<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(failure) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, failure.to_string()));
        }
        self.stored_size += buf.len() as u64;
        self.stored_crc.update(buf);
        let mut rest = buf;
        while !rest.is_empty() {
            let Some(expected) = self.expected.get(self.index).copied() else {
                return Err(self.fail(FrameError::Trailing { bytes: rest.len() as u64 }));
            };
            // Never feed a frame past its recorded end: the next frame's
            // bytes must not complete a truncated one.
            let room = expected.stored_len.map_or(u64::MAX, |len| len - self.stored_in_frame);
            let feed = &rest[..rest.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
            let (taken, ended) = self.decode(feed)?;
            rest = &rest[taken..];
            if !ended && (taken == 0 || expected.stored_len == Some(self.stored_in_frame)) {
                let detail = format!("does not end within its {} recorded bytes", self.stored_in_frame);
                return Err(self.frame_error(detail));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

/// What each of `segments`' frames must hold, as recorded.
pub fn expected_of(segments: &[SegmentEntry]) -> Vec<Expected> {
    segments.iter().map(|s| Expected { len: s.len, crc32: s.crc32, stored_len: Some(s.stored_len) }).collect()
}

/// Why reading frames from a target failed.
#[derive(Debug)]
pub enum ReadError {
    /// The target failed (or the sink did: see the sink's own record).
    Target(TargetError),
    /// The stored bytes are not the frames recorded.
    Frames(FrameError),
}

/// Download `key` (or `range` of it) into a [`FrameChecker`] expecting
/// `expected`, the first `deliver` frames' raw bytes to `sink`. With
/// `whole`, the bytes must also be the whole object of that size and CRC32.
pub fn read_frames(
    target: &dyn Target,
    key: &str,
    range: Option<(u64, u64)>,
    expected: &[Expected],
    deliver: usize,
    sink: &mut dyn Write,
    whole: Option<(u64, u32)>,
) -> Result<Checked, ReadError> {
    let mut checker = FrameChecker::new(expected, deliver, sink).map_err(|e| {
        ReadError::Target(TargetError::Transient {
            op: "decode".into(),
            key: key.into(),
            detail: e.to_string(),
        })
    })?;
    if let Err(error) = target.get(key, range, &mut checker) {
        return Err(match checker.failure() {
            Some(frames) => ReadError::Frames(frames),
            None => ReadError::Target(error),
        });
    }
    let (checked, _) = checker.finish().map_err(ReadError::Frames)?;
    if let Some((size, crc32)) = whole
        && (checked.stored_size, checked.stored_crc32) != (size, crc32)
    {
        return Err(ReadError::Frames(FrameError::Stored {
            size: checked.stored_size,
            crc32: checked.stored_crc32,
            recorded_size: size,
            recorded_crc32: crc32,
        }));
    }
    Ok(checked)
}
