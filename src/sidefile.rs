//! Files archived beside a stream's log, outside its positions: PostgreSQL's
//! timeline `.history` files and base backup `.backup` labels (see
//! `naming::wal` for why they have no position).
//!
//! Each is stored once, whole, under its own name (`STREAM/files/NAME`,
//! `target::keys::side_file_key`); the object is its own record, its size
//! and CRC32 reported by the store. Storing is idempotent as for segments:
//! the same bytes already stored succeed without being sent again, other
//! bytes under the name are a conflict naming both CRCs and are never
//! written over. No lock is needed: PostgreSQL archives each file once, from
//! one archiver, and a retry of the same bytes is harmless. These files are
//! small (a few hundred bytes); one larger than [`MAX_SIDE_FILE`] is refused.
//! Retention leaves them alone.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::error::Error;
use crate::target::{self, Target, Upload, keys};

/// The largest side file walship stores (history files of deep timeline
/// trees stay far below it).
pub const MAX_SIDE_FILE: u64 = 16 << 20;

/// How a side file reached the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Sent,
    /// The same bytes were already stored under its name.
    AlreadyStored,
}

/// Store the file at `path`, called `name`, of `stream`.
pub fn push(target: &dyn Target, stream: &str, name: &str, path: &Path) -> Result<Stored, Error> {
    let bytes = read_small(path).map_err(|e| Error::local("read", path, e))?;
    let (size, crc32) = (bytes.len() as u64, crc32fast::hash(&bytes));
    let key = keys::side_file_key(stream, name);
    if let Some((stored_size, stored_crc)) = stored(target, stream, &key)? {
        if (stored_size, stored_crc) == (size, crc32) {
            return Ok(Stored::AlreadyStored);
        }
        return Err(Error::Conflict {
            stream: stream.into(),
            key,
            detail: format!(
                "{} is {size} bytes with CRC32 {crc32:08x}, but the archive holds {name} with \
                 {stored_size} bytes and CRC32 {stored_crc:08x}; the archived copy is kept",
                path.display()
            ),
        });
    }
    let pieces = [bytes.as_slice()];
    target.put(&key, &Upload::pieces(&pieces, size, crc32)).map_err(|e| Error::target(stream, e))?;
    Ok(Stored::Sent)
}

/// Size and CRC32 of the side file `key`, or `None` when it is not stored.
pub fn stored(target: &dyn Target, stream: &str, key: &str) -> Result<Option<(u64, u32)>, Error> {
    let Some(info) = target.head(key).map_err(|e| Error::target(stream, e))? else {
        return Ok(None);
    };
    let crc32 = match info.crc32 {
        Some(crc32) => crc32,
        None => target::stored_crc32(target, key).map_err(|e| Error::target(stream, e))?,
    };
    Ok(Some((info.size, crc32)))
}

/// The whole file, refused beyond [`MAX_SIDE_FILE`].
fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIDE_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SIDE_FILE {
        return Err(io::Error::other(format!(
            "it is larger than {MAX_SIDE_FILE} bytes, which no PostgreSQL history or backup file is"
        )));
    }
    Ok(bytes)
}
