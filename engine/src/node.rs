//! The Node: one process's storage and query wired together.
//!
//! Opening a node loads the persisted catalog (`<data-dir>/catalog/`), removes Parquet files
//! no committed operation owns (a crash mid-persist or mid-compaction), then replays each
//! database's partition logs from where its Parquet files end, applying deletes and drops
//! that came after the records. A write then flows: validated [`WriteBatch`] -> catalog
//! learns new columns -> one log record per partition, group-committed by the
//! [`LogWriter`] -> the batches are applied to the buffer with their log offsets as sequence
//! numbers -> acknowledged. `maintenance` persists the buffer to Parquet, compacts, applies
//! retention, deletes and drops.
//!
//! A write holds the write gate (shared) from logging until its rows are in the buffer;
//! operations that must see "every logged row is buffered" (snapshot, delete, drop) take it
//! exclusively for a moment.
//!
//! On disk: `<data-dir>/log/<db>/<partition>/<base_offset>.log`. A database directory is
//! created complete (all its partition directories) under a temporary name and renamed into
//! place, so its partition count is simply the number of partition directories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tidemark_query::provider::{DedupCache, Storage};
use tidemark_query::{QueryConfig, QueryEngine, QueryOutput};
use tidemark_storage::batch::WriteBatch;
use tidemark_storage::buffer::WriteBuffer;
use tidemark_storage::catalog::{Catalog, DatabaseSchema, validate_database_name};
use tidemark_storage::catalog_store::CatalogStore;
use tidemark_storage::history::CompactionHistory;

use crate::metrics::{Metrics, gauge_value};
use tidemark_storage::log::{Append, KIND_WRITE_BATCH, LogWriter, LogWriterConfig, PartitionLog};
use tidemark_storage::manifest::CatalogOp;
use tidemark_storage::payload;

use crate::maintenance::{self, MaintenanceConfig};
use crate::topics::{TopicLimits, Topics};

use crate::error::{Error, Result};

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the log record is fsynced.
    #[default]
    Sync,
    /// After the log record is written to the OS; the log writer fsyncs within
    /// `async_flush_interval`, which bounds what a machine crash can lose.
    Async,
}

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// Partitions of a database created from now on.
    pub partitions: u32,
    pub durability: Durability,
    /// Writes are refused with "buffer full" past this many buffered bytes.
    pub buffer_limit_bytes: usize,
    pub max_databases: usize,
    pub max_columns_per_table: usize,
    pub max_tables_per_database: usize,
    pub log: LogWriterConfig,
    pub query: QueryConfig,
    pub maintenance: MaintenanceConfig,
    pub topics: TopicLimits,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            partitions: 4,
            durability: Durability::Sync,
            buffer_limit_bytes: 4 * 1024 * 1024 * 1024,
            max_databases: 100,
            max_columns_per_table: 500,
            max_tables_per_database: 1000,
            log: LogWriterConfig::default(),
            query: QueryConfig::default(),
            maintenance: MaintenanceConfig::default(),
            topics: TopicLimits::default(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct DatabaseLog {
    pub(crate) partitions: Vec<Arc<PartitionLog>>,
}

impl DatabaseLog {
    /// Per partition, the offset the next record will get.
    pub(crate) fn next_offsets(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.next_offset()).collect()
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub rows: usize,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// Held while the node runs: one process per data directory (see [`lock_data_dir`]).
    _dir_lock: std::fs::File,
    pub(crate) config: NodeConfig,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) buffer: Arc<WriteBuffer>,
    pub(crate) store: Arc<CatalogStore>,
    pub(crate) writer: LogWriter,
    pub(crate) logs: RwLock<HashMap<Arc<str>, Arc<DatabaseLog>>>,
    create_lock: Mutex<()>,
    pub(crate) query: QueryEngine,
    /// Shared by writes from logging to buffering; exclusive for snapshot, delete, drop.
    pub(crate) write_gate: tokio::sync::RwLock<()>,
    /// Serializes persist, delete and drop (each rewrites what the others read).
    pub(crate) maintenance_lock: tokio::sync::Mutex<()>,
    /// Serializes compaction and retention passes.
    pub(crate) compaction_lock: tokio::sync::Mutex<()>,
    /// When the oldest unpersisted write was buffered.
    pub(crate) dirty_since: Mutex<Option<Instant>>,
    /// Wakes the persister (buffer full, shutdown).
    pub(crate) persist_wanted: tokio::sync::Notify,
    /// Signalled after each persist so that writes waiting for room can retry.
    pub(crate) persisted: tokio::sync::Notify,
    /// Files no longer in the catalog, deleted once no query can still be reading them.
    pub(crate) pending_deletes: Mutex<Vec<(Instant, PathBuf)>>,
    pub(crate) compactions: Arc<CompactionHistory>,
    pub(crate) metrics: Metrics,
    /// Bumped after every write is buffered; stream readers wait on it.
    pub(crate) writes: tokio::sync::watch::Sender<u64>,
    /// Log offsets stream readers still need (see `stream`).
    pub(crate) log_holds: Arc<crate::stream::LogHolds>,
    /// User topics (see `topics`).
    pub(crate) topics: Topics,
}

