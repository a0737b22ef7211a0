//! DataFusion catalog for one database: catalog `public`, schema `iox` (as InfluxDB 3
//! names them) with one [`Table`] per table, and schema `system` (see `system`).
//!
//! A [`Table`] scan sees a table's rows wherever they are: the write buffer (deduplicated
//! and cached per buffer generation, see `dedup`) and the table's Parquet files in the
//! persisted catalog. The buffer is read BEFORE the file list: the persister commits files
//! before it drains the buffer, so a scan can see rows twice (harmless: deduplicated) but
//! never miss them.
//!
//! Sources are pruned by the query's time range, the table's retention and tag equality
//! against each file's tag ranges, then grouped into clusters of overlapping time ranges.
//! A cluster with one source and nothing to hide is read directly (all clean files share
//! one parallel Parquet scan that gets every filter and the projection). Otherwise its
//! sources (oldest first, the buffer last) are merged by [`DedupMergeExec`]; tombstones
//! of deletes not yet compacted away are applied to the files they predate, and rows
//! older than the retention cutoff are filtered out. Only filters on tags and time reach
//! the Parquet scans under a merge: a filter on a field evaluated before deduplication
//! could expose an older version of a row.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, col, lit};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use parking_lot::Mutex;
use tidemark_storage::buffer::WriteBuffer;
use tidemark_storage::catalog::{Catalog, ColumnKind, DatabaseSchema, TIME_COLUMN, TableSchema};
use tidemark_storage::catalog_store::CatalogStore;
use tidemark_storage::history::CompactionHistory;
use tidemark_storage::manifest::{FileMeta, Tombstone};
use tidemark_storage::parquet_file::split_by_window;

use crate::damaged::GuardedReaderFactory;
use crate::dedup::dedup;
use crate::merge::{DedupMergeExec, key_ordering};

/// Name of the default catalog.
pub const CATALOG: &str = "public";
/// Name of the schema holding a database's tables.
pub const SCHEMA: &str = "iox";

/// Rows per batch handed to DataFusion, so that operators can work in parallel.
const SCAN_BATCH_ROWS: usize = 64 * 1024;

/// Everything a scan reads: schemas, buffer, persisted catalog and files.
#[derive(Debug)]
pub struct Storage {
    pub catalog: Arc<Catalog>,
    pub buffer: Arc<WriteBuffer>,
    pub store: Arc<CatalogStore>,
    pub data_dir: PathBuf,
    /// Length of a persisted time window; the buffer is split the same way.
    pub window_ns: i64,
    pub cache: DedupCache,
    pub compactions: Arc<CompactionHistory>,
    /// Files queries found damaged (see `damaged`).
    pub damaged: Arc<crate::damaged::DamagedFiles>,
}

#[derive(Debug, Clone)]
struct Deduped {
    generation: u64,
    columns: usize,
    /// Deduplicated rows per time window, each sorted by (tags, time).
    windows: Arc<Vec<(i64, RecordBatch)>>,
}

/// (database, table).
type TableKey = (Arc<str>, Arc<str>);

/// Deduplicated buffer contents, shared by all queries of a node.
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
        window_ns: i64,
    ) -> crate::error::Result<Arc<Vec<(i64, RecordBatch)>>> {
        let Some(tb) = buffer.table(db, table.name()) else {
            return Ok(Arc::new(Vec::new()));
        };
        let key = (Arc::clone(db), Arc::from(table.name()));
        let columns = table.columns().len();
        let generation = tb.generation();
        if let Some(hit) = self.entries.lock().get(&key)
            && hit.generation == generation
            && hit.columns == columns
        {
            return Ok(Arc::clone(&hit.windows));
        }
        let snapshot = tb.snapshot();
        let batch = dedup(table, &snapshot.batches)?;
        let windows = if batch.num_rows() == 0 {
            Vec::new()
        } else {
            split_by_window(&batch, window_ns)?
        };
        let windows = Arc::new(windows);
        self.entries.lock().insert(
            key,
            Deduped {
                generation: snapshot.generation,
                columns,
                windows: Arc::clone(&windows),
            },
        );
        Ok(windows)
    }
}

/// The catalog provider of one database.
#[derive(Debug)]
pub struct DatabaseCatalog {
    tables: Arc<DatabaseTables>,
    system: Arc<dyn SchemaProvider>,
}

