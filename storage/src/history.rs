//! Recent compaction runs, kept in memory for `system.compactions`.

use std::collections::VecDeque;

use parking_lot::Mutex;

/// How many runs are remembered.
const KEEP: usize = 200;

/// One compaction of one table's time window.
#[derive(Debug, Clone)]
pub struct CompactionRun {
    pub db: String,
    pub table: String,
    pub window_start: i64,
    /// Wall clock at the start, ns since the epoch.
    pub started_at: i64,
    pub duration_ms: u64,
    pub input_files: u64,
    pub output_files: u64,
    pub input_rows: u64,
    pub output_rows: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub tombstones_applied: u64,
    /// Why the run failed, if it did (nothing was changed then).
    pub error: Option<String>,
}

/// The most recent runs, oldest first.
#[derive(Debug, Default)]
pub struct CompactionHistory {
    runs: Mutex<VecDeque<CompactionRun>>,
}

impl CompactionHistory {
    pub fn record(&self, run: CompactionRun) {
        let mut runs = self.runs.lock();
        if runs.len() == KEEP {
            runs.pop_front();
        }
        runs.push_back(run);
    }

    pub fn runs(&self) -> Vec<CompactionRun> {
        self.runs.lock().iter().cloned().collect()
    }
}