impl Node {
    fn log_root(&self) -> PathBuf {
        self.config.data_dir.join("log")
    }

    /// Opens the node's data directory: loads the catalog, collects orphan files, replays
    /// every log from where its Parquet files end.
    ///
    /// # Errors
    /// I/O errors, and corrupt logs or catalog (the node refuses to start rather than skip
    /// data).
    pub fn open(mut config: NodeConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| io(&config.data_dir, e))?;
        // Queries read Parquet through an object store that takes absolute paths only: a
        // relative data directory (the default `./tidemark-data`) would be looked up from `/`.
        config.data_dir =
            std::fs::canonicalize(&config.data_dir).map_err(|e| io(&config.data_dir, e))?;
        let log_root = config.data_dir.join("log");
        std::fs::create_dir_all(&log_root).map_err(|e| io(&log_root, e))?;
        let dir_lock = lock_data_dir(&config.data_dir)?;
        maintenance::check_catalog_present(&config.data_dir)?;
        let store = Arc::new(CatalogStore::open(&config.data_dir.join("catalog"))?);
        maintenance::finish_interrupted_drops(&config.data_dir, &store)?;
        maintenance::collect_orphans(&config.data_dir, &store)?;
        let catalog = Arc::new(Catalog::default());
        let buffer = Arc::new(WriteBuffer::default());
        let mut logs = HashMap::new();
        let started = std::time::Instant::now();
        let mut records = 0u64;
        let mut skipped = 0u64;

        let mut names = Vec::new();
        for entry in std::fs::read_dir(&log_root).map_err(|e| io(&log_root, e))? {
            let entry = entry.map_err(|e| io(&log_root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // A database whose creation did not finish: it never took a write.
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
                continue;
            }
            if entry.file_type().map_err(|e| io(entry.path(), e))?.is_dir() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            validate_database_name(&name)?;
            let dir = log_root.join(&name);
            let partitions = count_partitions(&dir, &name)?;
            // A database directory made just before a crash has no catalog entry yet.
            if store.read(|s| !s.databases.contains_key(&name)) {
                store.commit(CatalogOp::CreateDatabase {
                    name: name.clone(),
                    partitions,
                    retention_ns: None,
                })?;
            }
            let state = store
                .read(|s| s.databases.get(&name).cloned())
                .unwrap_or_default();
            let schema = catalog.insert_database(DatabaseSchema::new(&name, partitions));
            for (table, t) in &state.tables {
                schema.merge_columns(
                    table,
                    &t.columns
                        .iter()
                        .map(|(n, k)| (Arc::from(n.as_str()), *k))
                        .collect::<Vec<_>>(),
                )?;
            }
            let mut parts = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                let persisted = state.wal_persisted.get(p as usize).copied().unwrap_or(0);
                let must_reach = state.log_must_reach(p as usize);
                let log = PartitionLog::open_reaching(
                    &dir.join(p.to_string()),
                    p,
                    must_reach,
                    &mut |record| {
                        if record.kind != KIND_WRITE_BATCH {
                            return Ok(());
                        }
                        if record.offset < persisted {
                            skipped += 1;
                            return Ok(());
                        }
                        records += 1;
                        for (table, batch) in payload::decode(record.payload)? {
                            let dropped = state
                                .dropped_tables
                                .get(&*table)
                                .and_then(|w| w.get(p as usize))
                                .is_some_and(|w| record.offset < *w);
                            if dropped {
                                continue;
                            }
                            let batch = maintenance::apply_tombstones(
                                &table,
                                batch,
                                state.tombstones.iter().filter(|t| {
                                    t.wal_next
                                        .get(p as usize)
                                        .is_some_and(|w| record.offset < *w)
                                }),
                            )?;
                            if batch.num_rows() == 0 {
                                continue;
                            }
                            schema.merge_arrow_schema(&table, &batch.schema())?;
                            buffer.apply(&name, &table, record.offset, batch);
                        }
                        Ok(())
                    },
                )?;
                parts.push(Arc::new(log));
            }
            logs.insert(
                Arc::from(name.as_str()),
                Arc::new(DatabaseLog { partitions: parts }),
            );
        }
        tracing::info!(
            databases = logs.len(),
            records,
            skipped_persisted = skipped,
            buffered_bytes = buffer.bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed the log"
        );

