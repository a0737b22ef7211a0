//! Parquet files: read batch by batch with the Arrow reader. Each column is cast once per
//! batch to what its kind needs (strings for tags, Float64 / Int64 / UInt64 / Boolean /
//! strings for fields, nanosecond timestamps for the time), then rows are written as line
//! protocol. Without a given kind, a column's Arrow type decides: dictionary-encoded
//! strings are tags (as in the files Tidemark writes), other strings are string fields,
//! numbers and booleans are fields of their type.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use tidemark_storage::batch::FieldValue;
use tidemark_storage::catalog::FieldType;

use super::{Batch, BatchLimits, ColumnKind, Options, Rejected, Source, scale};
use crate::Error;
use crate::line_protocol::Precision;

/// Rows the Arrow reader decodes at a time.
const READ_ROWS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Time,
    Table,
    Skip,
    Column(ColumnKind),
}

pub(super) struct ParquetSource {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    names: Vec<String>,
    roles: Vec<Role>,
    table: String,
    precision: Precision,
    /// The batch being converted and the next row of it.
    current: Option<(Vec<ArrayRef>, RecordBatch)>,
    row: usize,
    /// Rows before `current`, for locations.
    rows_before: u64,
    /// For the progress count when the file is read from disk as it is decoded.
    progress: Option<(Arc<AtomicU64>, u64, u64)>,
    reported: u64,
}

impl ParquetSource {
    pub(super) fn new(
        path: &Path,
        mut input: Box<dyn Read + Send>,
        gzip: bool,
        options: &Options,
        progress: Arc<AtomicU64>,
    ) -> Result<Self, Error> {
        let not_parquet = |e: parquet::errors::ParquetError| {
            Error::input(path, format!("not a readable Parquet file: {e}"))
        };
        // Parquet is read from its footer, so a compressed file is decompressed in memory;
        // a plain one is read from disk as it goes.
        let (reader, schema, total_rows, file_len) = if gzip {
            let mut bytes = Vec::new();
            input
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(path, e))?;
            let (reader, schema, rows) = reader(bytes::Bytes::from(bytes)).map_err(not_parquet)?;
            (reader, schema, rows, None)
        } else {
            drop(input);
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            let (reader, schema, rows) = reader(file).map_err(not_parquet)?;
            (reader, schema, rows, Some(len))
        };
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let (time, table_col) = super::time_and_table_columns(path, &names, options)?;
        let mut roles = Vec::with_capacity(names.len());
        for (i, field) in schema.fields().iter().enumerate() {
            let name = field.name();
            let role = if i == time {
                if !time_type_ok(field.data_type()) {
                    return Err(Error::input(
                        path,
                        format!(
                            "the time column {name:?} is {}; expected a timestamp, a date or an integer",
                            field.data_type()
                        ),
                    ));
                }
                Role::Time
            } else if Some(i) == table_col {
                Role::Table
            } else if options.exclude.iter().any(|e| e == name) {
                Role::Skip
            } else if let Some(kind) = options.columns.get(name) {
                Role::Column(*kind)
            } else {
                Role::Column(kind_of(field.data_type()).ok_or_else(|| {
                    Error::input(
                        path,
                        format!(
                            "column {name:?} is {}, which line protocol cannot hold; \
                             leave it out with --exclude {name}",
                            field.data_type()
                        ),
                    )
                })?)
            };
            roles.push(role);
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            names,
            roles,
            table: options.table_for(path),
            precision: options.precision,
            current: None,
            row: 0,
            rows_before: 0,
            progress: file_len.map(|len| (progress, len, total_rows.max(1))),
            reported: 0,
        })
    }

    /// Decodes the next batch and casts its columns; false at the end of the file.
    fn next_batch(&mut self) -> Result<bool, Error> {
        if let Some((_, b)) = &self.current {
            self.rows_before += b.num_rows() as u64;
        }
        self.current = None;
        self.row = 0;
        let Some(batch) = self.reader.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(|e| Error::input(&self.path, format!("reading rows: {e}")))?;
        let options = CastOptions {
            safe: true,
            ..CastOptions::default()
        };
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (i, column) in batch.columns().iter().enumerate() {
            let target = match self.roles[i] {
                Role::Time if column.data_type().is_integer() => DataType::Int64,
                Role::Time => DataType::Timestamp(TimeUnit::Nanosecond, None),
                Role::Table | Role::Column(ColumnKind::Tag) => DataType::Utf8,
                Role::Column(ColumnKind::Field(t)) => t.arrow_type(),
                Role::Skip => DataType::Null,
            };
            let cast = if target == DataType::Null {
                Arc::clone(column)
            } else {
                cast_with_options(column, &target, &options).map_err(|e| {
                    Error::input(
                        &self.path,
                        format!("column {:?} cannot be read as {target}: {e}", self.names[i]),
                    )
                })?
            };
            columns.push(cast);
        }
        if let Some((progress, len, total)) = &self.progress {
            let done = self.rows_before + batch.num_rows() as u64;
            let bytes = len.saturating_mul(done) / total;
            progress.fetch_add(bytes.saturating_sub(self.reported), Ordering::Relaxed);
            self.reported = self.reported.max(bytes);
        }
        self.current = Some((columns, batch));
        Ok(true)
    }

    /// The row as `name=value` pairs, for the rejects file.
    fn original(batch: &RecordBatch, names: &[String], row: usize) -> String {
        let options = FormatOptions::default().with_null("null");
        let mut out = Vec::with_capacity(names.len());
        for (name, column) in names.iter().zip(batch.columns()) {
            let value = ArrayFormatter::try_new(column.as_ref(), &options)
                .map(|f| f.value(row).to_string())
                .unwrap_or_else(|e| format!("<{e}>"));
            out.push(format!("{name}={value}"));
        }
        out.join(" ")
    }

    /// Writes row `row` of the current batch into `batch`.
    fn convert(
        &self,
        columns: &[ArrayRef],
        source: &RecordBatch,
        row: usize,
        batch: &mut Batch,
    ) -> Result<(), String> {
        let mut time = None;
        let mut table: &str = &self.table;
        let mut tags: Vec<(&str, &str)> = Vec::new();
        let mut fields: Vec<(&str, FieldValue<'_>)> = Vec::new();
        for (i, column) in columns.iter().enumerate() {
            let name = self.names[i].as_str();
            let role = self.roles[i];
            if column.is_null(row) {
                if source.column(i).is_valid(row) && role != Role::Skip {
                    // The value was there and the cast could not take it.
                    return Err(format!(
                        "column {name:?}: the value cannot be read as {}",
                        column.data_type()
                    ));
                }
                if role == Role::Time {
                    return Err(format!("the time column {name:?} is null"));
                }
                continue;
            }
            match role {
                Role::Skip => {}
                Role::Time => {
                    time = Some(match column.data_type() {
                        DataType::Int64 => scale(
                            column.as_primitive::<Int64Type>().value(row),
                            self.precision,
                        )?,
                        _ => column.as_primitive::<TimestampNanosecondType>().value(row),
                    });
                }
                Role::Table => table = column.as_string::<i32>().value(row),
                Role::Column(ColumnKind::Tag) => {
                    let v = column.as_string::<i32>().value(row);
                    if !v.is_empty() {
                        tags.push((name, v));
                    }
                }
                Role::Column(ColumnKind::Field(t)) => {
                    let v = match t {
                        FieldType::Float => {
                            FieldValue::Float(column.as_primitive::<Float64Type>().value(row))
                        }
                        FieldType::Integer => {
                            FieldValue::Integer(column.as_primitive::<Int64Type>().value(row))
                        }
                        FieldType::UInteger => {
                            FieldValue::UInteger(column.as_primitive::<UInt64Type>().value(row))
                        }
                        FieldType::Boolean => FieldValue::Boolean(column.as_boolean().value(row)),
                        FieldType::String => {
                            FieldValue::String(column.as_string::<i32>().value(row).into())
                        }
                    };
                    fields.push((name, v));
                }
            }
        }
        batch.push_row(
            self.rows_before + row as u64 + 1,
            table,
            &tags,
            &fields,
            time,
        )
    }
}

