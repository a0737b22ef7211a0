//! Line protocol files for `file` sources.
//!
//! The file is read in regions of whole lines. Each region is parsed by the write path's
//! own parser into a scratch database of one partition (so rows keep the file's order),
//! whose catalog keeps the columns of every region so far: a field whose type changes
//! between regions is refused as a server would refuse it. A quoted string may hold
//! newlines, so a region that fails is grown (up to [`MAX_REGION_BYTES`]) and parsed
//! again before its first bad line is reported, with the file's line number.
//!
//! Validation reads the whole file once to learn the measurement's columns (a column
//! first seen near the end is not lost); a run reads it again, region by region.

use std::io::Read;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tidemark_storage::batch::WriteBuilder;
use tidemark_storage::catalog::DatabaseSchema;
use tidemark_storage::line_protocol::{LineLimits, Precision, parse_into};

/// Bytes read at a time: a region is at least this long, unless the file ends.
const REGION_BYTES: usize = 1024 * 1024;
/// Longest region grown to find the end of a line that fails.
const MAX_REGION_BYTES: usize = 8 * REGION_BYTES;
/// Most columns a measurement of a file may have (as a server's default).
const MAX_COLUMNS: usize = 1000;

/// One region's rows, by measurement.
type Tables = Vec<(Arc<str>, RecordBatch)>;

/// A line protocol file read region by region.
pub(crate) struct LpFile {
    path: String,
    input: Box<dyn Read + Send>,
    precision: Precision,
    db: Arc<DatabaseSchema>,
    /// Read but not yet parsed; starts at the beginning of a line.
    buf: Vec<u8>,
    /// File line number of `buf[0]`.
    line_base: usize,
    eof: bool,
}

impl LpFile {
    pub(crate) fn open(path: &str, precision: Precision) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        Ok(Self::new(path, Box::new(file), precision))
    }

    fn new(path: &str, input: Box<dyn Read + Send>, precision: Precision) -> Self {
        Self {
            path: path.to_string(),
            input,
            precision,
            db: Arc::new(DatabaseSchema::new("file", 1)),
            buf: Vec::new(),
            line_base: 1,
            eof: false,
        }
    }

    /// Reads until `buf` holds at least `want` bytes or the file ends.
    fn fill(&mut self, want: usize) -> Result<(), String> {
        while !self.eof && self.buf.len() < want {
            let n = (&mut self.input)
                .take((want - self.buf.len()) as u64)
                .read_to_end(&mut self.buf)
                .map_err(|e| format!("reading {}: {e}", self.path))?;
            self.eof = n == 0;
        }
        Ok(())
    }

    /// The rows of the next region, by measurement, in file order; `None` at the end.
    pub(crate) fn next_region(&mut self) -> Result<Option<Tables>, String> {
        let mut want = REGION_BYTES;
        loop {
            self.fill(want)?;
            if self.buf.is_empty() {
                return Ok(None);
            }
            let whole_lines = self.buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
            let end = match whole_lines {
                _ if self.eof => self.buf.len(),
                Some(end) => end,
                None if want < MAX_REGION_BYTES => {
                    want += REGION_BYTES;
                    continue;
                }
                None => {
                    return Err(format!(
                        "{} line {}: a line longer than {MAX_REGION_BYTES} bytes",
                        self.path, self.line_base
                    ));
                }
            };
            let region = &self.buf[..end];
            let mut builder = WriteBuilder::new(Arc::clone(&self.db), MAX_COLUMNS);
            // Lines without a timestamp take the time they are read, as a server's would.
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            let errors = parse_into(
                region,
                self.precision,
                now,
                LineLimits::default(),
                &mut builder,
            );
            if let Some(first) = errors.first() {
                if !self.eof && want < MAX_REGION_BYTES {
                    want = end + REGION_BYTES;
                    continue;
                }
                return Err(format!(
                    "{} line {}: {} (line: {:?})",
                    self.path,
                    self.line_base + first.line_number - 1,
                    first.error_message,
                    first.original_line
                ));
            }
            let batch = builder.finish().map_err(|e| e.to_string())?;
            for (table, columns) in &batch.new_columns {
                self.db
                    .merge_columns(table, columns)
                    .map_err(|e| e.to_string())?;
            }
            self.line_base += region.iter().filter(|&&b| b == b'\n').count();
            self.buf.drain(..end);
            let tables = batch
                .partitions
                .into_iter()
                .flat_map(|p| p.tables)
                .collect();
            return Ok(Some(tables));
        }
    }

    /// Reads the rest of the file; the columns of `measurement` (or of the file's one
    /// measurement when `None`).
    pub(crate) fn schema(mut self, measurement: Option<&str>) -> Result<SchemaRef, String> {
        while self.next_region()?.is_some() {}
        let tables = self.db.tables();
        let names = || {
            tables
                .iter()
                .map(|t| t.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let table = match measurement {
            Some(m) => tables.iter().find(|t| t.name() == m).ok_or_else(|| {
                format!(
                    "{} has no rows of measurement {m:?} (it holds: {})",
                    self.path,
                    names()
                )
            })?,
            None => match tables.as_slice() {
                [one] => one,
                [] => return Err(format!("{} holds no rows", self.path)),
                _ => {
                    return Err(format!(
                        "{} holds several measurements ({}): name one with \"measurement\"",
                        self.path,
                        names()
                    ));
                }
            },
        };
        Ok(table.arrow_schema())
    }
}

/// The rows of one measurement of a line protocol file, in batches of at most
/// `batch_rows`, with the columns of `schema` (a column a region lacks is null).
pub(crate) fn batches(
    mut file: LpFile,
    measurement: Option<String>,
    schema: SchemaRef,
    batch_rows: usize,
    conform: fn(&RecordBatch, &SchemaRef) -> Result<RecordBatch, String>,
) -> impl Iterator<Item = Result<RecordBatch, String>> + Send {
    let mut pending: std::collections::VecDeque<RecordBatch> = Default::default();
    std::iter::from_fn(move || {
        loop {
            if let Some(b) = pending.pop_front() {
                return Some(Ok(b));
            }
            let tables = match file.next_region() {
                Ok(Some(tables)) => tables,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            for (table, batch) in tables {
                // Without a name, validation found one measurement in the file.
                if measurement.as_deref().is_some_and(|m| m != &*table) {
                    continue;
                }
                let batch = match conform(&batch, &schema) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(e)),
                };
                let mut at = 0;
                while at < batch.num_rows() {
                    let n = batch_rows.min(batch.num_rows() - at);
                    pending.push_back(batch.slice(at, n));
                    at += n;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> LpFile {
        LpFile::new(
            "t.lp",
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            Precision::Second,
        )
    }

    #[test]
    fn columns_of_every_region_and_one_measurement_picked() {
        let text = "cpu,host=a u=1 10\nmem,host=a free=3i 10\ncpu,host=b u=2,s=\"x\" 20\n";
        let schema = file(text).schema(Some("cpu")).unwrap();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["host", "s", "u", "time"]);
        let err = file(text).schema(None).unwrap_err();
        assert!(err.contains("several measurements (cpu, mem)"), "{err}");
        let err = file(text).schema(Some("disk")).unwrap_err();
        assert!(err.contains("no rows of measurement \"disk\""), "{err}");
    }

    #[test]
    fn a_bad_line_is_reported_with_its_file_line() {
        let err = file("cpu u=1 1\n# note\ncpu u=\"a\" 2\n")
            .schema(None)
            .unwrap_err();
        assert!(err.starts_with("t.lp line 3: "), "{err}");
        assert!(err.contains("cpu u=\\\"a\\\" 2"), "{err}");
    }
}
