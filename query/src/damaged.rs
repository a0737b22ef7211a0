//! Table files found damaged while a query read them.
//!
//! Every Parquet read of a query goes through [`GuardedReaderFactory`]: a read that fails
//! (a missing file, one shorter than the catalog says, a footer or page that does not
//! decode) records the file in the node's [`DamagedFiles`] with the reason, and the error
//! that reaches the client names the file. A failure inside page decoding names no file;
//! the engine then reads the database's files through ([`read_through`]) to find it. `system.files` shows the mark (column
//! `damaged`). A query run with `skip_damaged_files` leaves marked files out and answers
//! from the rest; compaction never does (it would drop the file's rows for good). Marks
//! last until the server restarts: restoring a file from a backup needs no other step.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;

/// Starts the message of an error that a damaged file caused (the engine recognises it).
pub const DAMAGED_MARKER: &str = "damaged table file ";

/// The files of a node found damaged, by absolute path, with the reason.
#[derive(Debug, Default)]
pub struct DamagedFiles {
    files: Mutex<BTreeMap<String, String>>,
}

impl DamagedFiles {
    pub fn mark(&self, path: &str, reason: &str) {
        let mut files = self.files.lock();
        if !files.contains_key(path) {
            tracing::error!(file = path, reason, "a table file is damaged");
            files.insert(path.to_string(), reason.to_string());
        }
    }

    /// Why the file at this absolute path is marked damaged, if it is.
    pub fn reason(&self, path: &str) -> Option<String> {
        self.files.lock().get(path).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.files.lock().is_empty()
    }
}

/// Reads a table file through, decoding every page: `Err` says why it cannot be read.
/// (A failed read that names no file, such as a page that does not decode, is traced to
/// its file this way.)
///
/// # Errors
/// The reason the file cannot be read.
pub fn read_through(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    for batch in reader {
        batch.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Wraps a reader factory so that failed reads mark their file.
#[derive(Debug)]
pub struct GuardedReaderFactory {
    inner: Arc<dyn ParquetFileReaderFactory>,
    damaged: Arc<DamagedFiles>,
}

impl GuardedReaderFactory {
    pub fn new(inner: Arc<dyn ParquetFileReaderFactory>, damaged: Arc<DamagedFiles>) -> Self {
        Self { inner, damaged }
    }
}

impl ParquetFileReaderFactory for GuardedReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        // The local store's locations are absolute paths without their leading '/'.
        let path = format!("/{}", file.object_meta.location);
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(GuardedReader {
            inner,
            path,
            damaged: Arc::clone(&self.damaged),
        }))
    }
}

struct GuardedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    path: String,
    damaged: Arc<DamagedFiles>,
}

fn damage(damaged: &DamagedFiles, path: &str, e: ParquetError) -> ParquetError {
    let reason = e.to_string();
    damaged.mark(path, &reason);
    ParquetError::General(format!("{DAMAGED_MARKER}{path}: {reason}"))
}

impl AsyncFileReader for GuardedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let (path, damaged) = (self.path.clone(), Arc::clone(&self.damaged));
        self.inner
            .get_bytes(range)
            .map(move |r| r.map_err(|e| damage(&damaged, &path, e)))
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let (path, damaged) = (self.path.clone(), Arc::clone(&self.damaged));
        self.inner
            .get_byte_ranges(ranges)
            .map(move |r| r.map_err(|e| damage(&damaged, &path, e)))
            .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let (path, damaged) = (self.path.clone(), Arc::clone(&self.damaged));
        self.inner
            .get_metadata(options)
            .map(move |r| r.map_err(|e| damage(&damaged, &path, e)))
            .boxed()
    }
}
