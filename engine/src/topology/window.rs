//! Event-time windows: tumbling, sliding and session, keyed or not, with aggregates.
//!
//! Rows are assigned to windows by their event time and folded into per (key, window)
//! accumulators. A window fires when the watermark reaches its end: one row per key with
//! `window_start`, `window_end` and the aggregates. Its state is kept until the watermark
//! passes `end + allowed_lateness`; a row arriving meanwhile updates it and the window's
//! row is emitted again with the new values. A row all of whose windows are past that
//! point is late: it goes to the `late` output, unchanged, and is counted.
//!
//! Session windows of a key merge when a row falls within `gap` of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::scalar::ScalarValue;

use super::spec::{AggFunc, WindowKind, WindowSpec};

/// One aggregate's running state.
#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    SumInt(i64),
    SumUInt(u64),
    SumFloat(f64),
    Avg(f64, u64),
    Min(Option<ScalarValue>),
    Max(Option<ScalarValue>),
    /// Value and the event time it came with.
    First(Option<(i64, ScalarValue)>),
    Last(Option<(i64, ScalarValue)>),
    /// Every value (exact; bounded by the window's rows).
    Percentile(f64, Vec<f64>),
}

impl Acc {
    fn new(func: AggFunc, input: Option<&DataType>) -> Self {
        let input = input.map(|t| match t {
            DataType::Dictionary(_, v) => v.as_ref(),
            t => t,
        });
        match func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Sum => match input {
                Some(t) if t.is_signed_integer() => Acc::SumInt(0),
                Some(t) if t.is_unsigned_integer() => Acc::SumUInt(0),
                _ => Acc::SumFloat(0.0),
            },
            AggFunc::Avg => Acc::Avg(0.0, 0),
            AggFunc::Min => Acc::Min(None),
            AggFunc::Max => Acc::Max(None),
            AggFunc::First => Acc::First(None),
            AggFunc::Last => Acc::Last(None),
            AggFunc::Percentile(p) => Acc::Percentile(p, Vec::new()),
        }
    }

    /// Folds in one value (`None`: a null, or `count(*)`'s row).
    fn update(&mut self, value: Option<&ScalarValue>, time: i64) {
        match (self, value) {
            (Acc::Count(n), v) => {
                if v.is_none_or(|v| !v.is_null()) {
                    *n += 1;
                }
            }
            (_, None) => {}
            (_, Some(v)) if v.is_null() => {}
            (Acc::SumInt(s), Some(v)) => *s = s.wrapping_add(as_i64(v)),
            (Acc::SumUInt(s), Some(v)) => *s = s.wrapping_add(as_u64(v)),
            (Acc::SumFloat(s), Some(v)) => *s += as_f64(v),
            (Acc::Avg(s, n), Some(v)) => {
                *s += as_f64(v);
                *n += 1;
            }
            (Acc::Min(m), Some(v)) => {
                if m.as_ref()
                    .is_none_or(|m| v.partial_cmp(m) == Some(std::cmp::Ordering::Less))
                {
                    *m = Some(v.clone());
                }
            }
            (Acc::Max(m), Some(v)) => {
                if m.as_ref()
                    .is_none_or(|m| v.partial_cmp(m) == Some(std::cmp::Ordering::Greater))
                {
                    *m = Some(v.clone());
                }
            }
            (Acc::First(f), Some(v)) => {
                if f.as_ref().is_none_or(|(t, _)| time < *t) {
                    *f = Some((time, v.clone()));
                }
            }
            (Acc::Last(l), Some(v)) => {
                if l.as_ref().is_none_or(|(t, _)| time >= *t) {
                    *l = Some((time, v.clone()));
                }
            }
            (Acc::Percentile(_, values), Some(v)) => values.push(as_f64(v)),
        }
    }

    /// Folds in another accumulator of the same aggregate (merging sessions).
    fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::SumInt(a), Acc::SumInt(b)) => *a = a.wrapping_add(b),
            (Acc::SumUInt(a), Acc::SumUInt(b)) => *a = a.wrapping_add(b),
            (Acc::SumFloat(a), Acc::SumFloat(b)) => *a += b,
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (me @ (Acc::Min(_) | Acc::Max(_)), Acc::Min(Some(v)) | Acc::Max(Some(v))) => {
                me.update(Some(&v), 0)
            }
            (
                me @ (Acc::First(_) | Acc::Last(_)),
                Acc::First(Some((t, v))) | Acc::Last(Some((t, v))),
            ) => {
                me.update(Some(&v), t);
            }
            (Acc::Percentile(_, a), Acc::Percentile(_, b)) => a.extend(b),
            _ => {}
        }
    }

    fn value(&self, out: &DataType) -> ScalarValue {
        let v = match self {
            Acc::Count(n) => ScalarValue::Int64(Some(*n)),
            Acc::SumInt(s) => ScalarValue::Int64(Some(*s)),
            Acc::SumUInt(s) => ScalarValue::UInt64(Some(*s)),
            Acc::SumFloat(s) => ScalarValue::Float64(Some(*s)),
            Acc::Avg(_, 0) => ScalarValue::Float64(None),
            Acc::Avg(s, n) => ScalarValue::Float64(Some(*s / *n as f64)),
            Acc::Min(m) | Acc::Max(m) => m.clone().unwrap_or(ScalarValue::Null),
            Acc::First(f) | Acc::Last(f) => {
                f.as_ref().map_or(ScalarValue::Null, |(_, v)| v.clone())
            }
            Acc::Percentile(p, values) => ScalarValue::Float64(percentile(values, *p)),
        };
        if v.is_null() {
            ScalarValue::try_from(out).unwrap_or(ScalarValue::Null)
        } else {
            v
        }
    }
}

