//! CSV files with a header row: one column is the time, one may name the table, the others
//! are tags or fields. A column's kind comes from [`Options::columns`] (the flags and the
//! existing table), else from the first rows: a column whose values are all numbers is a
//! float field, all `true`/`false` a boolean field, anything else a string field. Empty
//! values are missing values (no tag, no field). Lines starting with `#` are skipped, so
//! the annotation rows of InfluxDB's annotated CSV are ignored.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};

use tidemark_storage::batch::FieldValue;
use tidemark_storage::catalog::FieldType;

use super::{Batch, BatchLimits, ColumnKind, Options, Rejected, Source, scale};
use crate::Error;
use crate::line_protocol::Precision;

/// Rows read ahead to infer the kinds of columns that were not given.
const SAMPLE_ROWS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Time,
    Table,
    Skip,
    /// Tag or field; `None` until a value shows which.
    Column(Option<ColumnKind>),
}

pub(super) struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<Box<dyn Read + Send>>,
    headers: Vec<String>,
    roles: Vec<Role>,
    table: String,
    precision: Precision,
    delimiter: u8,
    /// Rows read to infer kinds and not yet converted.
    sample: VecDeque<csv::ByteRecord>,
    done: bool,
}

impl CsvSource {
    pub(super) fn new(
        path: &Path,
        input: Box<dyn Read + Send>,
        options: &Options,
    ) -> Result<Self, Error> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(options.delimiter)
            .flexible(true)
            .comment(Some(b'#'))
            .from_reader(input);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| csv_error(path, &e))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        if headers.iter().all(String::is_empty) {
            return Err(Error::input(path, "the file has no header row"));
        }
        let (time, table_col) = super::time_and_table_columns(path, &headers, options)?;
        let roles = headers
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if i == time {
                    Role::Time
                } else if Some(i) == table_col {
                    Role::Table
                } else if name.is_empty() || options.exclude.iter().any(|e| e == name) {
                    Role::Skip
                } else {
                    Role::Column(options.columns.get(name).copied())
                }
            })
            .collect();
        let mut source = Self {
            path: path.to_path_buf(),
            reader,
            headers,
            roles,
            table: options.table_for(path),
            precision: options.precision,
            delimiter: options.delimiter,
            sample: VecDeque::new(),
            done: false,
        };
        source.infer()?;
        Ok(source)
    }

    /// Reads up to [`SAMPLE_ROWS`] rows and settles the kind of every column not given
    /// whose sampled values say what it is.
    fn infer(&mut self) -> Result<(), Error> {
        if !self.roles.contains(&Role::Column(None)) {
            return Ok(());
        }
        while self.sample.len() < SAMPLE_ROWS {
            let mut record = csv::ByteRecord::new();
            if !self.read(&mut record)? {
                break;
            }
            self.sample.push_back(record);
        }
        for (i, role) in self.roles.iter_mut().enumerate() {
            if *role != Role::Column(None) {
                continue;
            }
            let values = self
                .sample
                .iter()
                .filter_map(|r| r.get(i))
                .filter_map(|v| std::str::from_utf8(v).ok())
                .map(str::trim)
                .filter(|v| !v.is_empty());
            *role = Role::Column(infer_kind(values));
        }
        Ok(())
    }

    /// Reads the next record; false at the end of the file.
    fn read(&mut self, record: &mut csv::ByteRecord) -> Result<bool, Error> {
        if self.done {
            return Ok(false);
        }
        match self.reader.read_byte_record(record) {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.done = true;
                Ok(false)
            }
            Err(e) => Err(csv_error(&self.path, &e)),
        }
    }

    /// The record as CSV text, for the rejects file.
    fn original(&self, record: &csv::ByteRecord) -> String {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .from_writer(Vec::new());
        let _ = writer.write_byte_record(record);
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .trim_end_matches(['\n', '\r'])
            .to_string()
    }

    /// Converts one record into a line of `batch`.
    fn convert(&mut self, record: &csv::ByteRecord, batch: &mut Batch) -> Result<(), String> {
        if record.len() != self.headers.len() {
            return Err(format!(
                "expected {} columns as in the header, found {}",
                self.headers.len(),
                record.len()
            ));
        }
        let mut values = Vec::with_capacity(record.len());
        for (i, raw) in record.iter().enumerate() {
            let value = std::str::from_utf8(raw)
                .map_err(|_| format!("column {:?} is not valid UTF-8", self.headers[i]))?
                .trim();
            // The first value of a column the sample left open decides its kind.
            if self.roles[i] == Role::Column(None) && !value.is_empty() {
                self.roles[i] = Role::Column(infer_kind(std::iter::once(value)));
            }
            values.push(value);
        }
        let mut time = None;
        let mut table: &str = &self.table;
        let mut tags: Vec<(&str, &str)> = Vec::new();
        let mut fields: Vec<(&str, FieldValue<'_>)> = Vec::new();
        for ((name, role), value) in self.headers.iter().zip(&self.roles).zip(values) {
            match *role {
                Role::Skip | Role::Column(None) => {}
                Role::Time => time = Some(parse_time(value, self.precision, name)?),
                Role::Table => table = value,
                Role::Column(Some(_)) if value.is_empty() => {}
                Role::Column(Some(ColumnKind::Tag)) => tags.push((name, value)),
                Role::Column(Some(ColumnKind::Field(t))) => {
                    fields.push((name, parse_field(value, t, name)?));
                }
            }
        }
        batch.push_row(
            record.position().map_or(0, csv::Position::line),
            table,
            &tags,
            &fields,
            time,
        )
    }
}

