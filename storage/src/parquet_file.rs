//! Writing a table's rows to Parquet files, and where those files live.
//!
//! Layout: `<data-dir>/tables/<db>/<table>/<YYYY-MM-DD>/<HHMM>/<file-id>.parquet`, the date
//! and time being the start of the file's time window (UTC). Rows arrive sorted by
//! (tags, time) and deduplicated; [`ParquetSink`] writes them with zstd, page-level
//! statistics and page indexes (so DataFusion prunes row groups and pages), records the
//! sort order in the file, and collects what the catalog keeps about the file ([`FileMeta`]):
//! time range, rows, bytes and each tag's value range. The file also carries that record in
//! its own footer ([`FileDescription`]), so a lost catalog can be rebuilt from the files.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::compute::{cast, max_string, min_string};
use arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::catalog::{ColumnKind, TIME_COLUMN};
use crate::error::{Error, Result};
use crate::manifest::FileMeta;

/// Start of the window holding `t`.
pub fn window_start(t: i64, window_ns: i64) -> i64 {
    t.div_euclid(window_ns) * window_ns
}

/// Makes a name safe as one path component: bytes other than ASCII letters, digits, `_`
/// and `-` become `~XX` (so `.`, `/` and `..` cannot escape the table directory; `~` is
/// used rather than `%` because object-store paths would percent-encode a `%` again).
pub fn path_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

/// Undoes escapes of the form `<marker>XX` (two hex digits a byte): a path component's
/// `~XX` here, a URL's `%XX` elsewhere. `None` when an escape or the result is malformed.
pub fn unescape_hex(text: &str, marker: u8) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == marker {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Directory of a table's files, relative to the data directory.
pub fn table_dir(db: &str, table: &str) -> PathBuf {
    database_dir(db).join(path_component(table))
}

/// Directory of a database's files, relative to the data directory.
pub fn database_dir(db: &str) -> PathBuf {
    Path::new("tables").join(path_component(db))
}

/// Path of a file, relative to the data directory.
pub fn file_path(db: &str, table: &str, window_start: i64, id: u64) -> String {
    let dt = chrono::DateTime::from_timestamp_nanos(window_start);
    table_dir(db, table)
        .join(dt.format("%Y-%m-%d").to_string())
        .join(dt.format("%H%M").to_string())
        .join(format!("{id:020}.parquet"))
        .to_string_lossy()
        .into_owned()
}

/// Writes one Parquet file; rows must be sorted by (tags, time).
pub struct ParquetSink {
    writer: ArrowWriter<File>,
    path: PathBuf,
    meta: FileMeta,
    /// Name and kind of every column, for the file's own description of itself.
    columns: Vec<(String, ColumnKind)>,
    tag_columns: Vec<usize>,
    time_column: usize,
}

/// Key of the Parquet key-value metadata entry in which a file describes itself (see
/// [`FileDescription`]): what `tidemark repair` rebuilds a lost catalog from.
pub const FILE_DESCRIPTION_KEY: &str = "tidemark.file";

/// What a table file says of itself, written into its footer when it is finished.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileDescription {
    pub version: u32,
    /// The catalog's record of the file, `bytes` left 0 (the footer cannot know it).
    pub meta: FileMeta,
    pub columns: Vec<(String, ColumnKind)>,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// Creates the file `meta.path` under `data_dir` for rows of `schema`, whose columns
    /// are described by `kinds` (same order).
    ///
    /// # Errors
    /// I/O and Parquet errors.
    pub fn create(
        data_dir: &Path,
        schema: SchemaRef,
        kinds: &[ColumnKind],
        meta: FileMeta,
    ) -> Result<Self> {
        let path = data_dir.join(&meta.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let columns: Vec<(String, ColumnKind)> = schema
            .fields()
            .iter()
            .zip(kinds)
            .map(|(f, k)| (f.name().clone(), *k))
            .collect();
        let tag_columns: Vec<usize> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == ColumnKind::Tag)
            .map(|(i, _)| i)
            .collect();
        let time_column = schema
            .index_of(TIME_COLUMN)
            .map_err(|_| Error::Internal("table schema without a time column".into()))?;
        let sorting: Vec<SortingColumn> = tag_columns
            .iter()
            .chain(std::iter::once(&time_column))
            .map(|&i| SortingColumn {
                column_idx: i as i32,
                descending: false,
                nulls_first: true,
            })
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(|e| {
                Error::Parquet {
                    path: path.clone(),
                    source: e,
                }
            })?))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(20_000)
            .set_max_row_group_row_count(Some(1024 * 1024))
            .set_sorting_columns(Some(sorting))
            .build();
        let writer =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| Error::Parquet {
                path: path.clone(),
                source: e,
            })?;
        Ok(Self {
            writer,
            path,
            meta: FileMeta {
                min_time: i64::MAX,
                max_time: i64::MIN,
                rows: 0,
                bytes: 0,
                tag_ranges: BTreeMap::new(),
                ..meta
            },
            columns,
            tag_columns,
            time_column,
        })
    }

    /// Appends rows (sorted after the rows already written).
    ///
    /// # Errors
    /// I/O and Parquet errors.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        extend_ranges(&mut self.meta, batch, &self.tag_columns, self.time_column)?;
        self.meta.rows += batch.num_rows() as u64;
        self.writer.write(batch).map_err(|e| Error::Parquet {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Bytes written so far plus what is buffered for the open row group.
    pub fn size(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size()
    }

    /// Finishes the file and makes it durable (the directory entry too).
    ///
    /// # Errors
    /// I/O and Parquet errors.
    pub fn finish(self) -> Result<FileMeta> {
        let Self {
            mut writer,
            path,
            mut meta,
            columns,
            ..
        } = self;
        let description = FileDescription {
            version: 1,
            meta: meta.clone(),
            columns,
        };
        let text = serde_json::to_string(&description)
            .map_err(|e| Error::Internal(format!("describing {}: {e}", path.display())))?;
        writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            FILE_DESCRIPTION_KEY.to_string(),
            text,
        ));
        let file = writer.into_inner().map_err(|e| Error::Parquet {
            path: path.clone(),
            source: e,
        })?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        meta.bytes = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if let Some(parent) = path.parent() {
            crate::log::sync_dir(parent)?;
        }
        Ok(meta)
    }
}

