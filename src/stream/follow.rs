//! A standby's pass (`replicas = on`, another node elected): never upload
//! (nor take snapshots: the worker starts none on a standby); adopt the
//! records the offloader wrote (batches, gaps, snapshots), checked against
//! the local copies first as any record this node did not write, so the
//! archived position, its file, status and metrics show what the offloader
//! archived; and acknowledge the local copies those records cover
//! (`on_archived`), so a standby's spool does not fill. The local scan runs
//! whenever the standby wakes; the remote records are read when the caller
//! says (once per heartbeat interval), and always at a takeover, so the new
//! offloader resumes where the archive ends without sending anything again.
//! They are listed from the start (a few pages once compacted): the
//! offloader may fold records across this node's journal end into an
//! object that starts before it.

use std::time::SystemTime;

use super::{Hints, PassReport, Stream, adopt};
use crate::catalog::{self, assemble, compact};
use crate::error::Error;
use crate::manifest::Entry;
use crate::status::unix_now;
use crate::target::keys;

impl Stream {
    /// Become the offloader: adopt the records the previous one wrote, and
    /// take where its compaction stands from the target (one listing of
    /// the record objects), since this node's own compaction state stood
    /// still while it followed.
    pub fn take_over(&mut self) -> Result<PassReport, Error> {
        let report = self.follow(true)?;
        self.compaction_from_target()?;
        Ok(report)
    }

    /// Take where compaction stands from the target (one listing of the
    /// record objects).
    fn compaction_from_target(&mut self) -> Result<(), Error> {
        let name = self.config.name.clone();
        let listed =
            self.target.list(&keys::records_prefix(&name), None).map_err(|e| Error::target(&name, e))?;
        let listing = assemble::classify(&name, listed);
        let progress =
            compact::Progress::from_listing(listing.records.iter().map(|(key, object)| (key, object)));
        self.compactor.adopt(progress)
    }

    /// Follow the offloader: adopt its records when `read_remote`, then
    /// scan, acknowledge what is archived and report the backlog.
    pub fn follow(&mut self, read_remote: bool) -> Result<PassReport, Error> {
        if read_remote {
            // From the start: the offloader may have folded records across
            // this node's journal end since this node learned where
            // compaction stands, into an object that starts before it
            // (the record objects are few once compacted: a page or three).
            self.adopt_remote()?;
        }
        let survey = self
            .source
            .survey(SystemTime::now())
            .map_err(|source| Error::Scan { stream: self.config.name.clone(), source })?;
        self.acknowledge(&survey.archived)?;
        self.facts(&survey.waiting, Hints::default());
        let held = survey.archived.last().map(|segment| segment.position);
        self.update_status(|s| {
            s.held_through = s.held_through.max(held);
            s.late_segments = survey.late.len() as u64;
            s.last_success = Some(unix_now());
        });
        Ok(PassReport::default())
    }

    /// Adopt the records the offloader wrote since this node's journal
    /// ends, listing every record object.
    fn adopt_remote(&mut self) -> Result<(), Error> {
        let (config, name) = (&self.config, &self.config.name);
        let (source, snapshots) = (&mut self.source, &mut self.snapshots);
        let caught_up = catalog::catch_up(
            &mut self.journal,
            self.target.as_ref(),
            Some(0),
            |records| adopt::check_local_segments(config, records),
            |entry| {
                snapshots.note(name, entry);
                if let Entry::Log(record) = entry {
                    source.record(record);
                }
            },
        )?;
        if let Some(progress) = caught_up.compaction {
            self.compactor.adopt(progress)?;
        }
        self.source.prune(self.journal.ends().pruned_before());
        if caught_up.adopted > 0 {
            let (archived, snapshot) = (self.archived(), self.last_snapshot());
            self.update_status(|s| {
                s.archived_position = archived;
                s.snapshots.position = snapshot;
            });
            self.write_position()?;
        }
        Ok(())
    }
}
