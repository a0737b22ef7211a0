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
//! first seen near the end is not lost); a run reads it again, region by region. A
//! followed file's regions come as they are appended (see `lines`); a column that first
//! appears in them is not one of the source's columns and is left out.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tidemark_storage::batch::WriteBuilder;
use tidemark_storage::catalog::DatabaseSchema;
use tidemark_storage::line_protocol::{LineLimits, Precision, parse_into};

use super::lines::{Lines, MAX_REGION_BYTES, Next, REGION_BYTES, Region};
use super::source::conform;

/// Most columns a measurement of a file may have (as a server's default).
const MAX_COLUMNS: usize = 1000;

/// One region's rows, by measurement.
type Tables = Vec<(Arc<str>, RecordBatch)>;

/// A line protocol file read region by region.
pub(crate) struct LpFile {
    lines: Lines,
    precision: Precision,
    db: Arc<DatabaseSchema>,
}

impl LpFile {
    pub(crate) fn open(path: &str, precision: Precision, follow: bool) -> Result<Self, String> {
        Ok(Self::new(Lines::open(path, follow)?, precision))
    }

    fn new(lines: Lines, precision: Precision) -> Self {
        Self {
            lines,
            precision,
            db: Arc::new(DatabaseSchema::new("file", 1)),
        }
    }

    /// The rows of the next region, by measurement, in file order; when there is none,
    /// `Err` says whether the file ended or (followed) has nothing more yet.
    fn next_region(&mut self) -> Result<Result<Tables, Region>, String> {
        let mut want = REGION_BYTES;
        loop {
            let end = match self.lines.region(want)? {
                Region::Lines(end) => end,
                other => return Ok(Err(other)),
            };
            let region = &self.lines.bytes()[..end];
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
                if !self.lines.at_end() && want < MAX_REGION_BYTES {
                    want = end + REGION_BYTES;
                    continue;
                }
                return Err(self
                    .lines
                    .line_error(first.line_number - 1, &first.error_message));
            }
            let batch = builder.finish().map_err(|e| e.to_string())?;
            for (table, columns) in &batch.new_columns {
                self.db
                    .merge_columns(table, columns)
                    .map_err(|e| e.to_string())?;
            }
            self.lines.consume(end);
            let tables = batch
                .partitions
                .into_iter()
                .flat_map(|p| p.tables)
                .collect();
            return Ok(Ok(tables));
        }
    }

    /// Reads the rest of the file; the columns of `measurement` (or of the file's one
    /// measurement when `None`).
    pub(crate) fn schema(mut self, measurement: Option<&str>) -> Result<SchemaRef, String> {
        while self.next_region()?.is_ok() {}
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
                    self.lines.path,
                    names()
                )
            })?,
            None => match tables.as_slice() {
                [one] => one,
                [] => return Err(format!("{} holds no rows", self.lines.path)),
                _ => {
                    return Err(format!(
                        "{} holds several measurements ({}): name one with \"measurement\"",
                        self.lines.path,
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
pub(crate) struct LpBatches {
    file: LpFile,
    /// Without a name, validation found one measurement in the file.
    measurement: Option<String>,
    schema: SchemaRef,
    batch_rows: usize,
    ready: VecDeque<RecordBatch>,
}

impl LpBatches {
    pub(crate) fn new(
        file: LpFile,
        measurement: Option<String>,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> Self {
        Self {
            file,
            measurement,
            schema,
            batch_rows: batch_rows.max(1),
            ready: VecDeque::new(),
        }
    }

    pub(crate) fn next(&mut self) -> Result<Next, String> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Next::Batch(b));
            }
            let tables = match self.file.next_region()? {
                Ok(tables) => tables,
                Err(Region::Pending) => return Ok(Next::Pending),
                Err(_) => return Ok(Next::End),
            };
            for (table, batch) in tables {
                if self.measurement.as_deref().is_some_and(|m| m != &*table) {
                    continue;
                }
                let batch = conform(&batch, &self.schema)?;
                let mut at = 0;
                while at < batch.num_rows() {
                    let n = self.batch_rows.min(batch.num_rows() - at);
                    self.ready.push_back(batch.slice(at, n));
                    at += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> LpFile {
        let input = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        LpFile::new(Lines::new("t.lp", input, false), Precision::Second)
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
