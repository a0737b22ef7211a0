//! tidemark-storage: where acknowledged data lives.
//!
//! Data flows `line_protocol` (InfluxDB line protocol, parsed straight into `batch`'s
//! builders) -> `batch` (validated Arrow columns of a write, split by partition) ->
//! `payload` (encoded for the log) -> `log` (durable, group-committed partition logs) ->
//! `buffer` (in-memory Arrow batches that queries read). `catalog` holds the schema every
//! step validates against. On start, replaying the log rebuilds catalog and buffer.
//! `tokens` keeps the hashes of API tokens; `repair` rebuilds a lost catalog from the
//! table files.

pub mod batch;
pub mod buffer;
pub mod catalog;
pub mod catalog_store;
pub mod duration;
pub mod error;
pub mod failpoint;
pub mod history;
pub mod line_protocol;
pub mod log;
pub mod manifest;
pub mod parquet_file;
pub mod payload;
pub mod repair;
pub mod sealed;
pub mod tokens;
pub mod topic;

pub use error::{Error, Result};