impl DatabaseCatalog {
    /// `skip_damaged`: scans leave out files marked damaged (see `damaged`).
    pub fn new(db: Arc<DatabaseSchema>, storage: Arc<Storage>, skip_damaged: bool) -> Self {
        let system = Arc::new(crate::system::SystemSchema::new(
            Arc::from(db.name()),
            Arc::clone(&storage),
        ));
        Self {
            tables: Arc::new(DatabaseTables {
                db,
                storage,
                skip_damaged,
            }),
            system,
        }
    }
}

impl CatalogProvider for DatabaseCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![SCHEMA.to_string(), crate::system::SYSTEM_SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        match name {
            SCHEMA => Some(Arc::clone(&self.tables) as Arc<dyn SchemaProvider>),
            crate::system::SYSTEM_SCHEMA => Some(Arc::clone(&self.system)),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct DatabaseTables {
    db: Arc<DatabaseSchema>,
    storage: Arc<Storage>,
    skip_damaged: bool,
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
            Arc::new(Table {
                db: Arc::from(self.db.name()),
                schema,
                storage: Arc::clone(&self.storage),
                skip_damaged: self.skip_damaged,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.table(name).is_some()
    }
}

/// A table: its buffered rows and its Parquet files.
#[derive(Debug)]
pub struct Table {
    db: Arc<str>,
    schema: Arc<TableSchema>,
    storage: Arc<Storage>,
    /// Leave out files marked damaged (queries that asked; never compaction).
    skip_damaged: bool,
}

/// One place rows of a table live, as a scan sees it.
enum Source {
    File(FileMeta),
    Buffer(RecordBatch),
}

struct Cluster {
    min: i64,
    max: i64,
    /// Oldest first.
    sources: Vec<(u64, Source)>,
}

fn ts_literal(v: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(v),
        Some("UTC".into()),
    ))
}

fn tag_literal(v: &str) -> Expr {
    lit(ScalarValue::Dictionary(
        Box::new(DataType::Int32),
        Box::new(ScalarValue::Utf8(Some(v.to_string()))),
    ))
}

/// The rows a tombstone hides, as a predicate.
fn tombstone_expr(t: &Tombstone) -> Expr {
    let mut e = col(TIME_COLUMN)
        .gt_eq(ts_literal(t.start))
        .and(col(TIME_COLUMN).lt_eq(ts_literal(t.stop)));
    for (tag, value) in &t.predicate {
        e = e.and(col(tag.as_str()).eq(tag_literal(value)));
    }
    e
}

/// Time in nanoseconds of a timestamp literal.
fn literal_ns(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn literal_str(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => {
            Some(s.clone())
        }
        Expr::Literal(ScalarValue::Dictionary(_, v), _) => match v.as_ref() {
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
            _ => None,
        },
        Expr::Cast(c) => literal_str(&c.expr),
        Expr::TryCast(c) => literal_str(&c.expr),
        _ => None,
    }
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// What a query's filters say about time and tags, for pruning.
#[derive(Debug, Default)]
struct Pruning {
    /// Inclusive bounds.
    min_time: Option<i64>,
    max_time: Option<i64>,
    tag_equals: Vec<(String, String)>,
}

impl Pruning {
    fn from_filters(filters: &[Expr], table: &TableSchema) -> Self {
        let mut p = Pruning::default();
        for f in filters {
            for conj in split_conjunction(f) {
                p.learn(conj, table);
            }
        }
        p
    }

    fn learn(&mut self, e: &Expr, table: &TableSchema) {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, *op, right.as_ref()),
                    (None, Some(c)) => match op.swap() {
                        Some(op) => (c, op, left.as_ref()),
                        None => return,
                    },
                    _ => return,
                };
                if column == TIME_COLUMN {
                    let Expr::Literal(v, _) = value else { return };
                    let Some(t) = literal_ns(v) else { return };
                    let (lo, hi) = match op {
                        Operator::Eq => (Some(t), Some(t)),
                        Operator::Gt => (t.checked_add(1), None),
                        Operator::GtEq => (Some(t), None),
                        Operator::Lt => (None, t.checked_sub(1)),
                        Operator::LtEq => (None, Some(t)),
                        _ => (None, None),
                    };
                    if let Some(lo) = lo {
                        self.min_time = Some(self.min_time.map_or(lo, |m| m.max(lo)));
                    }
                    if let Some(hi) = hi {
                        self.max_time = Some(self.max_time.map_or(hi, |m| m.min(hi)));
                    }
                } else if op == Operator::Eq
                    && table.column(column) == Some(ColumnKind::Tag)
                    && let Some(v) = literal_str(value)
                {
                    self.tag_equals.push((column.to_string(), v));
                }
            }
            Expr::Between(b) if !b.negated && column_name(&b.expr) == Some(TIME_COLUMN) => {
                if let (Expr::Literal(lo, _), Expr::Literal(hi, _)) =
                    (b.low.as_ref(), b.high.as_ref())
                {
                    if let Some(lo) = literal_ns(lo) {
                        self.min_time = Some(self.min_time.map_or(lo, |m| m.max(lo)));
                    }
                    if let Some(hi) = literal_ns(hi) {
                        self.max_time = Some(self.max_time.map_or(hi, |m| m.min(hi)));
                    }
                }
            }
            _ => {}
        }
    }

    fn overlaps(&self, min: i64, max: i64) -> bool {
        self.min_time.is_none_or(|lo| max >= lo) && self.max_time.is_none_or(|hi| min <= hi)
    }

    fn file_may_match(&self, f: &FileMeta) -> bool {
        self.overlaps(f.min_time, f.max_time)
            && self
                .tag_equals
                .iter()
                .all(|(tag, v)| match f.tag_ranges.get(tag) {
                    // The file has no value for this tag: `tag = v` holds for no row.
                    None => false,
                    Some((lo, hi)) => lo.as_str() <= v.as_str() && v.as_str() <= hi.as_str(),
                })
    }
}

