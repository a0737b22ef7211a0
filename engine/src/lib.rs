//! tidemark-engine: the [`Node`] that wires storage and query together.
//!
//! The crate holds the node's write path (validate -> log -> buffer), its query entry
//! point, maintenance (persist, compaction, retention) and metrics; `topology` reads,
//! validates and plans YAML dataflow topologies (running them comes next). The cluster
//! will live here too.

pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod node;
pub mod topology;

pub use error::{Error, Result};
pub use maintenance::MaintenanceConfig;
pub use node::{Durability, Node, NodeConfig, WriteSummary};
