//! What the node does to its data besides taking writes: persist the buffer to Parquet,
//! compact, enforce retention, delete and drop; and the background loop that drives it.
//!
//! Every change of files follows intent -> apply -> commit: the catalog first records the
//! paths about to be written (`Intent`), the files are written and fsynced, then one catalog
//! op makes them live (`Persist`, `ReplaceFiles`). A crash anywhere before the commit leaves
//! files the catalog does not own; [`collect_orphans`] deletes them at the next start. Files a
//! commit replaced are deleted only after the query timeout, so running queries can finish.
//!
//! Persist (one database at a time): under the exclusive write gate, note each partition's
//! next log offset and take each table's buffered batches (every logged row is buffered then,
//! because writes hold the gate from logging to buffering). Outside the gate: deduplicate and
//! sort each table, split by time window, write one file per (table, window), commit, drop
//! the persisted batches from the buffer, and delete log segments below the noted offsets.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray, StringArray};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::{and, cast, filter_record_batch, not, or};
use arrow::datatypes::{DataType, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use tidemark_query::dedup::dedup;
use tidemark_query::provider::Table;
use tidemark_storage::buffer::BufferedBatch;
use tidemark_storage::catalog::{ColumnKind, TIME_COLUMN, TableSchema};
use tidemark_storage::catalog_store::CatalogStore;
use tidemark_storage::failpoint;
use tidemark_storage::history::CompactionRun;
use tidemark_storage::manifest::{CatalogOp, CatalogState, FileMeta, Tombstone};
use tidemark_storage::parquet_file::{
    ParquetSink, database_dir, file_path, remove_file_and_empty_dirs, split_by_window,
};

use crate::error::{Error, Result};
use crate::node::Node;

/// Settings of persistence and compaction.
#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// Length of the time windows files are cut by.
    pub window: Duration,
    /// Persist when the buffer holds this many bytes.
    pub snapshot_bytes: usize,
    /// Persist when the oldest unpersisted write is this old.
    pub snapshot_age: Duration,
    /// How often compaction and retention run.
    pub compaction_interval: Duration,
    /// Compaction starts a new output file past this size.
    pub compaction_target_bytes: usize,
    /// Rows per batch a compaction merges at a time; with the number of input files this
    /// bounds its memory.
    pub compaction_batch_rows: usize,
    /// How long a write waits for room in a full buffer before getting "buffer full".
    pub full_buffer_wait: Duration,
    /// How long replaced files stay on disk for queries still reading them.
    pub file_gc_delay: Duration,
    /// How often the background loop looks at the buffer.
    pub tick: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            snapshot_bytes: 512 * 1024 * 1024,
            snapshot_age: Duration::from_secs(300),
            compaction_interval: Duration::from_secs(60),
            compaction_target_bytes: 256 * 1024 * 1024,
            compaction_batch_rows: 8192,
            full_buffer_wait: Duration::from_secs(10),
            file_gc_delay: Duration::from_secs(330),
            tick: Duration::from_millis(500),
        }
    }
}

