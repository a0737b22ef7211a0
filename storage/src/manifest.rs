//! The persisted catalog's state and the operations that change it.
//!
//! Everything the node must remember beyond the write-ahead log lives here: databases (their
//! partition count and retention), tables (columns, retention, Parquet files), tombstones of
//! deletes, dropped tables, and how far each partition log is covered by Parquet files.
//!
//! State changes only by applying a [`CatalogOp`]; [`crate::catalog_store::CatalogStore`]
//! logs each op durably before applying it, and replays the ops on start, so the in-memory
//! state after a restart equals the state before it. Ops are validated by `apply` before they
//! are logged, so a logged op always applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::ColumnKind;
use crate::error::{Error, Result};

/// One Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Unique within the node, never reused; a later id means a later write.
    pub id: u64,
    /// Path relative to the data directory.
    pub path: String,
    /// Start of the time window the file belongs to (ns since the epoch).
    pub window_start: i64,
    pub window_ns: i64,
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub bytes: u64,
    /// 0 for a file written by the persister, n+1 for a compaction of level-n files.
    pub level: u32,
    /// Dedup precedence: rows of a file with a higher `order` win over equal keys of a
    /// file with a lower one. A snapshot's sequence number; a compaction output takes the
    /// highest of its inputs.
    pub order: u64,
    /// Min and max value of each tag column present in the file.
    pub tag_ranges: BTreeMap<String, (String, String)>,
}

impl FileMeta {
    /// A file about to be written: its identity and place; the writer fills in the rest.
    pub fn pending(
        id: u64,
        path: String,
        window_start: i64,
        window_ns: i64,
        level: u32,
        order: u64,
    ) -> Self {
        Self {
            id,
            path,
            window_start,
            window_ns,
            min_time: 0,
            max_time: 0,
            rows: 0,
            bytes: 0,
            level,
            order,
            tag_ranges: BTreeMap::new(),
        }
    }
}

/// Equality predicate of a delete: `tag = value`, all of them must hold.
pub type TagPredicate = Vec<(String, String)>;

/// A delete that hides rows written before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: u64,
    /// `None`: every table of the database.
    pub table: Option<String>,
    /// Inclusive time range.
    pub start: i64,
    pub stop: i64,
    pub predicate: TagPredicate,
    /// Files with an id below this were written before the delete.
    pub files_before: u64,
    /// Per partition, the log offset after the delete; records below it predate it.
    pub wal_next: Vec<u64>,
}

impl Tombstone {
    pub fn applies_to_table(&self, table: &str) -> bool {
        self.table.as_deref().is_none_or(|t| t == table)
    }