/// Nearest-rank percentile.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

fn as_f64(v: &ScalarValue) -> f64 {
    match v.cast_to(&DataType::Float64) {
        Ok(ScalarValue::Float64(Some(x))) => x,
        _ => f64::NAN,
    }
}

fn as_i64(v: &ScalarValue) -> i64 {
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(x))) => x,
        _ => 0,
    }
}

fn as_u64(v: &ScalarValue) -> u64 {
    match v.cast_to(&DataType::UInt64) {
        Ok(ScalarValue::UInt64(Some(x))) => x,
        _ => 0,
    }
}

/// State of one window of one key.
#[derive(Debug, Clone)]
struct Pane {
    start: i64,
    end: i64,
    accs: Vec<Acc>,
    /// Fired at least once; later updates emit the row again.
    fired: bool,
    /// Changed since it was last emitted.
    dirty: bool,
}

/// What a batch or a watermark produced.
#[derive(Debug, Default)]
pub struct WindowOutput {
    pub rows: Option<RecordBatch>,
    pub late: Option<RecordBatch>,
    pub late_rows: u64,
}

/// A window operator.
pub struct Window {
    spec: WindowSpec,
    /// Input column indexes: event time, keys, each aggregate's column.
    time_col: usize,
    key_cols: Vec<usize>,
    agg_cols: Vec<Option<usize>>,
    out_schema: SchemaRef,
    /// The accumulators of a window no row has reached yet.
    empty: Vec<Acc>,
    watermark: i64,
    /// Per key, its panes by start.
    state: HashMap<Vec<ScalarValue>, BTreeMap<i64, Pane>>,
}

impl Window {
    /// # Errors
    /// A column of the spec is missing from `input` (validation prevents it).
    pub fn new(
        spec: WindowSpec,
        input: &SchemaRef,
        event_time: &str,
        out_schema: SchemaRef,
    ) -> Result<Self, String> {
        let idx = |name: &str| input.index_of(name).map_err(|e| e.to_string());
        let time_col = idx(event_time)?;
        let key_cols = spec
            .key_by
            .iter()
            .map(|k| idx(&k.name))
            .collect::<Result<_, _>>()?;
        let agg_cols: Vec<Option<usize>> = spec
            .aggregates
            .iter()
            .map(|a| a.column.as_deref().map(idx).transpose())
            .collect::<Result<_, _>>()?;
        let empty = spec
            .aggregates
            .iter()
            .zip(&agg_cols)
            .map(|(a, c)| Acc::new(a.func, c.map(|i| input.field(i).data_type())))
            .collect();
        Ok(Self {
            spec,
            time_col,
            key_cols,
            agg_cols,
            out_schema,
            empty,
            watermark: i64::MIN,
            state: HashMap::new(),
        })
    }

    /// The windows holding `t`, appended to `out` (a session: the one it would open).
    fn starts(&self, t: i64, out: &mut Vec<(i64, i64)>) {
        // Saturating: an event time near the ends of the i64 range must not overflow.
        match self.spec.kind {
            WindowKind::Tumbling { size } => {
                let s = t.div_euclid(size).saturating_mul(size);
                out.push((s, s.saturating_add(size)));
            }
            WindowKind::Sliding { size, slide } => {
                let mut s = t.div_euclid(slide).saturating_mul(slide);
                let lowest = t.saturating_sub(size);
                while s > lowest {
                    out.push((s, s.saturating_add(size)));
                    s = s.saturating_sub(slide);
                    if s == i64::MIN {
                        break;
                    }
                }
            }
            WindowKind::Session { gap } => out.push((t, t.saturating_add(gap))),
        }
    }

