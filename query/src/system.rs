//! The `system` schema: the database's own state as tables, built fresh for each query.
//!
//! - `system.tables`: each table with its column count, buffered rows, files, rows and
//!   bytes in files, and retention.
//! - `system.files`: each Parquet file with its table, window, time range, rows, bytes,
//!   compaction level, path, and why a query could not read it (`damaged`).
//! - `system.compactions`: recent compaction runs of this database (kept in memory).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;

use crate::provider::Storage;

/// Name of the schema.
pub const SYSTEM_SCHEMA: &str = "system";
const TABLES: [&str; 3] = ["tables", "files", "compactions"];

#[derive(Debug)]
pub struct SystemSchema {
    db: Arc<str>,
    storage: Arc<Storage>,
}

impl SystemSchema {
    pub fn new(db: Arc<str>, storage: Arc<Storage>) -> Self {
        Self { db, storage }
    }

    fn tables(&self) -> Result<RecordBatch, DataFusionError> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("columns", DataType::UInt64, false),
            Field::new("buffered_rows", DataType::UInt64, false),
            Field::new("files", DataType::UInt64, false),
            Field::new("file_rows", DataType::UInt64, false),
            Field::new("file_bytes", DataType::UInt64, false),
            Field::new("retention_ns", DataType::Int64, true),
        ]));
        let Some(db) = self.storage.catalog.database(&self.db) else {
            return Ok(RecordBatch::new_empty(schema));
        };
        let (mut names, mut cols, mut buffered, mut files, mut rows, mut bytes, mut ret) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        self.storage.store.read(|s| {
            let d = s.databases.get(&*self.db);
            for t in db.tables() {
                let name = t.name();
                let state = d.and_then(|d| d.tables.get(name));
                names.push(name.to_string());
                cols.push(t.columns().len() as u64);
                buffered.push(
                    self.storage
                        .buffer
                        .table(&self.db, name)
                        .map_or(0, |b| b.rows() as u64),
                );
                files.push(state.map_or(0, |t| t.files.len() as u64));
                rows.push(state.map_or(0, |t| t.files.values().map(|f| f.rows).sum()));
                bytes.push(state.map_or(0, |t| t.files.values().map(|f| f.bytes).sum()));
                ret.push(d.and_then(|d| d.retention_of(name)));
            }
        });
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(UInt64Array::from(cols)),
            Arc::new(UInt64Array::from(buffered)),
            Arc::new(UInt64Array::from(files)),
            Arc::new(UInt64Array::from(rows)),
            Arc::new(UInt64Array::from(bytes)),
            Arc::new(Int64Array::from(ret)),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn files(&self) -> Result<RecordBatch, DataFusionError> {
        let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("file_id", DataType::UInt64, false),
            Field::new("window_start", ts(), false),
            Field::new("min_time", ts(), false),
            Field::new("max_time", ts(), false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("bytes", DataType::UInt64, false),
            Field::new("level", DataType::UInt64, false),
            Field::new("path", DataType::Utf8, false),
            // Why a query could not read the file (null: no query failed on it).
            Field::new("damaged", DataType::Utf8, true),
        ]));
        let mut list = Vec::new();
        self.storage.store.read(|s| {
            if let Some(d) = s.databases.get(&*self.db) {
                for (t, state) in &d.tables {
                    for f in state.files.values() {
                        list.push((t.clone(), f.clone()));
                    }
                }
            }
        });
        let tz = Some(Arc::<str>::from("UTC"));
        let ts_col = |f: &dyn Fn(&tidemark_storage::manifest::FileMeta) -> i64| {
            Arc::new(
                TimestampNanosecondArray::from_iter_values(list.iter().map(|(_, m)| f(m)))
                    .with_timezone_opt(tz.clone()),
            ) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(list.iter().map(|(t, _)| t))),
            Arc::new(UInt64Array::from_iter_values(
                list.iter().map(|(_, f)| f.id),
            )),
            ts_col(&|f| f.window_start),
            ts_col(&|f| f.min_time),
            ts_col(&|f| f.max_time),
            Arc::new(UInt64Array::from_iter_values(
                list.iter().map(|(_, f)| f.rows),
            )),
            Arc::new(UInt64Array::from_iter_values(
                list.iter().map(|(_, f)| f.bytes),
            )),
            Arc::new(UInt64Array::from_iter_values(
                list.iter().map(|(_, f)| u64::from(f.level)),
            )),
            Arc::new(StringArray::from_iter_values(
                list.iter().map(|(_, f)| f.path.as_str()),
            )),
            Arc::new(StringArray::from_iter(list.iter().map(|(_, f)| {
                let path = self.storage.data_dir.join(&f.path);
                self.storage.damaged.reason(&path.to_string_lossy())
            }))),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn compactions(&self) -> Result<RecordBatch, DataFusionError> {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("window_start", ts.clone(), false),
            Field::new("started_at", ts, false),
            Field::new("duration_ms", DataType::UInt64, false),
            Field::new("input_files", DataType::UInt64, false),
            Field::new("output_files", DataType::UInt64, false),
            Field::new("input_rows", DataType::UInt64, false),
            Field::new("output_rows", DataType::UInt64, false),
            Field::new("input_bytes", DataType::UInt64, false),
            Field::new("output_bytes", DataType::UInt64, false),
            Field::new("tombstones_applied", DataType::UInt64, false),
            Field::new("error", DataType::Utf8, true),
        ]));
        let runs: Vec<_> = self
            .storage
            .compactions
            .runs()
            .into_iter()
            .filter(|r| *r.db == *self.db)
            .collect();
        let tz = Some(Arc::<str>::from("UTC"));
        let u = |f: &dyn Fn(&tidemark_storage::history::CompactionRun) -> u64| {
            Arc::new(UInt64Array::from_iter_values(runs.iter().map(f))) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                runs.iter().map(|r| r.table.as_str()),
            )),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(runs.iter().map(|r| r.window_start))
                    .with_timezone_opt(tz.clone()),
            ),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(runs.iter().map(|r| r.started_at))
                    .with_timezone_opt(tz),
            ),
            u(&|r| r.duration_ms),
            u(&|r| r.input_files),
            u(&|r| r.output_files),
            u(&|r| r.input_rows),
            u(&|r| r.output_rows),
            u(&|r| r.input_bytes),
            u(&|r| r.output_bytes),
            u(&|r| r.tombstones_applied),
            Arc::new(StringArray::from_iter(
                runs.iter().map(|r| r.error.as_deref()),
            )),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| (*t).to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let batch = match name {
            "tables" => self.tables()?,
            "files" => self.files()?,
            "compactions" => self.compactions()?,
            _ => return Ok(None),
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
