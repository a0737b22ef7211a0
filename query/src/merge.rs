//! [`DedupMergeExec`]: merges sorted, individually deduplicated inputs into one sorted,
//! deduplicated stream: the operator that lets a table's rows live in the buffer and in any
//! number of overlapping Parquet files while queries see "last write wins".
//!
//! Every input yields rows sorted by the primary key (tags, then time) with each key at most
//! once. Inputs are given oldest first: when several inputs hold the same key, the output
//! row takes each field from the newest input whose value is not null (the same rule the
//! write buffer applies within itself), tags and time being equal by definition.
//!
//! The merge streams: it holds one batch per input plus the batches the output rows being
//! assembled point into, so memory is bounded by `inputs x batch size`, not by data size.
//! Keys are compared in Arrow's row format, so a comparison is a `memcmp`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{Array, ArrayRef};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
    RecordBatchStream,
};
use futures::{Stream, StreamExt};

/// The sort order of a table's primary key: `key_columns` (indices into `schema`), each
/// ascending with nulls first, as the persister and the buffer sort.
pub fn key_ordering(schema: &SchemaRef, key_columns: &[usize]) -> Result<LexOrdering> {
    let exprs = key_columns
        .iter()
        .map(|&i| {
            Ok(PhysicalSortExpr::new_default(
                Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    LexOrdering::new(exprs)
        .ok_or_else(|| DataFusionError::Internal("a table without key columns".into()))
}

/// See the module docs.
#[derive(Debug)]
pub struct DedupMergeExec {
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    key_columns: Vec<usize>,
    ordering: LexOrdering,
    properties: Arc<PlanProperties>,
}

impl DedupMergeExec {
    /// `inputs` oldest first, each single-partition with the schema of the first.
    ///
    /// # Errors
    /// No inputs, or inputs of different schemas.
    pub fn try_new(inputs: Vec<Arc<dyn ExecutionPlan>>, key_columns: Vec<usize>) -> Result<Self> {
        let first = inputs
            .first()
            .ok_or_else(|| DataFusionError::Internal("DedupMergeExec without inputs".into()))?;
        let schema = first.schema();
        if inputs
            .iter()
            .any(|i| i.schema().fields() != schema.fields())
        {
            return Err(DataFusionError::Internal(
                "DedupMergeExec inputs differ in schema".into(),
            ));
        }
        let ordering = key_ordering(&schema, &key_columns)?;
        let eq =
            EquivalenceProperties::new_with_orderings(Arc::clone(&schema), vec![ordering.clone()]);
        let properties = Arc::new(PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            inputs,
            key_columns,
            ordering,
            properties,
        })
    }
}

impl DisplayAs for DedupMergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DedupMergeExec: inputs={}, key=[", self.inputs.len())?;
        for (i, e) in self.ordering.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}", e.expr)?;
        }
        write!(f, "]")
    }
}

impl ExecutionPlan for DedupMergeExec {
    fn name(&self) -> &'static str {
        "DedupMergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition; self.inputs.len()]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![Some(OrderingRequirements::from(self.ordering.clone())); self.inputs.len()]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true; self.inputs.len()]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.inputs.len()]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inputs.iter().collect()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::try_new(children, self.key_columns.clone())?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DedupMergeExec has one partition, asked for {partition}"
            )));
        }
        let schema = self.schema();
        let streams = self
            .inputs
            .iter()
            .map(|i| i.execute(0, Arc::clone(&context)))
            .collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(
            self.key_columns
                .iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect(),
        )?;
        let batch_size = context.session_config().batch_size();
        Ok(Box::pin(MergeStream::new(
            schema,
            streams,
            self.key_columns.clone(),
            converter,
            batch_size,
        )))
    }
}

/// An input's current batch and position in it.
struct Cursor {
    rows: Rows,
    pos: usize,
    /// Index of the batch in `MergeStream::retained`.
    batch: usize,
}

