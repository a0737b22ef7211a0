//! Builds the Arrow batches of one write request, validated and split by partition.
//!
//! A front end (the line protocol parser) hands each parsed row to
//! [`WriteBuilder::push_row`]. The row is checked completely against the catalog snapshot
//! and the columns this request introduced before anything is appended, so a rejected row
//! leaves no trace. Accepted rows go to the column builders of their (partition, table),
//! where partition = xxh3(series key) % P. [`WriteBuilder::finish`] yields one Arrow batch
//! per (partition, table) and the columns the catalog must learn.
//!
//! Most lines of a request repeat a series already written in it. A row pushed with
//! [`WriteBuilder::push_row_remembered`] gets a [`SeriesId`] holding its builder and the
//! dictionary key of each tag; later rows of that series go through
//! [`WriteBuilder::push_known`] (or, for fixed-width fields laid out like the table's previous
//! row, [`WriteBuilder::push_known_values`]) and skip hashing, partitioning, validating and
//! dictionary lookups. Both accept a row only when every check a full push makes has
//! already passed for that exact layout; otherwise the caller pushes the row in full.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, DictionaryArray, Int32Array, NullBufferBuilder, PrimitiveArray,
    StringBuilder, TimestampNanosecondArray,
};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowPrimitiveType, Field, Float64Type, Int64Type, Schema, UInt64Type};
use arrow::record_batch::RecordBatch;
use foldhash::fast::FixedState;
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
    #[error(
        "{what} {name:?} holds a control character (such as NUL or a newline escape): names \
         of tables and columns must be printable"
    )]
    ControlCharacter { what: &'static str, name: String },
    #[error("table {table:?} would be one more than the database's limit of {max} tables")]
    TooManyTables { table: String, max: usize },
    #[error(
        "table {table:?} already has {max} rows in this request's partition; split the request"
    )]
    TooManyRows { table: String, max: usize },
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

/// Most rows one (partition, table) batch of a request may hold: tag dictionary keys are
/// `i32`, and a batch can have no more distinct values than rows.
const MAX_BATCH_ROWS: usize = i32::MAX as usize;

/// Most series a request remembers for [`WriteBuilder::push_known`]; beyond it, rows of new
/// series still go through [`WriteBuilder::push_row`], only without the shortcut later.
const MAX_REMEMBERED_SERIES: usize = 1 << 20;

/// A dictionary-encoded tag column built by key. The dictionary is this builder's own so
/// that a series seen before in the request appends the keys it got the first time,
/// without hashing its tag values again.
struct TagColumn {
    /// One key per row; `NULL_KEY` for a row without this tag (most rows have every tag,
    /// so the validity bitmap is built once, at the end, and only if needed).
    keys: Vec<i32>,
    /// Whether any key is `NULL_KEY`.
    has_nulls: bool,
    values: StringBuilder,
    lookup: HashMap<Box<str>, i32, FixedState>,
}

const NULL_KEY: i32 = -1;

impl TagColumn {
    fn new(capacity: usize) -> Self {
        Self {
            keys: Vec::with_capacity(capacity),
            has_nulls: false,
            values: StringBuilder::new(),
            lookup: HashMap::default(),
        }
    }

    /// Appends `value`, returning its key. Keys fit an `i32`: a batch holds at most
    /// [`MAX_BATCH_ROWS`] rows, so at most that many distinct values.
    fn append_value(&mut self, value: &str) -> i32 {
        let key = match self.lookup.get(value) {
            Some(&k) => k,
            None => {
                let k = i32::try_from(self.lookup.len()).unwrap_or(i32::MAX);
                self.values.append_value(value);
                self.lookup.insert(Box::from(value), k);
                k
            }
        };
        self.keys.push(key);
        key
    }

    #[inline(always)]
    fn append_key(&mut self, key: i32) {
        self.keys.push(key);
    }

    fn append_nulls(&mut self, n: usize) {
        self.keys.resize(self.keys.len() + n, NULL_KEY);
        self.has_nulls |= n > 0;
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let mut keys = std::mem::take(&mut self.keys);
        let nulls = if std::mem::take(&mut self.has_nulls) {
            let valid = NullBuffer::from_iter(keys.iter().map(|&k| k != NULL_KEY));
            for k in keys.iter_mut().filter(|k| **k == NULL_KEY) {
                *k = 0;
            }
            Some(valid)
        } else {
            None
        };
        let keys = Int32Array::new(ScalarBuffer::from(keys), nulls);
        let values = Arc::new(self.values.finish());
        Ok(Arc::new(DictionaryArray::<TagKey>::try_new(keys, values)?))
    }
}