impl MaintenanceConfig {
    pub fn window_ns(&self) -> i64 {
        i64::try_from(self.window.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// Rows of one (table, window) a persist writes: table, its columns, window start, rows.
/// One file to write: a table's buffered rows of one window, not yet deduplicated.
type Piece = (Arc<str>, Arc<TableSchema>, i64, Vec<BufferedBatch>);

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn storage_err(e: impl std::fmt::Display) -> Error {
    tidemark_storage::Error::Internal(e.to_string()).into()
}

/// Marker directory name of a database being dropped (see [`Node::drop_database`]).
fn dropping_dir(data_dir: &Path, db: &str) -> PathBuf {
    data_dir.join("log").join(format!(".drop-{db}"))
}

/// Completes drops a crash interrupted: the log directory was moved aside (the drop's
/// intent) but the catalog may still name the database.
///
/// # Errors
/// I/O and catalog errors.
pub fn finish_interrupted_drops(data_dir: &Path, store: &CatalogStore) -> Result<()> {
    let log_root = data_dir.join("log");
    let Ok(entries) = std::fs::read_dir(&log_root) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(&log_root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(db) = name.strip_prefix(".drop-") else {
            continue;
        };
        if store.read(|s| s.databases.contains_key(db)) {
            store.commit(CatalogOp::DropDatabase { db: db.to_string() })?;
        }
        remove_tree(&entry.path())?;
        remove_tree(&data_dir.join(database_dir(db)))?;
        tracing::info!(database = db, "finished an interrupted drop");
    }
    Ok(())
}

/// Clears the table directories of files no committed catalog op owns.
///
/// A file named by an open intent was being written by an operation that never committed
/// (an interrupted persist or compaction): it holds nothing the log or other files do not,
/// and is deleted. Any other unknown file (one a compaction replaced just before a crash,
/// or one the catalog lost track of through damage) is never deleted: it is moved to
/// `<data-dir>/quarantine/` under its own relative path, with a warning, since its rows
/// may exist nowhere else. The intents are then closed.
///
/// # Errors
/// I/O and catalog errors.
pub fn collect_orphans(data_dir: &Path, store: &CatalogStore) -> Result<()> {
    let live: HashSet<PathBuf> = store.read(|s| s.live_paths().map(|p| data_dir.join(p)).collect());
    let intended: HashSet<PathBuf> = store.read(|s| {
        s.intents
            .values()
            .flatten()
            .map(|p| data_dir.join(p))
            .collect()
    });
    let root = data_dir.join("tables");
    let quarantine = data_dir.join(QUARANTINE_DIR);
    let (mut removed, mut quarantined) = (0, 0);
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            if entry.file_type().map_err(|e| io(&path, e))?.is_dir() {
                stack.push(path);
            } else if live.contains(&path) {
                continue;
            } else if intended.contains(&path) {
                remove_file_and_empty_dirs(&path, &root)?;
                removed += 1;
            } else {
                let rel = path.strip_prefix(data_dir).unwrap_or(&path);
                let mut target = quarantine.join(rel);
                let mut n = 1;
                while target.exists() {
                    target = quarantine.join(format!("{}.{n}", rel.display()));
                    n += 1;
                }
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                std::fs::rename(&path, &target).map_err(|e| io(&path, e))?;
                tracing::warn!(
                    file = %path.display(),
                    moved_to = %target.display(),
                    "a table file that no catalog entry owns was moved to quarantine (not deleted: its rows may exist nowhere else)"
                );
                quarantined += 1;
            }
        }
    }
    if quarantined > 0 {
        tidemark_storage::log::sync_dir(&quarantine)?;
    }
    let open: Vec<u64> = store.read(|s| s.intents.keys().copied().collect());
    for op_id in open {
        store.commit(CatalogOp::AbortIntent { op_id })?;
    }
    if removed > 0 {
        tracing::info!(
            files = removed,
            "removed files of operations interrupted before they committed"
        );
    }
    if quarantined > 0 {
        tracing::warn!(
            files = quarantined,
            dir = %quarantine.display(),
            "moved table files no committed catalog entry owns to quarantine; a compaction interrupted by a crash leaves some (safe to delete once checked)"
        );
    }
    Ok(())
}

/// Where start-up moves table files the catalog does not know.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Refuses to open a data directory whose catalog is missing while it holds data: a new
/// catalog would not know the table files (and would lose retention settings and deletes).
///
/// # Errors
/// [`tidemark_storage::Error::MissingCatalog`] naming what was found.
pub fn check_catalog_present(data_dir: &Path) -> Result<()> {
    let catalog = data_dir.join("catalog");
    if tidemark_storage::catalog_store::exists(&catalog) {
        return Ok(());
    }
    let mut found = Vec::new();
    let mut stack = vec![data_dir.join("tables")];
    let mut files = 0u64;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(_) => files += 1,
                Err(_) => {}
            }
        }
    }
    if files > 0 {
        found.push(format!("{files} table file(s) under tables/"));
    }
    let databases: Vec<String> = std::fs::read_dir(data_dir.join("log"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    if !databases.is_empty() {
        found.push(format!("the logs of database(s) {}", databases.join(", ")));
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(tidemark_storage::Error::MissingCatalog {
        path: catalog,
        what: found.join(" and "),
    }
    .into())
}

fn io(path: impl Into<PathBuf>, e: std::io::Error) -> Error {
    tidemark_storage::Error::Io {
        path: path.into(),
        source: e,
    }
    .into()
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, e)),
    }
}

