//! `join`: the interval join of two keyed streams. A row of one input meets every row of
//! the other with the same key whose event time differs by at most `within`; each pair
//! is emitted once, when its second row arrives, as the left row's columns followed by
//! the right row's non-key columns. Rows with a null key or time match nothing.
//!
//! Each side keeps its rows (the batches they came in, and per key the rows' places and
//! times) until the watermark passes `time + within`: no row still to come on the other
//! side can reach them. The output's event time is the left row's, so the output
//! watermark is held back by `within` (a pair can carry a left time up to `within`
//! before the input watermark).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};

use super::checkpoint::{StateReader, StateWriter};
use super::state::{ipc_decode, ipc_encode};
use super::window::event_times;

/// Where a kept row is: (batch, row, event time).
type RowRef = (usize, usize, i64);

/// A row's key (Arrow's row encoding of the key columns) and event time.
type KeyTime = (Box<[u8]>, i64);

/// One input's rows.
struct Side {
    time_col: usize,
    key_cols: Vec<usize>,
    schema: SchemaRef,
    /// Batches holding rows still kept (`None` once none is).
    batches: Vec<Option<RecordBatch>>,
    /// Rows still kept, per batch.
    live: Vec<usize>,
    /// Per batch, its latest event time.
    max_time: Vec<i64>,
    /// Batches before this one are all forgotten.
    first_live: usize,
    /// Index entries, and how many of them point at forgotten batches.
    entries: usize,
    dead_entries: usize,
    /// Per key: (batch, row, event time) in arrival order.
    index: HashMap<Box<[u8]>, Vec<RowRef>>,
    /// Encodes keys as bytes: both sides use converters of the same key types, so equal
    /// keys encode equally (the encoding is never stored: a restore encodes again).
    rows: RowConverter,
}

impl Side {
    fn new(schema: &SchemaRef, keys: &[String], event_time: &str) -> Result<Self, String> {
        let idx = |name: &str| schema.index_of(name).map_err(|e| e.to_string());
        let key_cols: Vec<usize> = keys.iter().map(|k| idx(k)).collect::<Result<_, _>>()?;
        let rows = RowConverter::new(
            key_cols
                .iter()
                .map(|&c| SortField::new(key_type(schema.field(c).data_type())))
                .collect(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            time_col: idx(event_time)?,
            key_cols,
            schema: Arc::clone(schema),
            batches: Vec::new(),
            live: Vec::new(),
            max_time: Vec::new(),
            first_live: 0,
            entries: 0,
            dead_entries: 0,
            index: HashMap::new(),
            rows,
        })
    }