fn df_err(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl Table {
    /// A table as compaction reads it: every file, damaged or not.
    pub fn new(db: Arc<str>, schema: Arc<TableSchema>, storage: Arc<Storage>) -> Self {
        Self {
            db,
            schema,
            storage,
            skip_damaged: false,
        }
    }

    /// The deduplicated, sorted merge of `files` (oldest first by `order`) with the rows
    /// `tombstones` hide removed: what compaction writes back. One partition.
    ///
    /// # Errors
    /// Planning errors.
    pub fn merge_plan(
        &self,
        state: &dyn Session,
        files: &[FileMeta],
        tombstones: &[Tombstone],
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let key_columns = self.key_columns();
        let ordering = key_ordering(&self.schema.arrow_schema(), &key_columns)?;
        let mut sorted: Vec<&FileMeta> = files.iter().collect();
        sorted.sort_by_key(|f| (f.order, f.id));
        let mut inputs = Vec::with_capacity(sorted.len());
        for f in sorted {
            inputs.push(self.sorted_file_input(state, f, tombstones, None, &ordering)?);
        }
        if inputs.len() == 1 {
            return Ok(inputs.remove(0));
        }
        Ok(Arc::new(DedupMergeExec::try_new(inputs, key_columns)?))
    }

    /// One file as a sorted merge input: its full rows, minus those `tombstones` hide.
    fn sorted_file_input(
        &self,
        state: &dyn Session,
        f: &FileMeta,
        tombstones: &[Tombstone],
        predicate: Option<Arc<dyn PhysicalExpr>>,
        ordering: &LexOrdering,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let scan = self.parquet_scan(
            state,
            vec![vec![f]],
            None,
            predicate,
            Some(ordering.clone()),
        )?;
        let hidden = tombstones
            .iter()
            .filter(|t| t.hides_rows_of(f))
            .map(tombstone_expr)
            .reduce(Expr::or);
        Ok(match hidden {
            None => scan,
            Some(h) => Arc::new(FilterExec::try_new(
                self.physical(state, h.is_not_true())?,
                scan,
            )?),
        })
    }

    fn key_columns(&self) -> Vec<usize> {
        self.schema
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, (_, k))| matches!(k, ColumnKind::Tag | ColumnKind::Time))
            .map(|(i, _)| i)
            .collect()
    }

    fn physical(
        &self,
        state: &dyn Session,
        expr: Expr,
    ) -> Result<Arc<dyn PhysicalExpr>, DataFusionError> {
        let df_schema = DFSchema::try_from(self.schema.arrow_schema())?;
        state.create_physical_expr(expr, &df_schema)
    }

    /// A Parquet scan of `groups` with the table's schema.
    fn parquet_scan(
        &self,
        state: &dyn Session,
        groups: Vec<Vec<&FileMeta>>,
        projection: Option<&Vec<usize>>,
        predicate: Option<Arc<dyn PhysicalExpr>>,
        ordering: Option<LexOrdering>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let url = ObjectStoreUrl::local_filesystem();
        let store = state.runtime_env().object_store(&url)?;
        let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        let mut options = TableParquetOptions::default();
        // Tags are dictionaries and strings plain Utf8 in the table schema; view types
        // would only be cast back.
        options.global.schema_force_view_types = false;
        // Evaluate the filters while decoding, cheapest first: a selective `hostname = ..`
        // then skips decoding the other columns of rows it drops. The files have no bloom
        // filters, so do not look for them.
        options.global.pushdown_filters = true;
        options.global.reorder_filters = true;
        options.global.bloom_filter_on_read = false;
        let mut source = ParquetSource::new(self.schema.arrow_schema())
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(GuardedReaderFactory::new(
                Arc::new(CachedParquetFileReaderFactory::new(store, cache)),
                Arc::clone(&self.storage.damaged),
            )));
        if let Some(p) = predicate {
            source = source.with_predicate(p);
        }
        let file_groups = groups
            .into_iter()
            .map(|g| {
                FileGroup::new(
                    g.into_iter()
                        .map(|f| {
                            let path = self.storage.data_dir.join(&f.path);
                            PartitionedFile::new(path.to_string_lossy().into_owned(), f.bytes)
                        })
                        .collect(),
                )
            })
            .collect();
        let mut builder = FileScanConfigBuilder::new(url, Arc::new(source))
            .with_file_groups(file_groups)
            .with_projection_indices(projection.cloned())?;
        if let Some(o) = ordering {
            builder = builder.with_output_ordering(vec![o]);
        }
        Ok(DataSourceExec::from_data_source(builder.build()))
    }

    fn memory_scan(
        &self,
        partitions: &[Vec<RecordBatch>],
        projection: Option<&Vec<usize>>,
        ordering: Option<LexOrdering>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let mut source = MemorySourceConfig::try_new(
            partitions,
            self.schema.arrow_schema(),
            projection.cloned(),
        )?;
        if let Some(o) = ordering {
            source = source.try_with_sort_information(vec![o])?;
        }
        Ok(DataSourceExec::from_data_source(source))
    }

    fn project(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        projection: Option<&Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let Some(p) = projection else {
            return Ok(plan);
        };
        let schema = self.schema.arrow_schema();
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = p
            .iter()
            .map(|&i| {
                let name = schema.field(i).name().clone();
                (
                    Arc::new(datafusion::physical_plan::expressions::Column::new(
                        &name, i,
                    )) as Arc<dyn PhysicalExpr>,
                    name,
                )
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}

fn buffer_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let times = batch
        .column_by_name(TIME_COLUMN)?
        .as_primitive_opt::<TimestampNanosecondType>()?;
    Some((arrow::compute::min(times)?, arrow::compute::max(times)?))
}

fn chunked(batch: &RecordBatch) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    (0..rows.div_ceil(SCAN_BATCH_ROWS))
        .map(|c| {
            let start = c * SCAN_BATCH_ROWS;
            batch.slice(start, SCAN_BATCH_ROWS.min(rows - start))
        })
        .collect()
}