    /// Folds a batch in; emits updates of fired windows and the late rows.
    ///
    /// # Errors
    /// The event-time column cannot be read as nanoseconds.
    pub fn on_batch(&mut self, batch: &RecordBatch) -> Result<WindowOutput, String> {
        let times = event_times(batch.column(self.time_col))?;
        let mut late = Vec::new();
        // Reused per row; a key is copied into the state only when it is new.
        let mut key: Vec<ScalarValue> = Vec::with_capacity(self.key_cols.len());
        let mut values: Vec<Option<ScalarValue>> = Vec::with_capacity(self.agg_cols.len());
        let mut windows: Vec<(i64, i64)> = Vec::new();
        for (row, t) in times.iter().enumerate() {
            let Some(t) = *t else {
                late.push(row as u32);
                continue;
            };
            windows.clear();
            self.starts(t, &mut windows);
            let (lateness, watermark) = (self.spec.allowed_lateness, self.watermark);
            windows.retain(|&(_, end)| end.saturating_add(lateness) > watermark);
            if windows.is_empty() {
                late.push(row as u32);
                continue;
            }
            key.clear();
            key.extend(self.key_cols.iter().map(|&c| {
                ScalarValue::try_from_array(batch.column(c), row).unwrap_or(ScalarValue::Null)
            }));
            values.clear();
            values.extend(
                self.agg_cols.iter().map(|c| {
                    c.and_then(|c| ScalarValue::try_from_array(batch.column(c), row).ok())
                }),
            );
            if !self.state.contains_key(key.as_slice()) {
                self.state.insert(key.clone(), BTreeMap::new());
            }
            let Some(panes) = self.state.get_mut(key.as_slice()) else {
                continue;
            };
            let session = matches!(self.spec.kind, WindowKind::Session { .. });
            for &(start, end) in &windows {
                let start = if session {
                    merge_sessions(panes, start, end, &self.empty)
                } else {
                    panes.entry(start).or_insert_with(|| Pane {
                        start,
                        end,
                        accs: self.empty.clone(),
                        fired: false,
                        dirty: false,
                    });
                    start
                };
                if let Some(p) = panes.get_mut(&start) {
                    for (acc, v) in p.accs.iter_mut().zip(&values) {
                        acc.update(v.as_ref(), t);
                    }
                    p.dirty = true;
                }
            }
        }
        // Fired windows a row updated are emitted again at once (only fired panes that
        // this batch changed are both fired and dirty: every emission cleans them).
        let rows = self.emit(|p| p.fired && p.dirty)?;
        let late_rows = late.len() as u64;
        let late = if late.is_empty() {
            None
        } else {
            Some(take_record_batch(batch, &UInt32Array::from(late)).map_err(|e| e.to_string())?)
        };
        Ok(WindowOutput {
            rows,
            late,
            late_rows,
        })
    }

    /// Advances the watermark: fires the windows it reached, drops those past lateness.
    ///
    /// # Errors
    /// Building the output batch failed.
    pub fn on_watermark(&mut self, watermark: i64) -> Result<Option<RecordBatch>, String> {
        if watermark <= self.watermark {
            return Ok(None);
        }
        self.watermark = watermark;
        let rows = self.emit(|p| !p.fired && p.end <= watermark)?;
        let lateness = self.spec.allowed_lateness;
        for panes in self.state.values_mut() {
            panes.retain(|_, p| p.end.saturating_add(lateness) > watermark);
        }
        self.state.retain(|_, panes| !panes.is_empty());
        Ok(rows)
    }

    /// Emits the panes `pick` chooses, marking them fired and clean.
    fn emit(&mut self, pick: impl Fn(&Pane) -> bool) -> Result<Option<RecordBatch>, String> {
        let mut rows: Vec<(Vec<ScalarValue>, i64, i64, Vec<ScalarValue>)> = Vec::new();
        let out_types: Vec<DataType> = self
            .out_schema
            .fields()
            .iter()
            .skip(self.key_cols.len() + 2)
            .map(|f| f.data_type().clone())
            .collect();
        for (key, panes) in &mut self.state {
            for p in panes.values_mut() {
                if pick(p) {
                    let values = p
                        .accs
                        .iter()
                        .zip(&out_types)
                        .map(|(a, t)| a.value(t))
                        .collect();
                    rows.push((key.clone(), p.start, p.end, values));
                    p.fired = true;
                    p.dirty = false;
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        // Deterministic output: by window, then key.
        rows.sort_by(|a, b| {
            (a.1, a.2)
                .cmp(&(b.1, b.2))
                .then_with(|| cmp_keys(&a.0, &b.0))
        });
        let fields = self.out_schema.fields();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        for k in 0..self.key_cols.len() {
            columns.push(scalars_to_array(
                rows.iter().map(|r| r.0[k].clone()),
                fields[k].data_type(),
            )?);
        }
        let tz = Some(Arc::from("UTC"));
        columns.push(Arc::new(
            arrow::array::TimestampNanosecondArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )
            .with_timezone_opt(tz.clone()),
        ));
        columns.push(Arc::new(
            arrow::array::TimestampNanosecondArray::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )
            .with_timezone_opt(tz),
        ));
        for (a, t) in out_types.iter().enumerate() {
            columns.push(scalars_to_array(rows.iter().map(|r| r.3[a].clone()), t)?);
        }
        RecordBatch::try_new(Arc::clone(&self.out_schema), columns)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Keys and panes held.
    pub fn open_windows(&self) -> usize {
        self.state.values().map(BTreeMap::len).sum()
    }
}

fn cmp_keys(a: &[ScalarValue], b: &[ScalarValue]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y) {
            Some(std::cmp::Ordering::Equal) | None => {}
            Some(o) => return o,
        }
    }
    std::cmp::Ordering::Equal
}