        let topics = Topics::open(config.data_dir.join("topics"))?;
        let metrics = Metrics::new(&config.log.metrics);
        metrics
            .buffer_limit_bytes
            .set(gauge_value(config.buffer_limit_bytes));
        for name in topics.names() {
            metrics.register_topic(&name);
        }
        let writer = LogWriter::start(config.log.clone())?;
        let compactions = Arc::new(CompactionHistory::default());
        let storage = Arc::new(Storage {
            catalog: Arc::clone(&catalog),
            buffer: Arc::clone(&buffer),
            store: Arc::clone(&store),
            data_dir: config.data_dir.clone(),
            window_ns: config.maintenance.window_ns(),
            cache: DedupCache::default(),
            compactions: Arc::clone(&compactions),
            damaged: Arc::default(),
        });
        let query = QueryEngine::new(storage, config.query.clone())?;
        let dirty = (buffer.bytes() > 0).then(Instant::now);
        Ok(Self {
            _dir_lock: dir_lock,
            config,
            catalog,
            buffer,
            store,
            writer,
            logs: RwLock::new(logs),
            create_lock: Mutex::new(()),
            query,
            write_gate: tokio::sync::RwLock::new(()),
            maintenance_lock: tokio::sync::Mutex::new(()),
            compaction_lock: tokio::sync::Mutex::new(()),
            dirty_since: Mutex::new(dirty),
            persist_wanted: tokio::sync::Notify::new(),
            persisted: tokio::sync::Notify::new(),
            pending_deletes: Mutex::new(Vec::new()),
            compactions,
            metrics,
            writes: tokio::sync::watch::Sender::new(0),
            log_holds: Arc::default(),
            topics,
        })
    }

    pub fn store(&self) -> &Arc<CatalogStore> {
        &self.store
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn buffer(&self) -> &Arc<WriteBuffer> {
        &self.buffer
    }

    pub fn query_engine(&self) -> &QueryEngine {
        &self.query
    }

    /// The database's schema, creating the database if asked to.
    ///
    /// # Errors
    /// Invalid names, the database limit, I/O errors; `DatabaseNotFound` when `create` is
    /// false and it does not exist.
    pub fn database(&self, name: &str, create: bool) -> Result<Arc<DatabaseSchema>> {
        if let Some(db) = self.catalog.database(name) {
            return Ok(db);
        }
        if !create {
            return Err(Error::DatabaseNotFound(name.to_string()));
        }
        validate_database_name(name)?;
        let _guard = self.create_lock.lock();
        if let Some(db) = self.catalog.database(name) {
            return Ok(db);
        }
        self.create_database_locked(name, None)
    }

    /// Creates a database with a retention period.
    ///
    /// # Errors
    /// `DatabaseExists`, invalid names, the database limit, I/O errors.
    pub fn create_database(&self, name: &str, retention_ns: Option<i64>) -> Result<()> {
        validate_database_name(name)?;
        let _guard = self.create_lock.lock();
        if self.catalog.database(name).is_some() {
            return Err(Error::DatabaseExists(name.to_string()));
        }
        self.create_database_locked(name, retention_ns)?;
        Ok(())
    }

    fn create_database_locked(
        &self,
        name: &str,
        retention_ns: Option<i64>,
    ) -> Result<Arc<DatabaseSchema>> {
        if self.catalog.databases().len() >= self.config.max_databases {
            return Err(Error::TooManyDatabases {
                name: name.to_string(),
                max: self.config.max_databases,
            });
        }
        let partitions = self.config.partitions.max(1);
        let parts =
            create_partition_logs(&self.log_root(), &format!(".tmp-{name}"), name, partitions)?;
        // The directory exists before the catalog names the database: a crash in between
        // leaves a directory that the next start adopts.
        self.store.commit(CatalogOp::CreateDatabase {
            name: name.to_string(),
            partitions,
            retention_ns,
        })?;
        self.logs
            .write()
            .insert(Arc::from(name), Arc::new(DatabaseLog { partitions: parts }));
        tracing::info!(database = name, partitions, "created database");
        Ok(self
            .catalog
            .insert_database(DatabaseSchema::new(name, partitions)))
    }

    /// Logs a validated write and applies it to the buffer.
    ///
    /// `durable` asks for the fsync before returning (ignored in `async` durability, where
    /// nothing waits for fsync).
    ///
    /// # Errors
    /// `SchemaConflict` when a concurrent write gave a new column another type (re-validate
    /// and retry), `BufferFull`, and log errors (a poisoned log refuses every write).
    ///
    /// # Cancellation
    /// Once the batch is handed to the log writer it is written and applied even if the
    /// future is dropped.
    pub async fn write(&self, db: &str, batch: WriteBatch, durable: bool) -> Result<WriteSummary> {
        self.wait_for_room().await?;
        let schema = self.database(db, false)?;
        for (table, columns) in &batch.new_columns {
            schema.merge_columns(table, columns)?;
        }
        if batch.rows == 0 {
            return Ok(WriteSummary { rows: 0 });
        }
        // Held until the rows are buffered; taken before the log is looked up so that a
        // drop (which holds it exclusively) cannot remove the database under this write.
        let gate = self.write_gate.read().await;
        let log = self.log_of(db)?;
        let mut appends = Vec::with_capacity(batch.partitions.len());
        for part in &batch.partitions {
            let target = log.partitions.get(part.partition as usize).ok_or_else(|| {
                tidemark_storage::Error::Internal(format!(
                    "write for partition {} of {db:?}, which has {}",
                    part.partition,
                    log.partitions.len()
                ))
            })?;
            appends.push(Append {
                log: Arc::clone(target),
                kind: KIND_WRITE_BATCH,
                timestamp: None,
                payload: payload::encode(&part.tables)?,
            });
        }
        let durable = durable && self.config.durability == Durability::Sync;
        let db_name: Arc<str> = Arc::from(db);
        let buffer = Arc::clone(&self.buffer);
        let rows = batch.rows;
        let rx = self.writer.submit(appends, durable)?;
        // Apply in a task of its own so that a client hanging up cannot leave a logged
        // batch out of the buffer.
        let apply = tokio::spawn(async move {
            let offsets = rx
                .await
                .map_err(|_| tidemark_storage::Error::WriterClosed)??;
            for (part, offset) in batch.partitions.into_iter().zip(offsets) {
                for (table, rb) in part.tables {
                    buffer.apply(&db_name, &table, offset, rb);
                }
            }
            Ok::<_, tidemark_storage::Error>(())
        });
        let applied = apply
            .await
            .map_err(|e| tidemark_storage::Error::Internal(format!("write task failed: {e}")));
        drop(gate);
        applied??;
        self.dirty_since.lock().get_or_insert_with(Instant::now);
        self.writes.send_modify(|n| *n = n.wrapping_add(1));
        Ok(WriteSummary { rows })
    }

    /// Runs read-only SQL against a database.
    ///
    /// # Errors
    /// See [`QueryEngine::sql`].
    pub async fn query(&self, db: &str, sql: &str) -> Result<QueryOutput> {
        let started = Instant::now();
        let result = self.query.sql(db, sql).await;
        match &result {
            Ok(_) => self.metrics.query_done(started.elapsed()),
            Err(e) => self.metrics.query_error(e.kind()),
        }
        Ok(result?)
    }

    /// Plans read-only SQL against a database and starts it; the caller reads the batches
    /// and reports the outcome with [`Metrics::query_done`] or [`Metrics::query_error`]
    /// (planning errors are counted here).
    ///
    /// # Errors
    /// See [`QueryEngine::sql_stream`].
    pub async fn query_stream(
        &self,
        db: &str,
        sql: &str,
        skip_damaged_files: Option<bool>,
    ) -> Result<tidemark_query::QueryStream> {
        let skip = skip_damaged_files.unwrap_or(self.config.query.skip_damaged_files);
        let result = self.query.sql_stream_with(db, sql, skip).await;
        if let Err(e) = &result {
            self.metrics.query_error(e.kind());
        }
        Ok(result?)
    }

    /// The node's metrics, to count what happens outside it (HTTP requests).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric in the OpenMetrics text format, state gauges read now.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .buffer_bytes
            .set(gauge_value(self.buffer.bytes()));
        self.metrics.encode()
    }

    /// The reason writes are refused, if the log is poisoned.
    pub fn poisoned(&self) -> Option<String> {
        self.writer.poisoned()
    }

    /// Waits (bounded) while the buffer is over its limit, asking the persister to make
    /// room; then answers "buffer full".
    async fn wait_for_room(&self) -> Result<()> {
        let limit = self.config.buffer_limit_bytes;
        let deadline = Instant::now() + self.config.maintenance.full_buffer_wait;
        loop {
            let used = self.buffer.bytes();
            if used <= limit {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(tidemark_storage::Error::BufferFull { used, limit }.into());
            }
            let persisted = self.persisted.notified();
            self.persist_wanted.notify_one();
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), persisted).await;
        }
    }

    /// The log of a database.
    pub(crate) fn log_of(&self, db: &str) -> Result<Arc<DatabaseLog>> {
        self.logs
            .read()
            .get(db)
            .cloned()
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))
    }

    /// Persists the buffer (so a restart replays little), then syncs and stops the log
    /// writer. A failed persist is logged; the log still holds every acknowledged write.
    pub async fn shutdown(&self) {
        if let Err(e) = self.persist_all().await {
            tracing::error!(error = %e, "persisting at shutdown failed; the log will be replayed");
        }
        self.writer.shutdown();
    }
}