#[async_trait]
impl TableProvider for Table {
    fn schema(&self) -> SchemaRef {
        self.schema.arrow_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        // Used for pruning; DataFusion still evaluates every filter above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    /// See the module docs.
    ///
    /// # Errors
    /// Internal Arrow errors while deduplicating the buffer, and planning errors.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let storage = &self.storage;
        let name = self.schema.name();
        // Buffer first, files second: see the module docs.
        let buffered = storage
            .cache
            .get_or_compute(&self.db, &self.schema, &storage.buffer, storage.window_ns)
            .map_err(df_err)?;
        let (files, tombstones, retention) = storage.store.read(|s| {
            let Some(d) = s.databases.get(&*self.db) else {
                return (Vec::new(), Vec::new(), None);
            };
            let files: Vec<FileMeta> = d
                .tables
                .get(name)
                .map(|t| t.files.values().cloned().collect())
                .unwrap_or_default();
            let tombstones: Vec<Tombstone> = d
                .tombstones
                .iter()
                .filter(|t| t.applies_to_table(name))
                .cloned()
                .collect();
            (files, tombstones, d.retention_of(name))
        });
        let mut files = files;
        if self.skip_damaged && !storage.damaged.is_empty() {
            files.retain(|f| {
                let path = storage.data_dir.join(&f.path);
                storage.damaged.reason(&path.to_string_lossy()).is_none()
            });
        }
        let cutoff = retention.map(|r| {
            chrono::Utc::now()
                .timestamp_nanos_opt()
                .unwrap_or(i64::MAX)
                .saturating_sub(r)
        });
        let pruning = Pruning::from_filters(filters, &self.schema);
        let visible = |max: i64| cutoff.is_none_or(|c| max >= c);

        // Sources in precedence order: files by `order`, then the buffer (newest).
        let mut sources: Vec<(i64, i64, u64, Source)> = Vec::new();
        for f in files {
            if visible(f.max_time) && pruning.file_may_match(&f) {
                sources.push((f.min_time, f.max_time, f.order, Source::File(f)));
            }
        }
        for (_, batch) in buffered.iter() {
            if let Some((lo, hi)) = buffer_range(batch)
                && visible(hi)
                && pruning.overlaps(lo, hi)
            {
                sources.push((lo, hi, u64::MAX, Source::Buffer(batch.clone())));
            }
        }
        sources.sort_by_key(|(lo, _, _, _)| *lo);
        let mut clusters: Vec<Cluster> = Vec::new();
        for (lo, hi, order, source) in sources {
            match clusters.last_mut() {
                Some(c) if lo <= c.max => {
                    c.max = c.max.max(hi);
                    c.sources.push((order, source));
                }
                _ => clusters.push(Cluster {
                    min: lo,
                    max: hi,
                    sources: vec![(order, source)],
                }),
            }
        }

        let key_columns = self.key_columns();
        let ordering = key_ordering(&self.schema.arrow_schema(), &key_columns)?;
        let key_filter: Option<Expr> = filters
            .iter()
            .filter(|f| {
                f.column_refs().iter().all(|c| {
                    matches!(
                        self.schema.column(&c.name),
                        Some(ColumnKind::Tag | ColumnKind::Time)
                    )
                })
            })
            .cloned()
            .reduce(Expr::and);
        let key_predicate = key_filter.map(|f| self.physical(state, f)).transpose()?;
        let all_predicate = filters
            .iter()
            .cloned()
            .reduce(Expr::and)
            .map(|f| self.physical(state, f))
            .transpose()?;

        let mut clean_files: Vec<FileMeta> = Vec::new();
        let mut clean_buffer: Vec<RecordBatch> = Vec::new();
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for mut cluster in clusters {
            let expiring = cutoff.is_some_and(|c| cluster.min < c);
            if cluster.sources.len() == 1 && !expiring {
                match cluster.sources.pop() {
                    Some((_, Source::File(f)))
                        if !tombstones.iter().any(|t| t.hides_rows_of(&f)) =>
                    {
                        clean_files.push(f);
                        continue;
                    }
                    Some((_, Source::Buffer(b))) => {
                        clean_buffer.push(b);
                        continue;
                    }
                    Some(other) => cluster.sources.push(other),
                    None => continue,
                }
            }
            cluster.sources.sort_by_key(|(order, _)| *order);
            let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
            for (_, source) in &cluster.sources {
                let input = match source {
                    Source::File(f) => self.sorted_file_input(
                        state,
                        f,
                        &tombstones,
                        key_predicate.clone(),
                        &ordering,
                    )?,
                    Source::Buffer(b) => {
                        self.memory_scan(&[chunked(b)], None, Some(ordering.clone()))?
                    }
                };
                inputs.push(input);
            }
            let mut plan: Arc<dyn ExecutionPlan> = if inputs.len() == 1 {
                inputs.remove(0)
            } else {
                Arc::new(DedupMergeExec::try_new(inputs, key_columns.clone())?)
            };
            if let Some(c) = cutoff.filter(|_| expiring) {
                let keep = self.physical(state, col(TIME_COLUMN).gt_eq(ts_literal(c)))?;
                plan = Arc::new(FilterExec::try_new(keep, plan)?);
            }
            plans.push(self.project(plan, projection)?);
        }

        let target = state.config().target_partitions().max(1);
        if !clean_files.is_empty() {
            let mut groups: Vec<Vec<&FileMeta>> = vec![Vec::new(); target.min(clean_files.len())];
            let n = groups.len();
            for (i, f) in clean_files.iter().enumerate() {
                groups[i % n].push(f);
            }
            plans.push(self.parquet_scan(state, groups, projection, all_predicate, None)?);
        }
        if !clean_buffer.is_empty() {
            let chunks: Vec<RecordBatch> = clean_buffer.iter().flat_map(chunked).collect();
            let parts = target.min(chunks.len()).max(1);
            let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
            for (i, c) in chunks.into_iter().enumerate() {
                partitions[i % parts].push(c);
            }
            plans.push(self.memory_scan(&partitions, projection, None)?);
        }
        match plans.len() {
            0 => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema.arrow_schema().project(p)?),
                    None => self.schema.arrow_schema(),
                };
                Ok(Arc::new(EmptyExec::new(schema)))
            }
            1 => Ok(plans.remove(0)),
            _ => UnionExec::try_new(plans),
        }
    }
}
