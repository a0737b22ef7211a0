//! `storage::log`: the one durable, segmented, append-only log of Tidemark.
//!
//! A [`PartitionLog`] is a directory of segment files `<base_offset>.log` (format in
//! `storage/FORMAT.md`). Every record gets the next offset of its partition. A database's
//! write-ahead log is a set of partition logs; user topics will be the same thing.
//!
//! Data flow: callers hand [`Append`]s to the [`LogWriter`], one thread per data directory
//! ("one writer per disk"). It takes every append that is waiting, writes each partition's
//! frames with one `write`, runs one `fdatasync` round for all of them and only then answers
//! the callers that asked for durability: group commit with no fixed sleep. A failed write
//! or fsync poisons the writer: every later append fails until restart.
//!
//! On open, a partition log scans its segments once, hands every record to the caller
//! (replay), truncates a torn tail of the last segment and refuses a corrupt middle.

mod frame;
mod segment;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

pub use frame::{MAX_RECORD_BYTES, Record};
pub use segment::sync_dir;
pub use writer::{Append, AppendReceiver, LogMetrics, LogWriter, LogWriterConfig, Syncer};

use crate::error::{Error, Result};

/// Record kind of a write-ahead batch of table rows (payload: `crate::payload`).
pub const KIND_WRITE_BATCH: u8 = 1;

#[derive(Debug, Clone)]
struct SegmentInfo {
    base_offset: u64,
    path: PathBuf,
    /// Sparse (offset, position) pairs; appended to for the active segment.
    index: Vec<(u64, u64)>,
}

/// The segment being appended to. Only the log writer thread mutates it.
#[derive(Debug)]
struct ActiveSegment {
    file: File,
    /// Bytes of the file that hold complete frames.
    len: u64,
    next_offset: u64,
    last_indexed_pos: Option<u64>,
    /// Frames assigned offsets in the current commit round but not yet written.
    staged: Vec<u8>,
    staged_index: Vec<(u64, u64)>,
    /// Bytes written since the last fsync.
    unsynced: bool,
}

/// One partition of a log: a directory of segments.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    partition: u32,
    active: Mutex<ActiveSegment>,
    segments: RwLock<Vec<SegmentInfo>>,
    /// Offset after the last record written to the OS (readers stop before it).
    written_next_offset: AtomicU64,
    /// Length of the active segment's written prefix, for readers.
    written_len: AtomicU64,
    /// Offset after the last record known to be fsynced (or found on disk at open).
    synced_next_offset: AtomicU64,
}

impl PartitionLog {
    /// Opens (creating if needed) the partition log in `dir`, handing every stored record to
    /// `replay` in offset order.
    ///
    /// # Errors
    /// Fails on I/O errors and on corruption anywhere but a torn tail of the last segment.
    pub fn open(
        dir: &Path,
        partition: u32,
        replay: &mut dyn FnMut(Record<'_>) -> Result<()>,
    ) -> Result<Self> {
        Self::open_reaching(dir, partition, 0, replay)
    }

    /// [`PartitionLog::open`] of a log known to reach at least offset `must_reach` (the
    /// catalog saw it written): a log that ends before it lost segment files and is
    /// refused before anything is changed on disk.
    ///
    /// # Errors
    /// As [`PartitionLog::open`], and [`Error::LogEndsEarly`].
    pub fn open_reaching(
        dir: &Path,
        partition: u32,
        must_reach: u64,
        replay: &mut dyn FnMut(Record<'_>) -> Result<()>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            if let Some(base) = name.to_str().and_then(segment::parse_segment_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();

        let mut segments = Vec::with_capacity(bases.len());
        let mut next_offset = bases.first().copied().unwrap_or(0);
        let mut torn = None;
        let mut last_valid_len = 0;
        for (i, base) in bases.iter().copied().enumerate() {
            let path = dir.join(segment::segment_file_name(base));
            if base != next_offset {
                return Err(Error::CorruptSegment {
                    path,
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base} but the previous one ends at {next_offset}"
                    ),
                });
            }
            let is_last = i + 1 == bases.len();
            let outcome = segment::scan(&path, base, is_last, replay)?;
            next_offset = outcome.next_offset;
            last_valid_len = outcome.valid_len;
            if let Some(at) = outcome.torn_at {
                torn = Some((path.clone(), at));
            }
            segments.push(SegmentInfo {
                base_offset: base,
                path,
                index: outcome.index,
            });
        }

        if next_offset < must_reach {
            return Err(Error::LogEndsEarly {
                path: dir.to_path_buf(),
                partition,
                end: next_offset,
                expected: must_reach,
            });
        }

        // Repair a torn tail: drop the incomplete bytes (or the whole header-less file).
        if let Some((path, at)) = torn {
            if at == 0 {
                tracing::warn!(path = %path.display(), "removing a segment whose header was never completed");
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                segments.pop();
            } else {
                tracing::warn!(path = %path.display(), at, "truncating a torn tail of the log");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                f.set_len(at).map_err(|e| Error::io(&path, e))?;
                f.sync_all().map_err(|e| Error::io(&path, e))?;
            }
        }

        let active = match segments.last() {
            Some(last) => {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&last.path)
                    .map_err(|e| Error::io(&last.path, e))?;
                ActiveSegment {
                    file,
                    len: last_valid_len,
                    next_offset,
                    last_indexed_pos: last.index.last().map(|(_, p)| *p),
                    staged: Vec::new(),
                    staged_index: Vec::new(),
                    unsynced: false,
                }
            }
            None => {
                let (file, path) = segment::create(dir, next_offset)?;
                segments.push(SegmentInfo {
                    base_offset: next_offset,
                    path,
                    index: Vec::new(),
                });
                ActiveSegment {
                    file,
                    len: segment::SEGMENT_HEADER_LEN as u64,
                    next_offset,
                    last_indexed_pos: None,
                    staged: Vec::new(),
                    staged_index: Vec::new(),
                    unsynced: false,
                }
            }
        };
        let written_len = active.len;
        Ok(Self {
            dir: dir.to_path_buf(),
            partition,
            active: Mutex::new(active),
            segments: RwLock::new(segments),
            written_next_offset: AtomicU64::new(next_offset),
            written_len: AtomicU64::new(written_len),
            synced_next_offset: AtomicU64::new(next_offset),
        })
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Offset the next appended record will get (records below it are readable).
    pub fn next_offset(&self) -> u64 {
        self.written_next_offset.load(Ordering::Acquire)
    }

