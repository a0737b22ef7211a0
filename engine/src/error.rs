//! The engine crate's one error type.

/// Errors of the node: storage and query errors, plus what the node itself decides.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] tidemark_storage::Error),

    #[error(transparent)]
    Query(#[from] tidemark_query::Error),

    #[error("database {0:?} not found")]
    DatabaseNotFound(String),

    #[error("database {0:?} already exists")]
    DatabaseExists(String),

    #[error("table {table:?} not found in database {db:?}")]
    TableNotFound { db: String, table: String },

    #[error("invalid request: {0}")]
    Invalid(String),

    #[error("cannot create database {name:?}: the node already has the maximum of {max} databases")]
    TooManyDatabases { name: String, max: usize },

    #[error("topic {0:?} not found")]
    TopicNotFound(String),

    #[error("topic {0:?} already exists")]
    TopicExists(String),

    #[error("cannot create topic {name:?}: the node already has the maximum of {max} topics")]
    TooManyTopics { name: String, max: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
