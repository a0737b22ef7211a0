//! The schema catalog: databases, their tables, and each table's columns.
//!
//! Schema is decided on write: the first write of a column fixes its kind (tag, or field of
//! one type). Writers validate against a snapshot (`Arc<TableSchema>`) and then merge the
//! columns they introduced with [`DatabaseSchema::merge_columns`], which re-checks under the
//! lock so that two racing writers cannot give one column two types.
//!
//! Until the persisted catalog lands, the catalog is rebuilt on start from the log: every
//! logged batch carries its Arrow schema, and column kinds follow from the Arrow types.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name of the time column every table has.
pub const TIME_COLUMN: &str = "time";

/// Type of a field column, as written in line protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Float,
    Integer,
    UInteger,
    String,
    Boolean,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::UInteger => "unsigned integer",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            FieldType::Float => DataType::Float64,
            FieldType::Integer => DataType::Int64,
            FieldType::UInteger => DataType::UInt64,
            FieldType::String => DataType::Utf8,
            FieldType::Boolean => DataType::Boolean,
        }
    }
}

/// What a column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Tag,
    Field(FieldType),
    Time,
}

impl ColumnKind {
    pub fn describe(self) -> String {
        match self {
            ColumnKind::Tag => "a tag".to_string(),
            ColumnKind::Field(FieldType::Integer) => "an integer field".to_string(),
            ColumnKind::Field(t) => format!("a {} field", t.name()),
            ColumnKind::Time => "the time column".to_string(),
        }
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnKind::Tag => tag_type(),
            ColumnKind::Field(t) => t.arrow_type(),
            ColumnKind::Time => time_type(),
        }
    }

    /// The kind a logged Arrow column stands for.
    pub fn from_arrow(name: &str, dt: &DataType) -> Option<Self> {
        Some(match dt {
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                ColumnKind::Tag
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) if name == TIME_COLUMN => ColumnKind::Time,
            DataType::Float64 => ColumnKind::Field(FieldType::Float),
            DataType::Int64 => ColumnKind::Field(FieldType::Integer),
            DataType::UInt64 => ColumnKind::Field(FieldType::UInteger),
            DataType::Utf8 => ColumnKind::Field(FieldType::String),
            DataType::Boolean => ColumnKind::Field(FieldType::Boolean),
            _ => return None,
        })
    }
}

pub fn tag_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Makes the Arrow field of a column.
pub fn arrow_field(name: &str, kind: ColumnKind) -> Field {
    Field::new(name, kind.arrow_type(), kind != ColumnKind::Time)
}

/// Ensures the dictionary key type used everywhere stays one type.
pub type TagKey = Int32Type;

/// A table's columns. Immutable: adding columns makes a new one.
#[derive(Debug)]
pub struct TableSchema {
    name: Arc<str>,
    /// Tags by name, then fields by name, then `time`.
    columns: Vec<(Arc<str>, ColumnKind)>,
    by_name: HashMap<Arc<str>, ColumnKind>,
    arrow: SchemaRef,
}

impl TableSchema {
    fn build(name: Arc<str>, mut by_name: HashMap<Arc<str>, ColumnKind>) -> Self {
        by_name.insert(Arc::from(TIME_COLUMN), ColumnKind::Time);
        let mut columns: Vec<(Arc<str>, ColumnKind)> =
            by_name.iter().map(|(n, k)| (Arc::clone(n), *k)).collect();
        columns.sort_by(|(an, ak), (bn, bk)| {
            let rank = |k: &ColumnKind| match k {
                ColumnKind::Tag => 0,
                ColumnKind::Field(_) => 1,
                ColumnKind::Time => 2,
            };
            rank(ak).cmp(&rank(bk)).then_with(|| an.cmp(bn))
        });
        let arrow = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, k)| arrow_field(n, *k))
                .collect::<Vec<_>>(),
        ));
        Self {
            name,
            columns,
            by_name,
            arrow,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn column(&self, name: &str) -> Option<ColumnKind> {
        self.by_name.get(name).copied()
    }

    /// Columns in schema order.
    pub fn columns(&self) -> &[(Arc<str>, ColumnKind)] {
        &self.columns
    }

    /// Tag column names, sorted: the series key order.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|(_, k)| *k == ColumnKind::Tag)
            .map(|(n, _)| &**n)
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::clone(&self.arrow)
    }
}

/// A database: its partition count (fixed at creation) and its tables.
#[derive(Debug)]
pub struct DatabaseSchema {
    name: Arc<str>,
    partitions: u32,
    tables: RwLock<BTreeMap<Arc<str>, Arc<TableSchema>>>,
}