/// Widens `meta`'s time range and tag ranges to cover `batch` (what the catalog keeps
/// about a file, from its rows: the sink while writing, `repair` for older files).
///
/// # Errors
/// A time column that is not a ns timestamp; a tag that does not cast to strings.
pub fn extend_ranges(
    meta: &mut FileMeta,
    batch: &RecordBatch,
    tag_columns: &[usize],
    time_column: usize,
) -> Result<()> {
    let times = batch
        .column(time_column)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| Error::Internal("time column is not a ns timestamp".into()))?;
    if let (Some(lo), Some(hi)) = (arrow::compute::min(times), arrow::compute::max(times)) {
        meta.min_time = meta.min_time.min(lo);
        meta.max_time = meta.max_time.max(hi);
    }
    let schema = batch.schema();
    for &i in tag_columns {
        let strings = cast(batch.column(i), &DataType::Utf8)?;
        let strings = strings.as_string::<i32>();
        if strings.null_count() == strings.len() {
            continue;
        }
        let (Some(lo), Some(hi)) = (min_string(strings), max_string(strings)) else {
            continue;
        };
        let range = meta
            .tag_ranges
            .entry(schema.field(i).name().clone())
            .or_insert_with(|| (lo.to_string(), hi.to_string()));
        if lo < range.0.as_str() {
            range.0 = lo.to_string();
        }
        if hi > range.1.as_str() {
            range.1 = hi.to_string();
        }
    }
    Ok(())
}

/// Splits rows sorted by (tags, time) into one batch per time window, each still sorted.
///
/// # Errors
/// Internal Arrow errors.
pub fn split_by_window(batch: &RecordBatch, window_ns: i64) -> Result<Vec<(i64, RecordBatch)>> {
    let idx = batch
        .schema()
        .index_of(TIME_COLUMN)
        .map_err(|_| Error::Internal("batch without a time column".into()))?;
    let times = batch
        .column(idx)
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| Error::Internal("time column is not a ns timestamp".into()))?;
    let mut rows_of: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (row, t) in times.values().iter().enumerate() {
        rows_of
            .entry(window_start(*t, window_ns))
            .or_default()
            .push(row as u32);
    }
    if rows_of.len() == 1 {
        return Ok(rows_of.into_keys().map(|w| (w, batch.clone())).collect());
    }
    let mut out = Vec::with_capacity(rows_of.len());
    for (w, rows) in rows_of {
        let indices = arrow::array::UInt32Array::from(rows);
        let columns = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        out.push((w, RecordBatch::try_new(batch.schema(), columns)?));
    }
    Ok(out)
}

/// Removes a file if it exists, then prunes now-empty parent directories up to `stop`.
///
/// # Errors
/// I/O errors other than "not found".
pub fn remove_file_and_empty_dirs(path: &Path, stop: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == stop || !d.starts_with(stop) {
            break;
        }
        // Fails when not empty, which ends the walk.
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_components_come_back() {
        for name in ["cpu/load", "plain", "a~b", "ü ~7E"] {
            assert_eq!(
                unescape_hex(&path_component(name), b'~').as_deref(),
                Some(name)
            );
        }
        assert_eq!(unescape_hex("bad~Z", b'~'), None);
        assert_eq!(unescape_hex("a%20b", b'%').as_deref(), Some("a b"));
    }

    #[test]
    fn names_cannot_escape_their_directory() {
        assert_eq!(path_component("cpu"), "cpu");
        assert_eq!(path_component("../x"), "~2E~2E~2Fx");
        assert_eq!(path_component("a b"), "a~20b");
    }

    #[test]
    fn file_paths_follow_the_window() {
        // 2024-01-02T03:40:00Z
        let w = 1_704_166_800_000_000_000;
        assert_eq!(
            file_path("db", "cpu", w, 7),
            "tables/db/cpu/2024-01-02/0340/00000000000000000007.parquet"
        );
        assert_eq!(window_start(w + 5, 600_000_000_000), w);
        assert_eq!(window_start(-1, 10), -10);
    }
}
