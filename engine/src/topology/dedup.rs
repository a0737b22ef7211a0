//! `dedup`: passes the first row of each key and drops the rows with the same key whose
//! event time lies within `within` of it (before or after: rows may come out of order).
//! A row further away is passed and becomes the key's new first row.
//!
//! State is one event time per key, the last row passed. It is forgotten once the
//! watermark is past that time plus `within`: no row still to come can be its duplicate
//! (a row older than the watermark may still arrive late; with its key forgotten it is
//! passed, as a window would send it to `late`). A row without a time is passed.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::scalar::ScalarValue;

use super::state::{KeyedState, encode_keyed};
use super::window::event_times;

pub struct Dedup {
    within: i64,
    time_col: usize,
    key_cols: Vec<usize>,
    input: SchemaRef,
    /// Per key, the event time of the last row passed.
    seen: HashMap<Vec<ScalarValue>, i64>,
    watermark: i64,
}

impl Dedup {
    /// # Errors
    /// A key or the event-time column is missing from `input` (validation prevents it).
    pub fn new(
        keys: &[String],
        within: i64,
        input: &SchemaRef,
        event_time: &str,
    ) -> Result<Self, String> {
        let idx = |name: &str| input.index_of(name).map_err(|e| e.to_string());
        Ok(Self {
            within,
            time_col: idx(event_time)?,
            key_cols: keys.iter().map(|k| idx(k)).collect::<Result<_, _>>()?,
            input: Arc::clone(input),
            seen: HashMap::new(),
            watermark: i64::MIN,
        })
    }

    /// The rows of `batch` that are no duplicates, in order.
    ///
    /// # Errors
    /// The event-time column cannot be read as nanoseconds.
    pub fn on_batch(&mut self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let times = event_times(batch.column(self.time_col))?;
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut key = Vec::with_capacity(self.key_cols.len());
        for (row, t) in times.iter().enumerate() {
            let Some(t) = *t else {
                keep.push(row as u32);
                continue;
            };
            key.clear();
            key.extend(self.key_cols.iter().map(|&c| {
                ScalarValue::try_from_array(batch.column(c), row).unwrap_or(ScalarValue::Null)
            }));
            let duplicate = self
                .seen
                .get(key.as_slice())
                .is_some_and(|&first| t.abs_diff(first) < self.within.unsigned_abs());
            if !duplicate {
                keep.push(row as u32);
                self.seen.insert(key.clone(), t);
            }
        }
        if keep.len() == batch.num_rows() {
            return Ok(batch.clone());
        }
        take_record_batch(batch, &UInt32Array::from(keep)).map_err(|e| e.to_string())
    }

    /// Forgets the keys no row to come can duplicate.
    pub fn on_watermark(&mut self, watermark: i64) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        let within = self.within;
        self.seen
            .retain(|_, t| t.saturating_add(within) > watermark);
    }

    /// The state as one Arrow IPC batch: the key columns `k0..` and `time` (Int64 ns), a
    /// row per key; the watermark in the schema metadata.
    ///
    /// # Errors
    /// Arrow could not build or encode the batch.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        let (keys, times): (Vec<&Vec<ScalarValue>>, Vec<i64>) =
            self.seen.iter().map(|(k, t)| (k, *t)).unzip();
        encode_keyed(
            &self.input,
            &self.key_cols,
            &keys,
            vec![Field::new("time", DataType::Int64, false)],
            vec![Arc::new(Int64Array::from(times))],
            self.watermark,
        )
    }

    /// Replaces the state with one [`Dedup::snapshot`] made.
    ///
    /// # Errors
    /// The bytes are not a dedup snapshot with these keys.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let st = KeyedState::decode(bytes, self.key_cols.len(), "dedup")?;
        let times = st.typed::<Int64Array>("time")?;
        let mut seen = HashMap::with_capacity(st.rows());
        for row in 0..st.rows() {
            if times.is_null(row) {
                return Err(st.bad("a null time"));
            }
            seen.insert(st.key(row)?, times.value(row));
        }
        self.seen = seen;
        self.watermark = st.watermark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{Schema, TimeUnit};

    use super::*;

    #[test]
    fn restored_dedup_drops_what_the_original_drops() {
        let input = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
        ]));
        let batch = |rows: &[(Option<&str>, i64)]| {
            RecordBatch::try_new(
                Arc::clone(&input),
                vec![
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(TimestampNanosecondArray::from(
                        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("batch")
        };
        let mut original = Dedup::new(&["id".into()], 10, &input, "time").expect("dedup");
        let first = original
            .on_batch(&batch(&[
                (Some("a"), 0),
                (None, 1),
                (Some("a"), 5),
                (None, 2),
            ]))
            .expect("rows");
        assert_eq!(first.num_rows(), 2, "a null key is a key like any other");
        original.on_watermark(3);
        let mut restored = Dedup::new(&["id".into()], 10, &input, "time").expect("dedup");
        restored
            .restore(&original.snapshot().expect("snapshot"))
            .expect("restore");
        let more = batch(&[(Some("a"), 9), (None, 11), (Some("b"), 12), (Some("a"), 10)]);
        let x = original.on_batch(&more).expect("rows");
        assert_eq!(x, restored.on_batch(&more).expect("rows"));
        assert_eq!(x.num_rows(), 3);
        // Past the watermark the keys are forgotten.
        original.on_watermark(30);
        assert!(original.seen.is_empty());
        assert!(restored.restore(b"junk").is_err());
    }
}
