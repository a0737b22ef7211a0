//! Bulk import: line protocol, CSV and Parquet files (each optionally gzip-compressed) read
//! into batches of line protocol for `tidemark import`.
//!
//! A [`Source`] reads one file and fills a [`Batch`]: the line protocol text to send, where
//! each line came from in the file (so that an error the server reports for line 7 of a
//! request is told as line 81,234 of the file), and the rows it refused itself (a CSV value
//! that is not a number, a Parquet NaN, an LP line that does not parse). The server decides
//! the rest (type conflicts, limits), and the importer maps its answers back through the
//! batch. Reading is streaming: memory is one batch plus the reader's buffer, whatever the
//! file size, except for gzip-compressed Parquet, which must be decompressed in memory
//! because Parquet is read from its end.

mod csv;
mod lp;
mod parquet;

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tidemark_storage::batch::FieldValue;
use tidemark_storage::catalog::FieldType;

use crate::Error;
use crate::line_protocol::{Precision, write_line};

/// What kind of file is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    LineProtocol,
    Csv,
    Parquet,
}

impl Format {
    /// `lp`, `csv` or `parquet` (and a few spellings of each).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "lp" | "line-protocol" | "line_protocol" | "influx" => Some(Format::LineProtocol),
            "csv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The format named by a file's extension, looking through a `.gz` suffix.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "lp" | "line" | "influx" | "txt" => Some(Format::LineProtocol),
            "csv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// What a CSV or Parquet column becomes in line protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Tag,
    Field(FieldType),
}

impl ColumnKind {
    /// `tag`, `float`, `integer`, `unsigned`, `string` or `boolean`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tag" => ColumnKind::Tag,
            "float" | "double" | "f64" => ColumnKind::Field(FieldType::Float),
            "integer" | "int" | "i64" => ColumnKind::Field(FieldType::Integer),
            "unsigned" | "uinteger" | "uint" | "u64" => ColumnKind::Field(FieldType::UInteger),
            "string" | "str" => ColumnKind::Field(FieldType::String),
            "boolean" | "bool" => ColumnKind::Field(FieldType::Boolean),
            _ => return None,
        })
    }
}

/// How rows of CSV and Parquet files map to line protocol. Line protocol files ignore all
/// of it but `precision`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Timestamp precision of line protocol files, and of integer times in CSV files.
    pub precision: Precision,
    /// The table every row goes to; by default the file name without its extensions.
    pub table: Option<String>,
    /// A column naming each row's table, instead of one table for the file.
    pub table_column: Option<String>,
    /// The column holding each row's time.
    pub time_column: String,
    /// What columns are; the importer fills it from the flags and from the existing table.
    /// Columns not named are inferred: Parquet from their type (dictionary-encoded strings
    /// are tags), CSV from a sample of rows (numbers are floats, `true`/`false` booleans,
    /// anything else strings).
    pub columns: HashMap<String, ColumnKind>,
    /// Columns that are not imported.
    pub exclude: Vec<String>,
    /// Field separator of CSV files.
    pub delimiter: u8,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            precision: Precision::Nanosecond,
            table: None,
            table_column: None,
            time_column: "time".to_string(),
            columns: HashMap::new(),
            exclude: Vec::new(),
            delimiter: b',',
        }
    }
}

impl Options {
    /// The table of a file's rows when there is no table column: `table`, else the file
    /// name up to its first dot.
    pub fn table_for(&self, path: &Path) -> String {
        if let Some(t) = &self.table {
            return t.clone();
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // `cpu.csv.gz` -> `cpu`
        name.split('.').next().unwrap_or_default().to_string()
    }
}

/// Where the time column and the table column (if any) of a CSV or Parquet file are.
fn time_and_table_columns(
    path: &Path,
    names: &[String],
    options: &Options,
) -> Result<(usize, Option<usize>), Error> {
    let find = |name: &str, what: &str, flag: &str| {
        names.iter().position(|n| n == name).ok_or_else(|| {
            Error::input(
                path,
                format!(
                    "no column named {name:?} for the {what} (set it with {flag}); the columns are {}",
                    names.join(", ")
                ),
            )
        })
    };
    let time = find(&options.time_column, "time", "--time-column")?;
    let table = match &options.table_column {
        Some(c) => Some(find(c, "table name", "--table-column")?),
        None => None,
    };
    Ok((time, table))
}

/// A row the importer refused, or the server did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line of the file for line protocol and CSV, row for Parquet.
    pub location: u64,
    pub original: String,
    pub error: String,
}

/// One line of a batch's body.
#[derive(Debug, Clone, Copy)]
pub struct BatchLine {
    /// Where in the file the line came from (see [`Rejected::location`]).
    pub location: u64,
    /// 1-based physical line of the body the line starts on, as the server counts.
    pub body_line: usize,
    start: usize,
    end: usize,
}