impl Source for ParquetSource {
    fn fill(&mut self, batch: &mut Batch, limits: BatchLimits) -> Result<bool, Error> {
        batch.precision = Precision::Nanosecond;
        while !batch.full(limits) {
            let rows = self.current.as_ref().map_or(0, |(_, b)| b.num_rows());
            if self.row >= rows {
                if !self.next_batch()? {
                    return Ok(false);
                }
                continue;
            }
            let row = self.row;
            self.row += 1;
            let Some((columns, source)) = &self.current else {
                continue;
            };
            if let Err(error) = self.convert(columns, source, row, batch) {
                batch.rejected.push(Rejected {
                    location: self.rows_before + row as u64 + 1,
                    original: Self::original(source, &self.names, row),
                    error,
                });
            }
        }
        Ok(true)
    }
}

/// The batch reader of a file, its schema and its row count.
fn reader<T: parquet::file::reader::ChunkReader + 'static>(
    input: T,
) -> Result<
    (ParquetRecordBatchReader, arrow::datatypes::SchemaRef, u64),
    parquet::errors::ParquetError,
> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(input)?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let schema = Arc::clone(builder.schema());
    Ok((builder.with_batch_size(READ_ROWS).build()?, schema, rows))
}

fn time_type_ok(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    ) || t.is_integer()
}

/// The kind a column of type `t` is imported as, when none was given.
fn kind_of(t: &DataType) -> Option<ColumnKind> {
    Some(match t {
        DataType::Dictionary(_, v)
            if matches!(
                **v,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) =>
        {
            ColumnKind::Tag
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            ColumnKind::Field(FieldType::String)
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            ColumnKind::Field(FieldType::Float)
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            ColumnKind::Field(FieldType::Integer)
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            ColumnKind::Field(FieldType::UInteger)
        }
        DataType::Boolean => ColumnKind::Field(FieldType::Boolean),
        _ => return None,
    })
}
