//! The storage crate's one error type.

use std::path::PathBuf;

/// Errors raised by the partition log, the catalog and the write buffer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "log segment {path} is corrupt at byte {position}: {reason}; the log refuses to skip \
         it (restore the file or remove the segments from this one on to discard the data)"
    )]
    CorruptSegment {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    #[error(
        "log segment {path} has an unsupported format version {version} (this build reads {supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        supported: u32,
    },

    #[error(
        "the log is poisoned after a failed fsync ({reason}); it refuses writes until the \
         server is restarted"
    )]
    Poisoned { reason: String },

    #[error("the log writer has shut down")]
    WriterClosed,

    #[error("record of {size} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },

    #[error("invalid database name {name:?}: {reason}")]
    InvalidDatabaseName { name: String, reason: &'static str },

    #[error("the log of {name:?} has {found} partition directories, expected 0..{expected}")]
    PartitionLayout {
        name: String,
        found: usize,
        expected: usize,
    },

    #[error("column {column:?} of table {table:?} is {existing}, this write has it as {attempted}")]
    SchemaConflict {
        table: String,
        column: String,
        existing: String,
        attempted: String,
    },

    #[error("write payload is malformed: {0}")]
    Payload(String),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("write buffer is full ({used} of {limit} bytes); retry later")]
    BufferFull { used: usize, limit: usize },

    #[error(
        "catalog file {path} is corrupt at {position}: {reason}; the node refuses to start \
         rather than lose track of files. Restore the catalog from a backup, or rebuild it \
         from the table files with `tidemark repair --data-dir <dir>`"
    )]
    CorruptCatalog {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    #[error(
        "the log of partition {partition} in {path} ends at offset {end}, but the catalog \
         records that it reached offset {expected}: segment files are missing, and with them \
         records {end}..{expected}. The node refuses to start rather than lose them \
         silently: restore the partition's segment files from a backup"
    )]
    LogEndsEarly {
        path: PathBuf,
        partition: u32,
        end: u64,
        expected: u64,
    },

    #[error(
        "the catalog directory {path} is missing or empty, but the data directory holds \
         {what}: starting would lose track of that data. Restore the catalog directory \
         (from a backup), point --data-dir at the right directory, or rebuild the catalog \
         from the table files with `tidemark repair --data-dir <dir>`"
    )]
    MissingCatalog { path: PathBuf, what: String },

    #[error(
        "token store {path} is damaged: {reason}; restore it from a backup, or remove it and \
         create a new admin token with `tidemark token create --admin --data-dir`"
    )]
    CorruptTokens { path: PathBuf, reason: String },

    #[error("catalog: {0}")]
    Catalog(String),

    #[error("parquet error on {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