/// Line protocol to send, with where each line came from.
#[derive(Debug)]
pub struct Batch {
    pub body: String,
    /// In body order.
    pub lines: Vec<BatchLine>,
    /// Rows refused before sending.
    pub rejected: Vec<Rejected>,
    /// How the body's timestamps are to be read.
    pub precision: Precision,
    next_body_line: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            body: String::new(),
            lines: Vec::new(),
            rejected: Vec::new(),
            precision: Precision::Nanosecond,
            next_body_line: 1,
        }
    }
}

impl Batch {
    pub fn clear(&mut self) {
        self.body.clear();
        self.lines.clear();
        self.rejected.clear();
        self.next_body_line = 1;
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.rejected.is_empty()
    }

    /// Whether the batch is as large as `limits` allow.
    fn full(&self, limits: BatchLimits) -> bool {
        self.lines.len() >= limits.max_lines || self.body.len() >= limits.max_bytes
    }

    /// The text of a line of the body.
    pub fn text(&self, line: &BatchLine) -> &str {
        self.body.get(line.start..line.end).unwrap_or_default()
    }

    /// The line the server numbers `body_line`.
    pub fn line_at(&self, body_line: usize) -> Option<&BatchLine> {
        let i = self
            .lines
            .binary_search_by_key(&body_line, |l| l.body_line)
            .ok()?;
        self.lines.get(i)
    }

    /// A batch of some of this batch's lines, numbered on its own (to send a batch the
    /// server finds too large in parts).
    pub fn part(&self, lines: std::ops::Range<usize>) -> Batch {
        let mut part = Batch {
            precision: self.precision,
            ..Batch::default()
        };
        for l in self.lines.get(lines).unwrap_or_default() {
            part.push_text(l.location, self.text(l));
        }
        part
    }

    /// Appends a line given as text (line protocol input).
    fn push_text(&mut self, location: u64, text: &str) {
        let start = self.body.len();
        self.body.push_str(text);
        self.finish_line(location, start);
    }

    /// Appends a line from its parts, refusing values line protocol cannot carry.
    fn push_row(
        &mut self,
        location: u64,
        table: &str,
        tags: &[(&str, &str)],
        fields: &[(&str, FieldValue<'_>)],
        time: Option<i64>,
    ) -> Result<(), String> {
        if table.is_empty() {
            return Err("the table name is empty".to_string());
        }
        if fields.is_empty() {
            return Err("the row has no field values (every field column is empty)".to_string());
        }
        for (name, value) in fields {
            if let FieldValue::Float(x) = value
                && !x.is_finite()
            {
                return Err(format!(
                    "field {name:?} is {x}, which line protocol cannot carry"
                ));
            }
        }
        let start = self.body.len();
        write_line(&mut self.body, table, tags, fields, time);
        self.finish_line(location, start);
        Ok(())
    }

    fn finish_line(&mut self, location: u64, start: usize) {
        let end = self.body.len();
        let inner_newlines = self.body[start..end].matches('\n').count();
        self.lines.push(BatchLine {
            location,
            body_line: self.next_body_line,
            start,
            end,
        });
        self.body.push('\n');
        self.next_body_line += inner_newlines + 1;
    }
}

/// How large a batch grows before it is sent.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_lines: usize,
    pub max_bytes: usize,
}

/// Reads one file into batches.
pub trait Source: Send {
    /// Adds rows to `batch` until it is full or the file ends; returns false once the file
    /// has nothing more.
    ///
    /// # Errors
    /// Errors that stop the whole file: I/O, a file that is not of its format, a CSV
    /// without the time column.
    fn fill(&mut self, batch: &mut Batch, limits: BatchLimits) -> Result<bool, Error>;
}

/// Opens `path` for import. `progress` counts the bytes of the file read so far.
///
/// # Errors
/// The file cannot be opened, or its header (CSV) or metadata (Parquet) cannot be read.
pub fn open(
    path: &Path,
    format: Format,
    options: &Options,
    progress: Arc<AtomicU64>,
) -> Result<Box<dyn Source>, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: file,
            count: Arc::clone(&progress),
        },
    );
    let gzip = is_gzip(&mut reader).map_err(|e| Error::io(path, e))?;
    let input: Box<dyn Read + Send> = if gzip {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    };
    match format {
        Format::LineProtocol => Ok(Box::new(lp::LpSource::new(path, input, options.precision))),
        Format::Csv => Ok(Box::new(csv::CsvSource::new(path, input, options)?)),
        Format::Parquet => Ok(Box::new(parquet::ParquetSource::new(
            path, input, gzip, options, progress,
        )?)),
    }
}

fn is_gzip(reader: &mut impl std::io::BufRead) -> std::io::Result<bool> {
    let head = reader.fill_buf()?;
    Ok(head.starts_with(&[0x1f, 0x8b]))
}

/// Counts the bytes read from the file, for the progress bar.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Nanoseconds per unit of `precision`.
fn scale(value: i64, precision: Precision) -> Result<i64, String> {
    value
        .checked_mul(precision.nanos())
        .ok_or_else(|| format!("time {value} is out of range for precision {precision:?}"))
}

#[cfg(test)]
mod tests;
