//! `walship list`: a stream's manifest for a person, streamed.
//!
//! Two passes over the manifest ([`ManifestReader`]): the first adds up the
//! summary line (batches, segments, bytes, gaps, positions), which is
//! printed first; the second prints the lines that follow it. (When a
//! prune mark cuts into the log, one more pass adds up the live records.) On a
//! terminal a long list shows only its first and last [`PAGE_EDGE`] lines
//! and says how to see the rest (`--all`, `--range`); into a pipe or a
//! file every line goes. Memory stays flat: the lines are written as they
//! come, through one buffer.
//!
//! The snapshots follow, as a table of their own. The pure parts
//! ([`Summary`], [`row`], [`render_snapshots`], [`shown_rows`]) are kept apart
//! from the passes so they are tested on their own.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use crate::catalog::reader::{ManifestReader, Reach};
use crate::cli::ListRows;
use crate::error::Error;
use crate::human::{count, human_bytes};
use crate::manifest::{Encoding, Record, SnapshotRecord, StreamRules};
use crate::target::Target;

/// A paged list shows this many lines at its start and at its end.
pub const PAGE_EDGE: usize = 10;

/// What a list's summary line says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub batches: u64,
    pub gaps: u64,
    pub segments: u64,
    pub bytes: u64,
    pub first: Option<u64>,
    pub last: Option<u64>,
}

impl Summary {
    /// Count `record` in.
    pub fn add(&mut self, record: &Record) {
        match record {
            Record::Batch(batch) => {
                self.batches += 1;
                self.segments += batch.segments.len() as u64;
                self.bytes += batch.size;
            }
            Record::Gap(_) => self.gaps += 1,
        }
        self.first = self.first.or(Some(record.first()));
        self.last = Some(record.last());
    }

    /// How many lines the records make.
    pub fn records(&self) -> u64 {
        self.batches + self.gaps
    }

    /// The summary line, and the column heads when lines follow.
    pub fn render(&self, stream: &str) -> String {
        let span = match (self.first, self.last) {
            (Some(first), Some(last)) => format!("positions {first}..{last}"),
            _ => "nothing archived yet".into(),
        };
        let mut out = format!(
            "stream {stream}: {}, {}, {}, {}, {span}\n",
            count(self.batches, "batch"),
            count(self.segments, "segment"),
            human_bytes(self.bytes),
            count(self.gaps, "gap"),
        );
        if self.records() > 0 {
            let _ = writeln!(
                out,
                "  {:<23} {:>8} {:>11}  {:<8}  key / reason",
                "positions", "segments", "size", "crc32"
            );
        }
        out
    }
}

/// One record's line.
pub fn row(record: &Record) -> String {
    let range = format!("{}..{}", record.first(), record.last());
    match record {
        Record::Batch(b) => format!(
            "  {range:<23} {:>8} {:>11}  {:08x}  {}{}\n",
            b.segments.len(),
            human_bytes(b.size),
            b.crc32,
            b.key,
            match b.stored.encoding {
                Encoding::Identity => String::new(),
                Encoding::ZstdFrames => format!(" (zstd frames, {} stored)", human_bytes(b.stored.size)),
            }
        ),
        Record::Gap(g) => format!("  {range:<23} {:>8} {:>11}  {:<8}  GAP: {}\n", "-", "-", "-", g.reason),
    }
}

