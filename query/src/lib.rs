//! tidemark-query: SQL over Tidemark's data with DataFusion.
//!
//! `provider` maps a database to DataFusion's catalog and each table to a `TableProvider`
//! over the write buffer; `dedup` resolves duplicate points last-write-wins; `engine` runs
//! read-only SQL under limits; `format` encodes results for the front ends.

pub mod dedup;
pub mod engine;
pub mod error;
pub mod format;
pub mod provider;

pub use engine::{QueryConfig, QueryEngine, QueryOutput};
pub use error::{Error, Result};
pub use format::Format;
