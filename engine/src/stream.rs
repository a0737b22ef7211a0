//! A database's write stream: the rows written to a table, read back from the database's
//! partition logs by offset, for `table_stream` sources of topologies.
//!
//! Every acknowledged write is a log record per partition (see `node`), so a reader that
//! keeps one offset per partition sees each row exactly once and in write order within a
//! partition, and can resume from saved offsets after a restart. [`Node::subscribe_writes`]
//! wakes readers when new records arrive, so a caught-up reader waits instead of polling.
//!
//! Log segments are deleted once their rows are persisted to Parquet. A reader that must
//! resume from older offsets (a topology's last checkpoint) takes a [`LogHold`]: the
//! persister keeps every segment at or above the lowest held offset of each partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::borrow::Cow;

use arrow::array::{Array as _, ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use parking_lot::Mutex;
use tidemark_storage::batch::{FieldValue, WriteBuilder};
use tidemark_storage::catalog::{ColumnKind, TIME_COLUMN};
use tidemark_storage::log::KIND_WRITE_BATCH;
use tidemark_storage::payload;

use crate::Node;
use crate::error::Result;
use crate::topology::TableSchemas;

/// A database and an offset per partition.
type Held = (Arc<str>, Vec<u64>);

/// The offsets readers hold, by hold.
#[derive(Debug, Default)]
pub struct LogHolds {
    holds: Mutex<HashMap<u64, Held>>,
    next_id: AtomicU64,
}

impl LogHolds {
    /// The lowest offset any reader holds in `partition` of `db`.
    pub(crate) fn floor(&self, db: &str, partition: usize) -> Option<u64> {
        self.holds
            .lock()
            .values()
            .filter(|(d, _)| &**d == db)
            .filter_map(|(_, offsets)| offsets.get(partition).copied())
            .min()
    }
}

/// Keeps the log segments of a database at or above its offsets until dropped.
#[derive(Debug)]
pub struct LogHold {
    id: u64,
    holds: Arc<LogHolds>,
}

impl LogHold {
    /// Moves the hold (after a checkpoint, to the offsets it saved).
    pub fn set(&self, offsets: Vec<u64>) {
        if let Some(entry) = self.holds.holds.lock().get_mut(&self.id) {
            entry.1 = offsets;
        }
    }
}

impl Drop for LogHold {
    fn drop(&mut self) {
        self.holds.holds.lock().remove(&self.id);
    }
}

impl Node {
    /// Holds the log segments of `db` from `offsets` (one per partition) on.
    pub fn hold_log(&self, db: &str, offsets: Vec<u64>) -> LogHold {
        let id = self.log_holds.next_id.fetch_add(1, Ordering::Relaxed);
        self.log_holds
            .holds
            .lock()
            .insert(id, (Arc::from(db), offsets));
        LogHold {
            id,
            holds: Arc::clone(&self.log_holds),
        }
    }

    /// Per partition of `db`, the offset the next write will get.
    ///
    /// # Errors
    /// The database does not exist.
    pub fn log_end(&self, db: &str) -> Result<Vec<u64>> {
        Ok(self.log_of(db)?.next_offsets())
    }

    /// Per partition of `db`, the offset of the oldest record still in the log.
    ///
    /// # Errors
    /// The database does not exist.
    pub fn log_start(&self, db: &str) -> Result<Vec<u64>> {
        Ok(self
            .log_of(db)?
            .partitions
            .iter()
            .map(|p| p.first_offset())
            .collect())
    }

    /// A receiver that sees a change after every write.
    pub fn subscribe_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writes.subscribe()
    }

    /// Reads up to `max_records` log records of `partition` of `db` from offset `from`;
    /// returns the batches they hold for `table` and the offset to read from next.
    ///
    /// # Errors
    /// The database does not exist, the partition is out of range, or the log cannot be
    /// read or decoded.
    pub fn read_table_stream(
        &self,
        db: &str,
        table: &str,
        partition: usize,
        from: u64,
        max_records: usize,
    ) -> Result<(Vec<RecordBatch>, u64)> {
        let log = self.log_of(db)?;
        let part = log.partitions.get(partition).ok_or_else(|| {
            crate::Error::Invalid(format!(
                "database {db:?} has {} partitions, not {}",
                log.partitions.len(),
                partition + 1
            ))
        })?;
        let mut out = Vec::new();
        let next = part.read_some(from, max_records, &mut |record| {
            if record.kind != KIND_WRITE_BATCH {
                return Ok(());
            }
            for (t, batch) in payload::decode(record.payload)? {
                if &*t == table {
                    out.push(batch);
                }
            }
            Ok(())
        })?;
        Ok((out, next))
    }
}

