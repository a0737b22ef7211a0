//! Runs SQL against a database: builds a DataFusion session whose default catalog is the
//! database, plans the statement with DDL, DML and other statements refused, and executes
//! it under the node's limits (time, memory, concurrency).

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::coop::CooperativeJoins;
use crate::error::{Error, Result};
use crate::functions::DateTrunc;
use crate::lastpoint;
use crate::provider::{CATALOG, DatabaseCatalog, SCHEMA, Storage};

/// Limits applied to every query.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    pub timeout: Duration,
    /// Bytes all running queries may hold in DataFusion's memory pool together.
    pub memory_limit: usize,
    pub max_concurrent: usize,
    /// DataFusion target partitions (defaults to the number of cores).
    pub target_partitions: usize,
    /// Answer from the other files when a table file is damaged (`--skip-damaged-files`);
    /// a query can ask for it too.
    pub skip_damaged_files: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            memory_limit: 2 * 1024 * 1024 * 1024,
            max_concurrent: 16,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            skip_damaged_files: false,
        }
    }
}

/// A query's result, fully collected.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Answers SQL over the node's catalog and write buffer.
#[derive(Debug)]
pub struct QueryEngine {
    storage: Arc<Storage>,
    runtime: Arc<RuntimeEnv>,
    /// Threads that run queries, apart from the ones serving HTTP and writes: one poll of
    /// a DataFusion operator can keep a thread for seconds, and must not keep the server
    /// from answering (or from timing that query out).
    executor: Executor,
    permits: Arc<Semaphore>,
    config: QueryConfig,
}

