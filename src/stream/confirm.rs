//! "Archive this file now" from the outside (`walship push`, the library's
//! `archive_now`): which position a requested file stands for, and, once a
//! pass has run, whether the archive holds exactly that file there.
//!
//! This is what makes `push` idempotent: a file the archive already holds
//! with the same length and CRC32 is archived (PostgreSQL retries after a
//! crash); one with other content is a conflict naming both CRCs; one at a
//! position the archive passed without it (a recorded gap) is refused.
//! The file the pass itself just read and archived is not read again.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::Stream;
use crate::config::StreamConfig;
use crate::error::Error;
use crate::manifest::Record;
use crate::manifest::journal;

/// The position of the segment file `path`, which must be a segment of the
/// stream (in its directory, named by its naming) and a regular file;
/// under WAL naming, one of the configured segment size.
pub fn requested_position(config: &StreamConfig, path: &Path) -> Result<u64, Error> {
    let not_ours = |why: String| {
        Error::Usage(format!(
            "{} is not a segment of stream {}: expected a file in {} named by its {}{why}",
            path.display(),
            config.name,
            config.dir.display(),
            if config.naming.wal().is_some() { "naming (postgres)" } else { "pattern" },
        ))
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| not_ours(String::new()))?;
    let position = config.naming.position(name).ok_or_else(|| {
        let hint = config.naming.wal().and_then(|wal| wal.size_hint(name));
        not_ours(hint.map_or(String::new(), |hint| format!("; {hint}")))
    })?;
    let in_dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        None => true,
        Some(dir) => dir == config.dir || dir.canonicalize().ok() == config.dir.canonicalize().ok(),
    };
    if !in_dir {
        return Err(not_ours(String::new()));
    }
    let file = config.dir.join(name);
    let len = match file.metadata() {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return Err(Error::local("archive", &file, io::Error::other("it is not a regular file"))),
        Err(e) => return Err(Error::local("archive", &file, e)),
    };
    if let Some(wal) = config.naming.wal()
        && len != wal.segment_size()
    {
        let why = format!(
            "it is {len} bytes, not wal_segment_size ({} bytes): set wal_segment_size to the \
             cluster's (`SHOW wal_segment_size`); a WAL segment always has that size",
            wal.segment_size()
        );
        return Err(Error::local("archive", &file, io::Error::other(why)));
    }
    Ok(position)
}

impl Stream {
    /// After a pass: whether the archive holds the file `path` at
    /// `position` (what [`requested_position`] gave), with its length and
    /// CRC32. Returns the archived position.
    pub fn confirm_archived(&self, position: u64, path: &Path) -> Result<u64, Error> {
        let not_archived = |why: String| Error::local("archive", path, io::Error::other(why));
        let archived = match self.archived() {
            Some(archived) if archived >= position => archived,
            _ => return Err(not_archived("it is no longer in the stream's directory".into())),
        };
        let records = journal::batches_holding(self.journal.path(), &self.journal.rules(), &[position])?;
        let held = records.iter().find_map(|record| match record {
            Record::Batch(batch) => {
                batch.segments.iter().find(|s| s.position == position).map(|s| (batch, s))
            }
            Record::Gap(_) => None,
        });
        let Some((batch, entry)) = held else {
            return Err(not_archived(format!(
                "the archive passed its position ({position}) without it: a gap is recorded there \
                 (see `walship list -s {}`), so it can never be archived at its place",
                self.name()
            )));
        };
        let (len, crc32) = if self.read_by_last_batch(position, path) {
            (entry.len, entry.crc32)
        } else {
            file_crc32(path).map_err(|e| Error::local("read", path, e))?
        };
        if (len, crc32) != (entry.len, entry.crc32) {
            return Err(Error::Conflict {
                stream: self.name().into(),
                key: batch.key.clone(),
                detail: format!(
                    "{} is {len} bytes with CRC32 {crc32:08x}, but the archive holds {} under that \
                     name with {} bytes and CRC32 {:08x}; the archived copy is kept",
                    path.display(),
                    entry.name,
                    entry.len,
                    entry.crc32
                ),
            });
        }
        Ok(archived)
    }
}

impl Stream {
    /// Whether `path` is still the very file of `position` that the last
    /// committed batch read (same device, inode, size and modification
    /// time as its scan saw): its record's length and CRC32 are then those
    /// of its bytes, read, sent and checked a moment ago, and reading its
    /// 16 MiB again would only add to `push`'s latency. A file replaced
    /// since (PostgreSQL's retry after a crash, another file under the
    /// name) is read and compared.
    fn read_by_last_batch(&self, position: u64, path: &Path) -> bool {
        self.last_batch_read
            .iter()
            .any(|seg| seg.position == position && super::commit::is_the_file_at(path, seg))
    }
}