/// The merge of sorted streams, emitting deduplicated batches. Generic over the input
/// stream so that compaction can drive it outside a DataFusion plan.
pub struct MergeStream<S> {
    schema: SchemaRef,
    inputs: Vec<S>,
    done: Vec<bool>,
    cursors: Vec<Option<Cursor>>,
    key_columns: Vec<usize>,
    converter: RowConverter,
    batch_size: usize,
    /// Batches that pending output rows (or live cursors) point into.
    retained: Vec<RecordBatch>,
    /// Source (batch, row) of every pending output row, from its newest input.
    primary: Vec<(usize, usize)>,
    /// Output rows that several inputs hold: (output row, sources newest first).
    duplicates: Vec<(usize, Vec<(usize, usize)>)>,
    failed: bool,
}

impl<S> MergeStream<S>
where
    S: Stream<Item = Result<RecordBatch>> + Unpin,
{
    pub fn new(
        schema: SchemaRef,
        inputs: Vec<S>,
        key_columns: Vec<usize>,
        converter: RowConverter,
        batch_size: usize,
    ) -> Self {
        let n = inputs.len();
        Self {
            schema,
            inputs,
            done: vec![false; n],
            cursors: (0..n).map(|_| None).collect(),
            key_columns,
            converter,
            batch_size: batch_size.max(1),
            retained: Vec::new(),
            primary: Vec::new(),
            duplicates: Vec::new(),
            failed: false,
        }
    }

    /// Builds the output batch from the pending rows, then keeps only the batches live
    /// cursors still need.
    fn flush(&mut self) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for c in 0..self.schema.fields().len() {
            let arrays: Vec<&dyn Array> =
                self.retained.iter().map(|b| b.column(c).as_ref()).collect();
            let is_key = self.key_columns.contains(&c);
            let column = if is_key || self.duplicates.is_empty() {
                interleave(&arrays, &self.primary)?
            } else {
                let mut indices = self.primary.clone();
                for (row, sources) in &self.duplicates {
                    if let Some(&src) = sources.iter().find(|(b, r)| arrays[*b].is_valid(*r)) {
                        indices[*row] = src;
                    }
                }
                interleave(&arrays, &indices)?
            };
            columns.push(column);
        }
        let out = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.primary.clear();
        self.duplicates.clear();
        // Re-home the cursors' batches at the front of a fresh list.
        let mut kept = Vec::new();
        for c in self.cursors.iter_mut().flatten() {
            kept.push(self.retained[c.batch].clone());
            c.batch = kept.len() - 1;
        }
        self.retained = kept;
        Ok(out)
    }

    /// Moves rows to the output until a cursor runs dry or the output is full.
    fn merge_some(&mut self) {
        let mut group: Vec<usize> = Vec::with_capacity(self.cursors.len());
        loop {
            // The smallest key, and every input positioned on it (oldest first).
            group.clear();
            for (i, c) in self.cursors.iter().enumerate() {
                let Some(c) = c else { continue };
                match group.first() {
                    None => group.push(i),
                    Some(&g) => {
                        let Some(best) = &self.cursors[g] else {
                            continue;
                        };
                        match c.rows.row(c.pos).cmp(&best.rows.row(best.pos)) {
                            std::cmp::Ordering::Less => {
                                group.clear();
                                group.push(i);
                            }
                            std::cmp::Ordering::Equal => group.push(i),
                            std::cmp::Ordering::Greater => {}
                        }
                    }
                }
            }
            let Some(&newest) = group.last() else {
                return;
            };
            let source = |i: usize, cursors: &[Option<Cursor>]| {
                cursors[i]
                    .as_ref()
                    .map(|c| (c.batch, c.pos))
                    .unwrap_or((0, 0))
            };
            let out_row = self.primary.len();
            self.primary.push(source(newest, &self.cursors));
            if group.len() > 1 {
                let sources = group
                    .iter()
                    .rev()
                    .map(|&i| source(i, &self.cursors))
                    .collect();
                self.duplicates.push((out_row, sources));
            }
            let mut ran_dry = false;
            for &i in &group {
                if let Some(c) = &mut self.cursors[i] {
                    c.pos += 1;
                    if c.pos == c.rows.num_rows() {
                        self.cursors[i] = None;
                        ran_dry = true;
                    }
                }
            }
            if ran_dry || self.primary.len() >= self.batch_size {
                return;
            }
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            for i in 0..self.inputs.len() {
                while !self.done[i] && self.cursors[i].is_none() {
                    match self.inputs[i].poll_next_unpin(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(None) => self.done[i] = true,
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                        Poll::Ready(Some(Ok(batch))) => {
                            if batch.num_rows() == 0 {
                                continue;
                            }
                            let keys: Vec<ArrayRef> = self
                                .key_columns
                                .iter()
                                .map(|&k| Arc::clone(batch.column(k)))
                                .collect();
                            let rows = match self.converter.convert_columns(&keys) {
                                Ok(r) => r,
                                Err(e) => return Poll::Ready(Some(Err(e.into()))),
                            };
                            self.retained.push(batch);
                            self.cursors[i] = Some(Cursor {
                                rows,
                                pos: 0,
                                batch: self.retained.len() - 1,
                            });
                        }
                    }
                }
            }
            if self.cursors.iter().all(Option::is_none) {
                if self.primary.is_empty() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(self.flush()));
            }
            self.merge_some();
            if self.primary.len() >= self.batch_size {
                return Poll::Ready(Some(self.flush()));
            }
        }
    }
}

