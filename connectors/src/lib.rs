//! tidemark-connectors: the protocols Tidemark speaks.
//!
//! `line_protocol` (re-exported from storage, where topologies' file sources read it too)
//! turns InfluxDB line protocol into validated Arrow batches; `write` is the
//! one routine that takes a body into a node; `http` serves the write, query and health
//! endpoints over axum; `import` reads line protocol, CSV and Parquet files into batches of
//! line protocol for `tidemark import`; `internal` writes the node's own metrics into its
//! `_internal` database.

mod error;
pub mod http;
pub mod import;
pub mod internal;
pub mod tsbs;
pub mod write;

pub use error::Error;
pub use tidemark_storage::line_protocol;