/// A tokio runtime for query execution, shut down without blocking when dropped (the
/// engine is dropped from async code).
#[derive(Debug)]
struct Executor(Option<tokio::runtime::Runtime>);

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl QueryEngine {
    /// # Errors
    /// When DataFusion's runtime cannot be built.
    pub fn new(storage: Arc<Storage>, config: QueryConfig) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            .build_arc()?;
        let executor = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.target_partitions.max(1))
            .thread_name("tidemark-query")
            .thread_stack_size(crate::complexity::QUERY_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("starting the query threads: {e}")))?;
        Ok(Self {
            storage,
            runtime,
            executor: Executor(Some(executor)),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
        })
    }

    fn session(&self, db: &str, skip_damaged: bool) -> Result<SessionContext> {
        let schema = self
            .storage
            .catalog
            .database(db)
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_target_partitions(self.config.target_partitions.max(1))
            .with_create_default_catalog_and_schema(false);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(CooperativeJoins))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udf(DateTrunc::udf());
        ctx.register_catalog(
            CATALOG,
            Arc::new(DatabaseCatalog::new(
                schema,
                Arc::clone(&self.storage),
                skip_damaged,
            )),
        );
        Ok(ctx)
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// A context for the node's own plans (compaction): the queries' runtime and memory
    /// pool, no catalog, not limited by the query permits.
    pub fn maintenance_context(&self, batch_size: usize) -> SessionContext {
        let config = SessionConfig::new().with_batch_size(batch_size.max(1));
        SessionContext::new_with_config_rt(config, Arc::clone(&self.runtime))
    }

    /// Plans and runs one read-only SQL statement against `db`, collecting the result.
    ///
    /// # Errors
    /// See [`QueryEngine::sql_stream`]; also the memory limit for the collected result.
    pub async fn sql(&self, db: &str, sql: &str) -> Result<QueryOutput> {
        let mut stream = self.sql_stream(db, sql).await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        Ok(QueryOutput {
            schema: stream.schema,
            batches,
        })
    }

    /// Plans one read-only SQL statement against `db` and starts running it; the batches
    /// come from the returned stream as they are computed.
    ///
    /// The query runs in its own task on the query threads, holding its concurrency slot
    /// until it has really stopped, and hands its batches over a channel of two: a client
    /// that reads slowly slows the query down instead of letting results pile up in
    /// memory. The time limit covers everything from planning to the last batch taken
    /// from the stream; the caller waits at most that long at every step (one poll of an
    /// operator can take long, and a timeout polled in the same task as the query would
    /// only be noticed after it). On the time limit the task is aborted, which takes
    /// effect at its next yield, and the stream ends with [`Error::Timeout`].
    ///
    /// # Errors
    /// Unknown database, statements nested too deep ([`crate::complexity`]), SQL errors
    /// (DataFusion's message), refused statements, the time and memory limits, and too
    /// many concurrent queries. Errors after planning come from the stream.
    ///
    /// # Cancellation
    /// Dropping the future or the stream aborts the query.
    pub async fn sql_stream(&self, db: &str, sql: &str) -> Result<QueryStream> {
        self.sql_stream_with(db, sql, self.config.skip_damaged_files)
            .await
    }

    /// [`QueryEngine::sql_stream`], choosing whether damaged table files are left out. A
    /// file found damaged while the query starts is marked, and the query is planned
    /// again without it (up to [`MAX_DAMAGED_RETRIES`] files).
    ///
    /// # Errors
    /// See [`QueryEngine::sql_stream`]; [`Error::DamagedFile`] naming the file when
    /// `skip_damaged` is off.
    pub async fn sql_stream_with(
        &self,
        db: &str,
        sql: &str,
        skip_damaged: bool,
    ) -> Result<QueryStream> {
        let mut attempt = 0;
        loop {
            let result = match self.start(db, sql, skip_damaged).await {
                // A read failed where no file could be named (a page that does not
                // decode): find the file by reading the database's files.
                Err(Error::ReadFailed(what)) => match self.find_damaged(db).await {
                    Some(named) => Err(Error::DamagedFile(named)),
                    None => Err(Error::ReadFailed(what)),
                },
                other => other,
            };
            match result {
                Err(Error::DamagedFile(what)) if skip_damaged && attempt < MAX_DAMAGED_RETRIES => {
                    tracing::warn!(error = %what, "answering without a damaged table file");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Reads every not yet marked file of `db` through (every page decoded), for at most
    /// [`VERIFY_BUDGET`], marking each that fails; describes the first one found.
    async fn find_damaged(&self, db: &str) -> Option<String> {
        let files: Vec<std::path::PathBuf> = self.storage.store.read(|s| {
            s.databases
                .get(db)
                .map(|d| {
                    d.tables
                        .values()
                        .flat_map(|t| t.files.values())
                        .map(|f| self.storage.data_dir.join(&f.path))
                        .collect()
                })
                .unwrap_or_default()
        });
        let damaged = Arc::clone(&self.storage.damaged);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut first = None;
            for path in files {
                let shown = path.to_string_lossy().into_owned();
                if damaged.reason(&shown).is_some() {
                    continue;
                }
                if started.elapsed() > VERIFY_BUDGET {
                    tracing::warn!("stopped looking for the damaged table file: out of time");
                    break;
                }
                if let Err(reason) = crate::damaged::read_through(&path) {
                    damaged.mark(&shown, &reason);
                    first.get_or_insert(format!(
                        "{}{shown}: {reason}",
                        crate::damaged::DAMAGED_MARKER
                    ));
                }
            }
            first
        })
        .await
        .ok()
        .flatten()
    }

    async fn start(&self, db: &str, sql: &str, skip_damaged: bool) -> Result<QueryStream> {
        crate::complexity::check_depth(sql).map_err(|e| Error::TooComplex(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let timeout = self.config.timeout;
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Error::TooManyQueries(self.config.max_concurrent))?;
        let ctx = self.session(db, skip_damaged)?;
        let sql = sql.to_string();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Message>>(2);
        let on_timeout = tx.clone();
        let work = async move {
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let df = ctx.sql_with_options(&sql, options).await.map_err(|e| {
                let msg = e.to_string();
                if msg.contains("not supported")
                    && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
                {
                    Error::NotAllowed(msg)
                } else {
                    Error::from(e)
                }
            })?;
            let plan = lastpoint::bound_latest_per_group(&ctx, df.logical_plan().clone()).await?;
            let df = DataFrame::new(ctx.state(), plan);
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut batches = df.execute_stream().await?;
            // The first batch before the schema: an error that comes before any row (a
            // damaged file, most failures) is then the query's answer, which the caller
            // can still turn into a status code or a retry.
            let first = batches.next().await.transpose().map_err(Error::from)?;
            if tx.send(Ok(Message::Schema(schema))).await.is_err() {
                return Ok(());
            }
            if let Some(batch) = first
                && tx.send(Ok(Message::Batch(batch))).await.is_err()
            {
                return Ok(());
            }
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(Error::from)?;
                if tx.send(Ok(Message::Batch(batch))).await.is_err() {
                    return Ok(()); // the reader is gone
                }
            }
            let _ = tx.send(Ok(Message::End)).await;
            Ok::<_, Error>(())
        };
        let run = async move {
            let _permit = permit;
            match tokio::time::timeout_at(deadline, work).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // The reader gives up at the deadline too: never wait past it.
                    let _ = tokio::time::timeout_at(deadline, on_timeout.send(Err(e))).await;
                }
                Err(_) => {
                    // A reader that is not reading learns of the time limit by its own
                    // deadline; do not wait for it.
                    let _ = on_timeout.try_send(Err(Error::Timeout(timeout)));
                }
            }
        };
        let Some(executor) = &self.executor.0 else {
            return Err(Error::Internal("the query threads are shut down".into()));
        };
        let mut task = AbortOnDrop(executor.spawn(run));
        // A join handle must not be polled again once it has answered.
        let mut joined_already = false;
        let first = tokio::select! {
            m = rx.recv() => m,
            joined = &mut task.0 => {
                joined_already = true;
                match joined {
                    // The task ended: what it sent is still in the channel.
                    Ok(()) => rx.recv().await,
                    Err(e) => return Err(Error::Internal(format!("the query task failed: {e}"))),
                }
            },
            () = tokio::time::sleep_until(deadline) => return Err(Error::Timeout(timeout)),
        };
        match first {
            Some(Ok(Message::Schema(schema))) => Ok(QueryStream {
                schema,
                rx,
                deadline,
                timeout,
                ended: false,
                _task: task,
            }),
            Some(Ok(Message::Batch(_) | Message::End)) => Err(Error::Internal(
                "a query sent rows before its schema".into(),
            )),
            Some(Err(e)) => {
                // Its last act was to send this: let it end (and free its slot) before
                // the caller plans again.
                if !joined_already {
                    let _ = tokio::time::timeout_at(deadline, &mut task.0).await;
                }
                Err(e)
            }
            None => Err(Error::Internal(
                "the query task ended without an answer".into(),
            )),
        }
    }
}

