//! Builds the Arrow batches of one write request, validated and split by partition.
//!
//! A front end (the line protocol parser) hands each parsed row to
//! [`WriteBuilder::push_row`]. The row is checked completely against the catalog snapshot
//! and the columns this request introduced before anything is appended, so a rejected row
//! leaves no trace. Accepted rows go to the column builders of their (partition, table),
//! where partition = xxh3(series key) % P. [`WriteBuilder::finish`] yields one Arrow batch
//! per (partition, table) and the columns the catalog must learn.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, StringDictionaryBuilder,
    TimestampNanosecondArray, UInt64Builder,
};
use arrow::datatypes::{Field, Schema};
use arrow::record_batch::RecordBatch;
use xxhash_rust::xxh3::xxh3_64;

use crate::catalog::{ColumnKind, DatabaseSchema, FieldType, TIME_COLUMN, TableSchema, TagKey};
use crate::error::{Error, Result};

/// A field value, borrowing strings from the request body where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Integer(i64),
    UInteger(u64),
    String(Cow<'a, str>),
    Boolean(bool),
}

impl FieldValue<'_> {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Integer(_) => FieldType::Integer,
            FieldValue::UInteger(_) => FieldType::UInteger,
            FieldValue::String(_) => FieldType::String,
            FieldValue::Boolean(_) => FieldType::Boolean,
        }
    }
}

/// Why one row was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error("tag key {0:?} appears more than once")]
    DuplicateTag(String),
    #[error("field key {0:?} appears more than once")]
    DuplicateField(String),
    #[error("{0:?} is used as both a tag and a field")]
    TagAndField(String),
    #[error("{0:?} is reserved for the timestamp and cannot be a tag or field key")]
    ReservedTime(String),
    #[error(
        "column {column:?} of table {table:?} is {existing}, this line writes it as {attempted}"
    )]
    Conflict {
        table: String,
        column: String,
        existing: String,
        attempted: String,
    },
    #[error("table {table:?} would have more than {max} columns")]
    TooManyColumns { table: String, max: usize },
    #[error("table {table:?} would be one more than the database's limit of {max} tables")]
    TooManyTables { table: String, max: usize },
}

/// The series-key hash: xxh3-64 over the measurement and the tags sorted by key, each
/// string prefixed by its length as u32 LE (specified in `storage/FORMAT.md`; it decides
/// partitions, so it must never change).
pub fn series_hash(measurement: &str, sorted_tags: &mut dyn Iterator<Item = (&str, &str)>) -> u64 {
    let mut key = Vec::new();
    series_hash_with(&mut key, measurement, sorted_tags)
}

/// [`series_hash`] reusing `key` as scratch space: the key bytes are laid out once and hashed
/// in one call (far cheaper than streaming 21 small updates; the digest is the same).
fn series_hash_with(
    key: &mut Vec<u8>,
    measurement: &str,
    sorted_tags: &mut dyn Iterator<Item = (&str, &str)>,
) -> u64 {
    key.clear();
    let mut put = |s: &str| {
        key.extend_from_slice(&(s.len() as u32).to_le_bytes());
        key.extend_from_slice(s.as_bytes());
    };
    put(measurement);
    for (k, v) in sorted_tags {
        put(k);
        put(v);
    }
    xxh3_64(key)
}

enum ColumnData {
    Tag(StringDictionaryBuilder<TagKey>),
    Float(Float64Builder),
    Integer(Int64Builder),
    UInteger(UInt64Builder),
    String(StringBuilder),
    Boolean(BooleanBuilder),
}

