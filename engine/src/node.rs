//! The Node: one process's storage and query wired together.
//!
//! Opening a node replays every database's partition logs into the catalog and the write
//! buffer. A write then flows: validated [`WriteBatch`] -> catalog learns new columns ->
//! one log record per partition, group-committed by the [`LogWriter`] -> the batches are
//! applied to the buffer with their log offsets as sequence numbers -> acknowledged.
//!
//! On disk: `<data-dir>/log/<db>/<partition>/<base_offset>.log`. A database directory is
//! created complete (all its partition directories) under a temporary name and renamed into
//! place, so its partition count is simply the number of partition directories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tidemark_query::{QueryConfig, QueryEngine, QueryOutput};
use tidemark_storage::batch::WriteBatch;
use tidemark_storage::buffer::WriteBuffer;
use tidemark_storage::catalog::{Catalog, DatabaseSchema, validate_database_name};
use tidemark_storage::log::{Append, KIND_WRITE_BATCH, LogWriter, LogWriterConfig, PartitionLog};
use tidemark_storage::payload;

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
    pub log: LogWriterConfig,
    pub query: QueryConfig,
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
            log: LogWriterConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

#[derive(Debug)]
struct DatabaseLog {
    partitions: Vec<Arc<PartitionLog>>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub rows: usize,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    catalog: Arc<Catalog>,
    buffer: Arc<WriteBuffer>,
    writer: LogWriter,
    logs: RwLock<HashMap<Arc<str>, Arc<DatabaseLog>>>,
    create_lock: Mutex<()>,
    query: QueryEngine,
}

impl Node {
    fn log_root(&self) -> PathBuf {
        self.config.data_dir.join("log")
    }

    /// Opens the node's data directory, replaying every log.
    ///
    /// # Errors
    /// I/O errors, and corrupt logs (the node refuses to start rather than skip data).
    pub fn open(config: NodeConfig) -> Result<Self> {
        let log_root = config.data_dir.join("log");
        std::fs::create_dir_all(&log_root).map_err(|e| io(&log_root, e))?;
        let catalog = Arc::new(Catalog::default());
        let buffer = Arc::new(WriteBuffer::default());
        let mut logs = HashMap::new();
        let started = std::time::Instant::now();
        let mut records = 0u64;

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
            let schema = catalog.insert_database(DatabaseSchema::new(&name, partitions));
            let mut parts = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                let log = PartitionLog::open(&dir.join(p.to_string()), p, &mut |record| {
                    if record.kind != KIND_WRITE_BATCH {
                        return Ok(());
                    }
                    records += 1;
                    for (table, batch) in payload::decode(record.payload)? {
                        schema.merge_arrow_schema(&table, &batch.schema())?;
                        buffer.apply(&name, &table, record.offset, batch);
                    }
                    Ok(())
                })?;
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
            buffered_bytes = buffer.bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed the log"
        );

        let writer = LogWriter::start(config.log.clone())?;
        let query = QueryEngine::new(
            Arc::clone(&catalog),
            Arc::clone(&buffer),
            config.query.clone(),
        )?;
        Ok(Self {
            config,
            catalog,
            buffer,
            writer,
            logs: RwLock::new(logs),
            create_lock: Mutex::new(()),
            query,
        })
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
        if self.catalog.databases().len() >= self.config.max_databases {
            return Err(Error::TooManyDatabases {
                name: name.to_string(),
                max: self.config.max_databases,
            });
        }
        let root = self.log_root();
        let tmp = root.join(format!(".tmp-{name}"));
        let partitions = self.config.partitions.max(1);
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
        sync_dir(&root)?;
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            parts.push(Arc::new(PartitionLog::open(
                &dir.join(p.to_string()),
                p,
                &mut |_| Ok(()),
            )?));
        }
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
        let used = self.buffer.bytes();
        if used > self.config.buffer_limit_bytes {
            return Err(tidemark_storage::Error::BufferFull {
                used,
                limit: self.config.buffer_limit_bytes,
            }
            .into());
        }
        let schema = self.database(db, false)?;
        for (table, columns) in &batch.new_columns {
            schema.merge_columns(table, columns)?;
        }
        if batch.rows == 0 {
            return Ok(WriteSummary { rows: 0 });
        }
        let log = self
            .logs
            .read()
            .get(db)
            .cloned()
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))?;
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
                timestamp: 0,
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
        apply
            .await
            .map_err(|e| tidemark_storage::Error::Internal(format!("write task failed: {e}")))??;
        Ok(WriteSummary { rows })
    }

    /// Runs read-only SQL against a database.
    ///
    /// # Errors
    /// See [`QueryEngine::sql`].
    pub async fn query(&self, db: &str, sql: &str) -> Result<QueryOutput> {
        Ok(self.query.sql(db, sql).await?)
    }

    /// The reason writes are refused, if the log is poisoned.
    pub fn poisoned(&self) -> Option<String> {
        self.writer.poisoned()
    }

    /// Writes and syncs everything queued, then stops the log writer.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }
}

fn count_partitions(dir: &Path, name: &str) -> Result<u32> {
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

fn io(path: impl Into<PathBuf>, e: std::io::Error) -> Error {
    tidemark_storage::Error::Io {
        path: path.into(),
        source: e,
    }
    .into()
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}
