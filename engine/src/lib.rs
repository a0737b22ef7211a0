//! tidemark-engine: the [`Node`] that wires storage and query together.
//!
//! Topologies, the scheduler and the cluster will live here too; today the crate holds the
//! node's write path (validate -> log -> buffer) and its query entry point.

pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod node;

pub use error::{Error, Result};
pub use maintenance::MaintenanceConfig;
pub use node::{Durability, Node, NodeConfig, WriteSummary};