    /// Keeps the rows of `batch` with a key and a time; returns each row's key and time
    /// (`None` for a row that matches nothing) and the batch's number.
    fn add(&mut self, batch: &RecordBatch) -> Result<(usize, Vec<Option<KeyTime>>), String> {
        let times = event_times(batch.column(self.time_col))?;
        let b = self.batches.len();
        let key_columns = self
            .key_cols
            .iter()
            .map(|&c| {
                let col = batch.column(c);
                let t = key_type(col.data_type());
                if col.data_type() == &t {
                    Ok(Arc::clone(col))
                } else {
                    arrow::compute::cast(col, &t).map_err(|e| e.to_string())
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        let encoded = self
            .rows
            .convert_columns(&key_columns)
            .map_err(|e| e.to_string())?;
        let mut rows = Vec::with_capacity(times.len());
        let mut live = 0;
        for (row, t) in times.iter().enumerate() {
            let has_key = key_columns.iter().all(|c| c.is_valid(row));
            match t {
                Some(t) if has_key => {
                    let key: Box<[u8]> = encoded.row(row).as_ref().into();
                    self.index
                        .entry(key.clone())
                        .or_default()
                        .push((b, row, *t));
                    live += 1;
                    rows.push(Some((key, *t)));
                }
                _ => rows.push(None),
            }
        }
        self.batches.push((live > 0).then(|| batch.clone()));
        self.live.push(live);
        self.max_time
            .push(times.iter().flatten().copied().max().unwrap_or(i64::MIN));
        self.entries += live;
        Ok((b, rows))
    }

    /// Whether a kept row can still meet rows to come (older ones wait for the next
    /// compaction, and are passed over meanwhile).
    fn reachable(t: i64, watermark: i64, within: i64) -> bool {
        t.saturating_add(within) >= watermark
    }

    /// Forgets rows no row to come can reach. Whole batches go at once (by their latest
    /// row); the index is swept only once half its entries point at forgotten rows, so
    /// that the work stays proportional to the rows, not to the rows times watermarks.
    fn expire(&mut self, watermark: i64, within: i64) {
        while self.first_live < self.batches.len() {
            let b = self.first_live;
            if self.batches[b].is_some() && Self::reachable(self.max_time[b], watermark, within) {
                break;
            }
            if self.batches[b].take().is_some() {
                self.dead_entries += self.live[b];
            }
            self.first_live += 1;
        }
        if self.dead_entries * 2 <= self.entries {
            return;
        }
        let (batches, live) = (&mut self.batches, &mut self.live);
        self.index.retain(|_, rows| {
            rows.retain(|&(b, _, t)| {
                let keep = batches[b].is_some() && Self::reachable(t, watermark, within);
                if !keep && batches[b].is_some() {
                    live[b] -= 1;
                    if live[b] == 0 {
                        batches[b] = None;
                    }
                }
                keep
            });
            !rows.is_empty()
        });
        self.entries = self.index.values().map(Vec::len).sum();
        self.dead_entries = 0;
    }

    /// One column built from rows `(batch, row)` of this side.
    fn gather(&self, col: usize, rows: &[(usize, usize)]) -> Result<ArrayRef, String> {
        let mut slot = vec![usize::MAX; self.batches.len()];
        let mut arrays: Vec<&dyn Array> = Vec::new();
        for &(b, _) in rows {
            if slot[b] == usize::MAX {
                let batch = self.batches[b]
                    .as_ref()
                    .ok_or("a joined row's batch is gone")?;
                slot[b] = arrays.len();
                arrays.push(batch.column(col).as_ref());
            }
        }
        if arrays.is_empty() {
            return Ok(arrow::array::new_empty_array(
                self.schema.field(col).data_type(),
            ));
        }
        let picks: Vec<(usize, usize)> = rows.iter().map(|&(b, r)| (slot[b], r)).collect();
        interleave(&arrays, &picks).map_err(|e| e.to_string())
    }

    /// The rows kept, in arrival order, as one batch.
    fn kept(&self, watermark: i64, within: i64) -> Result<RecordBatch, String> {
        let mut rows: Vec<(usize, usize)> = self
            .index
            .values()
            .flat_map(|v| v.iter())
            .filter(|&&(b, _, t)| {
                self.batches[b].is_some() && Self::reachable(t, watermark, within)
            })
            .map(|&(b, r, _)| (b, r))
            .collect();
        rows.sort_unstable();
        let columns = (0..self.schema.fields().len())
            .map(|c| self.gather(c, &rows))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )
        .map_err(|e| e.to_string())
    }
}

/// Keys compare by value: dictionary-encoded text is keyed as plain text, so that a
/// dictionary column on one side meets a plain one on the other.
fn key_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        t => t.clone(),
    }
}

pub struct Join {
    within: i64,
    sides: [Side; 2],
    /// Right columns in the output (all but the keys).
    right_out: Vec<usize>,
    out_schema: SchemaRef,
    watermark: i64,
}

impl Join {
    /// # Errors
    /// A key or event-time column is missing from an input (validation prevents it).
    pub fn new(
        keys: &[String],
        within: i64,
        inputs: [(&SchemaRef, &str); 2],
        out_schema: SchemaRef,
    ) -> Result<Self, String> {
        let [(ls, lt), (rs, rt)] = inputs;
        let right = Side::new(rs, keys, rt)?;
        let right_out = (0..rs.fields().len())
            .filter(|c| !right.key_cols.contains(c))
            .collect();
        Ok(Self {
            within,
            sides: [Side::new(ls, keys, lt)?, right],
            right_out,
            out_schema,
            watermark: i64::MIN,
        })
    }