/// Rows of `batch` (of `table`) that none of `tombstones` hides.
///
/// # Errors
/// Internal Arrow errors.
pub fn apply_tombstones<'a>(
    table: &str,
    batch: RecordBatch,
    tombstones: impl Iterator<Item = &'a Tombstone>,
) -> tidemark_storage::Result<RecordBatch> {
    let mut hidden: Option<BooleanArray> = None;
    for t in tombstones.filter(|t| t.applies_to_table(table)) {
        let Some(mask) = tombstone_mask(&batch, t)? else {
            continue;
        };
        hidden = Some(match hidden {
            None => mask,
            Some(h) => or(&h, &mask)?,
        });
    }
    match hidden {
        None => Ok(batch),
        Some(h) => Ok(filter_record_batch(&batch, &not(&h)?)?),
    }
}

/// Which rows a tombstone hides (`None`: none can match).
fn tombstone_mask(
    batch: &RecordBatch,
    t: &Tombstone,
) -> tidemark_storage::Result<Option<BooleanArray>> {
    let Some(times) = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
    else {
        return Ok(None);
    };
    let mut mask: BooleanArray = times
        .iter()
        .map(|v| v.map(|v| v >= t.start && v <= t.stop))
        .collect();
    for (tag, value) in &t.predicate {
        let Some(column) = batch.column_by_name(tag) else {
            return Ok(None); // the tag is absent: `tag = value` holds for no row
        };
        let strings = cast(column, &DataType::Utf8)?;
        let scalar = StringArray::new_scalar(value.as_str());
        let matches = eq(&strings.as_string::<i32>(), &scalar)?;
        mask = and(&mask, &matches)?;
    }
    // Nulls (a missing tag value) do not match.
    let mask: BooleanArray = mask.iter().map(|v| Some(v.unwrap_or(false))).collect();
    Ok(Some(mask))
}

/// Whether a tombstone is no longer needed in `state`: no file it predates overlaps it,
/// and the log records it predates are all persisted.
fn tombstone_done(state: &CatalogState, db: &str, t: &Tombstone) -> bool {
    let Some(d) = state.databases.get(db) else {
        return true;
    };
    let logged = d
        .wal_persisted
        .iter()
        .zip(&t.wal_next)
        .all(|(persisted, next)| persisted >= next);
    logged
        && d.tables
            .iter()
            .filter(|(name, _)| t.applies_to_table(name))
            .all(|(_, table)| !table.files.values().any(|f| t.hides_rows_of(f)))
}

impl Node {
    /// Persists every database's buffer.
    ///
    /// # Errors
    /// See [`Node::persist_database`].
    pub async fn persist_all(&self) -> Result<()> {
        // Taken before the snapshots: a write landing while this runs sets a new mark of
        // its own, so its rows are aged from then instead of waiting for the next write.
        let mark = self.dirty_since.lock().take();
        let dbs: Vec<String> = self.logs.read().keys().map(|k| k.to_string()).collect();
        for db in dbs {
            if let Err(e) = self.persist_database(&db).await {
                if let Some(mark) = mark {
                    let mut dirty = self.dirty_since.lock();
                    *dirty = Some(dirty.map_or(mark, |d| d.min(mark)));
                }
                return Err(e);
            }
        }
        self.persisted.notify_waiters();
        Ok(())
    }

