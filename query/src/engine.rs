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
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            memory_limit: 2 * 1024 * 1024 * 1024,
            max_concurrent: 16,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
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

    fn session(&self, db: &str) -> Result<SessionContext> {
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
            Arc::new(DatabaseCatalog::new(schema, Arc::clone(&self.storage))),
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

    /// Plans and runs one read-only SQL statement against `db`.
    ///
    /// The query runs in its own task on the query threads, holding its concurrency slot
    /// until it has really stopped. The caller waits at most the time limit: one poll of an operator can take
    /// long (a nested loop join over a large batch), and a timeout polled in the same task
    /// as the query would only be noticed after it. On the time limit the task is aborted,
    /// which takes effect at its next yield.
    ///
    /// # Errors
    /// Unknown database, SQL errors (DataFusion's message), refused statements, the time
    /// and memory limits, and too many concurrent queries.
    ///
    /// # Cancellation
    /// Dropping the future aborts the query.
    pub async fn sql(&self, db: &str, sql: &str) -> Result<QueryOutput> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Error::TooManyQueries(self.config.max_concurrent))?;
        let ctx = self.session(db)?;
        let sql = sql.to_string();
        let run = async move {
            let _permit = permit;
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
            let batches = df.collect().await?;
            Ok::<_, Error>(QueryOutput { schema, batches })
        };
        let Some(executor) = &self.executor.0 else {
            return Err(Error::Internal("the query threads are shut down".into()));
        };
        let mut task = AbortOnDrop(executor.spawn(run));
        match tokio::time::timeout(self.config.timeout, &mut task.0).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::Internal(format!("the query task failed: {e}"))),
            Err(_) => Err(Error::Timeout(self.config.timeout)),
        }
    }
}

/// Aborts a query task when its caller stops waiting for it (time limit, client gone).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