/// Creates the directory `root/name` of `partitions` empty partition logs and opens them.
/// The directory is made complete under `root/tmp_name` and renamed into place (then `root`
/// is synced), so a crash leaves either no directory or one with every partition.
pub(crate) fn create_partition_logs(
    root: &Path,
    tmp_name: &str,
    name: &str,
    partitions: u32,
) -> Result<Vec<Arc<PartitionLog>>> {
    let tmp = root.join(tmp_name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    for p in 0..partitions {
        let d = tmp.join(p.to_string());
        std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
    }
    sync_dir(&tmp)?;
    let dir = root.join(name);
    std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
    sync_dir(root)?;
    open_partition_logs(&dir, partitions)
}

/// Opens the partition logs `0..partitions` of `dir` without replaying them.
pub(crate) fn open_partition_logs(dir: &Path, partitions: u32) -> Result<Vec<Arc<PartitionLog>>> {
    (0..partitions)
        .map(|p| {
            PartitionLog::open(&dir.join(p.to_string()), p, &mut |_| Ok(()))
                .map(Arc::new)
                .map_err(Error::from)
        })
        .collect()
}

/// Takes the data directory's lock (`<data-dir>/lock`, an exclusive advisory lock the
/// kernel drops when the process ends, however it ends): one server per directory, and
/// no `tidemark repair` under a running server.
///
/// # Errors
/// Another process holds it, or the file cannot be made.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File> {
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Invalid(format!(
            "another tidemark process is using the data directory {} (it holds {})",
            data_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path, e)),
    }
}

pub(crate) fn count_partitions(dir: &Path, name: &str) -> Result<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        if let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        {
            found.push(p);
        }
    }
    found.sort_unstable();
    let expected = found.len();
    if expected == 0 || found.iter().enumerate().any(|(i, p)| *p as usize != i) {
        return Err(tidemark_storage::Error::PartitionLayout {
            name: name.to_string(),
            found: expected,
            expected: found.last().map_or(0, |p| *p as usize + 1),
        }
        .into());
    }
    u32::try_from(expected).map_err(|_| {
        tidemark_storage::Error::Internal(format!("{expected} partitions in {name:?}")).into()
    })
}

pub(crate) fn io(path: impl Into<PathBuf>, e: std::io::Error) -> Error {
    tidemark_storage::Error::Io {
        path: path.into(),
        source: e,
    }
    .into()
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}
