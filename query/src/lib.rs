//! tidemark-query: SQL over Tidemark's data with DataFusion.
//!
//! `provider` maps a database to DataFusion's catalog and each table to a `TableProvider`
//! over the write buffer and the table's Parquet files; `dedup` resolves duplicate points
//! in the buffer last-write-wins and `merge` does the same across sorted sources while
//! streaming; `system` exposes the node's state as tables; `engine` runs read-only SQL
//! under limits (on its own threads; `coop` keeps joins stoppable); `format` encodes
//! results for the front ends; `damaged` marks table files a read failed on; `complexity` bounds a statement's nesting before it is
//! parsed into a tree.

pub mod complexity;
mod coop;
pub mod damaged;
pub mod dedup;
pub mod engine;
pub mod error;
pub mod format;
pub mod functions;
pub mod lastpoint;
pub mod merge;
pub mod provider;
pub mod system;

pub use engine::{QueryConfig, QueryEngine, QueryOutput, QueryStream};
pub use error::{Error, Result};
pub use format::Format;