    /// Offset after the last record known to be on disk (fsynced by the writer, or
    /// found there at open): what the catalog may record as reached, since a power loss
    /// can take back only what is above it.
    pub fn synced_next_offset(&self) -> u64 {
        self.synced_next_offset.load(Ordering::Acquire)
    }

    /// Offset of the oldest record still in the log (older segments were removed).
    pub fn first_offset(&self) -> u64 {
        self.segments
            .read()
            .first()
            .map_or_else(|| self.next_offset(), |s| s.base_offset)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Deletes sealed segments whose records all lie below `offset` (they are persisted
    /// elsewhere). The active segment is kept even when covered; it goes once it rolls.
    /// Returns how many segments were removed.
    ///
    /// # Errors
    /// I/O errors deleting a file (the segment list then still names it).
    pub fn remove_segments_before(&self, offset: u64) -> Result<usize> {
        let mut segments = self.segments.write();
        let mut removable = 0;
        for i in 0..segments.len().saturating_sub(1) {
            if segments[i + 1].base_offset <= offset {
                removable = i + 1;
            } else {
                break;
            }
        }
        for seg in segments.iter().take(removable) {
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&seg.path, e)),
            }
        }
        segments.drain(..removable);
        if removable > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(removable)
    }

    /// Reads every record at or after `from` that was written when the call began.
    ///
    /// # Errors
    /// I/O errors, and corruption that appeared after open.
    pub fn read_from(
        &self,
        from: u64,
        visit: &mut dyn FnMut(Record<'_>) -> Result<()>,
    ) -> Result<()> {
        self.read_some(from, usize::MAX, visit).map(|_| ())
    }

    /// Reads at most `max_records` records at or after `from`, of those written when the
    /// call began, and returns the offset to read from next (`from` when nothing was
    /// read). Records of removed segments are skipped: the first visited may be past
    /// `from`.
    ///
    /// # Errors
    /// I/O errors, and corruption that appeared after open.
    pub fn read_some(
        &self,
        from: u64,
        max_records: usize,
        visit: &mut dyn FnMut(Record<'_>) -> Result<()>,
    ) -> Result<u64> {
        let mut next = from;
        let mut left = max_records;
        // Read the bounds under the segment list's lock: a roll swaps the active segment
        // and resets `written_len` while holding it for writing.
        let (end_offset, active_len, segments) = {
            let guard = self.segments.read();
            let end = self.next_offset();
            let len = self.written_len.load(Ordering::Acquire);
            (end, len, guard.clone())
        };
        for (i, seg) in segments.iter().enumerate() {
            let seg_end = segments.get(i + 1).map_or(end_offset, |s| s.base_offset);
            if seg_end <= from {
                continue;
            }
            let Some(map) = segment::map_file(&seg.path)? else {
                continue;
            };
            let is_active = i + 1 == segments.len();
            let limit = if is_active {
                (active_len as usize).min(map.len())
            } else {
                map.len()
            };
            let data = &map[..limit];
            let start = seg
                .index
                .iter()
                .take_while(|(o, _)| *o <= from)
                .last()
                .map_or(segment::SEGMENT_HEADER_LEN, |(_, p)| *p as usize);
            let mut pos = start;
            loop {
                match frame::decode(data, pos) {
                    frame::Decoded::Record(r, pos_after) => {
                        if r.offset >= end_offset || left == 0 {
                            return Ok(next);
                        }
                        if r.offset >= from {
                            next = r.offset + 1;
                            left -= 1;
                            visit(r)?;
                        }
                        pos = pos_after;
                    }
                    frame::Decoded::End => break,
                    frame::Decoded::Truncated | frame::Decoded::Invalid(_) => {
                        return Err(Error::CorruptSegment {
                            path: seg.path.clone(),
                            position: pos as u64,
                            reason: "unreadable frame while reading".to_string(),
                        });
                    }
                }
            }
        }
        Ok(next)
    }

    /// Assigns the next offset to a frame and stages it for the current commit round.
    fn stage(&self, active: &mut ActiveSegment, kind: u8, timestamp: i64, payload: &[u8]) -> u64 {
        let offset = active.next_offset;
        let pos = active.len + active.staged.len() as u64;
        if active
            .last_indexed_pos
            .is_none_or(|p| pos >= p + segment::INDEX_INTERVAL_BYTES)
        {
            active.staged_index.push((offset, pos));
            active.last_indexed_pos = Some(pos);
        }
        frame::encode(&mut active.staged, offset, kind, timestamp, payload);
        active.next_offset += 1;
        offset
    }
}

#[cfg(test)]
mod tests;