    /// Takes a batch of input `side` (0: left, 1: right); returns the pairs it completes.
    ///
    /// # Errors
    /// Reading the batch or building the output failed.
    pub fn on_batch(
        &mut self,
        side: usize,
        batch: &RecordBatch,
    ) -> Result<Option<RecordBatch>, String> {
        let side = side.min(1);
        let other = 1 - side;
        let (b, rows) = self.sides[side].add(batch)?;
        let mut left = Vec::new();
        let mut right = Vec::new();
        for (row, entry) in rows.iter().enumerate() {
            let Some((key, t)) = entry else { continue };
            let Some(matches) = self.sides[other].index.get(key) else {
                continue;
            };
            let other_side = &self.sides[other];
            for &(ob, orow, ot) in matches {
                let kept = other_side.batches[ob].is_some()
                    && Side::reachable(ot, self.watermark, self.within);
                if kept && t.abs_diff(ot) <= self.within.unsigned_abs() {
                    let (mine, theirs) = ((b, row), (ob, orow));
                    let (l, r) = if side == 0 {
                        (mine, theirs)
                    } else {
                        (theirs, mine)
                    };
                    left.push(l);
                    right.push(r);
                }
            }
        }
        if left.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(self.out_schema.fields().len());
        for c in 0..self.sides[0].schema.fields().len() {
            columns.push(self.sides[0].gather(c, &left)?);
        }
        for &c in &self.right_out {
            columns.push(self.sides[1].gather(c, &right)?);
        }
        RecordBatch::try_new(Arc::clone(&self.out_schema), columns)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Advances the input watermark; returns the output watermark (held back by
    /// `within`).
    pub fn on_watermark(&mut self, watermark: i64) -> i64 {
        if watermark > self.watermark {
            self.watermark = watermark;
            for s in &mut self.sides {
                s.expire(watermark, self.within);
            }
        }
        watermark.saturating_sub(self.within)
    }

    /// The state: the watermark (i64), then per side an Arrow IPC stream of the rows
    /// kept, prefixed by its length (u64).
    ///
    /// # Errors
    /// Arrow could not build or encode the batches.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        let mut out = StateWriter::default().i64(self.watermark);
        for s in &self.sides {
            out = out.bytes(&ipc_encode(&s.kept(self.watermark, self.within)?)?);
        }
        Ok(out.finish())
    }

    /// Replaces the state with one [`Join::snapshot`] made.
    ///
    /// # Errors
    /// The bytes are not a join snapshot of these inputs.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let bad = |why: String| format!("the checkpointed join state is unreadable: {why}");
        let mut r = StateReader::new(bytes);
        let watermark = r.i64().map_err(bad)?;
        for s in &mut self.sides {
            let batch = ipc_decode(r.prefixed().map_err(bad)?).map_err(bad)?;
            if batch.schema().fields() != s.schema.fields() {
                return Err(bad("the input's columns changed".into()));
            }
            s.batches.clear();
            s.live.clear();
            s.max_time.clear();
            s.index.clear();
            (s.first_live, s.entries, s.dead_entries) = (0, 0, 0);
            s.add(&batch)?;
        }
        self.watermark = watermark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn schema(value: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new(value, DataType::Int64, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
        ]))
    }

    fn batch(s: &SchemaRef, rows: &[(Option<i64>, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(s),
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampNanosecondArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch")
    }

    /// Pairs within the interval, both ways round, none for null keys; expired rows are
    /// gone; a restored join pairs like the original.
    #[test]
    fn pairs_expiry_and_restore() {
        let (l, r) = (schema("a"), schema("b"));
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("a", DataType::Int64, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("b", DataType::Int64, true),
            Field::new(
                "time_right",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
        ]));
        let new = || {
            Join::new(
                &["k".into()],
                5,
                [(&l, "time"), (&r, "time")],
                Arc::clone(&out),
            )
            .expect("join")
        };
        let mut j = new();
        assert!(
            j.on_batch(0, &batch(&l, &[(Some(1), 10, 100), (None, 11, 100)]))
                .expect("left")
                .is_none()
        );
        let pairs = j
            .on_batch(
                1,
                &batch(
                    &r,
                    &[(Some(1), 20, 104), (Some(1), 21, 106), (None, 22, 100)],
                ),
            )
            .expect("right")
            .expect("pairs");
        assert_eq!(pairs.num_rows(), 1, "only the row 4 ns away pairs");
        assert_eq!(
            j.on_watermark(104),
            99,
            "the output watermark waits `within`"
        );
        let mut restored = new();
        restored
            .restore(&j.snapshot().expect("snapshot"))
            .expect("restore");
        // Left rows at 101 reach the kept right rows at 104 and 106.
        let more = batch(&l, &[(Some(1), 12, 101)]);
        let (x, y) = (
            j.on_batch(0, &more).expect("more"),
            restored.on_batch(0, &more).expect("more"),
        );
        assert_eq!(x, y);
        assert_eq!(x.map(|b| b.num_rows()), Some(2));
        // Past 106 + 5 nothing is kept.
        j.on_watermark(112);
        assert!(
            j.sides
                .iter()
                .all(|s| s.index.is_empty() && s.batches.iter().all(Option::is_none))
        );
        assert!(restored.restore(b"junk").is_err());
    }
}
