//! The write buffer: acknowledged rows held in memory as Arrow batches, per table.
//!
//! Each batch keeps the sequence number (the log offset of the record that carried it) so
//! that queries resolve duplicates last-write-wins no matter in which order concurrent
//! writers applied their batches. A generation counter per table lets readers cache work
//! derived from a snapshot until the table changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;

/// One applied batch.
#[derive(Debug, Clone)]
pub struct BufferedBatch {
    /// Write sequence: later writes of the same series have higher numbers.
    pub seq: u64,
    pub batch: RecordBatch,
}

/// A consistent view of one table's buffered rows.
#[derive(Debug, Clone, Default)]
pub struct TableSnapshot {
    pub generation: u64,
    pub batches: Vec<BufferedBatch>,
}

#[derive(Debug, Default)]
struct TableState {
    batches: Vec<BufferedBatch>,
    generation: u64,
    rows: usize,
}

/// Buffered rows of one table.
#[derive(Debug, Default)]
pub struct TableBuffer {
    state: RwLock<TableState>,
}

impl TableBuffer {
    pub fn snapshot(&self) -> TableSnapshot {
        let s = self.state.read();
        TableSnapshot {
            generation: s.generation,
            batches: s.batches.clone(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.state.read().generation
    }

    pub fn rows(&self) -> usize {
        self.state.read().rows
    }
}

#[derive(Debug, Default)]
struct DbBuffer {
    tables: RwLock<HashMap<Arc<str>, Arc<TableBuffer>>>,
}

/// All buffered rows of a node, with the memory they use.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    dbs: RwLock<HashMap<Arc<str>, Arc<DbBuffer>>>,
    bytes: AtomicUsize,
}

impl WriteBuffer {
    /// Adds a batch to a table.
    pub fn apply(&self, db: &str, table: &Arc<str>, seq: u64, batch: RecordBatch) {
        let size = batch.get_array_memory_size();
        let rows = batch.num_rows();
        let table_buffer = self.table_or_create(db, table);
        {
            let mut s = table_buffer.state.write();
            s.batches.push(BufferedBatch { seq, batch });
            s.generation += 1;
            s.rows += rows;
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    fn table_or_create(&self, db: &str, table: &Arc<str>) -> Arc<TableBuffer> {
        let db_buffer = {
            let dbs = self.dbs.read();
            dbs.get(db).cloned()
        };
        let db_buffer = match db_buffer {
            Some(d) => d,
            None => Arc::clone(self.dbs.write().entry(Arc::from(db)).or_default()),
        };
        let existing = db_buffer.tables.read().get(&**table).cloned();
        match existing {
            Some(t) => t,
            None => Arc::clone(
                db_buffer
                    .tables
                    .write()
                    .entry(Arc::clone(table))
                    .or_default(),
            ),
        }
    }

    pub fn table(&self, db: &str, table: &str) -> Option<Arc<TableBuffer>> {
        let dbs = self.dbs.read();
        let d = dbs.get(db)?;
        d.tables.read().get(table).cloned()
    }

    /// Bytes of Arrow memory held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}