impl DatabaseSchema {
    pub fn new(name: &str, partitions: u32) -> Self {
        Self {
            name: Arc::from(name),
            partitions,
            tables: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn table(&self, name: &str) -> Option<Arc<TableSchema>> {
        self.tables.read().get(name).cloned()
    }

    /// Tables sorted by name.
    pub fn tables(&self) -> Vec<Arc<TableSchema>> {
        self.tables.read().values().cloned().collect()
    }

    /// Forgets a table.
    pub fn drop_table(&self, name: &str) {
        self.tables.write().remove(name);
    }

    /// Adds columns to a table (creating it), failing without change if any of them
    /// already exists with another kind.
    ///
    /// # Errors
    /// [`Error::SchemaConflict`] naming the column and both kinds.
    pub fn merge_columns(&self, table: &str, new: &[(Arc<str>, ColumnKind)]) -> Result<()> {
        let mut tables = self.tables.write();
        let current = tables.get(table);
        let mut by_name = current.map(|t| t.by_name.clone()).unwrap_or_default();
        let mut changed = current.is_none();
        for (col, kind) in new {
            match by_name.get(col) {
                Some(existing) if existing == kind => {}
                Some(existing) => {
                    return Err(Error::SchemaConflict {
                        table: table.to_string(),
                        column: col.to_string(),
                        existing: existing.describe(),
                        attempted: kind.describe(),
                    });
                }
                None => {
                    by_name.insert(Arc::clone(col), *kind);
                    changed = true;
                }
            }
        }
        if changed {
            let name: Arc<str> = Arc::from(table);
            tables.insert(
                Arc::clone(&name),
                Arc::new(TableSchema::build(name, by_name)),
            );
        }
        Ok(())
    }

    /// Adds the columns of a logged Arrow schema (replay).
    ///
    /// # Errors
    /// A column whose Arrow type does not stand for a column kind, or a conflict.
    pub fn merge_arrow_schema(&self, table: &str, schema: &Schema) -> Result<()> {
        let mut cols = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let kind = ColumnKind::from_arrow(f.name(), f.data_type()).ok_or_else(|| {
                Error::Payload(format!(
                    "column {:?} of table {table:?} has type {} that no column kind uses",
                    f.name(),
                    f.data_type()
                ))
            })?;
            if kind != ColumnKind::Time {
                cols.push((Arc::from(f.name().as_str()), kind));
            }
        }
        self.merge_columns(table, &cols)
    }
}

/// All databases of a node.
#[derive(Debug, Default)]
pub struct Catalog {
    databases: RwLock<BTreeMap<Arc<str>, Arc<DatabaseSchema>>>,
}

impl Catalog {
    pub fn database(&self, name: &str) -> Option<Arc<DatabaseSchema>> {
        self.databases.read().get(name).cloned()
    }

    pub fn databases(&self) -> Vec<Arc<DatabaseSchema>> {
        self.databases.read().values().cloned().collect()
    }

    /// Forgets a database.
    pub fn remove_database(&self, name: &str) {
        self.databases.write().remove(name);
    }

    /// Registers a database, or returns the one already registered under that name.
    pub fn insert_database(&self, db: DatabaseSchema) -> Arc<DatabaseSchema> {
        let mut dbs = self.databases.write();
        Arc::clone(
            dbs.entry(Arc::clone(&db.name))
                .or_insert_with(|| Arc::new(db)),
        )
    }
}

/// Checks a database name: it becomes a directory name.
///
/// # Errors
/// [`Error::InvalidDatabaseName`] saying what is wrong.
pub fn validate_database_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidDatabaseName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("it is longer than 64 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("it must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return bad("only ASCII letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_tags_then_fields_then_time() {
        let db = DatabaseSchema::new("db", 1);
        db.merge_columns(
            "cpu",
            &[
                (Arc::from("usage"), ColumnKind::Field(FieldType::Float)),
                (Arc::from("host"), ColumnKind::Tag),
                (Arc::from("az"), ColumnKind::Tag),
            ],
        )
        .unwrap();
        let t = db.table("cpu").unwrap();
        let names: Vec<&str> = t.columns().iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["az", "host", "usage", "time"]);
    }

    #[test]
    fn a_conflict_changes_nothing() {
        let db = DatabaseSchema::new("db", 1);
        db.merge_columns(
            "cpu",
            &[(Arc::from("v"), ColumnKind::Field(FieldType::Float))],
        )
        .unwrap();
        let err = db
            .merge_columns(
                "cpu",
                &[
                    (Arc::from("w"), ColumnKind::Tag),
                    (Arc::from("v"), ColumnKind::Field(FieldType::Integer)),
                ],
            )
            .unwrap_err();
        assert!(err.to_string().contains("a float field"), "{err}");
        assert!(db.table("cpu").unwrap().column("w").is_none());
    }

    #[test]
    fn database_names_are_checked() {
        assert!(validate_database_name("metrics_1").is_ok());
        assert!(validate_database_name("../etc").is_err());
        assert!(validate_database_name("").is_err());
        assert!(validate_database_name("a/b").is_err());
    }
}
