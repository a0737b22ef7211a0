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

/// Generations are unique across tables and their re-creations, so a cache keyed by a
/// table name never mistakes a re-created table for the one it replaced.
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

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
            s.generation = next_generation();
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

    /// Tables of a database that hold rows.
    pub fn tables_of(&self, db: &str) -> Vec<(Arc<str>, Arc<TableBuffer>)> {
        let Some(d) = self.dbs.read().get(db).cloned() else {
            return Vec::new();
        };
        let tables = d.tables.read();
        tables
            .iter()
            .map(|(n, t)| (Arc::clone(n), Arc::clone(t)))
            .collect()
    }

    /// Removes a table's first `n` batches (a snapshot persisted them; batches are only
    /// ever appended, so the first `n` are the ones the snapshot took).
    pub fn drain_front(&self, table: &TableBuffer, n: usize) {
        let mut s = table.state.write();
        let n = n.min(s.batches.len());
        let (mut bytes, mut rows) = (0, 0);
        for b in s.batches.drain(..n) {
            bytes += b.batch.get_array_memory_size();
            rows += b.batch.num_rows();
        }
        s.rows -= rows;
        s.generation = next_generation();
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Rewrites a table's batches with `f` (which returns the rows to keep), for deletes.
    ///
    /// # Errors
    /// Whatever `f` returns; batches already rewritten stay rewritten, which is harmless
    /// since `f` only ever removes rows the caller wants gone.
    pub fn rewrite<E>(
        &self,
        table: &TableBuffer,
        mut f: impl FnMut(&RecordBatch) -> Result<RecordBatch, E>,
    ) -> Result<(), E> {
        let mut s = table.state.write();
        let mut result = Ok(());
        let (mut before, mut after, mut rows) = (0usize, 0usize, 0usize);
        for b in &mut s.batches {
            match f(&b.batch) {
                Ok(kept) => {
                    before += b.batch.get_array_memory_size();
                    after += kept.get_array_memory_size();
                    rows += b.batch.num_rows() - kept.num_rows();
                    b.batch = kept;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        s.batches.retain(|b| b.batch.num_rows() > 0);
        s.rows -= rows;
        s.generation = next_generation();
        self.bytes.fetch_add(after, Ordering::Relaxed);
        self.bytes.fetch_sub(before, Ordering::Relaxed);
        result
    }

    /// Forgets a table's rows.
    pub fn drop_table(&self, db: &str, table: &str) {
        let Some(d) = self.dbs.read().get(db).cloned() else {
            return;
        };
        if let Some(t) = d.tables.write().remove(table) {
            self.drain_front(&t, usize::MAX);
        }
    }

    /// Forgets a database's rows.
    pub fn drop_database(&self, db: &str) {
        if let Some(d) = self.dbs.write().remove(db) {
            for t in d.tables.read().values() {
                self.drain_front(t, usize::MAX);
            }
        }
    }

    /// Bytes of Arrow memory held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}
