//! Last-write-wins deduplication of buffered rows.
//!
//! Rows with the same primary key (tags + time) collapse to one row whose every field is the
//! last non-null value written, "last" meaning highest write sequence (the log offset of the
//! batch; within one batch, the later row). Output is sorted by (tags, time).
//!
//! Method: align batches to the table schema, encode (tags, time) with Arrow's row format so
//! that key comparison is a `memcmp`, sort row ids by (key, seq, id), then walk groups of
//! equal keys choosing a source row per column and gather with `take`.

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array, new_null_array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use tidemark_storage::buffer::BufferedBatch;
use tidemark_storage::catalog::{ColumnKind, TableSchema};

use crate::error::{Error, Result};

/// Gives a batch every column of `schema` (absent ones as nulls), in schema order.
///
/// # Errors
/// A column whose type differs from the schema's (an internal invariant).
pub fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Arc::clone(c),
            None => new_null_array(f.data_type(), rows),
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Deduplicates the batches of one table; see the module docs.
///
/// # Errors
/// Internal Arrow errors only.
pub fn dedup(table: &TableSchema, batches: &[BufferedBatch]) -> Result<RecordBatch> {
    let schema = table.arrow_schema();
    let aligned = batches
        .iter()
        .map(|b| align(&b.batch, &schema))
        .collect::<Result<Vec<_>>>()?;
    let all = concat_batches(&schema, &aligned)?;
    let n = all.num_rows();
    if n == 0 {
        return Ok(all);
    }
    if u32::try_from(n).is_err() {
        return Err(Error::Encode(format!(
            "{n} buffered rows in one table exceed what one deduplication pass handles"
        )));
    }
    let mut seq = Vec::with_capacity(n);
    for b in batches {
        seq.extend(std::iter::repeat_n(b.seq, b.batch.num_rows()));
    }

    // Key columns: tags (already sorted by name in the schema) then time.
    let mut key_idx = Vec::new();
    for (i, (_, kind)) in table.columns().iter().enumerate() {
        if matches!(kind, ColumnKind::Tag | ColumnKind::Time) {
            key_idx.push(i);
        }
    }
    let converter = RowConverter::new(
        key_idx
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let key_cols: Vec<ArrayRef> = key_idx.iter().map(|&i| Arc::clone(all.column(i))).collect();
    let keys = converter.convert_columns(&key_cols)?;

    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        keys.row(a as usize)
            .cmp(&keys.row(b as usize))
            .then(seq[a as usize].cmp(&seq[b as usize]))
            .then(a.cmp(&b))
    });

    // Group boundaries: group g spans order[starts[g]..starts[g+1]].
    let mut starts = Vec::with_capacity(n + 1);
    starts.push(0usize);
    for i in 1..n {
        if keys.row(order[i] as usize) != keys.row(order[i - 1] as usize) {
            starts.push(i);
        }
    }
    let groups = starts.len();
    starts.push(n);
    let last_of_group: Vec<u32> = (0..groups).map(|g| order[starts[g + 1] - 1]).collect();
    let last = UInt32Array::from(last_of_group.clone());

    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, (_, kind)) in table.columns().iter().enumerate() {
        let col = all.column(i);
        let indices = if matches!(kind, ColumnKind::Field(_)) && groups < n && col.null_count() > 0
        {
            // Some groups hold several rows and this field has nulls: take the last
            // non-null value of each group.
            let mut idx = last_of_group.clone();
            for g in 0..groups {
                let (s, e) = (starts[g], starts[g + 1]);
                if e - s > 1
                    && col.is_null(idx[g] as usize)
                    && let Some(&r) = order[s..e]
                        .iter()
                        .rev()
                        .find(|&&r| col.is_valid(r as usize))
                {
                    idx[g] = r;
                }
            }
            UInt32Array::from(idx)
        } else {
            last.clone()
        };
        columns.push(take(col.as_ref(), &indices, None)?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    use std::borrow::Cow;
    use tidemark_storage::batch::{FieldValue, WriteBuilder};
    use tidemark_storage::catalog::DatabaseSchema;

    fn batch(
        db: &Arc<DatabaseSchema>,
        rows: &[(&str, i64, Option<f64>, Option<i64>)],
    ) -> RecordBatch {
        let mut w = WriteBuilder::new(Arc::clone(db), 100);
        for (host, t, a, b) in rows {
            let mut fields = Vec::new();
            if let Some(a) = a {
                fields.push((Cow::Borrowed("a"), FieldValue::Float(*a)));
            }
            if let Some(b) = b {
                fields.push((Cow::Borrowed("b"), FieldValue::Integer(*b)));
            }
            w.push_row(
                "m",
                &[(Cow::Borrowed("host"), Cow::Borrowed(*host))],
                &fields,
                *t,
            )
            .unwrap();
        }
        let wb = w.finish().unwrap();
        for (t, cols) in &wb.new_columns {
            db.merge_columns(t, cols).unwrap();
        }
        wb.partitions[0].tables[0].1.clone()
    }

    #[test]
    fn last_non_null_wins_per_field_by_sequence() {
        let db = Arc::new(DatabaseSchema::new("db", 1));
        let first = batch(
            &db,
            &[("x", 1, Some(1.0), Some(10)), ("y", 1, Some(5.0), None)],
        );
        let second = batch(&db, &[("x", 1, Some(2.0), None), ("x", 2, Some(3.0), None)]);
        let table = db.table("m").unwrap();
        // Applied out of order: sequence decides, not arrival.
        let out = dedup(
            &table,
            &[
                BufferedBatch {
                    seq: 9,
                    batch: second,
                },
                BufferedBatch {
                    seq: 4,
                    batch: first,
                },
            ],
        )
        .unwrap();
        assert_eq!(out.num_rows(), 3);
        let a = out
            .column_by_name("a")
            .unwrap()
            .as_primitive::<Float64Type>();
        let b = out.column_by_name("b").unwrap().as_primitive::<Int64Type>();
        // Sorted by (host, time): x@1, x@2, y@1.
        assert_eq!(a.values().as_ref(), &[2.0, 3.0, 5.0]);
        assert_eq!(b.value(0), 10, "b keeps the last non-null value");
        assert!(b.is_null(1) && b.is_null(2));
    }
}
