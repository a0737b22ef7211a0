//! The log writer: one thread that group-commits appends to any number of partition logs.
//!
//! Each round it takes every append waiting in its queue (blocking only when the queue is
//! empty), stages their frames per partition, writes each partition's frames with one
//! `write`, then, if any append of the round asked for durability, runs `fdatasync` on every
//! partition written since the last sync and answers. Appends that did not ask for
//! durability are answered once their bytes are in the OS; in `async` mode the writer still
//! syncs at least every `async_flush_interval` so the loss window is bounded.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::{PartitionLog, SegmentInfo, frame, segment};
use crate::error::{Error, Result};

/// Syncs a segment file's data to stable storage. Injectable so that tests can make fsync
/// fail and check that the log poisons itself.
pub type Syncer = Arc<dyn Fn(&File) -> std::io::Result<()> + Send + Sync>;

/// Settings of the log writer.
#[derive(Clone)]
pub struct LogWriterConfig {
    /// A segment is rolled once it has grown past this many bytes.
    pub segment_bytes: u64,
    /// Longest time written-but-unsynced data waits for an fsync.
    pub async_flush_interval: Duration,
    /// How a file is synced (`File::sync_data` unless a test injects faults).
    pub syncer: Syncer,
    /// Counters the writer thread updates; the node registers them for `/metrics`.
    pub metrics: LogMetrics,
}

/// What the writer thread counts. Clones share the same counters.
#[derive(Debug, Clone)]
pub struct LogMetrics {
    /// Records appended.
    pub appends: Counter,
    /// Bytes written to segments.
    pub bytes: Counter,
    /// Commit rounds (one write per touched partition, at most one fsync each).
    pub commit_rounds: Counter,
    pub fsyncs: Counter,
    pub fsync_seconds: Histogram,
}

impl Default for LogMetrics {
    fn default() -> Self {
        Self {
            appends: Counter::default(),
            bytes: Counter::default(),
            commit_rounds: Counter::default(),
            fsyncs: Counter::default(),
            // 50 µs to about 1.6 s.
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

/// Syncs a segment file through the configured syncer, counting and timing it.
fn fsync(config: &LogWriterConfig, file: &File) -> std::io::Result<()> {
    let started = Instant::now();
    let result = (config.syncer)(file);
    config.metrics.fsyncs.inc();
    config
        .metrics
        .fsync_seconds
        .observe(started.elapsed().as_secs_f64());
    result
}

impl Default for LogWriterConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            async_flush_interval: Duration::from_millis(1000),
            syncer: Arc::new(|f: &File| f.sync_data()),
            metrics: LogMetrics::default(),
        }
    }
}

impl std::fmt::Debug for LogWriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriterConfig")
            .field("segment_bytes", &self.segment_bytes)
            .field("async_flush_interval", &self.async_flush_interval)
            .finish_non_exhaustive()
    }
}

/// One record to append to one partition.
#[derive(Debug)]
pub struct Append {
    pub log: Arc<PartitionLog>,
    pub kind: u8,
    /// The record's time (ns since the epoch); `None` stamps it with the time the writer
    /// writes it.
    pub timestamp: Option<i64>,
    pub payload: Vec<u8>,
}

/// Resolves to the offsets the appends got, in the order they were given.
pub type AppendReceiver = tokio::sync::oneshot::Receiver<Result<Vec<u64>>>;

struct Job {
    appends: Vec<Append>,
    durable: bool,
    reply: tokio::sync::oneshot::Sender<Result<Vec<u64>>>,
}

struct Shared {
    poisoned: Mutex<Option<String>>,
}

