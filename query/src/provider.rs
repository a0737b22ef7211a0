//! DataFusion catalog for one database: catalog `public`, schema `iox` (as InfluxDB 3
//! names them), one [`BufferTable`] per table.
//!
//! A scan takes a snapshot of the table's buffered batches, deduplicates it (last write wins,
//! see `dedup`) and serves the result from memory. The deduplicated batch is cached per table
//! until the buffer's generation or the table's schema changes, so repeated queries over
//! unchanged data do no deduplication work.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use tidemark_storage::buffer::WriteBuffer;
use tidemark_storage::catalog::{DatabaseSchema, TableSchema};

use crate::dedup::dedup;

/// Name of the default catalog.
pub const CATALOG: &str = "public";
/// Name of the schema holding a database's tables.
pub const SCHEMA: &str = "iox";

/// Rows per batch handed to DataFusion, so that operators can work in parallel.
const SCAN_BATCH_ROWS: usize = 64 * 1024;

#[derive(Debug, Clone)]
struct Deduped {
    generation: u64,
    columns: usize,
    batch: RecordBatch,
}

/// (database, table).
type TableKey = (Arc<str>, Arc<str>);

/// Deduplicated table contents, shared by all queries of a node.
#[derive(Debug, Default)]
pub struct DedupCache {
    entries: Mutex<HashMap<TableKey, Deduped>>,
}

impl DedupCache {
    fn get_or_compute(
        &self,
        db: &Arc<str>,
        table: &TableSchema,
        buffer: &WriteBuffer,
    ) -> crate::error::Result<RecordBatch> {
        let Some(tb) = buffer.table(db, table.name()) else {
            return Ok(RecordBatch::new_empty(table.arrow_schema()));
        };
        let key = (Arc::clone(db), Arc::from(table.name()));
        let columns = table.columns().len();
        let generation = tb.generation();
        if let Some(hit) = self.entries.lock().get(&key)
            && hit.generation == generation
            && hit.columns == columns
        {
            return Ok(hit.batch.clone());
        }
        let snapshot = tb.snapshot();
        let batch = dedup(table, &snapshot.batches)?;
        self.entries.lock().insert(
            key,
            Deduped {
                generation: snapshot.generation,
                columns,
                batch: batch.clone(),
            },
        );
        Ok(batch)
    }
}

/// The catalog provider of one database.
#[derive(Debug)]
pub struct DatabaseCatalog {
    schema: Arc<DatabaseTables>,
}

impl DatabaseCatalog {
    pub fn new(db: Arc<DatabaseSchema>, buffer: Arc<WriteBuffer>, cache: Arc<DedupCache>) -> Self {
        Self {
            schema: Arc::new(DatabaseTables { db, buffer, cache }),
        }
    }
}

impl CatalogProvider for DatabaseCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == SCHEMA).then(|| Arc::clone(&self.schema) as Arc<dyn SchemaProvider>)
    }
}

#[derive(Debug)]
struct DatabaseTables {
    db: Arc<DatabaseSchema>,
    buffer: Arc<WriteBuffer>,
    cache: Arc<DedupCache>,
}

#[async_trait]
impl SchemaProvider for DatabaseTables {
    fn table_names(&self) -> Vec<String> {
        self.db
            .tables()
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self.db.table(name).map(|schema| {
            Arc::new(BufferTable {
                db: Arc::from(self.db.name()),
                schema,
                buffer: Arc::clone(&self.buffer),
                cache: Arc::clone(&self.cache),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.table(name).is_some()
    }
}

/// A table whose rows are in the write buffer.
#[derive(Debug)]
pub struct BufferTable {
    db: Arc<str>,
    schema: Arc<TableSchema>,
    buffer: Arc<WriteBuffer>,
    cache: Arc<DedupCache>,
}

#[async_trait]
impl TableProvider for BufferTable {
    fn schema(&self) -> SchemaRef {
        self.schema.arrow_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Deduplicated rows, in (tags, time) order, split into batches across partitions.
    ///
    /// # Errors
    /// Internal Arrow errors while deduplicating.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let batch = self
            .cache
            .get_or_compute(&self.db, &self.schema, &self.buffer)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let target = state.config().target_partitions().max(1);
        let rows = batch.num_rows();
        let chunks = rows.div_ceil(SCAN_BATCH_ROWS).max(1);
        let parts = target.min(chunks);
        let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
        for c in 0..chunks {
            let start = c * SCAN_BATCH_ROWS;
            let len = SCAN_BATCH_ROWS.min(rows.saturating_sub(start));
            partitions[c % parts].push(batch.slice(start, len));
        }
        let exec = MemorySourceConfig::try_new_exec(
            &partitions,
            self.schema.arrow_schema(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}
