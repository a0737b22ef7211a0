//! tidemark-engine: the [`Node`] that wires storage and query together.
//!
//! The crate holds the node's write path (validate -> log -> buffer), its query entry
//! point, maintenance (persist, compaction, retention) and metrics; `topology` reads,
//! validates, plans and runs YAML dataflow topologies, and `stream` reads a table's
//! rows back from the log for them; `topics` keeps user topics, partitioned logs of keyed
//! records. The cluster
//! will live here too.

pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod node;
mod process_metrics;
pub mod stream;
pub mod topics;
pub mod topology;

pub use error::{Error, Result};
pub use maintenance::MaintenanceConfig;
pub use node::{Durability, Node, NodeConfig, WriteSummary, lock_data_dir};

/// Makes ring the process's TLS crypto provider, which every HTTPS client (reqwest over
/// rustls) needs before it is built; a provider already installed stays. Tidemark builds
/// rustls with ring because aws-lc-rs, reqwest's default, needs cmake to build.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