/// Handle to the log writer thread. Dropping it (or calling [`LogWriter::shutdown`]) lets the
/// thread finish the queued appends, sync, and exit.
pub struct LogWriter {
    tx: Mutex<Option<Sender<Job>>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// Fails when the OS refuses to start a thread.
    pub fn start(config: LogWriterConfig) -> Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            poisoned: Mutex::new(None),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tidemark-log-writer".to_string())
            .spawn(move || run(rx, config, thread_shared))
            .map_err(|e| Error::Internal(format!("cannot start the log writer thread: {e}")))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The reason the log is poisoned, if it is.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poisoned.lock().clone()
    }

    /// Queues appends; the receiver resolves once they are written (and, when `durable`,
    /// fsynced). Appends of one call are written in one commit round.
    ///
    /// # Errors
    /// Fails at once when the log is poisoned or shut down, or a record is too large.
    pub fn submit(&self, appends: Vec<Append>, durable: bool) -> Result<AppendReceiver> {
        if let Some(reason) = self.poisoned() {
            return Err(Error::Poisoned { reason });
        }
        for a in &appends {
            if a.payload.len() > frame::MAX_RECORD_BYTES {
                return Err(Error::RecordTooLarge {
                    size: a.payload.len(),
                    max: frame::MAX_RECORD_BYTES,
                });
            }
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        let guard = self.tx.lock();
        let tx = guard.as_ref().ok_or(Error::WriterClosed)?;
        tx.send(Job {
            appends,
            durable,
            reply,
        })
        .map_err(|_| Error::WriterClosed)?;
        Ok(rx)
    }

    /// Appends and waits (for async callers).
    ///
    /// # Cancellation
    /// Dropping the future does not withdraw the appends: they are written anyway.
    pub async fn append(&self, appends: Vec<Append>, durable: bool) -> Result<Vec<u64>> {
        let rx = self.submit(appends, durable)?;
        rx.await.map_err(|_| Error::WriterClosed)?
    }

    /// Appends and blocks the calling thread until answered.
    pub fn append_blocking(&self, appends: Vec<Append>, durable: bool) -> Result<Vec<u64>> {
        let rx = self.submit(appends, durable)?;
        rx.blocking_recv().map_err(|_| Error::WriterClosed)?
    }

    /// Stops accepting appends, lets the thread write and sync what is queued, and joins it.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Partitions touched since the last fsync, deduplicated by identity.
#[derive(Default)]
struct DirtySet(Vec<Arc<PartitionLog>>);

impl DirtySet {
    fn insert(&mut self, log: &Arc<PartitionLog>) {
        if !self.0.iter().any(|l| Arc::ptr_eq(l, log)) {
            self.0.push(Arc::clone(log));
        }
    }
}

fn run(rx: Receiver<Job>, config: LogWriterConfig, shared: Arc<Shared>) {
    let mut unsynced = DirtySet::default();
    let mut oldest_unsynced: Option<Instant> = None;
    let mut jobs: Vec<Job> = Vec::new();
    loop {
        let first = match oldest_unsynced {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(since) => {
                let due = since + config.async_flush_interval;
                rx.recv_timeout(due.saturating_duration_since(Instant::now()))
            }
        };
        match first {
            Ok(job) => jobs.push(job),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(reason) = sync_all(&mut unsynced, &config) {
                    poison(&shared, reason);
                }
                oldest_unsynced = None;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Err(reason) = sync_all(&mut unsynced, &config) {
                    poison(&shared, reason);
                }
                return;
            }
        }
        // Group commit: everything that arrived while the previous round was syncing.
        jobs.extend(rx.try_iter());

        if let Some(reason) = shared.poisoned.lock().clone() {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(Error::Poisoned {
                    reason: reason.clone(),
                }));
            }
            continue;
        }

        let round = commit_round(&mut jobs, &mut unsynced, &config);
        match round {
            Ok(()) => {
                if unsynced.0.is_empty() {
                    oldest_unsynced = None;
                } else if oldest_unsynced.is_none() {
                    oldest_unsynced = Some(Instant::now());
                }
            }
            Err(reason) => {
                poison(&shared, reason.clone());
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(Error::Poisoned {
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }
}

fn poison(shared: &Shared, reason: String) {
    tracing::error!(%reason, "log writer poisoned; writes are refused until restart");
    let mut p = shared.poisoned.lock();
    if p.is_none() {
        *p = Some(reason);
    }
}

/// Writes and (when asked) syncs one round; answers the jobs it completed and leaves in
/// `jobs` only those that must be failed.
fn commit_round(
    jobs: &mut Vec<Job>,
    unsynced: &mut DirtySet,
    config: &LogWriterConfig,
) -> std::result::Result<(), String> {
    let now = now_nanos();
    let mut touched = DirtySet::default();
    let mut offsets: Vec<Vec<u64>> = Vec::with_capacity(jobs.len());
    for job in jobs.iter() {
        let mut job_offsets = Vec::with_capacity(job.appends.len());
        for a in &job.appends {
            let mut active = a.log.active.lock();
            let ts = a.timestamp.unwrap_or(now);
            job_offsets.push(a.log.stage(&mut active, a.kind, ts, &a.payload));
            drop(active);
            config.metrics.appends.inc();
            touched.insert(&a.log);
        }
        offsets.push(job_offsets);
    }

    config.metrics.commit_rounds.inc();
    for log in &touched.0 {
        let written =
            write_staged(log).map_err(|e| format!("write to {}: {e}", log.dir.display()))?;
        config.metrics.bytes.inc_by(written);
        unsynced.insert(log);
    }

    let needs_sync = jobs.iter().any(|j| j.durable);
    if needs_sync {
        sync_all(unsynced, config)?;
    }
    // Roll before answering: once a caller has its answer, the writer creates no file in
    // the logs it appended to, so a caller that then removes a log's directory (a dropped
    // database, a deleted topic) cannot make a later roll fail there.
    let rolled = touched.0.iter().try_for_each(|log| {
        maybe_roll(log, config)
            .map_err(|e| format!("rolling a segment of {}: {e}", log.dir.display()))
    });
    // The records are written (and synced when asked): their callers get their offsets
    // even when a roll failed, which poisons the writer for what comes next.
    for (job, job_offsets) in jobs.drain(..).zip(offsets) {
        let _ = job.reply.send(Ok(job_offsets));
    }
    rolled
}

/// Writes a partition's staged records; returns the bytes written.
fn write_staged(log: &PartitionLog) -> std::io::Result<u64> {
    let mut active = log.active.lock();
    if active.staged.is_empty() {
        return Ok(0);
    }
    let staged = std::mem::take(&mut active.staged);
    let result = active.file.write_all(&staged);
    let new_index = std::mem::take(&mut active.staged_index);
    // Keep the allocation for the next round.
    let mut staged = staged;
    let written = staged.len() as u64;
    staged.clear();
    active.staged = staged;
    result?;
    active.len += written;
    active.unsynced = true;
    let len = active.len;
    let next = active.next_offset;
    drop(active);
    if !new_index.is_empty()
        && let Some(seg) = log.segments.write().last_mut()
    {
        seg.index.extend(new_index);
    }
    log.written_len
        .store(len, std::sync::atomic::Ordering::Release);
    log.written_next_offset
        .store(next, std::sync::atomic::Ordering::Release);
    Ok(written)
}

fn sync_all(unsynced: &mut DirtySet, config: &LogWriterConfig) -> std::result::Result<(), String> {
    for log in unsynced.0.drain(..) {
        let mut active = log.active.lock();
        if active.unsynced {
            fsync(config, &active.file)
                .map_err(|e| format!("fdatasync of {}: {e}", log.dir.display()))?;
            active.unsynced = false;
        }
        mark_synced(&log);
    }
    Ok(())
}

/// Seals the active segment once it is past the configured size and starts a new one.
fn maybe_roll(log: &PartitionLog, config: &LogWriterConfig) -> Result<()> {
    let mut active = log.active.lock();
    if active.len < config.segment_bytes {
        return Ok(());
    }
    fsync(config, &active.file).map_err(|e| Error::io(&log.dir, e))?;
    mark_synced(log);
    let base = active.next_offset;
    let (file, path) = segment::create(&log.dir, base)?;
    active.file = file;
    active.len = segment::SEGMENT_HEADER_LEN as u64;
    active.last_indexed_pos = None;
    active.unsynced = false;
    let mut segments = log.segments.write();
    segments.push(SegmentInfo {
        base_offset: base,
        path,
        index: Vec::new(),
    });
    log.written_len
        .store(active.len, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// Called after an fsync of the active segment: everything written is on disk.
fn mark_synced(log: &PartitionLog) {
    let written = log
        .written_next_offset
        .load(std::sync::atomic::Ordering::Acquire);
    log.synced_next_offset
        .fetch_max(written, std::sync::atomic::Ordering::AcqRel);
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
