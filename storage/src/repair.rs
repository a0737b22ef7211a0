//! `tidemark repair`: rebuilds a lost or damaged catalog from the table files themselves.
//!
//! Every file under `tables/` is opened and described: from the description it carries in
//! its footer ([`FileDescription`], written since catalog format 1 gained it), or, for
//! older files, from its contents (columns from the Arrow schema, time and tag ranges from
//! the rows, window from its directory, dedup order from its id). The old catalog
//! directory, if any, is moved aside (never deleted), and a new one is written: each
//! database (its partitions from `log/<db>/`), its tables and columns, and its files,
//! with nothing marked persisted, so the whole log replays on top (rows that are in both
//! read the same). What only the catalog knew is lost and reported: retention settings,
//! and deletes whose rows were still in files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatchReader;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::ColumnKind;
use crate::catalog_store::CatalogStore;
use crate::error::{Error, Result};
use crate::manifest::{CatalogOp, FileMeta};
use crate::parquet_file::{FILE_DESCRIPTION_KEY, FileDescription, extend_ranges, unescape_hex};

/// What a repair did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Where the previous catalog was moved, if there was one.
    pub old_catalog: Option<PathBuf>,
    pub databases: Vec<(String, u32)>,
    pub files: usize,
    pub rows: u64,
    /// Files described from their contents (written before files described themselves).
    pub inferred: usize,
}

/// One table file found under `tables/`.
struct Found {
    db: String,
    table: String,
    meta: FileMeta,
    columns: Vec<(String, ColumnKind)>,
    inferred: bool,
}

/// Describes a file from its rows (files written before they described themselves).
fn infer(path: &Path, rel: &str, id: u64, window_start: i64, window_ns: i64) -> Result<Found> {
    let parquet_err = |e: parquet::errors::ParquetError| Error::Parquet {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?;
    let schema = reader.schema();
    let mut columns = Vec::new();
    for f in schema.fields() {
        let kind = ColumnKind::from_arrow(f.name(), f.data_type()).ok_or_else(|| {
            Error::Internal(format!(
                "{}: column {:?} has type {}, which no Tidemark table has",
                path.display(),
                f.name(),
                f.data_type()
            ))
        })?;
        columns.push((f.name().clone(), kind));
    }
    let mut meta = FileMeta::pending(id, rel.to_string(), window_start, window_ns, 0, id);
    meta.min_time = i64::MAX;
    meta.max_time = i64::MIN;
    let tags: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].1 == ColumnKind::Tag)
        .collect();
    let time = columns
        .iter()
        .position(|(_, k)| *k == ColumnKind::Time)
        .ok_or_else(|| Error::Internal(format!("{}: no time column", path.display())))?;
    for batch in reader {
        let batch = batch?;
        meta.rows += batch.num_rows() as u64;
        extend_ranges(&mut meta, &batch, &tags, time)?;
    }
    Ok(Found {
        db: String::new(),
        table: String::new(),
        meta,
        columns,
        inferred: true,
    })
}

/// Describes the file at `tables/<db>/<table>/<YYYY-MM-DD>/<HHMM>/<id>.parquet`.
fn describe(data_dir: &Path, path: &Path, window_ns: i64) -> Result<Found> {
    let rel_path = path.strip_prefix(data_dir).unwrap_or(path);
    let rel = rel_path.to_string_lossy().into_owned();
    let parts: Vec<String> = rel_path
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let bad = |why: &str| Error::Internal(format!("{}: {why}", path.display()));
    let [_, db, table, day, hhmm, name] = parts.as_slice() else {
        return Err(bad(
            "not where a table file belongs (tables/DB/TABLE/DAY/HHMM/ID.parquet)",
        ));
    };
    let id: u64 = name
        .strip_suffix(".parquet")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("its name is not a file id"))?;
    let window_start =
        chrono::NaiveDateTime::parse_from_str(&format!("{day} {hhmm}"), "%Y-%m-%d %H%M")
            .map_err(|_| bad("its directories are not a window start"))?
            .and_utc()
            .timestamp_nanos_opt()
            .ok_or_else(|| bad("window start out of range"))?;
    let (db, table) = (
        unescape_hex(db, b'~').ok_or_else(|| bad("bad database directory"))?,
        unescape_hex(table, b'~').ok_or_else(|| bad("bad table directory"))?,
    );
    let bytes = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Parquet {
        path: path.to_path_buf(),
        source: e,
    })?;
    let described = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == FILE_DESCRIPTION_KEY))
        .and_then(|e| e.value.as_deref())
        .map(serde_json::from_str::<FileDescription>);
    let mut found = match described {
        Some(Ok(d)) => Found {
            db: String::new(),
            table: String::new(),
            meta: FileMeta {
                path: rel.clone(),
                ..d.meta
            },
            columns: d.columns,
            inferred: false,
        },
        Some(Err(e)) => return Err(bad(&format!("its description does not read: {e}"))),
        None => infer(path, &rel, id, window_start, window_ns)?,
    };
    found.meta.bytes = bytes;
    found.db = db;
    found.table = table;
    Ok(found)
}

