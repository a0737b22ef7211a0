//! tidemark-connectors: the protocols Tidemark speaks.
//!
//! `line_protocol` turns InfluxDB line protocol into validated Arrow batches;
//! `http` serves the write, query and health endpoints over axum.

pub mod line_protocol;