fn scalars_to_array(
    values: impl Iterator<Item = ScalarValue>,
    t: &DataType,
) -> Result<ArrayRef, String> {
    let values: Vec<ScalarValue> = values.collect();
    if values.is_empty() {
        return Ok(arrow::array::new_empty_array(t));
    }
    let array = ScalarValue::iter_to_array(values).map_err(|e| e.to_string())?;
    if array.data_type() == t {
        Ok(array)
    } else {
        cast(&array, t).map_err(|e| e.to_string())
    }
}

/// Session windows of one key: the new session `[start, end)` with the ones it overlaps
/// merged into it; returns its start.
fn merge_sessions(panes: &mut BTreeMap<i64, Pane>, start: i64, end: i64, accs: &[Acc]) -> i64 {
    let overlapping: Vec<i64> = panes
        .values()
        .filter(|p| p.start < end && start < p.end)
        .map(|p| p.start)
        .collect();
    let mut merged = Pane {
        start,
        end,
        accs: accs.to_vec(),
        fired: false,
        dirty: false,
    };
    for s in overlapping {
        if let Some(p) = panes.remove(&s) {
            merged.start = merged.start.min(p.start);
            merged.end = merged.end.max(p.end);
            merged.fired |= p.fired;
            for (a, b) in merged.accs.iter_mut().zip(p.accs) {
                a.merge(b);
            }
        }
    }
    let s = merged.start;
    panes.insert(s, merged);
    s
}

/// Event times in nanoseconds (`None` for a null).
pub fn event_times(column: &ArrayRef) -> Result<Vec<Option<i64>>, String> {
    let ns = cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, None))
        .map_err(|e| e.to_string())?;
    let ns = cast(&ns, &DataType::Int64).map_err(|e| e.to_string())?;
    let ns = ns
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .ok_or("event time is not a timestamp")?;
    Ok(ns.iter().collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::topology::spec::{Aggregate, Named};

    /// Event times at the ends of the range neither panic nor lose rows.
    #[test]
    fn extreme_event_times_are_handled() {
        let input = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
        ]));
        let out = Arc::new(Schema::new(vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("n", DataType::Int64, true),
        ]));
        let times = vec![i64::MIN + 1, -1, 0, i64::MAX - 1];
        let batch = RecordBatch::try_new(
            Arc::clone(&input),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(TimestampNanosecondArray::from(times)),
            ],
        )
        .expect("batch");
        for kind in [
            WindowKind::Tumbling {
                size: 10_000_000_000,
            },
            WindowKind::Sliding {
                size: 10_000_000_000,
                slide: 3_000_000_000,
            },
            WindowKind::Session { gap: 5_000_000_000 },
        ] {
            let spec = WindowSpec {
                key_by: Vec::<Named>::new(),
                kind,
                aggregates: vec![Aggregate {
                    output: "n".into(),
                    func: AggFunc::Count,
                    column: None,
                    loc: Default::default(),
                }],
                allowed_lateness: i64::MAX,
            };
            let mut w = Window::new(spec, &input, "time", Arc::clone(&out)).expect("window");
            let r = w.on_batch(&batch).expect("batch in");
            let fired = w.on_watermark(i64::MAX).expect("fires").expect("rows");
            let n = fired
                .column(2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("n");
            // Every row is counted in a window or sent to `late` (a sliding window cannot
            // start before the first representable instant).
            assert!(r.late_rows <= 1, "{kind:?}");
            assert!(
                n.iter().flatten().sum::<i64>() + r.late_rows as i64 >= 4,
                "{kind:?}"
            );
        }
    }
}