    /// Whether the file (of a table the tombstone applies to) predates the delete and
    /// overlaps its time range, i.e. may hold rows it hides.
    pub fn hides_rows_of(&self, f: &FileMeta) -> bool {
        f.id < self.files_before && self.start <= f.max_time && self.stop >= f.min_time
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableState {
    pub columns: Vec<(String, ColumnKind)>,
    pub retention_ns: Option<i64>,
    /// By file id.
    pub files: BTreeMap<u64, FileMeta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseState {
    pub partitions: u32,
    pub retention_ns: Option<i64>,
    /// Per partition: records below this offset are in Parquet files.
    pub wal_persisted: Vec<u64>,
    /// Per partition: the log reached this offset (recorded at each persist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wal_written: Vec<u64>,
    pub tables: BTreeMap<String, TableState>,
    pub tombstones: Vec<Tombstone>,
    /// Tables dropped, with the per-partition log offset after the drop: replay skips the
    /// table's records below it.
    pub dropped_tables: BTreeMap<String, Vec<u64>>,
}

impl DatabaseState {
    /// The offset partition `p`'s log must reach at least: what the catalog saw written
    /// (persists, deletes and drops record the log's end).
    pub fn log_must_reach(&self, p: usize) -> u64 {
        let at = |v: &Vec<u64>| v.get(p).copied().unwrap_or(0);
        self.tombstones
            .iter()
            .map(|t| at(&t.wal_next))
            .chain(self.dropped_tables.values().map(at))
            .chain([at(&self.wal_persisted), at(&self.wal_written)])
            .max()
            .unwrap_or(0)
    }

    /// Retention of a table: its own, else the database's.
    pub fn retention_of(&self, table: &str) -> Option<i64> {
        self.tables
            .get(table)
            .and_then(|t| t.retention_ns)
            .or(self.retention_ns)
    }
}

/// The whole persisted catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogState {
    pub next_file_id: u64,
    pub next_op_id: u64,
    pub next_snapshot: u64,
    pub databases: BTreeMap<String, DatabaseState>,
    /// Files being written by an unfinished operation, by op id (relative paths).
    pub intents: BTreeMap<u64, Vec<String>>,
}

/// A change to the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CatalogOp {
    CreateDatabase {
        name: String,
        partitions: u32,
        retention_ns: Option<i64>,
    },
    /// `table: None` sets the database's retention.
    SetRetention {
        db: String,
        table: Option<String>,
        retention_ns: Option<i64>,
    },
    /// About to write these files; a restart that finds the intent open deletes them.
    Intent {
        op_id: u64,
        paths: Vec<String>,
        /// File ids below this are taken (so ids are never reused, even after a crash).
        next_file_id: u64,
    },
    /// An operation that will never finish (found open at start); its files are gone.
    AbortIntent {
        op_id: u64,
    },
    /// A snapshot of the buffer was written: its files, the columns of its tables, and
    /// how far each partition log is now covered.
    Persist {
        op_id: u64,
        db: String,
        snapshot: u64,
        tables: BTreeMap<String, Vec<(String, ColumnKind)>>,
        files: Vec<(String, FileMeta)>,
        wal_persisted: Vec<u64>,
        /// Per partition, where the log ended when the persist committed: a log found
        /// shorter at start lost segments (absent in catalogs written before it existed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        wal_written: Vec<u64>,
    },
    /// Files replaced (compaction) or removed (retention).
    ReplaceFiles {
        op_id: Option<u64>,
        db: String,
        table: String,
        added: Vec<FileMeta>,
        removed: Vec<u64>,
    },
    Delete {
        db: String,
        tombstone: Tombstone,
    },
    /// Tombstones that no longer hide anything.
    RetireTombstones {
        db: String,
        ids: Vec<u64>,
    },
    DropTable {
        db: String,
        table: String,
        wal_next: Vec<u64>,
    },
    DropDatabase {
        db: String,
    },
}

fn missing_db(db: &str) -> Error {
    Error::Catalog(format!("database {db:?} does not exist"))
}

impl CatalogState {
    /// Applies an op, or fails without changing anything.
    ///
    /// # Errors
    /// [`Error::Catalog`] when the op does not fit the state (unknown database, ...).
    pub fn apply(&mut self, op: &CatalogOp) -> Result<()> {
        // Validate on a copy of what is touched would cost a clone of the state; instead
        // every arm checks before it mutates.
        match op {
            CatalogOp::CreateDatabase {
                name,
                partitions,
                retention_ns,
            } => {
                if self.databases.contains_key(name) {
                    return Err(Error::Catalog(format!("database {name:?} already exists")));
                }
                self.databases.insert(
                    name.clone(),
                    DatabaseState {
                        partitions: *partitions,
                        retention_ns: *retention_ns,
                        wal_persisted: vec![0; *partitions as usize],
                        ..DatabaseState::default()
                    },
                );
            }
            CatalogOp::SetRetention {
                db,
                table,
                retention_ns,
            } => {
                let d = self.databases.get_mut(db).ok_or_else(|| missing_db(db))?;
                match table {
                    None => d.retention_ns = *retention_ns,
                    // The caller checked the table exists; it may not have files yet.
                    Some(t) => d.tables.entry(t.clone()).or_default().retention_ns = *retention_ns,
                }
            }
            CatalogOp::Intent {
                op_id,
                paths,
                next_file_id,
            } => {
                self.intents
                    .entry(*op_id)
                    .or_default()
                    .extend(paths.iter().cloned());
                self.next_op_id = self.next_op_id.max(op_id + 1);
                self.next_file_id = self.next_file_id.max(*next_file_id);
            }
            CatalogOp::AbortIntent { op_id } => {
                self.intents.remove(op_id);
            }
            CatalogOp::Persist {
                op_id,
                db,
                snapshot,
                tables,
                files,
                wal_persisted,
                wal_written,
            } => {
                let d = self.databases.get_mut(db).ok_or_else(|| missing_db(db))?;
                if wal_persisted.len() != d.wal_persisted.len() {
                    return Err(Error::Catalog(format!(
                        "persist of {db:?} covers {} partitions, it has {}",
                        wal_persisted.len(),
                        d.wal_persisted.len()
                    )));
                }
                for (table, columns) in tables {
                    let t = d.tables.entry(table.clone()).or_default();
                    for (name, kind) in columns {
                        if !t.columns.iter().any(|(n, _)| n == name) {
                            t.columns.push((name.clone(), *kind));
                        }
                    }
                }
                for (table, file) in files {
                    self.next_file_id = self.next_file_id.max(file.id + 1);
                    d.tables
                        .entry(table.clone())
                        .or_default()
                        .files
                        .insert(file.id, file.clone());
                }
                for (have, new) in d.wal_persisted.iter_mut().zip(wal_persisted) {
                    *have = (*have).max(*new);
                }
                if !wal_written.is_empty() {
                    d.wal_written
                        .resize(wal_written.len().max(d.wal_written.len()), 0);
                    for (have, new) in d.wal_written.iter_mut().zip(wal_written) {
                        *have = (*have).max(*new);
                    }
                }
                self.next_snapshot = self.next_snapshot.max(snapshot + 1);
                self.intents.remove(op_id);
            }
            CatalogOp::ReplaceFiles {
                op_id,
                db,
                table,
                added,
                removed,
            } => {
                let d = self.databases.get_mut(db).ok_or_else(|| missing_db(db))?;
                // A table dropped while its compaction ran must stay dropped.
                let t = d.tables.get_mut(table).ok_or_else(|| {
                    Error::Catalog(format!("table {table:?} of {db:?} does not exist"))
                })?;
                for id in removed {
                    t.files.remove(id);
                }
                for file in added {
                    self.next_file_id = self.next_file_id.max(file.id + 1);
                    t.files.insert(file.id, file.clone());
                }
                if let Some(op_id) = op_id {
                    self.intents.remove(op_id);
                }
            }
            CatalogOp::Delete { db, tombstone } => {
                let d = self.databases.get_mut(db).ok_or_else(|| missing_db(db))?;
                self.next_op_id = self.next_op_id.max(tombstone.id + 1);
                d.tombstones.push(tombstone.clone());
            }
            CatalogOp::RetireTombstones { db, ids } => {
                let d = self.databases.get_mut(db).ok_or_else(|| missing_db(db))?;
                d.tombstones.retain(|t| !ids.contains(&t.id));
            }
            CatalogOp::DropTable {
                db,
                table,
                wal_next,
            } => {
                let d = self.databases.get_mut(db).ok_or_else(|| missing_db(db))?;
                d.tables.remove(table);
                d.tombstones.retain(|t| t.table.as_deref() != Some(table));
                d.dropped_tables.insert(table.clone(), wal_next.clone());
            }
            CatalogOp::DropDatabase { db } => {
                if self.databases.remove(db).is_none() {
                    return Err(missing_db(db));
                }
            }
        }
        Ok(())
    }