/// A person-readable listing of a stream's snapshots (nothing when it has
/// none).
pub fn render_snapshots<'a>(stream: &str, snapshots: impl Iterator<Item = &'a SnapshotRecord>) -> String {
    let lines: Vec<String> = snapshots
        .map(|s| {
            format!("  {:<23} {:>8} {:>11}  {:08x}  {}", s.position, "", human_bytes(s.size), s.crc32, s.key)
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut out = format!("stream {stream}: {}\n", count(lines.len() as u64, "snapshot"));
    let _ = writeln!(out, "  {:<23} {:>8} {:>11}  {:<8}  key", "position", "", "size", "crc32");
    for line in lines {
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Which lines to show: every one, or (`Some(edge)`) the first and last
/// `edge` of them, given how many there are and whether stdout is a
/// terminal.
pub fn shown_rows(rows: ListRows, records: u64, terminal: bool) -> Option<usize> {
    let paged = rows == ListRows::Paged && terminal && records > 3 * PAGE_EDGE as u64;
    paged.then_some(PAGE_EDGE)
}

/// List `stream`'s manifest to stdout, as `rows` says.
pub fn list_stream(
    state_dir: &std::path::Path,
    target: &dyn Target,
    rules: &StreamRules<'_>,
    rows: ListRows,
) -> Result<(), Error> {
    // The summary of every record comes with the first pass; it is the
    // summary of the live ones unless a prune mark cuts into the log.
    let mut every = Summary::default();
    let reader = ManifestReader::open_visiting(state_dir, target, rules, Reach::Whole, |record| {
        if let ListRows::Range(first, last) = rows
            && (record.last() < first || record.first() > last)
        {
            return;
        }
        every.add(record);
    })?;
    let stdout = io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let mut write = |text: &str| out.write_all(text.as_bytes()).map_err(Error::Output);
    crate::stream::retention::checked_prunes(rules.name, &reader)?;
    if let Some(before) = reader.pruned_before() {
        write(&format!("stream {}: positions before {before} were pruned\n", rules.name))?;
    }
    let mark = reader.pruned_before().unwrap_or(0);
    let summary = if every.first.is_none_or(|first| first >= mark) {
        every
    } else {
        let mut live = Summary::default();
        reader.each_live_record(|record| {
            if let ListRows::Range(first, last) = rows
                && (record.last() < first || record.first() > last)
            {
                return Ok(record.first() <= last);
            }
            live.add(&record);
            Ok(true)
        })?;
        live
    };
    write(&summary.render(rules.name))?;
    match shown_rows(rows, summary.records(), terminal) {
        None => reader.each_live_record(|record| match rows {
            ListRows::Range(_, last) if record.first() > last => Ok(false),
            ListRows::Range(first, _) if record.last() < first => Ok(true),
            _ => write(&row(&record)).map(|()| true),
        })?,
        Some(edge) => {
            let (mut seen, mut tail) = (0u64, VecDeque::with_capacity(edge));
            reader.each_live_record(|record| {
                seen += 1;
                if seen <= edge as u64 {
                    write(&row(&record))?;
                } else {
                    if tail.len() == edge {
                        tail.pop_front();
                    }
                    tail.push_back(row(&record));
                }
                Ok(true)
            })?;
            let hidden = summary.records() - 2 * edge as u64;
            write(&format!(
                "  … {} not shown: `walship list --all` shows every line, `--range FIRST..LAST` those \
                 of some positions\n",
                count(hidden, "line")
            ))?;
            for line in tail {
                write(&line)?;
            }
        }
    }
    write(&render_snapshots(rules.name, reader.side().live_snapshots()))?;
    out.flush().map_err(Error::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::GapRecord;
    use crate::manifest::validate::tests::batch;

    #[test]
    fn summary_and_rows_as_before() {
        let records = [
            batch("s", 1, &[b"ab", b"c"]),
            Record::Gap(GapRecord { first: 3, last: 4, reason: "gone".into() }),
        ];
        let mut summary = Summary::default();
        records.iter().for_each(|r| summary.add(r));
        let text = summary.render("s");
        assert!(text.starts_with("stream s: 1 batch, 2 segments, 3 B, 1 gap, positions 1..4\n"), "{text}");
        assert!(text.contains("key / reason"), "{text}");
        assert!(row(&records[0]).contains("s/batches/0000000000000001-0000000000000002"));
        assert!(row(&records[1]).contains("GAP: gone"));
        assert_eq!(
            Summary::default().render("s"),
            "stream s: 0 batches, 0 segments, 0 B, 0 gaps, nothing archived yet\n"
        );
    }

    #[test]
    fn only_a_long_list_on_a_terminal_is_paged() {
        let many = 3 * PAGE_EDGE as u64 + 1;
        assert_eq!(shown_rows(ListRows::Paged, many, true), Some(PAGE_EDGE));
        assert_eq!(shown_rows(ListRows::Paged, many - 1, true), None);
        assert_eq!(shown_rows(ListRows::Paged, many, false), None);
        assert_eq!(shown_rows(ListRows::All, many, true), None);
        assert_eq!(shown_rows(ListRows::Range(0, 5), many, true), None);
    }
}