impl<S> Stream for MergeStream<S>
where
    S: Stream<Item = Result<RecordBatch>> + Unpin,
{
    type Item = Result<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let out = this.poll_inner(cx);
        if matches!(out, Poll::Ready(Some(Err(_)))) {
            this.failed = true;
        }
        out
    }
}

impl<S> RecordBatchStream for MergeStream<S>
where
    S: Stream<Item = Result<RecordBatch>> + Unpin,
{
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("host", DataType::Utf8, true),
            Field::new("v", DataType::Float64, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]))
    }

    fn batch(rows: &[(&str, Option<f64>, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    async fn merge(
        inputs: Vec<Vec<RecordBatch>>,
        batch_size: usize,
    ) -> Vec<(String, Option<f64>, i64)> {
        let s = schema();
        let streams: Vec<_> = inputs
            .into_iter()
            .map(|bs| futures::stream::iter(bs.into_iter().map(Ok)))
            .collect();
        let converter = RowConverter::new(vec![
            SortField::new(DataType::Utf8),
            SortField::new(DataType::Timestamp(TimeUnit::Nanosecond, None)),
        ])
        .unwrap();
        let out: Vec<RecordBatch> = MergeStream::new(s, streams, vec![0, 2], converter, batch_size)
            .map(|b| b.unwrap())
            .collect()
            .await;
        let mut rows = Vec::new();
        for b in out {
            assert!(b.num_rows() <= batch_size);
            let h = b.column(0).as_string::<i32>();
            let v = b.column(1).as_primitive::<Float64Type>();
            let t = b
                .column(2)
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            for i in 0..b.num_rows() {
                rows.push((
                    h.value(i).to_string(),
                    v.is_valid(i).then(|| v.value(i)),
                    t.value(i),
                ));
            }
        }
        rows
    }

    #[tokio::test]
    async fn newest_non_null_wins_and_order_holds() {
        let old = vec![
            batch(&[("a", Some(1.0), 1), ("a", Some(2.0), 2)]),
            batch(&[("b", Some(3.0), 1)]),
        ];
        let new = vec![
            batch(&[("a", Some(7.0), 1), ("a", None, 2), ("a", Some(9.0), 3)]),
            batch(&[("c", Some(4.0), 0)]),
        ];
        for batch_size in [1, 2, 100] {
            let rows = merge(vec![old.clone(), new.clone()], batch_size).await;
            assert_eq!(
                rows,
                vec![
                    ("a".into(), Some(7.0), 1),
                    ("a".into(), Some(2.0), 2),
                    ("a".into(), Some(9.0), 3),
                    ("b".into(), Some(3.0), 1),
                    ("c".into(), Some(4.0), 0),
                ],
                "batch size {batch_size}"
            );
        }
        let rows = merge(vec![new, old], 100).await;
        assert_eq!(
            rows[0],
            ("a".into(), Some(1.0), 1),
            "precedence follows input order"
        );
    }
}