    /// Takes an id for an operation or a tombstone.
    pub fn take_op_id(&mut self) -> u64 {
        let id = self.next_op_id;
        self.next_op_id += 1;
        id
    }

    /// Every file the catalog references, as relative paths.
    pub fn live_paths(&self) -> impl Iterator<Item = &str> {
        self.databases
            .values()
            .flat_map(|d| d.tables.values())
            .flat_map(|t| t.files.values())
            .map(|f| f.path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: u64) -> FileMeta {
        let path = format!("tables/db/cpu/{id}.parquet");
        FileMeta {
            min_time: 1,
            max_time: 2,
            rows: 2,
            bytes: 100,
            ..FileMeta::pending(id, path, 0, 600_000_000_000, 0, id)
        }
    }

    #[test]
    fn ops_build_state_and_bad_ops_change_nothing() {
        let mut s = CatalogState::default();
        s.apply(&CatalogOp::CreateDatabase {
            name: "db".into(),
            partitions: 2,
            retention_ns: None,
        })
        .unwrap();
        let before = s.clone();
        assert!(
            s.apply(&CatalogOp::CreateDatabase {
                name: "db".into(),
                partitions: 2,
                retention_ns: None,
            })
            .is_err()
        );
        assert!(
            s.apply(&CatalogOp::Persist {
                op_id: 0,
                db: "db".into(),
                snapshot: 0,
                tables: BTreeMap::new(),
                files: vec![],
                wal_persisted: vec![1],
                wal_written: vec![],
            })
            .is_err()
        );
        assert_eq!(s, before);
        s.apply(&CatalogOp::Intent {
            op_id: 7,
            paths: vec!["x".into()],
            next_file_id: 0,
        })
        .unwrap();
        s.apply(&CatalogOp::Persist {
            op_id: 7,
            db: "db".into(),
            snapshot: 3,
            tables: BTreeMap::from([(
                "cpu".to_string(),
                vec![("host".to_string(), ColumnKind::Tag)],
            )]),
            files: vec![("cpu".into(), file(4))],
            wal_persisted: vec![10, 0],
            wal_written: vec![12, 3],
        })
        .unwrap();
        assert!(s.intents.is_empty());
        assert_eq!(s.next_file_id, 5);
        assert_eq!(s.next_snapshot, 4);
        assert_eq!(s.databases["db"].wal_persisted, [10, 0]);
        assert_eq!(s.databases["db"].wal_written, [12, 3]);
        assert_eq!(s.databases["db"].log_must_reach(0), 12);
        assert_eq!(s.databases["db"].log_must_reach(1), 3);
        s.apply(&CatalogOp::ReplaceFiles {
            op_id: None,
            db: "db".into(),
            table: "cpu".into(),
            added: vec![file(9)],
            removed: vec![4],
        })
        .unwrap();
        let files: Vec<u64> = s.databases["db"].tables["cpu"]
            .files
            .keys()
            .copied()
            .collect();
        assert_eq!(files, [9]);
    }
}