/// Longest a failed query spends reading files through to find the damaged one.
pub const VERIFY_BUDGET: Duration = Duration::from_secs(30);

/// Most damaged files one query leaves out before it gives up.
pub const MAX_DAMAGED_RETRIES: usize = 16;

/// What a running query hands to its reader.
enum Message {
    Schema(SchemaRef),
    Batch(RecordBatch),
    /// Every batch was sent: a channel that closes without it was cut short.
    End,
}

/// A running query's result, batch by batch (see [`QueryEngine::sql_stream`]).
pub struct QueryStream {
    pub schema: SchemaRef,
    rx: tokio::sync::mpsc::Receiver<Result<Message>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    ended: bool,
    _task: AbortOnDrop<()>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl QueryStream {
    /// The next batch; `None` once the result is complete.
    ///
    /// # Errors
    /// Execution errors, and the time limit (counted from the query's start).
    ///
    /// # Cancellation
    /// Cancel-safe: a batch not yet received stays in the channel.
    pub async fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.ended {
            return None;
        }
        // Batches already waiting do not extend the time limit.
        let received = if tokio::time::Instant::now() >= self.deadline {
            Err(())
        } else {
            tokio::time::timeout_at(self.deadline, self.rx.recv())
                .await
                .map_err(|_| ())
        };
        let out = match received {
            Ok(Some(Ok(Message::Batch(b)))) => return Some(Ok(b)),
            Ok(Some(Ok(Message::End))) => None,
            Ok(Some(Ok(Message::Schema(_)))) => {
                Some(Err(Error::Internal("a query sent its schema twice".into())))
            }
            Ok(Some(Err(e))) => Some(Err(e)),
            // The task stopped without saying so: only the time limit (or an abort) does.
            Ok(None) | Err(()) => Some(Err(Error::Timeout(self.timeout))),
        };
        // Stop the query now; later calls end the stream.
        self.ended = true;
        self.rx.close();
        out
    }
}

/// Aborts a query task when its caller stops waiting for it (time limit, client gone).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