impl ColumnData {
    fn new(kind: ColumnKind, capacity: usize) -> Self {
        match kind {
            ColumnKind::Tag | ColumnKind::Time => ColumnData::Tag(StringDictionaryBuilder::new()),
            ColumnKind::Field(FieldType::Float) => {
                ColumnData::Float(Float64Builder::with_capacity(capacity))
            }
            ColumnKind::Field(FieldType::Integer) => {
                ColumnData::Integer(Int64Builder::with_capacity(capacity))
            }
            ColumnKind::Field(FieldType::UInteger) => {
                ColumnData::UInteger(UInt64Builder::with_capacity(capacity))
            }
            ColumnKind::Field(FieldType::String) => ColumnData::String(StringBuilder::new()),
            ColumnKind::Field(FieldType::Boolean) => {
                ColumnData::Boolean(BooleanBuilder::with_capacity(capacity))
            }
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            ColumnData::Tag(b) => b.append_nulls(n),
            ColumnData::Float(b) => b.append_nulls(n),
            ColumnData::Integer(b) => b.append_nulls(n),
            ColumnData::UInteger(b) => b.append_nulls(n),
            ColumnData::String(b) => b.append_nulls(n),
            ColumnData::Boolean(b) => b.append_nulls(n),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnData::Tag(b) => Arc::new(b.finish()),
            ColumnData::Float(b) => Arc::new(b.finish()),
            ColumnData::Integer(b) => Arc::new(b.finish()),
            ColumnData::UInteger(b) => Arc::new(b.finish()),
            ColumnData::String(b) => Arc::new(b.finish()),
            ColumnData::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

struct Column {
    name: Arc<str>,
    kind: ColumnKind,
    /// Rows this column has a value (or null) for.
    len: usize,
    data: ColumnData,
}

/// Rows of one table in one partition.
struct TableBatchBuilder {
    table: Arc<str>,
    columns: Vec<Column>,
    by_name: HashMap<Arc<str>, usize>,
    /// Column positions of the previous row's keys, tried first: lines of one batch
    /// nearly always list the same keys in the same order.
    hint: Vec<usize>,
    time: Vec<i64>,
}

impl TableBatchBuilder {
    fn new(table: Arc<str>) -> Self {
        Self {
            table,
            columns: Vec::new(),
            by_name: HashMap::new(),
            hint: Vec::new(),
            time: Vec::new(),
        }
    }

    fn rows(&self) -> usize {
        self.time.len()
    }

    /// Position of a column, if this builder has it; `slot` is the key's position in the row.
    fn find(&self, slot: usize, name: &str) -> Option<usize> {
        if let Some(&i) = self.hint.get(slot)
            && let Some(c) = self.columns.get(i)
            && &*c.name == name
        {
            return Some(i);
        }
        self.by_name.get(name).copied()
    }

    /// Whether a row has exactly the keys, kinds and key order of the previous row. The
    /// previous row was fully validated, so its columns are distinct and of the right kinds:
    /// a row that matches needs no further checks.
    fn matches_layout(
        &self,
        tags: &[(Cow<'_, str>, Cow<'_, str>)],
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
    ) -> bool {
        if self.hint.len() != tags.len() + fields.len() {
            return false;
        }
        let (tag_hint, field_hint) = self.hint.split_at(tags.len());
        tags.iter().zip(tag_hint).all(|((k, _), &i)| {
            let c = &self.columns[i];
            c.kind == ColumnKind::Tag && *c.name == **k
        }) && fields.iter().zip(field_hint).all(|((k, v), &i)| {
            let c = &self.columns[i];
            c.kind == ColumnKind::Field(v.field_type()) && *c.name == **k
        })
    }

    fn add_column(&mut self, name: &str, kind: ColumnKind) -> usize {
        let rows = self.rows();
        let mut data = ColumnData::new(kind, rows.max(1024));
        data.append_nulls(rows);
        let name: Arc<str> = Arc::from(name);
        let i = self.columns.len();
        self.columns.push(Column {
            name: Arc::clone(&name),
            kind,
            len: rows,
            data,
        });
        self.by_name.insert(name, i);
        i
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let rows = self.rows();
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
        let mut arrays = Vec::with_capacity(self.columns.len() + 1);
        for c in &mut self.columns {
            if c.len < rows {
                c.data.append_nulls(rows - c.len);
            }
            fields.push(Field::new(&*c.name, c.kind.arrow_type(), true));
            arrays.push(c.data.finish());
        }
        fields.push(crate::catalog::arrow_field(TIME_COLUMN, ColumnKind::Time));
        arrays.push(Arc::new(
            TimestampNanosecondArray::from(std::mem::take(&mut self.time)).with_timezone("UTC"),
        ));
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }
}

/// The batches of one write, by partition.
#[derive(Debug)]
pub struct PartitionBatches {
    pub partition: u32,
    pub tables: Vec<(Arc<str>, RecordBatch)>,
}

/// Columns a write adds to one table: (table, [(column, kind)]).
pub type NewColumns = (Arc<str>, Vec<(Arc<str>, ColumnKind)>);

/// What [`WriteBuilder::finish`] produces.
#[derive(Debug)]
pub struct WriteBatch {
    pub partitions: Vec<PartitionBatches>,
    /// Columns this write introduces, per table, for the catalog.
    pub new_columns: Vec<NewColumns>,
    pub rows: usize,
}

/// Accumulates the rows of one write request for one database.
pub struct WriteBuilder {
    db: Arc<DatabaseSchema>,
    max_columns: usize,
    max_tables: usize,
    /// Per partition, the builders of the tables seen (few per request: found by scan).
    partitions: Vec<Vec<TableBatchBuilder>>,
    /// Catalog snapshots taken on first sight of each table.
    snapshots: HashMap<Arc<str>, Option<Arc<TableSchema>>>,
    /// Columns introduced by this request, per table.
    pending: HashMap<Arc<str>, Vec<(Arc<str>, ColumnKind)>>,
    order: Vec<usize>,
    /// Reused per row: the builder column of each key, `None` for a new column.
    slots: Vec<Option<usize>>,
    /// Reused per row: the series key bytes.
    key: Vec<u8>,
    rows: usize,
}

impl WriteBuilder {
    pub fn new(db: Arc<DatabaseSchema>, max_columns: usize) -> Self {
        let partitions = (0..db.partitions().max(1)).map(|_| Vec::new()).collect();
        Self {
            db,
            max_columns,
            max_tables: usize::MAX,
            partitions,
            snapshots: HashMap::new(),
            pending: HashMap::new(),
            order: Vec::new(),
            slots: Vec::new(),
            key: Vec::new(),
            rows: 0,
        }
    }

    /// Refuses rows that would create a table past `max` tables in the database.
    #[must_use]
    pub fn with_max_tables(mut self, max: usize) -> Self {
        self.max_tables = max;
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The catalog's schema of `table` when this request first saw it.
    fn snapshot(&mut self, table: &str) -> Option<Arc<TableSchema>> {
        match self.snapshots.get(table) {
            Some(s) => s.clone(),
            None => {
                let s = self.db.table(table);
                self.snapshots.insert(Arc::from(table), s.clone());
                s
            }
        }
    }

    /// Checks that a row may go to `table`: it exists, this request already creates it,
    /// or the database has room for one more table.
    fn admit_table(&mut self, table: &str) -> Result<(), RowError> {
        if self.snapshot(table).is_some() || self.pending.contains_key(table) {
            return Ok(());
        }
        let created_here = self
            .pending
            .keys()
            .filter(|t| matches!(self.snapshots.get(*t), Some(None)))
            .count();
        if self.db.tables().len() + created_here >= self.max_tables {
            return Err(RowError::TooManyTables {
                table: table.to_string(),
                max: self.max_tables,
            });
        }
        Ok(())
    }

    /// The kind a column has in the catalog snapshot or among this request's new columns.
    fn known_kind(&mut self, table: &str, column: &str) -> Option<ColumnKind> {
        let snapshot = self.snapshot(table);
        if let Some(kind) = snapshot.as_ref().and_then(|t| t.column(column)) {
            return Some(kind);
        }
        self.pending
            .get(table)
            .and_then(|cols| cols.iter().find(|(n, _)| &**n == column).map(|(_, k)| *k))
    }

    fn table_column_count(&self, table: &str) -> usize {
        let existing = self
            .snapshots
            .get(table)
            .and_then(|s| s.as_ref().map(|t| t.columns().len()))
            .unwrap_or(1);
        existing + self.pending.get(table).map_or(0, Vec::len)
    }

    /// Checks a column against what is known; `Ok(true)` when it is new to the table.
    fn admit(
        &mut self,
        table: &str,
        column: &str,
        kind: ColumnKind,
        new_in_row: usize,
    ) -> Result<bool, RowError> {
        match self.known_kind(table, column) {
            Some(existing) if existing == kind => Ok(false),
            Some(existing) => Err(RowError::Conflict {
                table: table.to_string(),
                column: column.to_string(),
                existing: existing.describe(),
                attempted: kind.describe(),
            }),
            None => {
                if self.table_column_count(table) + new_in_row >= self.max_columns {
                    return Err(RowError::TooManyColumns {
                        table: table.to_string(),
                        max: self.max_columns,
                    });
                }
                Ok(true)
            }
        }
    }

    /// Validates and appends one row. On error nothing is appended.
    ///
    /// # Errors
    /// A [`RowError`] saying what is wrong with the row.
    pub fn push_row(
        &mut self,
        measurement: &str,
        tags: &[(Cow<'_, str>, Cow<'_, str>)],
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
        time: i64,
    ) -> Result<(), RowError> {
        // Series key order: tags sorted by key (line protocol usually sends them sorted).
        self.order.clear();
        self.order.extend(0..tags.len());
        if !tags.windows(2).all(|w| w[0].0 <= w[1].0) {
            self.order
                .sort_unstable_by(|&a, &b| tags[a].0.cmp(&tags[b].0));
        }
        let hash = series_hash_with(
            &mut self.key,
            measurement,
            &mut self.order.iter().map(|&i| (&*tags[i].0, &*tags[i].1)),
        );
        let partition = (hash % self.partitions.len() as u64) as usize;

        let builders = &mut self.partitions[partition];
        let mut builder = match builders.iter().position(|b| &*b.table == measurement) {
            Some(i) => builders.swap_remove(i),
            None => TableBatchBuilder::new(Arc::from(measurement)),
        };
        let result = if builder.matches_layout(tags, fields) {
            // Same keys, kinds and order as the previous (validated) row of this table:
            // nothing new to check.
            self.slots.clear();
            self.slots.extend(builder.hint.iter().map(|&i| Some(i)));
            append(&mut builder, tags, fields, &self.slots, time);
            Ok(())
        } else {
            check_shape(tags, fields)
                .and_then(|()| self.resolve_and_append(&mut builder, tags, fields, time))
        };
        self.partitions[partition].push(builder);
        if result.is_ok() {
            self.rows += 1;
        }
        result
    }

    fn resolve_and_append(
        &mut self,
        b: &mut TableBatchBuilder,
        tags: &[(Cow<'_, str>, Cow<'_, str>)],
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
        time: i64,
    ) -> Result<(), RowError> {
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        let result = self.resolve(b, tags, fields, &mut slots);
        if result.is_ok() {
            append(b, tags, fields, &slots, time);
        }
        self.slots = slots;
        result
    }

    fn resolve(
        &mut self,
        b: &TableBatchBuilder,
        tags: &[(Cow<'_, str>, Cow<'_, str>)],
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
        slots: &mut Vec<Option<usize>>,
    ) -> Result<(), RowError> {
        let table = Arc::clone(&b.table);
        self.admit_table(&table)?;
        // Columns new to the table, recorded only once the whole row is accepted.
        let mut new_here: Vec<(Arc<str>, ColumnKind)> = Vec::new();
        for (slot, (k, _)) in tags.iter().enumerate() {
            match b.find(slot, k) {
                Some(i) if b.columns[i].kind == ColumnKind::Tag => slots.push(Some(i)),
                Some(i) => {
                    return Err(RowError::Conflict {
                        table: table.to_string(),
                        column: k.to_string(),
                        existing: b.columns[i].kind.describe(),
                        attempted: ColumnKind::Tag.describe(),
                    });
                }
                None => {
                    if self.admit(&table, k, ColumnKind::Tag, new_here.len())? {
                        new_here.push((Arc::from(&**k), ColumnKind::Tag));
                    }
                    slots.push(None);
                }
            }
        }
        for (j, (k, v)) in fields.iter().enumerate() {
            let kind = ColumnKind::Field(v.field_type());
            match b.find(tags.len() + j, k) {
                Some(i) if b.columns[i].kind == kind => slots.push(Some(i)),
                Some(i) => {
                    return Err(RowError::Conflict {
                        table: table.to_string(),
                        column: k.to_string(),
                        existing: b.columns[i].kind.describe(),
                        attempted: kind.describe(),
                    });
                }
                None => {
                    if self.admit(&table, k, kind, new_here.len())? {
                        new_here.push((Arc::from(&**k), kind));
                    }
                    slots.push(None);
                }
            }
        }
        if !new_here.is_empty() {
            self.pending.entry(table).or_default().extend(new_here);
        }
        Ok(())
    }

    /// Finishes every builder.
    ///
    /// # Errors
    /// Only on an internal Arrow error.
    pub fn finish(self) -> Result<WriteBatch> {
        let mut partitions = Vec::new();
        for (p, tables) in self.partitions.into_iter().enumerate() {
            if tables.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(tables.len());
            for builder in tables {
                if builder.rows() == 0 {
                    continue;
                }
                let name = Arc::clone(&builder.table);
                out.push((name, builder.finish()?));
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            partitions.push(PartitionBatches {
                partition: u32::try_from(p)
                    .map_err(|_| Error::Internal("partition index overflow".into()))?,
                tables: out,
            });
        }
        let mut new_columns: Vec<_> = self.pending.into_iter().collect();
        new_columns.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(WriteBatch {
            partitions,
            new_columns,
            rows: self.rows,
        })
    }
}

/// Checks that need no catalog: no duplicate keys, no key both tag and field, no `time`.
fn check_shape(
    tags: &[(Cow<'_, str>, Cow<'_, str>)],
    fields: &[(Cow<'_, str>, FieldValue<'_>)],
) -> Result<(), RowError> {
    for (i, (k, _)) in tags.iter().enumerate() {
        if k == TIME_COLUMN {
            return Err(RowError::ReservedTime(k.to_string()));
        }
        if tags[..i].iter().any(|(o, _)| o == k) {
            return Err(RowError::DuplicateTag(k.to_string()));
        }
    }
    for (i, (k, _)) in fields.iter().enumerate() {
        if k == TIME_COLUMN {
            return Err(RowError::ReservedTime(k.to_string()));
        }
        if fields[..i].iter().any(|(o, _)| o == k) {
            return Err(RowError::DuplicateField(k.to_string()));
        }
        if tags.iter().any(|(t, _)| t == k) {
            return Err(RowError::TagAndField(k.to_string()));
        }
    }
    Ok(())
}

/// Appends a row whose columns [`WriteBuilder::resolve`] checked.
fn append(
    b: &mut TableBatchBuilder,
    tags: &[(Cow<'_, str>, Cow<'_, str>)],
    fields: &[(Cow<'_, str>, FieldValue<'_>)],
    slots: &[Option<usize>],
    time: i64,
) {
    let row = b.rows();
    b.hint.clear();
    for (slot, (k, v)) in tags.iter().enumerate() {
        let i = match slots[slot] {
            Some(i) => i,
            None => b.add_column(k, ColumnKind::Tag),
        };
        b.hint.push(i);
        let c = &mut b.columns[i];
        if c.len < row {
            c.data.append_nulls(row - c.len);
        }
        if let ColumnData::Tag(d) = &mut c.data {
            d.append_value(&**v);
        }
        c.len = row + 1;
    }
    for (j, (k, v)) in fields.iter().enumerate() {
        let i = match slots[tags.len() + j] {
            Some(i) => i,
            None => b.add_column(k, ColumnKind::Field(v.field_type())),
        };
        b.hint.push(i);
        let c = &mut b.columns[i];
        if c.len < row {
            c.data.append_nulls(row - c.len);
        }
        match (&mut c.data, v) {
            (ColumnData::Float(d), FieldValue::Float(x)) => d.append_value(*x),
            (ColumnData::Integer(d), FieldValue::Integer(x)) => d.append_value(*x),
            (ColumnData::UInteger(d), FieldValue::UInteger(x)) => d.append_value(*x),
            (ColumnData::String(d), FieldValue::String(x)) => d.append_value(&**x),
            (ColumnData::Boolean(d), FieldValue::Boolean(x)) => d.append_value(*x),
            // Kinds were matched above; a mismatch here would be a bug, and appending
            // a null keeps the columns aligned rather than corrupting the batch.
            (d, _) => d.append_nulls(1),
        }
        c.len = row + 1;
    }
    b.time.push(time);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    fn s(x: &str) -> Cow<'_, str> {
        Cow::Borrowed(x)
    }

    #[test]
    fn rows_are_split_by_series_and_columns_backfilled() {
        let db = Arc::new(DatabaseSchema::new("db", 4));
        let mut w = WriteBuilder::new(Arc::clone(&db), 100);
        w.push_row(
            "cpu",
            &[(s("host"), s("a"))],
            &[(s("u"), FieldValue::Float(1.0))],
            1,
        )
        .unwrap();
        w.push_row(
            "cpu",
            &[(s("host"), s("a"))],
            &[
                (s("u"), FieldValue::Float(2.0)),
                (s("n"), FieldValue::Integer(3)),
            ],
            2,
        )
        .unwrap();
        let batch = w.finish().unwrap();
        assert_eq!(batch.rows, 2);
        assert_eq!(
            batch.partitions.len(),
            1,
            "one series lands in one partition"
        );
        let rb = &batch.partitions[0].tables[0].1;
        assert_eq!(rb.num_rows(), 2);
        let n = rb.column_by_name("n").unwrap();
        assert!(n.is_null(0) && !n.is_null(1));
        let u = rb
            .column_by_name("u")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(u.values().as_ref(), &[1.0, 2.0]);
    }

    #[test]
    fn a_rejected_row_leaves_no_trace() {
        let db = Arc::new(DatabaseSchema::new("db", 1));
        let mut w = WriteBuilder::new(db, 100);
        w.push_row("m", &[], &[(s("v"), FieldValue::Float(1.0))], 1)
            .unwrap();
        let err = w
            .push_row(
                "m",
                &[(s("t"), s("x"))],
                &[
                    (s("w"), FieldValue::Boolean(true)),
                    (s("v"), FieldValue::Integer(1)),
                ],
                2,
            )
            .unwrap_err();
        assert!(matches!(err, RowError::Conflict { .. }), "{err}");
        let batch = w.finish().unwrap();
        let rb = &batch.partitions[0].tables[0].1;
        assert_eq!(rb.num_rows(), 1);
        assert_eq!(rb.num_columns(), 2, "v and time only: {:?}", rb.schema());
        assert_eq!(batch.new_columns[0].1.len(), 1, "only v is new");
    }

    #[test]
    fn shape_errors_are_caught_after_rows_that_took_the_fast_path() {
        let db = Arc::new(DatabaseSchema::new("db", 1));
        let mut w = WriteBuilder::new(db, 100);
        let ok = |w: &mut WriteBuilder| {
            w.push_row(
                "m",
                &[(s("t"), s("a"))],
                &[(s("v"), FieldValue::Float(1.0))],
                1,
            )
        };
        ok(&mut w).unwrap();
        ok(&mut w).unwrap();
        assert!(matches!(
            w.push_row(
                "m",
                &[(s("t"), s("a")), (s("t"), s("b"))],
                &[(s("v"), FieldValue::Float(1.0))],
                1
            ),
            Err(RowError::DuplicateTag(_))
        ));
        assert!(matches!(
            w.push_row(
                "m",
                &[(s("t"), s("a"))],
                &[
                    (s("v"), FieldValue::Float(1.0)),
                    (s("v"), FieldValue::Float(2.0))
                ],
                1
            ),
            Err(RowError::DuplicateField(_))
        ));
        assert!(matches!(
            w.push_row(
                "m",
                &[(s("t"), s("a"))],
                &[(s("t"), FieldValue::Float(1.0))],
                1
            ),
            Err(RowError::TagAndField(_))
        ));
        assert!(matches!(
            w.push_row(
                "m",
                &[(s("t"), s("a"))],
                &[(s("v"), FieldValue::Integer(1))],
                1
            ),
            Err(RowError::Conflict { .. })
        ));
        ok(&mut w).unwrap();
        assert_eq!(w.finish().unwrap().rows, 3);
    }

    #[test]
    fn series_hash_is_pinned() {
        // Partitions are persisted by this hash: it must never change.
        let h = series_hash("cpu", &mut [("host", "a"), ("region", "eu")].into_iter());
        let mut stream = xxhash_rust::xxh3::Xxh3::new();
        for part in ["cpu", "host", "a", "region", "eu"] {
            stream.update(&(part.len() as u32).to_le_bytes());
            stream.update(part.as_bytes());
        }
        assert_eq!(h, stream.digest());
        assert_eq!(h, 0x175d_db68_041a_e087, "{h:#x}");
    }

    #[test]
    fn series_hash_ignores_tag_order() {
        let db = Arc::new(DatabaseSchema::new("db", 8));
        let mut w = WriteBuilder::new(db, 100);
        for i in 0..50 {
            let h = format!("h{i}");
            w.push_row(
                "m",
                &[(s("a"), s(&h)), (s("b"), s("x"))],
                &[(s("v"), FieldValue::Float(1.0))],
                1,
            )
            .unwrap();
            w.push_row(
                "m",
                &[(s("b"), s("x")), (s("a"), s(&h))],
                &[(s("v"), FieldValue::Float(1.0))],
                2,
            )
            .unwrap();
        }
        let batch = w.finish().unwrap();
        assert!(batch.partitions.len() > 1);
        for p in &batch.partitions {
            assert_eq!(
                p.tables[0].1.num_rows() % 2,
                0,
                "both orders of a series land together"
            );
        }
    }
}
