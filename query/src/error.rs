//! The query crate's one error type.

/// Errors from planning, running and encoding queries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database {0:?} not found")]
    DatabaseNotFound(String),

    #[error("{0}")]
    Sql(String),

    /// Refused before planning: it would nest deeper than the query threads can recurse.
    #[error("{0}")]
    TooComplex(String),

    #[error("query is read-only: {0}")]
    NotAllowed(String),

    #[error("query exceeded its time limit of {0:?}")]
    Timeout(std::time::Duration),

    #[error("query needs more memory than the limit all queries share (--query-memory-mb): {0}")]
    MemoryLimit(String),

    #[error("too many concurrent queries (limit {0}); retry later")]
    TooManyQueries(usize),

    #[error("unknown output format {0:?}: expected json, jsonl, csv, pretty or parquet")]
    UnknownFormat(String),

    /// A table file could not be read (the client did nothing wrong).
    #[error(
        "{0}; the file is marked in system.files. Restore it from a backup, or answer from the other files with skip_damaged_files=true (or --skip-damaged-files)"
    )]
    DamagedFile(String),

    /// Stored data could not be read, and no single file could be named.
    #[error(
        "reading the table's stored data failed: {0}; a table file may be damaged (see system.files and the server log)"
    )]
    ReadFailed(String),

    #[error("internal error: {0}")]
    Internal(String),

    #[error("encoding the result failed: {0}")]
    Encode(String),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("storage error: {0}")]
    Storage(#[from] tidemark_storage::Error),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        let text = e.to_string();
        if let Some(at) = text.find(crate::damaged::DAMAGED_MARKER) {
            return Error::DamagedFile(text[at..].to_string());
        }
        // Reading stored data failed where no file could be named (a page that does not
        // decode): the server's data is at fault, not the query.
        use arrow::error::ArrowError;
        use datafusion::error::DataFusionError as D;
        let read_failure = match e.find_root() {
            D::ParquetError(_) | D::ObjectStore(_) | D::IoError(_) => true,
            D::ArrowError(a, _) => {
                matches!(**a, ArrowError::ParquetError(_) | ArrowError::IoError(..))
            }
            _ => false,
        };
        if read_failure {
            return Error::ReadFailed(text);
        }
        if matches!(
            e.find_root(),
            datafusion::error::DataFusionError::ResourcesExhausted(_)
        ) {
            return Error::MemoryLimit(e.find_root().to_string());
        }
        Error::Sql(sentence(&e))
    }
}

/// A planning error as a sentence: a syntax error without the parser's Rust names (not
/// `SQL error: ParserError("Expected: ...")`), a planning error without DataFusion's
/// chain of contexts.
fn sentence(e: &datafusion::error::DataFusionError) -> String {
    use datafusion::error::DataFusionError as D;
    use datafusion::sql::sqlparser::parser::ParserError as P;
    match e.find_root() {
        D::SQL(p, _) => match p.as_ref() {
            P::TokenizerError(m) | P::ParserError(m) => format!("syntax error: {m}"),
            P::RecursionLimitExceeded => "syntax error: the statement nests too deeply".into(),
        },
        D::Plan(m) => m.clone(),
        _ => e.to_string(),
    }
}

impl Error {
    /// A short fixed name of the error's kind, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::DatabaseNotFound(_) => "not_found",
            Error::Sql(_) | Error::TooComplex(_) => "sql",
            Error::NotAllowed(_) => "not_allowed",
            Error::Timeout(_) => "timeout",
            Error::MemoryLimit(_) => "memory_limit",
            Error::TooManyQueries(_) => "too_many",
            Error::UnknownFormat(_) => "bad_request",
            Error::Encode(_) | Error::Arrow(_) | Error::Internal(_) => "internal",
            Error::DamagedFile(_) | Error::ReadFailed(_) => "damaged_file",
            Error::Storage(_) => "storage",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