/// A fixed-width field column: values in a `Vec` (handed to Arrow without a copy) and a
/// validity bitmap that exists only once a null is appended.
struct PrimColumn<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    nulls: NullBufferBuilder,
}

impl<T: ArrowPrimitiveType> PrimColumn<T> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            values: Vec::with_capacity(capacity),
            nulls: NullBufferBuilder::new(capacity),
        }
    }

    // Always inlined: it runs once per field value, and a call costs as much as the push.
    #[inline(always)]
    fn append_value(&mut self, v: T::Native) {
        self.values.push(v);
        self.nulls.append_non_null();
    }

    fn append_nulls(&mut self, n: usize) {
        self.values
            .resize(self.values.len() + n, T::Native::default());
        self.nulls.append_n_nulls(n);
    }

    fn finish(&mut self) -> ArrayRef {
        let values = ScalarBuffer::from(std::mem::take(&mut self.values));
        Arc::new(PrimitiveArray::<T>::new(values, self.nulls.finish()))
    }
}

enum ColumnData {
    Tag(TagColumn),
    Float(PrimColumn<Float64Type>),
    Integer(PrimColumn<Int64Type>),
    UInteger(PrimColumn<UInt64Type>),
    String(StringBuilder),
    Boolean(BooleanBuilder),
}