    /// Writes a database's buffered rows to Parquet and drops the log segments they
    /// covered. See the module docs.
    ///
    /// # Errors
    /// I/O, Parquet and catalog errors; the buffer and log are then unchanged, and files
    /// already written are orphans collected at the next start.
    pub async fn persist_database(&self, db: &str) -> Result<()> {
        let _maintenance = self.maintenance_lock.lock().await;
        let Ok(log) = self.log_of(db) else {
            return Ok(()); // dropped meanwhile
        };
        let Some(schema) = self.catalog.database(db) else {
            return Ok(());
        };
        let (upto, taken) = {
            let _gate = self.write_gate.write().await;
            let upto = log.next_offsets();
            let taken: Vec<_> = self
                .buffer
                .tables_of(db)
                .into_iter()
                .map(|(name, tb)| {
                    let snap = tb.snapshot();
                    (name, tb, snap)
                })
                .filter(|(_, _, snap)| !snap.batches.is_empty())
                .collect();
            (upto, taken)
        };
        let already = self
            .store
            .read(|s| s.databases.get(db).map(|d| d.wal_persisted.clone()))
            .unwrap_or_default();
        if taken.is_empty() && already == upto {
            return Ok(());
        }
        let started = Instant::now();
        let window_ns = self.config.maintenance.window_ns();
        let cutoff_of = |table: &str| {
            self.store.read(|s| {
                s.databases
                    .get(db)
                    .and_then(|d| d.retention_of(table))
                    .map(|r| now_ns().saturating_sub(r))
            })
        };

        // Cut by window (CPU work, off the async threads). Only batches that straddle a
        // window boundary are copied; deduplication happens one window at a time while
        // writing, so a persist holds one window's sorted copy at once, not the snapshot's.
        let mut pieces: Vec<Piece> = Vec::new();
        let mut columns_of: BTreeMap<String, Vec<(String, ColumnKind)>> = BTreeMap::new();
        for (name, _, snap) in &taken {
            let Some(table) = schema.table(name) else {
                continue;
            };
            let cutoff = cutoff_of(name);
            let batches = snap.batches.clone();
            let windows = tokio::task::spawn_blocking(move || {
                let mut by_window: BTreeMap<i64, Vec<BufferedBatch>> = BTreeMap::new();
                for b in batches {
                    for (w, part) in split_by_window(&b.batch, window_ns)? {
                        by_window.entry(w).or_default().push(BufferedBatch {
                            seq: b.seq,
                            batch: part,
                        });
                    }
                }
                Ok::<_, tidemark_storage::Error>(by_window)
            })
            .await
            .map_err(storage_err)??;
            columns_of.insert(
                name.to_string(),
                table
                    .columns()
                    .iter()
                    .filter(|(_, k)| *k != ColumnKind::Time)
                    .map(|(n, k)| (n.to_string(), *k))
                    .collect(),
            );
            for (w, batches) in windows {
                // A window wholly past retention is dropped rather than written.
                if cutoff.is_some_and(|c| w.saturating_add(window_ns) <= c) {
                    continue;
                }
                pieces.push((Arc::clone(name), Arc::clone(&table), w, batches));
            }
        }

        // Intent: the ids and paths about to be written.
        let (op_id, snapshot, metas) = self.store.update(|s| {
            let op_id = s.take_op_id();
            let snapshot = s.next_snapshot;
            let mut metas = Vec::with_capacity(pieces.len());
            for (table, _, w, _) in &pieces {
                let id = s.next_file_id;
                s.next_file_id += 1;
                metas.push(FileMeta::pending(
                    id,
                    file_path(db, table, *w, id),
                    *w,
                    window_ns,
                    0,
                    snapshot,
                ));
            }
            let paths = metas.iter().map(|m| m.path.clone()).collect();
            Ok((
                CatalogOp::Intent {
                    op_id,
                    paths,
                    next_file_id: s.next_file_id,
                },
                (op_id, snapshot, metas),
            ))
        })?;
        failpoint::hit("persist_after_intent");

        let data_dir = self.config.data_dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut files = Vec::with_capacity(pieces.len());
            for ((name, table, _, batches), meta) in pieces.into_iter().zip(metas) {
                let batch = dedup(&table, &batches)?;
                drop(batches);
                let kinds: Vec<ColumnKind> = table.columns().iter().map(|(_, k)| *k).collect();
                let mut sink = ParquetSink::create(&data_dir, batch.schema(), &kinds, meta)?;
                sink.write(&batch)?;
                files.push((name.to_string(), sink.finish()?));
                failpoint::hit("persist_mid_files");
            }
            Ok::<_, Error>(files)
        })
        .await
        .map_err(storage_err)??;
        failpoint::hit("persist_before_commit");

        let file_count = written.len();
        let rows: u64 = written.iter().map(|(_, f)| f.rows).sum();
        let bytes: u64 = written.iter().map(|(_, f)| f.bytes).sum();
        self.store.commit(CatalogOp::Persist {
            op_id,
            db: db.to_string(),
            snapshot,
            tables: columns_of,
            files: written,
            wal_persisted: upto.clone(),
            // Only what is fsynced: a power loss may take back the rest of the log, which
            // is not damage.
            wal_written: log
                .partitions
                .iter()
                .map(|p| p.synced_next_offset())
                .collect(),
        })?;
        failpoint::hit("persist_after_commit");
        for (_, tb, snap) in &taken {
            self.buffer.drain_front(tb, snap.batches.len());
        }
        let mut segments = 0;
        for (i, (p, offset)) in log.partitions.iter().zip(&upto).enumerate() {
            // A stream reader may still need to re-read rows already persisted.
            let keep = self
                .log_holds
                .floor(db, i)
                .map_or(*offset, |h| h.min(*offset));
            segments += p.remove_segments_before(keep)?;
        }
        self.metrics.persist_runs.inc();
        self.metrics.persist_rows.inc_by(rows);
        self.metrics.persist_bytes.inc_by(bytes);
        self.metrics
            .persist_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            database = db,
            files = file_count,
            rows,
            removed_log_segments = segments,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "persisted the buffer"
        );
        Ok(())
    }

    /// Compacts every table window that has several files or files with pending deletes.
    ///
    /// # Errors
    /// The first failure (each window's run is also recorded in `system.compactions`).
    pub async fn compact_all(&self) -> Result<usize> {
        let _lock = self.compaction_lock.lock().await;
        let mut jobs = Vec::new();
        self.store.read(|s| {
            for (db, d) in &s.databases {
                for (table, t) in &d.tables {
                    let mut by_window: BTreeMap<i64, Vec<FileMeta>> = BTreeMap::new();
                    for f in t.files.values() {
                        by_window.entry(f.window_start).or_default().push(f.clone());
                    }
                    for (w, files) in by_window {
                        let tombstoned = files.iter().any(|f| {
                            d.tombstones
                                .iter()
                                .any(|ts| ts.applies_to_table(table) && ts.hides_rows_of(f))
                        });
                        if files.len() > 1 || tombstoned {
                            jobs.push((db.clone(), table.clone(), w, files));
                        }
                    }
                }
            }
        });
        let mut done = 0;
        let mut first_err = None;
        for (db, table, w, files) in jobs {
            match self.compact_window(&db, &table, w, files).await {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::error!(database = %db, table = %table, window = w, error = %e, "compaction failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        // Tombstones that no longer hide anything (all their files are gone).
        self.retire_tombstones()?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    fn retire_tombstones(&self) -> Result<()> {
        let done: Vec<(String, Vec<u64>)> = self.store.read(|s| {
            s.databases
                .iter()
                .map(|(db, d)| {
                    let ids = d
                        .tombstones
                        .iter()
                        .filter(|t| tombstone_done(s, db, t))
                        .map(|t| t.id)
                        .collect::<Vec<_>>();
                    (db.clone(), ids)
                })
                .filter(|(_, ids)| !ids.is_empty())
                .collect()
        });
        for (db, ids) in done {
            self.store.commit(CatalogOp::RetireTombstones { db, ids })?;
        }
        Ok(())
    }

    async fn compact_window(
        &self,
        db: &str,
        table: &str,
        window: i64,
        files: Vec<FileMeta>,
    ) -> Result<()> {
        let started = Instant::now();
        let started_at = now_ns();
        let mut run = CompactionRun {
            db: db.to_string(),
            table: table.to_string(),
            window_start: window,
            started_at,
            duration_ms: 0,
            input_files: files.len() as u64,
            output_files: 0,
            input_rows: files.iter().map(|f| f.rows).sum(),
            output_rows: 0,
            input_bytes: files.iter().map(|f| f.bytes).sum(),
            output_bytes: 0,
            tombstones_applied: 0,
            error: None,
        };
        let result = self
            .compact_window_inner(db, table, window, &files, &mut run)
            .await;
        run.duration_ms = started.elapsed().as_millis() as u64;
        self.metrics.compaction_runs.inc();
        self.metrics
            .compaction_seconds
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                self.metrics.compaction_bytes_read.inc_by(run.input_bytes);
                self.metrics
                    .compaction_bytes_written
                    .inc_by(run.output_bytes);
            }
            Err(e) => {
                self.metrics.compaction_errors.inc();
                run.error = Some(e.to_string());
            }
        }
        self.compactions.record(run);
        result
    }

    async fn compact_window_inner(
        &self,
        db: &str,
        table: &str,
        window: i64,
        files: &[FileMeta],
        run: &mut CompactionRun,
    ) -> Result<()> {
        let schema = self
            .catalog
            .database(db)
            .and_then(|d| d.table(table))
            .ok_or_else(|| Error::TableNotFound {
                db: db.to_string(),
                table: table.to_string(),
            })?;
        let tombstones: Vec<Tombstone> = self.store.read(|s| {
            s.databases
                .get(db)
                .map(|d| {
                    d.tombstones
                        .iter()
                        .filter(|t| {
                            t.applies_to_table(table) && files.iter().any(|f| t.hides_rows_of(f))
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        });
        run.tombstones_applied = tombstones.len() as u64;
        let ctx = self
            .query
            .maintenance_context(self.config.maintenance.compaction_batch_rows);
        let provider = Table::new(
            Arc::from(db),
            Arc::clone(&schema),
            Arc::clone(self.query.storage()),
        );
        let state = ctx.state();
        let plan = provider
            .merge_plan(&state, files, &tombstones)
            .map_err(|e| Error::Query(e.into()))?;
        let mut stream = plan
            .execute(0, ctx.task_ctx())
            .map_err(|e| Error::Query(e.into()))?;
        let level = files.iter().map(|f| f.level).max().unwrap_or(0) + 1;
        let order = files.iter().map(|f| f.order).max().unwrap_or(0);
        let window_ns = files
            .first()
            .map_or(self.config.maintenance.window_ns(), |f| f.window_ns);
        let kinds: Vec<ColumnKind> = schema.columns().iter().map(|(_, k)| *k).collect();
        let op_id = self.store.update(|s| {
            let op_id = s.take_op_id();
            Ok((
                CatalogOp::Intent {
                    op_id,
                    paths: vec![],
                    next_file_id: s.next_file_id,
                },
                op_id,
            ))
        })?;
        let mut outputs: Vec<FileMeta> = Vec::new();
        let mut sink: Option<ParquetSink> = None;
        let target = self.config.maintenance.compaction_target_bytes.max(1);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| Error::Query(e.into()))?;
            if batch.num_rows() == 0 {
                continue;
            }
            let current = match &mut sink {
                Some(s) => s,
                None => {
                    let meta = self.store.update(|s| {
                        let id = s.next_file_id;
                        s.next_file_id += 1;
                        let meta = FileMeta::pending(
                            id,
                            file_path(db, table, window, id),
                            window,
                            window_ns,
                            level,
                            order,
                        );
                        Ok((
                            CatalogOp::Intent {
                                op_id,
                                paths: vec![meta.path.clone()],
                                next_file_id: s.next_file_id,
                            },
                            meta,
                        ))
                    })?;
                    sink.insert(ParquetSink::create(
                        &self.config.data_dir,
                        schema.arrow_schema(),
                        &kinds,
                        meta,
                    )?)
                }
            };
            current.write(&batch)?;
            if current.size() >= target
                && let Some(full) = sink.take()
            {
                outputs.push(full.finish()?);
            }
        }
        if let Some(last) = sink.take() {
            outputs.push(last.finish()?);
        }
        failpoint::hit("compact_before_commit");
        run.output_files = outputs.len() as u64;
        run.output_rows = outputs.iter().map(|f| f.rows).sum();
        run.output_bytes = outputs.iter().map(|f| f.bytes).sum();
        let removed: Vec<u64> = files.iter().map(|f| f.id).collect();
        // Tombstones this made unnecessary are retired by `compact_all` afterwards.
        self.store.commit(CatalogOp::ReplaceFiles {
            op_id: Some(op_id),
            db: db.to_string(),
            table: table.to_string(),
            added: outputs,
            removed,
        })?;
        failpoint::hit("compact_after_commit");
        self.delete_later(files.iter().map(|f| f.path.clone()));
        tracing::info!(
            database = db,
            table,
            window,
            inputs = files.len(),
            outputs = run.output_files,
            rows = run.output_rows,
            "compacted a window"
        );
        Ok(())
    }

    /// Schedules replaced files for deletion after the grace period.
    fn delete_later(&self, paths: impl Iterator<Item = String>) {
        let at = Instant::now() + self.config.maintenance.file_gc_delay;
        let mut pending = self.pending_deletes.lock();
        for p in paths {
            pending.push((at, self.config.data_dir.join(p)));
        }
    }

    /// Deletes replaced files whose grace period is over.
    pub fn delete_due_files(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<PathBuf> = {
            let mut pending = self.pending_deletes.lock();
            let (due, keep): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|(at, _)| all || *at <= now);
            *pending = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        let root = self.config.data_dir.join("tables");
        for p in due {
            if let Err(e) = remove_file_and_empty_dirs(&p, &root) {
                tracing::warn!(path = %p.display(), error = %e, "cannot delete a replaced file");
            }
        }
    }

    /// Removes files wholly past their table's retention.
    ///
    /// # Errors
    /// Catalog errors.
    pub async fn enforce_retention(&self) -> Result<usize> {
        let _lock = self.compaction_lock.lock().await;
        let now = now_ns();
        let expired: Vec<(String, String, Vec<FileMeta>)> = self.store.read(|s| {
            let mut out = Vec::new();
            for (db, d) in &s.databases {
                for (table, t) in &d.tables {
                    let Some(r) = d.retention_of(table) else {
                        continue;
                    };
                    let cutoff = now.saturating_sub(r);
                    let files: Vec<FileMeta> = t
                        .files
                        .values()
                        .filter(|f| f.window_start.saturating_add(f.window_ns) <= cutoff)
                        .cloned()
                        .collect();
                    if !files.is_empty() {
                        out.push((db.clone(), table.clone(), files));
                    }
                }
            }
            out
        });
        let mut count = 0;
        for (db, table, files) in expired {
            count += files.len();
            self.store.commit(CatalogOp::ReplaceFiles {
                op_id: None,
                db: db.clone(),
                table: table.clone(),
                added: vec![],
                removed: files.iter().map(|f| f.id).collect(),
            })?;
            tracing::info!(database = %db, table = %table, files = files.len(), "dropped windows past retention");
            self.delete_later(files.into_iter().map(|f| f.path));
        }
        Ok(count)
    }

    /// Sets the retention of a database, or of one of its tables.
    ///
    /// # Errors
    /// Unknown database or table; catalog errors.
    pub fn set_retention(
        &self,
        db: &str,
        table: Option<&str>,
        retention_ns: Option<i64>,
    ) -> Result<()> {
        if self.catalog.database(db).is_none() {
            return Err(Error::DatabaseNotFound(db.to_string()));
        }
        if let Some(t) = table
            && self.catalog.database(db).and_then(|d| d.table(t)).is_none()
        {
            return Err(Error::TableNotFound {
                db: db.to_string(),
                table: t.to_string(),
            });
        }
        self.store.commit(CatalogOp::SetRetention {
            db: db.to_string(),
            table: table.map(str::to_string),
            retention_ns,
        })?;
        Ok(())
    }

    /// Deletes rows: those of `table` (every table when `None`) with time in
    /// `[start, stop]` and every tag of `predicate` equal to its value. Rows written after
    /// the delete are not affected.
    ///
    /// # Errors
    /// Unknown database or table; catalog errors.
    pub async fn delete(
        &self,
        db: &str,
        table: Option<&str>,
        start: i64,
        stop: i64,
        predicate: Vec<(String, String)>,
    ) -> Result<()> {
        if start > stop {
            return Err(Error::Invalid(format!(
                "start {start} is after stop {stop}"
            )));
        }
        let schema = self
            .catalog
            .database(db)
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))?;
        if let Some(t) = table
            && schema.table(t).is_none()
        {
            return Err(Error::TableNotFound {
                db: db.to_string(),
                table: t.to_string(),
            });
        }
        let _maintenance = self.maintenance_lock.lock().await;
        let log = self.log_of(db)?;
        let _gate = self.write_gate.write().await;
        let wal_next = log.next_offsets();
        let tombstone = self.store.update(|s| {
            let tombstone = Tombstone {
                id: s.take_op_id(),
                table: table.map(str::to_string),
                start,
                stop,
                predicate,
                files_before: s.next_file_id,
                wal_next,
            };
            Ok((
                CatalogOp::Delete {
                    db: db.to_string(),
                    tombstone: tombstone.clone(),
                },
                tombstone,
            ))
        })?;
        for (name, tb) in self.buffer.tables_of(db) {
            if !tombstone.applies_to_table(&name) {
                continue;
            }
            self.buffer.rewrite(&tb, |b| {
                apply_tombstones(&name, b.clone(), std::iter::once(&tombstone))
            })?;
        }
        tracing::info!(database = db, ?table, start, stop, "deleted rows");
        Ok(())
    }

    /// Drops a table: its rows disappear at once, its files after the grace period.
    ///
    /// # Errors
    /// Unknown database or table; catalog errors.
    pub async fn drop_table(&self, db: &str, table: &str) -> Result<()> {
        let schema = self
            .catalog
            .database(db)
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))?;
        if schema.table(table).is_none() {
            return Err(Error::TableNotFound {
                db: db.to_string(),
                table: table.to_string(),
            });
        }
        let _maintenance = self.maintenance_lock.lock().await;
        let log = self.log_of(db)?;
        let _gate = self.write_gate.write().await;
        let files: Vec<String> = self.store.read(|s| {
            s.databases
                .get(db)
                .and_then(|d| d.tables.get(table))
                .map(|t| t.files.values().map(|f| f.path.clone()).collect())
                .unwrap_or_default()
        });
        self.store.commit(CatalogOp::DropTable {
            db: db.to_string(),
            table: table.to_string(),
            wal_next: log.next_offsets(),
        })?;
        schema.drop_table(table);
        self.buffer.drop_table(db, table);
        self.delete_later(files.into_iter());
        tracing::info!(database = db, table, "dropped table");
        Ok(())
    }

    /// Drops a database with all its data.
    ///
    /// # Errors
    /// Unknown database; I/O and catalog errors.
    pub async fn drop_database(&self, db: &str) -> Result<()> {
        if self.catalog.database(db).is_none() {
            return Err(Error::DatabaseNotFound(db.to_string()));
        }
        let _maintenance = self.maintenance_lock.lock().await;
        let _gate = self.write_gate.write().await;
        let Some(log) = self.logs.write().remove(db) else {
            return Err(Error::DatabaseNotFound(db.to_string()));
        };
        drop(log);
        // Moving the log aside is the drop's intent: a start that finds it finishes the drop.
        let dir = self.config.data_dir.join("log").join(db);
        let aside = dropping_dir(&self.config.data_dir, db);
        std::fs::rename(&dir, &aside).map_err(|e| io(&dir, e))?;
        tidemark_storage::log::sync_dir(&self.config.data_dir.join("log"))?;
        self.store
            .commit(CatalogOp::DropDatabase { db: db.to_string() })?;
        self.catalog.remove_database(db);
        self.buffer.drop_database(db);
        remove_tree(&aside)?;
        // Queries still reading these files fail rather than see half a database.
        remove_tree(&self.config.data_dir.join(database_dir(db)))?;
        tracing::info!(database = db, "dropped database");
        Ok(())
    }

    /// Runs persistence, compaction, retention and file deletion until `stop` resolves,
    /// then persists once more.
    pub async fn run_background(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let cfg = self.config.maintenance.clone();
        let mut last_compaction = Instant::now();
        let mut stop = stop;
        loop {
            tokio::select! {
                () = tokio::time::sleep(cfg.tick) => {},
                () = self.persist_wanted.notified() => {},
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            let aged = self
                .dirty_since
                .lock()
                .is_some_and(|t| t.elapsed() >= cfg.snapshot_age);
            let big = self.buffer.bytes() >= cfg.snapshot_bytes.min(self.config.buffer_limit_bytes);
            if (aged || big)
                && let Err(e) = self.persist_all().await
            {
                tracing::error!(error = %e, "persist failed; will retry");
            }
            if last_compaction.elapsed() >= cfg.compaction_interval {
                last_compaction = Instant::now();
                if let Err(e) = self.enforce_retention().await {
                    tracing::error!(error = %e, "retention pass failed");
                }
                if let Err(e) = self.compact_all().await {
                    tracing::error!(error = %e, "compaction pass failed");
                }
            }
            self.delete_due_files(false);
        }
    }
}