/// What [`Node::write_rows`] did.
#[derive(Debug, Default)]
pub struct RowsWritten {
    pub written: usize,
    /// Rows refused (no time, no field, or a column of another type in the table).
    pub rejected: usize,
    pub first_error: Option<String>,
}

/// Attempts when a concurrent write changes the table's columns under a write.
const SCHEMA_RACE_RETRIES: usize = 3;

/// One column of a batch as a table sees it.
enum Column {
    Tag(StringArray),
    Field(ArrayRef),
}

impl Node {
    /// Writes the rows of `batch` into `table` of `db` (created if needed) through the
    /// normal write path, durably. Text columns become tags (or stay string fields where
    /// the table has them as fields), numbers and booleans fields; the timestamp is the
    /// `time` column, or `event_time` when there is none. When the rows carry a primary
    /// `key` (an upsert stream), its columns are the tags, whatever their type (an integer
    /// key is written as its decimal text), and every other column is a field: rows with
    /// different keys never share a series and time, and a row emitted again with new
    /// values replaces the old one. Nulls are left out of a row; a
    /// row with no time or no field is refused, as is one whose column has another type
    /// in the table. A full buffer is waited out, so a slow node slows the topology.
    ///
    /// # Errors
    /// The database cannot be created, or the write fails for a reason other than a full
    /// buffer.
    pub async fn write_rows(
        &self,
        db: &str,
        table: &str,
        batch: &RecordBatch,
        event_time: Option<&str>,
        key: Option<&[String]>,
    ) -> Result<RowsWritten> {
        let schema = batch.schema();
        let is_time = |t: &DataType| matches!(t, DataType::Timestamp(..));
        let time_idx = schema
            .index_of(TIME_COLUMN)
            .ok()
            .filter(|&i| is_time(schema.field(i).data_type()))
            .or_else(|| event_time.and_then(|t| schema.index_of(t).ok()))
            .ok_or_else(|| {
                crate::Error::Invalid("rows written to a table need a \"time\" column".into())
            })?;
        let times = crate::topology::window::event_times(batch.column(time_idx))
            .map_err(crate::Error::Invalid)?;
        let mut conflicts = 0;
        loop {
            let known = self.catalog().database(db).and_then(|d| d.table(table));
            let mut columns: Vec<(&str, Column)> = Vec::new();
            for (i, f) in schema.fields().iter().enumerate() {
                let t = match f.data_type() {
                    DataType::Dictionary(_, v) => v.as_ref(),
                    t => t,
                };
                if i == time_idx || is_time(t) {
                    continue;
                }
                let is_key = key.map(|k| k.iter().any(|k| k == f.name()));
                let field_in_table = is_key == Some(false)
                    || known
                        .as_ref()
                        .and_then(|k| k.column(f.name()))
                        .is_some_and(|k| k != ColumnKind::Tag);
                let col = batch.column(i);
                let column = match t {
                    _ if is_key == Some(true) => Column::Tag(text_of(col)?),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        if field_in_table {
                            Column::Field(cast(col, &DataType::Utf8).map_err(arrow_error)?)
                        } else {
                            Column::Tag(text_of(col)?)
                        }
                    }
                    DataType::Float64 | DataType::Int64 | DataType::UInt64 | DataType::Boolean => {
                        Column::Field(cast(col, t).map_err(arrow_error)?)
                    }
                    other => {
                        return Err(crate::Error::Invalid(format!(
                            "column {:?} is {other}, which a table cannot hold",
                            f.name()
                        )));
                    }
                };
                columns.push((f.name().as_str(), column));
            }
            let db_schema = self.database(db, true)?;
            let mut builder = WriteBuilder::new(db_schema, self.config.max_columns_per_table)
                .with_max_tables(self.config.max_tables_per_database);
            let mut done = RowsWritten::default();
            let mut tags = Vec::new();
            let mut fields = Vec::new();
            for (row, time) in times.iter().enumerate() {
                tags.clear();
                fields.clear();
                for (name, c) in &columns {
                    match c {
                        Column::Tag(a) if a.is_valid(row) => {
                            tags.push((Cow::Borrowed(*name), Cow::Borrowed(a.value(row))));
                        }
                        Column::Field(a) if a.is_valid(row) => {
                            if let Some(v) = field_value(a, row) {
                                fields.push((Cow::Borrowed(*name), v));
                            }
                        }
                        _ => {}
                    }
                }
                let refused = match time {
                    None => Some("it has no time".to_string()),
                    Some(_) if fields.is_empty() => Some("every field is null".to_string()),
                    Some(t) => builder
                        .push_row(table, &tags, &fields, *t)
                        .err()
                        .map(|e| e.to_string()),
                };
                if let Some(why) = refused {
                    done.rejected += 1;
                    done.first_error
                        .get_or_insert_with(|| format!("row {row} was not written: {why}"));
                }
            }
            let write = builder.finish()?;
            done.written = write.rows;
            self.wait_until_room().await;
            match self.write(db, write, true).await {
                Ok(_) => return Ok(done),
                // Filled up again since the wait: the batch was not taken; build it again.
                Err(crate::Error::Storage(tidemark_storage::Error::BufferFull { .. })) => {}
                Err(crate::Error::Storage(tidemark_storage::Error::SchemaConflict { .. }))
                    if conflicts + 1 < SCHEMA_RACE_RETRIES =>
                {
                    conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits, as long as it takes, until the buffer is under its limit, asking the
    /// persister to make room.
    async fn wait_until_room(&self) {
        while self.buffer().bytes() > self.config.buffer_limit_bytes {
            let persisted = self.persisted.notified();
            self.persist_wanted.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(250), persisted).await;
        }
    }
}

fn arrow_error(e: arrow::error::ArrowError) -> crate::Error {
    crate::Error::Invalid(e.to_string())
}

/// A column as text (a tag's values).
fn text_of(col: &ArrayRef) -> Result<StringArray> {
    let text = cast(col, &DataType::Utf8).map_err(arrow_error)?;
    text.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| crate::Error::Invalid("text column".into()))
}

fn field_value(a: &ArrayRef, row: usize) -> Option<FieldValue<'_>> {
    use arrow::array::{Array as _, AsArray as _};
    use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
    Some(match a.data_type() {
        DataType::Float64 => FieldValue::Float(a.as_primitive::<Float64Type>().value(row)),
        DataType::Int64 => FieldValue::Integer(a.as_primitive::<Int64Type>().value(row)),
        DataType::UInt64 => FieldValue::UInteger(a.as_primitive::<UInt64Type>().value(row)),
        DataType::Boolean => FieldValue::Boolean(a.as_boolean().value(row)),
        DataType::Utf8 => FieldValue::String(Cow::Borrowed(a.as_string::<i32>().value(row))),
        _ => return None,
    })
}

/// Table schemas from the node's catalog.
impl TableSchemas for Node {
    fn table_schema(&self, database: &str, table: &str) -> Option<SchemaRef> {
        self.catalog()
            .database(database)
            .and_then(|d| d.table(table))
            .map(|t| t.arrow_schema())
    }
}
