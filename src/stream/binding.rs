//! A state directory describes one archive. Its journal says what *that*
//! target holds, so pointing the config at another target while keeping the
//! state directory would make walship carry on from the journal's position
//! and leave the new archive without everything before it.
//!
//! `STATE_DIR/STREAM/target` records the target's place (`file://ROOT`,
//! `s3://BUCKET/PREFIX at ENDPOINT`) when the stream opens. At each later
//! open the configured target must be that place, or hold the record object
//! of the journal's last record (the same archive under a new address, or a
//! state directory from a release that did not record the place): then the
//! binding moves to it. Anything else is refused, naming both places and the
//! remedies, before anything is archived or acknowledged.
//!
//! The record object is looked for by its level-0 key (one HEAD); once
//! compaction folded it, by a listing of the record objects from where the
//! records not yet in level-2 objects start, then from the start.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::Stream;
use crate::catalog;
use crate::durable::{self, Links};
use crate::error::Error;
use crate::manifest::{Entry, Record};
use crate::statedir;
use crate::target::Target;

/// What to do with the binding, given what is recorded and what is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Binding {
    /// The recorded place is the configured one.
    Same,
    /// Record the configured place (nothing recorded, or it moved).
    Bind,
    /// Ask the target whether it holds the journal's last record.
    AskTarget,
}

/// The pure rule: `recorded` (the place in the state directory, if any),
/// `place` (the configured target's) and whether the journal holds records.
pub(super) fn decide(recorded: Option<&str>, place: &str, journal_has_records: bool) -> Binding {
    match recorded {
        Some(recorded) if recorded == place => Binding::Same,
        _ if !journal_has_records => Binding::Bind,
        _ => Binding::AskTarget,
    }
}

impl Stream {
    /// Check (and record) which archive the state directory describes.
    pub(super) fn check_target_binding(
        state_root: &Path,
        stream: &str,
        target: &dyn Target,
        last: Option<&Record>,
        listing_start: Option<u64>,
    ) -> Result<(), Error> {
        let path = statedir::target_binding(state_root, stream);
        let recorded = read_binding(&path)?;
        let place = target.place();
        let bind = |how: &str| {
            log::info!("stream {stream}: {how} {place}");
            durable::write_file(&path, format!("{place}\n").as_bytes())
                .map_err(|e| Error::local("record the target in", &path, e))
        };
        match (decide(recorded.as_deref(), &place, last.is_some()), last) {
            (Binding::Same, _) => Ok(()),
            (Binding::Bind, _) if recorded.is_none() => {
                bind("the state directory now describes the archive at")
            }
            (Binding::Bind, _) => {
                bind("the journal is empty; the state directory now describes the archive at")
            }
            (Binding::AskTarget, Some(last)) => {
                let key = catalog::entry_key(stream, &Entry::Log(last.clone()));
                match catalog::record_holding(target, stream, last, listing_start)? {
                    Some(found) => {
                        bind(&format!("the target holds {found}, with the journal's last record; bound to"))
                    }
                    None => Err(Error::OtherTarget {
                        stream: stream.into(),
                        journal: statedir::journal(state_root, stream),
                        recorded,
                        place,
                        missing: key,
                    }),
                }
            }
            (Binding::AskTarget, None) => {
                unreachable!("decide asks the target only about a journal with records")
            }
        }
    }
}

/// The recorded place, or `None` when none is (a new state directory, or
/// one from a release that did not record it).
fn read_binding(path: &Path) -> Result<Option<String>, Error> {
    let opened = durable::open_regular(path, File::options().read(true), Links::Refuse, "the target binding");
    let mut text = String::new();
    match opened.and_then(|file| file.take(4096).read_to_string(&mut text)) {
        Ok(_) => Ok(Some(text.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::local("read", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let here = "file:///mnt/a";
        assert_eq!(decide(Some(here), here, true), Binding::Same);
        assert_eq!(decide(Some(here), here, false), Binding::Same);
        assert_eq!(decide(None, here, false), Binding::Bind);
        assert_eq!(decide(Some("file:///mnt/b"), here, false), Binding::Bind);
        assert_eq!(decide(None, here, true), Binding::AskTarget);
        assert_eq!(decide(Some("file:///mnt/b"), here, true), Binding::AskTarget);
    }
}