impl Source for CsvSource {
    fn fill(&mut self, batch: &mut Batch, limits: BatchLimits) -> Result<bool, Error> {
        batch.precision = Precision::Nanosecond;
        let mut scratch = csv::ByteRecord::new();
        while !batch.full(limits) {
            let sampled;
            let record = match self.sample.pop_front() {
                Some(r) => {
                    sampled = r;
                    &sampled
                }
                None => {
                    if !self.read(&mut scratch)? {
                        return Ok(false);
                    }
                    &scratch
                }
            };
            if let Err(error) = self.convert(record, batch) {
                batch.rejected.push(Rejected {
                    location: record.position().map_or(0, csv::Position::line),
                    original: self.original(record),
                    error,
                });
            }
        }
        Ok(true)
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> Error {
    match e.kind() {
        csv::ErrorKind::Io(io) => Error::io(path, std::io::Error::new(io.kind(), io.to_string())),
        _ => Error::input(path, e.to_string()),
    }
}

/// The kind values suggest, or `None` when there are none.
fn infer_kind<'a>(mut values: impl Iterator<Item = &'a str>) -> Option<ColumnKind> {
    let first = values.next()?;
    let is_bool = |v: &str| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false");
    let is_number = |v: &str| v.parse::<f64>().is_ok();
    let (mut bool_ok, mut number_ok) = (is_bool(first), is_number(first));
    for v in values {
        bool_ok &= is_bool(v);
        number_ok &= is_number(v);
        if !bool_ok && !number_ok {
            break;
        }
    }
    Some(ColumnKind::Field(if number_ok {
        FieldType::Float
    } else if bool_ok {
        FieldType::Boolean
    } else {
        FieldType::String
    }))
}

fn parse_field<'v>(value: &'v str, t: FieldType, name: &str) -> Result<FieldValue<'v>, String> {
    let bad = || format!("column {name:?}: {value:?} is not a {}", t.name());
    Ok(match t {
        FieldType::Float => FieldValue::Float(value.parse().map_err(|_| bad())?),
        FieldType::Integer => FieldValue::Integer(value.parse().map_err(|_| bad())?),
        FieldType::UInteger => FieldValue::UInteger(value.parse().map_err(|_| bad())?),
        FieldType::String => FieldValue::String(value.into()),
        FieldType::Boolean => FieldValue::Boolean(match value {
            "t" | "T" | "1" => true,
            "f" | "F" | "0" => false,
            v if v.eq_ignore_ascii_case("true") => true,
            v if v.eq_ignore_ascii_case("false") => false,
            _ => return Err(bad()),
        }),
    })
}

/// A CSV time: an integer in `precision`, RFC 3339, or `YYYY-MM-DD[ HH:MM:SS[.fff]]` in UTC.
pub(super) fn parse_time(value: &str, precision: Precision, column: &str) -> Result<i64, String> {
    if value.is_empty() {
        return Err(format!("the time column {column:?} is empty"));
    }
    if let Ok(n) = value.parse::<i64>() {
        return scale(n, precision);
    }
    let nanos = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        t.timestamp_nanos_opt()
    } else if let Some(t) = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(value, f).ok())
    {
        t.and_utc().timestamp_nanos_opt()
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
    } else {
        return Err(format!(
            "column {column:?}: cannot read {value:?} as a time: expected an integer \
             (precision {}), RFC 3339 (2024-01-31T12:00:00Z) or 2024-01-31 12:00:00 (UTC)",
            precision.name()
        ));
    };
    nanos.ok_or_else(|| {
        format!("column {column:?}: {value:?} is outside the nanosecond range (1677 to 2262)")
    })
}