impl ColumnData {
    fn new(kind: ColumnKind, capacity: usize) -> Self {
        match kind {
            ColumnKind::Tag | ColumnKind::Time => ColumnData::Tag(TagColumn::new(capacity)),
            ColumnKind::Field(FieldType::Float) => {
                ColumnData::Float(PrimColumn::with_capacity(capacity))
            }
            ColumnKind::Field(FieldType::Integer) => {
                ColumnData::Integer(PrimColumn::with_capacity(capacity))
            }
            ColumnKind::Field(FieldType::UInteger) => {
                ColumnData::UInteger(PrimColumn::with_capacity(capacity))
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

    /// Appends a field value; the column's kind was checked against the value's before.
    fn append_field(&mut self, v: &FieldValue<'_>) {
        match (self, v) {
            (ColumnData::Float(d), FieldValue::Float(x)) => d.append_value(*x),
            (ColumnData::Integer(d), FieldValue::Integer(x)) => d.append_value(*x),
            (ColumnData::UInteger(d), FieldValue::UInteger(x)) => d.append_value(*x),
            (ColumnData::String(d), FieldValue::String(x)) => d.append_value(&**x),
            (ColumnData::Boolean(d), FieldValue::Boolean(x)) => d.append_value(*x),
            // Kinds were matched before; a mismatch here would be a bug, and appending
            // a null keeps the columns aligned rather than corrupting the batch.
            (d, _) => d.append_nulls(1),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnData::Tag(b) => return b.finish(),
            ColumnData::Float(b) => b.finish(),
            ColumnData::Integer(b) => b.finish(),
            ColumnData::UInteger(b) => b.finish(),
            ColumnData::String(b) => Arc::new(b.finish()),
            ColumnData::Boolean(b) => Arc::new(b.finish()),
        })
    }
}

struct Column {
    name: Arc<str>,
    kind: ColumnKind,
    /// Rows this column has a value (or null) for.
    len: usize,
    data: ColumnData,
}

impl Column {
    /// Pads the column with nulls up to `row`, the row about to be appended.
    #[inline(always)]
    fn pad_to(&mut self, row: usize) {
        if self.len < row {
            self.data.append_nulls(row - self.len);
        }
        self.len = row + 1;
    }
}

/// Rows of one table in one partition.
struct TableBatchBuilder {
    table: Arc<str>,
    partition: u32,
    columns: Vec<Column>,
    by_name: HashMap<Arc<str>, usize>,
    /// Column positions of the previous row's keys (tags, then fields), tried first: lines
    /// of one batch nearly always list the same keys in the same order.
    hint: Vec<usize>,
    /// How many of `hint` are tags.
    hint_tags: usize,
    /// The hint's fields as a [`FieldLayout`], when they can be parsed against.
    layout: Option<FieldLayout>,
    time: Vec<i64>,
}

impl TableBatchBuilder {
    fn new(table: Arc<str>, partition: u32) -> Self {
        Self {
            table,
            partition,
            columns: Vec::new(),
            by_name: HashMap::new(),
            hint: Vec::new(),
            hint_tags: 0,
            layout: None,
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
        self.hint_tags == tags.len()
            && self.hint[..self.hint_tags]
                .iter()
                .zip(tags)
                .all(|(&i, (k, _))| *self.columns[i].name == **k)
            && self.fields_match(fields)
    }

    /// Whether `fields` have the field keys, kinds and order of the previous row.
    fn fields_match(&self, fields: &[(Cow<'_, str>, FieldValue<'_>)]) -> bool {
        let hint = &self.hint[self.hint_tags..];
        hint.len() == fields.len()
            && hint.iter().zip(fields).all(|(&i, (k, v))| {
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

    /// Appends the tags of a remembered series, by their dictionary keys.
    fn append_tag_keys(&mut self, tags: &[(usize, i32)]) {
        let row = self.rows();
        for &(i, key) in tags {
            let c = &mut self.columns[i];
            c.pad_to(row);
            if let ColumnData::Tag(d) = &mut c.data {
                d.append_key(key);
            }
        }
    }

    /// Appends the fields of a row at the positions of the previous row's fields, then the
    /// row's time; the tags are already appended.
    fn append_hinted_fields(&mut self, fields: &[(Cow<'_, str>, FieldValue<'_>)], time: i64) {
        let row = self.rows();
        for (&i, (_, v)) in self.hint[self.hint_tags..].iter().zip(fields) {
            let c = &mut self.columns[i];
            c.pad_to(row);
            c.data.append_field(v);
        }
        self.time.push(time);
    }

    /// Rebuilds [`Self::layout`] from the hint; `generation` tells layouts apart.
    fn refresh_layout(&mut self, generation: u64) {
        let mut fields = Vec::with_capacity(self.hint.len() - self.hint_tags);
        for &i in &self.hint[self.hint_tags..] {
            let c = &self.columns[i];
            let ColumnKind::Field(kind) = c.kind else {
                self.layout = None;
                return;
            };
            // Keys that need escaping are not written as they are named, and string values
            // are not fixed-width: rows with either take the general path.
            if kind == FieldType::String || c.name.bytes().any(needs_escape_in_key) {
                self.layout = None;
                return;
            }
            fields.push((Arc::clone(&c.name), kind));
        }
        self.layout = Some(FieldLayout { generation, fields });
    }

    /// Appends a row's field values, laid out as [`Self::layout`] says, then its time.
    fn append_layout_values(&mut self, values: &[u64], time: i64) {
        let row = self.rows();
        for (&i, &v) in self.hint[self.hint_tags..].iter().zip(values) {
            let c = &mut self.columns[i];
            c.pad_to(row);
            match &mut c.data {
                ColumnData::Float(d) => d.append_value(f64::from_bits(v)),
                ColumnData::Integer(d) => d.append_value(v as i64),
                ColumnData::UInteger(d) => d.append_value(v),
                ColumnData::Boolean(d) => d.append_value(v != 0),
                // Layouts hold no string columns; a null keeps the columns aligned.
                d => d.append_nulls(1),
            }
        }
        self.time.push(time);
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
            arrays.push(c.data.finish()?);
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

/// A series this request has written before: a later row of it can skip the tags
/// ([`WriteBuilder::push_known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesId(u32);

/// The field keys and kinds of the previous row of a table, in order, when every field is
/// fixed-width and every key is written as it is named. A row of a remembered series whose
/// fields follow it can be parsed straight into values ([`WriteBuilder::known_layout`]).
#[derive(Debug)]
pub struct FieldLayout {
    generation: u64,
    fields: Vec<(Arc<str>, FieldType)>,
}

impl FieldLayout {
    pub fn fields(&self) -> &[(Arc<str>, FieldType)] {
        &self.fields
    }

    /// Tells this layout from earlier layouts of the same request.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Encodes a field value of a [`FieldLayout`] as the 64 bits
/// [`WriteBuilder::push_known_values`] takes: a float's bits, an integer's two's
/// complement, an unsigned as is, a boolean as 0 or 1. The one encoder of these values;
/// `TableBatchBuilder::append_layout_values` is the one decoder.
pub fn layout_bits(v: &FieldValue<'_>) -> Option<u64> {
    Some(match v {
        FieldValue::Float(x) => x.to_bits(),
        FieldValue::Integer(x) => *x as u64,
        FieldValue::UInteger(x) => *x,
        FieldValue::Boolean(x) => u64::from(*x),
        FieldValue::String(_) => return None,
    })
}

/// Bytes line protocol escapes in a key, plus newline (which it cannot hold at all).
fn needs_escape_in_key(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'=' | b'\\' | b'\n' | b'\r' | b'\t' | b'"')
}

/// Where a remembered series' rows go: its builder and the dictionary key of each tag.
struct SeriesEntry {
    builder: usize,
    tags: Box<[(usize, i32)]>,
}

/// What a row is checked against: the catalog snapshot of each table and the columns
/// this request introduced.
struct Admission {
    db: Arc<DatabaseSchema>,
    max_columns: usize,
    max_tables: usize,
    /// Catalog snapshots taken on first sight of each table.
    snapshots: HashMap<Arc<str>, Option<Arc<TableSchema>>>,
    /// Columns introduced by this request, per table.
    pending: HashMap<Arc<str>, Vec<(Arc<str>, ColumnKind)>>,
}

impl Admission {
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
        // Checked when a name is new, so known names cost nothing.
        if table.chars().any(char::is_control) {
            return Err(RowError::ControlCharacter {
                what: "table",
                name: table.to_string(),
            });
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
                if column.chars().any(char::is_control) {
                    return Err(RowError::ControlCharacter {
                        what: "column",
                        name: column.to_string(),
                    });
                }
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

    /// Resolves every key of a row to a column of `b` (`None` for a column the row adds),
    /// checking kinds and limits. Records the new columns only if the whole row passes.
    fn resolve(
        &mut self,
        b: &TableBatchBuilder,
        tags: &[(Cow<'_, str>, Cow<'_, str>)],
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
        slots: &mut Vec<Option<usize>>,
    ) -> Result<(), RowError> {
        let table = Arc::clone(&b.table);
        self.admit_table(&table)?;
        let mut new_here: Vec<(Arc<str>, ColumnKind)> = Vec::new();
        let keys = tags.iter().map(|(k, _)| (k, ColumnKind::Tag)).chain(
            fields
                .iter()
                .map(|(k, v)| (k, ColumnKind::Field(v.field_type()))),
        );
        for (slot, (k, kind)) in keys.enumerate() {
            match b.find(slot, k) {
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
}

/// Accumulates the rows of one write request for one database.
pub struct WriteBuilder {
    admission: Admission,
    partitions: usize,
    /// Every (partition, table) builder of this request.
    builders: Vec<TableBatchBuilder>,
    /// Per partition, the positions in `builders` of its tables (few per request: found by
    /// scan).
    by_partition: Vec<Vec<usize>>,
    series: Vec<SeriesEntry>,
    order: Vec<usize>,
    /// Reused per row: the builder column of each key, `None` for a new column.
    slots: Vec<Option<usize>>,
    /// Reused per row: the series key bytes.
    key: Vec<u8>,
    /// Reused per row: the (column, dictionary key) of each tag appended.
    tag_keys: Vec<(usize, i32)>,
    /// Layouts built so far, to number the next.
    layouts: u64,
    rows: usize,
}

impl WriteBuilder {
    pub fn new(db: Arc<DatabaseSchema>, max_columns: usize) -> Self {
        let partitions = db.partitions().max(1) as usize;
        Self {
            admission: Admission {
                db,
                max_columns,
                max_tables: usize::MAX,
                snapshots: HashMap::new(),
                pending: HashMap::new(),
            },
            partitions,
            builders: Vec::new(),
            by_partition: (0..partitions).map(|_| Vec::new()).collect(),
            series: Vec::new(),
            order: Vec::new(),
            slots: Vec::new(),
            key: Vec::new(),
            tag_keys: Vec::new(),
            layouts: 0,
            rows: 0,
        }
    }

    /// Refuses rows that would create a table past `max` tables in the database.
    #[must_use]
    pub fn with_max_tables(mut self, max: usize) -> Self {
        self.admission.max_tables = max;
        self
    }

    pub fn rows(&self) -> usize {
        self.rows
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
        self.push(measurement, tags, fields, time, false)
            .map(|_| ())
    }

    /// [`push_row`](Self::push_row), remembering the row's series so that later rows of it
    /// can go through [`push_known`](Self::push_known). `None` when the request already
    /// remembers as many series as it may.
    ///
    /// # Errors
    /// A [`RowError`] saying what is wrong with the row.
    pub fn push_row_remembered(
        &mut self,
        measurement: &str,
        tags: &[(Cow<'_, str>, Cow<'_, str>)],
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
        time: i64,
    ) -> Result<Option<SeriesId>, RowError> {
        self.push(measurement, tags, fields, time, true)
    }

    /// Appends a row of a series remembered by
    /// [`push_row_remembered`](Self::push_row_remembered), when its fields have the keys,
    /// kinds and order of the previous row of its table: then every check a full push
    /// makes has already passed for this layout. Returns `false`, appending nothing, when
    /// they do not; the caller then pushes the row with its tags.
    pub fn push_known(
        &mut self,
        series: SeriesId,
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
        time: i64,
    ) -> bool {
        let Some((b, tags)) = self.remembered(series) else {
            return false;
        };
        if !b.fields_match(fields) {
            return false;
        }
        b.append_tag_keys(tags);
        b.append_hinted_fields(fields, time);
        self.rows += 1;
        true
    }

    /// The builder of a remembered series and its tags' dictionary keys, if the builder has
    /// room for another row.
    fn remembered(
        &mut self,
        series: SeriesId,
    ) -> Option<(&mut TableBatchBuilder, &[(usize, i32)])> {
        let entry = self.series.get(series.0 as usize)?;
        let b = self.builders.get_mut(entry.builder)?;
        (b.rows() < MAX_BATCH_ROWS).then_some((b, &entry.tags))
    }

    /// The field layout the next row of a remembered series may be parsed against: that of
    /// the previous row of its table, if it has one.
    pub fn known_layout(&self, series: SeriesId) -> Option<&FieldLayout> {
        let entry = self.series.get(series.0 as usize)?;
        self.builders.get(entry.builder)?.layout.as_ref()
    }

    /// Appends a row of a remembered series whose fields were parsed against
    /// [`known_layout`](Self::known_layout) into [`layout_bits`] values. Returns `false`,
    /// appending nothing, if the layout is no longer the one of `generation` or the values do
    /// not fit it; the caller then pushes the row in full.
    pub fn push_known_values(
        &mut self,
        series: SeriesId,
        generation: u64,
        values: &[u64],
        time: i64,
    ) -> bool {
        let Some((b, tags)) = self.remembered(series) else {
            return false;
        };
        let fits = b
            .layout
            .as_ref()
            .is_some_and(|l| l.generation == generation && l.fields.len() == values.len());
        if !fits {
            return false;
        }
        b.append_tag_keys(tags);
        b.append_layout_values(values, time);
        self.rows += 1;
        true
    }

    /// The builder of `table` in `partition`, created on first use.
    fn builder_for(&mut self, partition: usize, table: &str) -> usize {
        let in_partition = &mut self.by_partition[partition];
        if let Some(&i) = in_partition
            .iter()
            .find(|&&i| &*self.builders[i].table == table)
        {
            return i;
        }
        let i = self.builders.len();
        // `partition < self.partitions`, which came from a u32 count.
        let p = u32::try_from(partition).unwrap_or(u32::MAX);
        self.builders
            .push(TableBatchBuilder::new(Arc::from(table), p));
        in_partition.push(i);
        i
    }

    fn push(
        &mut self,
        measurement: &str,
        tags: &[(Cow<'_, str>, Cow<'_, str>)],
        fields: &[(Cow<'_, str>, FieldValue<'_>)],
        time: i64,
        remember: bool,
    ) -> Result<Option<SeriesId>, RowError> {
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
        let partition = (hash % self.partitions as u64) as usize;
        let bi = self.builder_for(partition, measurement);
        let b = &mut self.builders[bi];
        if b.rows() >= MAX_BATCH_ROWS {
            return Err(RowError::TooManyRows {
                table: measurement.to_string(),
                max: MAX_BATCH_ROWS,
            });
        }
        self.slots.clear();
        let same_layout = b.matches_layout(tags, fields);
        if same_layout {
            // Same keys, kinds and order as the previous (validated) row of this table:
            // nothing new to check.
            self.slots.extend(b.hint.iter().map(|&i| Some(i)));
        } else {
            check_shape(tags, fields)?;
            self.admission.resolve(b, tags, fields, &mut self.slots)?;
        }
        self.tag_keys.clear();
        append(b, tags, fields, &self.slots, time, &mut self.tag_keys);
        if !same_layout {
            self.layouts += 1;
            b.refresh_layout(self.layouts);
        }
        self.rows += 1;
        if !remember || self.series.len() >= MAX_REMEMBERED_SERIES {
            return Ok(None);
        }
        let id = SeriesId(u32::try_from(self.series.len()).unwrap_or(u32::MAX));
        self.series.push(SeriesEntry {
            builder: bi,
            tags: self.tag_keys.as_slice().into(),
        });
        Ok(Some(id))
    }

    /// Finishes every builder.
    ///
    /// # Errors
    /// Only on an internal Arrow error.
    pub fn finish(self) -> Result<WriteBatch> {
        let mut by_partition: Vec<Vec<(Arc<str>, RecordBatch)>> =
            (0..self.partitions).map(|_| Vec::new()).collect();
        for builder in self.builders {
            if builder.rows() == 0 {
                continue;
            }
            let p = builder.partition as usize;
            let name = Arc::clone(&builder.table);
            if let Some(tables) = by_partition.get_mut(p) {
                tables.push((name, builder.finish()?));
            }
        }
        let mut partitions = Vec::new();
        for (p, mut tables) in by_partition.into_iter().enumerate() {
            if tables.is_empty() {
                continue;
            }
            tables.sort_by(|a, b| a.0.cmp(&b.0));
            partitions.push(PartitionBatches {
                partition: u32::try_from(p)
                    .map_err(|_| Error::Internal("partition index overflow".into()))?,
                tables,
            });
        }
        let mut new_columns: Vec<_> = self.admission.pending.into_iter().collect();
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

/// Appends a row whose columns [`Admission::resolve`] checked (or that matched the
/// previous row's layout), recording the row's layout as the new hint and the dictionary
/// key of each tag in `tag_keys`.
fn append(
    b: &mut TableBatchBuilder,
    tags: &[(Cow<'_, str>, Cow<'_, str>)],
    fields: &[(Cow<'_, str>, FieldValue<'_>)],
    slots: &[Option<usize>],
    time: i64,
    tag_keys: &mut Vec<(usize, i32)>,
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
        c.pad_to(row);
        if let ColumnData::Tag(d) = &mut c.data {
            tag_keys.push((i, d.append_value(v)));
        }
    }
    b.hint_tags = tags.len();
    for (j, (k, v)) in fields.iter().enumerate() {
        let i = match slots[tags.len() + j] {
            Some(i) => i,
            None => b.add_column(k, ColumnKind::Field(v.field_type())),
        };
        b.hint.push(i);
    }
    b.append_hinted_fields(fields, time);
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

    #[test]
    fn remembered_series_append_by_key_and_missing_tags_are_null() {
        let db = Arc::new(DatabaseSchema::new("db", 1));
        let mut w = WriteBuilder::new(db, 100);
        let a = w
            .push_row_remembered(
                "m",
                &[(s("host"), s("a")), (s("dc"), s("x"))],
                &[(s("v"), FieldValue::Float(1.0))],
                1,
            )
            .unwrap()
            .unwrap();
        // Another series without `dc`, then `a` again by key, by layout, and with a layout
        // that differs (refused, nothing appended).
        w.push_row(
            "m",
            &[(s("host"), s("b"))],
            &[(s("v"), FieldValue::Float(2.0))],
            2,
        )
        .unwrap();
        assert!(w.push_known(a, &[(s("v"), FieldValue::Float(3.0))], 3));
        let layout = w.known_layout(a).unwrap();
        assert_eq!(layout.fields().len(), 1);
        let generation = layout.generation();
        assert!(w.push_known_values(a, generation, &[4.0f64.to_bits()], 4));
        assert!(!w.push_known(a, &[(s("v"), FieldValue::Integer(5))], 5));
        assert!(!w.push_known_values(a, generation + 1, &[5.0f64.to_bits()], 5));
        assert!(!w.push_known_values(a, generation, &[], 5));
        let batch = w.finish().unwrap();
        assert_eq!(batch.rows, 4);
        let rb = &batch.partitions[0].tables[0].1;
        let host = arrow::compute::cast(
            rb.column_by_name("host").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let host: Vec<_> = host.as_string::<i32>().iter().collect();
        assert_eq!(host, [Some("a"), Some("b"), Some("a"), Some("a")]);
        let dc = arrow::compute::cast(
            rb.column_by_name("dc").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let dc: Vec<_> = dc.as_string::<i32>().iter().collect();
        assert_eq!(dc, [Some("x"), None, Some("x"), Some("x")]);
        let v = rb
            .column_by_name("v")
            .unwrap()
            .as_primitive::<Float64Type>();
        assert_eq!(v.values().as_ref(), &[1.0, 2.0, 3.0, 4.0]);
    }
}
