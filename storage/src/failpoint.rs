//! Crash points for tests: `TIDEMARK_FAILPOINTS=name[,name...]` makes the process abort the
//! moment it reaches a named point, exactly as a power cut or `kill -9` would stop it there.
//! Crash tests use this to stop the server between the steps of persist, catalog commit and
//! compaction; without the variable every point is a no-op costing one relaxed load.

use std::sync::OnceLock;

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("TIDEMARK_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Aborts the process if the point `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        eprintln!("tidemark: failpoint {name} reached, aborting");
        std::process::abort();
    }
}