/// Length and CRC32 of the file at `path`, read in 1 MiB pieces (a WAL
/// segment in 16 reads, not 2,048).
pub(super) fn file_crc32(path: &Path) -> io::Result<(u64, u32)> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    let (mut len, mut hasher) = (0u64, crc32fast::Hasher::new());
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok((len, hasher.finalize())),
            Ok(n) => {
                hasher.update(&buffer[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config;
    use crate::statedir;
    use crate::status::StatusCell;
    use crate::stream::Hints;
    use crate::target::Target;
    use crate::target::memory::MemoryTarget;
    use crate::test_support::TempDir;

    /// A `seal = push` stream archives nothing until a file is declared;
    /// then the same bytes are confirmed, other bytes are a conflict naming
    /// both CRCs, and a position the archive passed without it is refused.
    #[test]
    fn push_is_idempotent_refuses_other_bytes_and_positions_passed() {
        let dir = TempDir::new("confirm-push");
        let text = format!(
            "[global]\nstate_dir = {0}/state\ntarget = file://{0}/unused\n\n[stream s]\ndir = {0}/src\n\
             pattern = seg-{{seq}}.log\nbatch_size = 4\nseal = push\n",
            dir.0.display()
        );
        let config = config::parse(Path::new("push.conf"), &text).unwrap().streams.remove(0);
        let state = dir.0.join("state");
        fs::create_dir(dir.0.join("src")).unwrap();
        let segment = |p: u64| dir.0.join("src").join(format!("seg-{p}.log"));
        for p in [1, 2, 3, 5] {
            fs::write(segment(p), format!("segment {p}")).unwrap();
        }
        let target: Arc<dyn Target> = Arc::new(MemoryTarget::default());
        let lock = Arc::new(statedir::lock_stream(&state, "s").unwrap());
        let mut stream =
            Stream::open(config.clone(), &state, target, Arc::new(StatusCell::default()), lock).unwrap();
        stream.pass(true, Hints::default(), &|| false).unwrap();
        assert_eq!(stream.archived(), None, "nothing declared, nothing sealed");

        let position = requested_position(&config, &segment(2)).unwrap();
        let push =
            Hints { sealed_through: Some(position), low_water_mark: None, flush_through: Some(position) };
        stream.pass(false, push, &|| false).unwrap();
        assert_eq!(stream.archived(), Some(2), "everything up to the pushed file, nothing after");
        assert_eq!(stream.confirm_archived(1, &segment(1)).unwrap(), 2);
        assert_eq!(stream.confirm_archived(2, &segment(2)).unwrap(), 2, "the same bytes again");

        let archived_crc = format!("{:08x}", crc32fast::hash(b"segment 1"));
        fs::write(segment(1), "other bytes").unwrap();
        let conflict = stream.confirm_archived(1, &segment(1)).unwrap_err();
        let message = conflict.to_string();
        let local_crc = format!("{:08x}", crc32fast::hash(b"other bytes"));
        assert!(matches!(conflict, Error::Conflict { .. }), "{message}");
        assert!(message.contains(&archived_crc) && message.contains(&local_crc), "{message}");

        // 4 is missing while 5 is pushed: a gap, and 4 can never be archived.
        let push5 = Hints { sealed_through: Some(5), low_water_mark: None, flush_through: Some(5) };
        stream.pass(false, push5, &|| false).unwrap();
        fs::write(segment(4), "late").unwrap();
        let refused = stream.confirm_archived(4, &segment(4)).unwrap_err().to_string();
        assert!(refused.contains("a gap is recorded there"), "{refused}");
        let outside = requested_position(&config, &dir.0.join("elsewhere/seg-9.log")).unwrap_err();
        assert!(matches!(outside, Error::Usage(_)), "{outside}");
    }

    /// The file the pass just archived is confirmed from its record, not
    /// read again: rewritten in place with the same length and time (which
    /// nothing but this test does to a sealed segment), it still confirms;
    /// another file renamed over the name (another inode) is read, and its
    /// other bytes are a conflict.
    #[test]
    fn the_file_the_pass_just_read_is_not_read_again_but_a_replaced_one_is() {
        let dir = TempDir::new("confirm-read-once");
        let text = format!(
            "[global]\nstate_dir = {0}/state\ntarget = file://{0}/unused\n\n[stream s]\ndir = {0}/src\n\
             pattern = seg-{{seq}}.log\nbatch_size = 4\nseal = push\n",
            dir.0.display()
        );
        let config = config::parse(Path::new("push.conf"), &text).unwrap().streams.remove(0);
        let state = dir.0.join("state");
        fs::create_dir(dir.0.join("src")).unwrap();
        let segment = dir.0.join("src").join("seg-1.log");
        fs::write(&segment, "segment 1").unwrap();
        let target: Arc<dyn Target> = Arc::new(MemoryTarget::default());
        let lock = Arc::new(statedir::lock_stream(&state, "s").unwrap());
        let mut stream =
            Stream::open(config.clone(), &state, target, Arc::new(StatusCell::default()), lock).unwrap();
        let push = Hints { sealed_through: Some(1), low_water_mark: None, flush_through: Some(1) };
        stream.pass(false, push, &|| false).unwrap();
        assert_eq!(stream.archived(), Some(1));

        let modified = fs::metadata(&segment).unwrap().modified().unwrap();
        fs::write(&segment, "SEGMENT 1").unwrap();
        fs::File::options().write(true).open(&segment).unwrap().set_modified(modified).unwrap();
        assert_eq!(stream.confirm_archived(1, &segment).unwrap(), 1, "taken from the record");

        let replacement = dir.0.join("src").join("replacement");
        fs::write(&replacement, "SEGMENT 1").unwrap();
        fs::File::options().write(true).open(&replacement).unwrap().set_modified(modified).unwrap();
        fs::rename(&replacement, &segment).unwrap();
        let conflict = stream.confirm_archived(1, &segment).unwrap_err();
        assert!(matches!(conflict, Error::Conflict { .. }), "{conflict}");
    }
}