fn table_files(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.join("tables")];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Rebuilds `<data_dir>/catalog` from the table files (see the module header). Databases
/// with table files but no log directory get one of `partitions` partitions.
///
/// # Errors
/// A file that cannot be described (named), conflicting column types across files, I/O.
pub fn rebuild_catalog(data_dir: &Path, window_ns: i64, partitions: u32) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    // Describe everything before touching anything.
    let mut found = Vec::new();
    for path in table_files(data_dir)? {
        found.push(describe(data_dir, &path, window_ns)?);
    }
    let mut dbs: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    for f in found {
        dbs.entry(f.db.clone()).or_default().push(f);
    }
    let log_root = data_dir.join("log");
    if let Ok(entries) = std::fs::read_dir(&log_root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !name.starts_with('.') {
                dbs.entry(name).or_default();
            }
        }
    }

    let catalog = data_dir.join("catalog");
    if catalog.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        let aside = data_dir.join(format!("catalog.before-repair-{stamp}"));
        std::fs::rename(&catalog, &aside).map_err(|e| Error::io(&catalog, e))?;
        report.old_catalog = Some(aside);
    }
    let store = CatalogStore::open(&catalog)?;
    let mut op_id = 1;
    for (db, files) in dbs {
        let db_log = log_root.join(&db);
        let existing = std::fs::read_dir(&db_log)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                    .count() as u32
            })
            .unwrap_or(0);
        let parts = if existing > 0 {
            existing
        } else {
            for p in 0..partitions.max(1) {
                let dir = db_log.join(p.to_string());
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            partitions.max(1)
        };
        store.commit(CatalogOp::CreateDatabase {
            name: db.clone(),
            partitions: parts,
            retention_ns: None,
        })?;
        report.databases.push((db.clone(), parts));
        if files.is_empty() {
            continue;
        }
        let mut tables: BTreeMap<String, Vec<(String, ColumnKind)>> = BTreeMap::new();
        let mut metas = Vec::new();
        let mut snapshot = 0;
        for f in files {
            let columns = tables.entry(f.table.clone()).or_default();
            for (name, kind) in &f.columns {
                match columns.iter().find(|(n, _)| n == name) {
                    Some((_, k)) if k != kind => {
                        return Err(Error::Internal(format!(
                            "column {name:?} of {db}.{} is {k:?} in one file and {kind:?} in {}",
                            f.table, f.meta.path
                        )));
                    }
                    Some(_) => {}
                    None => columns.push((name.clone(), *kind)),
                }
            }
            snapshot = snapshot.max(f.meta.order);
            report.rows += f.meta.rows;
            report.files += 1;
            report.inferred += usize::from(f.inferred);
            metas.push((f.table, f.meta));
        }
        store.commit(CatalogOp::Persist {
            op_id,
            db: db.clone(),
            snapshot,
            tables,
            files: metas,
            // Nothing is known persisted: the whole log replays over the files.
            wal_persisted: vec![0; parts as usize],
            wal_written: Vec::new(),
        })?;
        op_id += 1;
    }
    Ok(report)
}
