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
//!
//! Over an upsert stream (a `table_stream`, or a window's own output: rows that carry a
//! primary key, and a later row with the same key replaces an earlier one, field by
//! field), a pane keeps its rows by primary key instead of folding them at once: a row
//! that overwrites one already in the pane merges into it (each column takes the new
//! value unless it is null), and the aggregates are computed from the merged rows when
//! the pane is emitted. So `count(*)` counts each primary key once and `avg` sees each
//! row's last value, as SQL over the table does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Float64Builder, Int64Array, ListBuilder,
    RecordBatch, UInt32Array, UInt64Array,
};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::scalar::ScalarValue;
use datafusion_functions_aggregate_common::tdigest::{Centroid, DEFAULT_MAX_SIZE, TDigest};

use super::spec::{AggFunc, WindowKind, WindowSpec};
use super::state::{KeyedState, encode_keyed};

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
    ApproxPercentile(f64, Box<Digest>),
}

/// A t-digest and the values not yet folded into it (folding sorts them, so it is done
/// [`DIGEST_BUFFER`] values at a time).
#[derive(Debug, Clone)]
struct Digest {
    digest: TDigest,
    buffer: Vec<f64>,
}

const DIGEST_BUFFER: usize = 1024;

impl Digest {
    fn new() -> Self {
        Self {
            digest: TDigest::new(DEFAULT_MAX_SIZE),
            buffer: Vec::new(),
        }
    }

    fn push(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.buffer.push(v);
        if self.buffer.len() >= DIGEST_BUFFER {
            // Folded in place: the buffer moves into the merge instead of being copied.
            self.digest = self
                .digest
                .merge_unsorted_f64(std::mem::take(&mut self.buffer));
        }
    }

    /// The digest with the buffered values folded in.
    fn folded(&self) -> TDigest {
        if self.buffer.is_empty() {
            self.digest.clone()
        } else {
            self.digest.merge_unsorted_f64(self.buffer.clone())
        }
    }

    fn merge(&mut self, other: &Digest) {
        self.digest = TDigest::merge_digests([&self.folded(), &other.folded()]);
        self.buffer.clear();
    }

    fn quantile(&self, p: f64) -> Option<f64> {
        let d = self.folded();
        (d.count() > 0.0).then(|| d.estimate_quantile(p))
    }

    /// Checkpoint form: sum, count, max, min, then each centroid's mean and weight.
    fn encode(&self) -> Vec<f64> {
        let d = self.folded();
        let mut out = vec![d.sum(), d.count(), d.max(), d.min()];
        for c in d.centroids() {
            out.extend([c.mean(), c.weight()]);
        }
        out
    }

    fn decode(v: &[f64]) -> Result<Self, String> {
        let [sum, count, max, min, centroids @ ..] = v else {
            return Err("a digest needs sum, count, max and min".into());
        };
        if centroids.len() % 2 != 0 {
            return Err("a digest's centroids come in pairs".into());
        }
        let centroids = centroids
            .chunks_exact(2)
            .map(|c| Centroid::new(c[0], c[1]))
            .collect();
        let digest = TDigest::try_from_parts(DEFAULT_MAX_SIZE, *sum, *count, *max, *min, centroids)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            digest,
            buffer: Vec::new(),
        })
    }
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
            AggFunc::ApproxPercentile(p) => Acc::ApproxPercentile(p, Box::new(Digest::new())),
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
            (Acc::ApproxPercentile(_, d), Some(v)) => d.push(as_f64(v)),
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
            (Acc::ApproxPercentile(_, a), Acc::ApproxPercentile(_, b)) => a.merge(&b),
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
            Acc::ApproxPercentile(p, d) => ScalarValue::Float64(d.quantile(*p)),
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

/// The rows of an upsert pane by primary key, in the order their keys first arrived
/// (the order the aggregates fold them in, so that results do not depend on hashing).
#[derive(Debug, Clone, Default)]
struct Upserts {
    index: HashMap<Vec<ScalarValue>, usize>,
    rows: Vec<UpsertRow>,
}

#[derive(Debug, Clone)]
struct UpsertRow {
    key: Vec<ScalarValue>,
    time: i64,
    /// Each aggregate's input value (`None` for `count(*)`).
    values: Vec<Option<ScalarValue>>,
}

impl Upserts {
    /// Adds a row, or merges it into the row with the same primary key: a column takes
    /// the new value unless that is null (a write's missing fields keep their values).
    fn upsert(&mut self, key: &[ScalarValue], time: i64, values: &[Option<ScalarValue>]) {
        match self.index.get(key) {
            Some(&i) => {
                let row = &mut self.rows[i];
                row.time = time;
                for (old, new) in row.values.iter_mut().zip(values) {
                    if new.as_ref().is_some_and(|v| !v.is_null()) {
                        old.clone_from(new);
                    }
                }
            }
            None => {
                self.index.insert(key.to_vec(), self.rows.len());
                self.rows.push(UpsertRow {
                    key: key.to_vec(),
                    time,
                    values: values.to_vec(),
                });
            }
        }
    }

    fn merge(&mut self, other: Upserts) {
        for row in other.rows {
            self.upsert(&row.key, row.time, &row.values);
        }
    }

    /// The aggregates over the merged rows.
    fn fold(&self, empty: &[Acc]) -> Vec<Acc> {
        let mut accs = empty.to_vec();
        for row in &self.rows {
            for (acc, v) in accs.iter_mut().zip(&row.values) {
                acc.update(v.as_ref(), row.time);
            }
        }
        accs
    }
}

/// State of one window of one key.
#[derive(Debug, Clone)]
struct Pane {
    start: i64,
    end: i64,
    /// The running aggregates (an upsert pane computes them from `upserts` instead).
    accs: Vec<Acc>,
    /// Over an upsert stream: the pane's rows by primary key.
    upserts: Option<Upserts>,
    /// Fired at least once; later updates emit the row again.
    fired: bool,
    /// Changed since it was last emitted.
    dirty: bool,
}

impl Pane {
    fn new(start: i64, end: i64, empty: &[Acc], upsert: bool) -> Self {
        Self {
            start,
            end,
            accs: if upsert { Vec::new() } else { empty.to_vec() },
            upserts: upsert.then(Upserts::default),
            fired: false,
            dirty: false,
        }
    }
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
    /// Over an upsert stream: the input columns of the primary key.
    upsert_key: Option<Vec<usize>>,
    out_schema: SchemaRef,
    input: SchemaRef,
    /// The accumulators of a window no row has reached yet.
    empty: Vec<Acc>,
    watermark: i64,
    /// Per key, its panes by start.
    state: HashMap<Vec<ScalarValue>, BTreeMap<i64, Pane>>,
}

impl Window {
    /// `upsert_key` names the input's primary key when it is an upsert stream.
    ///
    /// # Errors
    /// A column of the spec is missing from `input` (validation prevents it).
    pub fn new(
        spec: WindowSpec,
        input: &SchemaRef,
        event_time: &str,
        upsert_key: Option<&[String]>,
        out_schema: SchemaRef,
    ) -> Result<Self, String> {
        let idx = |name: &str| input.index_of(name).map_err(|e| e.to_string());
        let time_col = idx(event_time)?;
        let upsert_key = upsert_key
            .map(|k| k.iter().map(|c| idx(c)).collect::<Result<Vec<_>, _>>())
            .transpose()?;
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
            upsert_key,
            out_schema,
            input: Arc::clone(input),
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
        let mut primary: Vec<ScalarValue> = Vec::new();
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
            if let Some(cols) = &self.upsert_key {
                primary.clear();
                primary.extend(cols.iter().map(|&c| {
                    ScalarValue::try_from_array(batch.column(c), row).unwrap_or(ScalarValue::Null)
                }));
            }
            let upsert = self.upsert_key.is_some();
            if !self.state.contains_key(key.as_slice()) {
                self.state.insert(key.clone(), BTreeMap::new());
            }
            let Some(panes) = self.state.get_mut(key.as_slice()) else {
                continue;
            };
            let session = matches!(self.spec.kind, WindowKind::Session { .. });
            for &(start, end) in &windows {
                let start = if session {
                    merge_sessions(panes, start, end, &self.empty, upsert)
                } else {
                    panes
                        .entry(start)
                        .or_insert_with(|| Pane::new(start, end, &self.empty, upsert));
                    start
                };
                if let Some(p) = panes.get_mut(&start) {
                    match &mut p.upserts {
                        Some(u) => u.upsert(&primary, t, &values),
                        None => {
                            for (acc, v) in p.accs.iter_mut().zip(&values) {
                                acc.update(v.as_ref(), t);
                            }
                        }
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
                    let folded = p.upserts.as_ref().map(|u| u.fold(&self.empty));
                    let values = folded
                        .as_ref()
                        .unwrap_or(&p.accs)
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

    /// The operator's state for a checkpoint: one Arrow IPC stream of one batch, a row
    /// per (key, pane) with the key columns, `start`, `end`, `fired`, `dirty` and each
    /// aggregate's accumulator in `a<i>` (plus `a<i>_n` for avg, `a<i>_t` for first and
    /// last); the watermark is in the schema metadata.
    ///
    /// # Errors
    /// Arrow could not build or encode the batch.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        if let Some(pk) = &self.upsert_key {
            return self.snapshot_upserts(pk);
        }
        let panes: Vec<(&Vec<ScalarValue>, &Pane)> = self
            .state
            .iter()
            .flat_map(|(k, ps)| ps.values().map(move |p| (k, p)))
            .collect();
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let ints = |f: &dyn Fn(&Pane) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                panes.iter().map(|(_, p)| f(p)),
            ))
        };
        let bools = |f: &dyn Fn(&Pane) -> bool| -> ArrayRef {
            Arc::new(BooleanArray::from_iter(
                panes.iter().map(|(_, p)| Some(f(p))),
            ))
        };
        fields.push(Field::new("start", DataType::Int64, false));
        columns.push(ints(&|p| p.start));
        fields.push(Field::new("end", DataType::Int64, false));
        columns.push(ints(&|p| p.end));
        fields.push(Field::new("fired", DataType::Boolean, false));
        columns.push(bools(&|p| p.fired));
        fields.push(Field::new("dirty", DataType::Boolean, false));
        columns.push(bools(&|p| p.dirty));
        for (i, template) in self.empty.iter().enumerate() {
            let accs = || panes.iter().map(move |(_, p)| &p.accs[i]);
            let value_type = self.agg_cols[i]
                .map_or(DataType::Null, |c| self.input.field(c).data_type().clone());
            let name = format!("a{i}");
            match template {
                Acc::Count(_) | Acc::SumInt(_) => {
                    fields.push(Field::new(&name, DataType::Int64, false));
                    columns.push(Arc::new(Int64Array::from_iter_values(accs().map(
                        |a| match a {
                            Acc::Count(n) | Acc::SumInt(n) => *n,
                            _ => 0,
                        },
                    ))));
                }
                Acc::SumUInt(_) => {
                    fields.push(Field::new(&name, DataType::UInt64, false));
                    columns.push(Arc::new(UInt64Array::from_iter_values(accs().map(
                        |a| match a {
                            Acc::SumUInt(n) => *n,
                            _ => 0,
                        },
                    ))));
                }
                Acc::SumFloat(_) | Acc::Avg(..) => {
                    fields.push(Field::new(&name, DataType::Float64, false));
                    columns.push(Arc::new(Float64Array::from_iter_values(accs().map(
                        |a| match a {
                            Acc::SumFloat(s) | Acc::Avg(s, _) => *s,
                            _ => 0.0,
                        },
                    ))));
                    if matches!(template, Acc::Avg(..)) {
                        fields.push(Field::new(format!("{name}_n"), DataType::UInt64, false));
                        columns.push(Arc::new(UInt64Array::from_iter_values(accs().map(
                            |a| match a {
                                Acc::Avg(_, n) => *n,
                                _ => 0,
                            },
                        ))));
                    }
                }
                Acc::Min(_) | Acc::Max(_) | Acc::First(_) | Acc::Last(_) => {
                    let null = ScalarValue::try_from(&value_type).unwrap_or(ScalarValue::Null);
                    let (times, values): (Vec<Option<i64>>, Vec<ScalarValue>) = accs()
                        .map(|a| match a {
                            Acc::Min(Some(v)) | Acc::Max(Some(v)) => (None, v.clone()),
                            Acc::First(Some((t, v))) | Acc::Last(Some((t, v))) => {
                                (Some(*t), v.clone())
                            }
                            _ => (None, null.clone()),
                        })
                        .unzip();
                    fields.push(Field::new(&name, value_type.clone(), true));
                    columns.push(scalars_to_array(values.into_iter(), &value_type)?);
                    if matches!(template, Acc::First(_) | Acc::Last(_)) {
                        fields.push(Field::new(format!("{name}_t"), DataType::Int64, true));
                        columns.push(Arc::new(Int64Array::from(times)));
                    }
                }
                Acc::Percentile(..) | Acc::ApproxPercentile(..) => {
                    fields.push(Field::new(
                        &name,
                        DataType::List(Arc::new(Field::new_list_field(DataType::Float64, false))),
                        false,
                    ));
                    let mut b = ListBuilder::new(Float64Builder::new())
                        .with_field(Arc::new(Field::new_list_field(DataType::Float64, false)));
                    for a in accs() {
                        match a {
                            Acc::Percentile(_, values) => b.values().append_slice(values),
                            Acc::ApproxPercentile(_, d) => b.values().append_slice(&d.encode()),
                            _ => {}
                        }
                        b.append(true);
                    }
                    columns.push(Arc::new(b.finish()));
                }
            }
        }
        let keys: Vec<&Vec<ScalarValue>> = panes.iter().map(|(k, _)| *k).collect();
        encode_keyed(
            &self.input,
            &self.key_cols,
            &keys,
            fields,
            columns,
            self.watermark,
        )
    }

    /// Replaces the state with one [`Window::snapshot`] made.
    ///
    /// # Errors
    /// The bytes are not a snapshot of a window with this spec.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let st = KeyedState::decode(bytes, self.key_cols.len(), "window")?;
        let saved_upserts = st.batch.column_by_name("t").is_some();
        if saved_upserts != self.upsert_key.is_some() {
            return Err(st.bad(if saved_upserts {
                "it holds rows by primary key, but the window's input is no longer an upsert stream"
            } else {
                "it holds running aggregates, but the window's input is now an upsert stream"
            }));
        }
        if let Some(pk) = self.upsert_key.clone() {
            return self.restore_upserts(&st, &pk);
        }
        let int = |name: &str| st.typed::<Int64Array>(name);
        let uint = |name: &str| st.typed::<UInt64Array>(name);
        let float = |name: &str| st.typed::<Float64Array>(name);
        let (start, end) = (int("start")?, int("end")?);
        let (fired, dirty) = (
            st.typed::<BooleanArray>("fired")?,
            st.typed::<BooleanArray>("dirty")?,
        );
        let mut state: HashMap<Vec<ScalarValue>, BTreeMap<i64, Pane>> = HashMap::new();
        for row in 0..st.rows() {
            let key = st.key(row)?;
            let mut accs = Vec::with_capacity(self.empty.len());
            for (i, template) in self.empty.iter().enumerate() {
                let name = format!("a{i}");
                let value = || -> Result<Option<ScalarValue>, String> {
                    let v = st.scalar(&st.column(&name)?, row)?;
                    Ok((!v.is_null()).then_some(v))
                };
                let time = || -> Result<Option<i64>, String> {
                    let t = int(&format!("{name}_t"))?;
                    Ok((!t.is_null(row)).then(|| t.value(row)))
                };
                let floats = || -> Result<Vec<f64>, String> {
                    let values = st.typed::<arrow::array::ListArray>(&name)?.value(row);
                    let values = values
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .ok_or_else(|| st.bad(&format!("{name} holds no Float64")))?;
                    Ok(values.values().to_vec())
                };
                accs.push(match template {
                    Acc::Count(_) => Acc::Count(int(&name)?.value(row)),
                    Acc::SumInt(_) => Acc::SumInt(int(&name)?.value(row)),
                    Acc::SumUInt(_) => Acc::SumUInt(uint(&name)?.value(row)),
                    Acc::SumFloat(_) => Acc::SumFloat(float(&name)?.value(row)),
                    Acc::Avg(..) => Acc::Avg(
                        float(&name)?.value(row),
                        uint(&format!("{name}_n"))?.value(row),
                    ),
                    Acc::Min(_) => Acc::Min(value()?),
                    Acc::Max(_) => Acc::Max(value()?),
                    Acc::First(_) => Acc::First(time()?.zip(value()?)),
                    Acc::Last(_) => Acc::Last(time()?.zip(value()?)),
                    Acc::Percentile(p, _) => Acc::Percentile(*p, floats()?),
                    Acc::ApproxPercentile(p, _) => Acc::ApproxPercentile(
                        *p,
                        Box::new(
                            Digest::decode(&floats()?)
                                .map_err(|e| st.bad(&format!("{name}: {e}")))?,
                        ),
                    ),
                });
            }
            let pane = Pane {
                start: start.value(row),
                end: end.value(row),
                accs,
                upserts: None,
                fired: fired.value(row),
                dirty: dirty.value(row),
            };
            state.entry(key).or_default().insert(pane.start, pane);
        }
        self.state = state;
        self.watermark = st.watermark;
        Ok(())
    }
}

impl Window {
    /// The snapshot of a window over an upsert stream: a row per (key, pane, primary key)
    /// with the key columns, `start`, `end`, `fired`, `dirty`, the primary key in `p<j>`,
    /// the row's event time in `t` and each aggregate's merged input value in `v<i>`.
    fn snapshot_upserts(&self, pk: &[usize]) -> Result<Vec<u8>, String> {
        let mut keys: Vec<&Vec<ScalarValue>> = Vec::new();
        let mut entries: Vec<(&Pane, &UpsertRow)> = Vec::new();
        for (key, panes) in &self.state {
            for pane in panes.values() {
                for row in pane.upserts.iter().flat_map(|u| &u.rows) {
                    keys.push(key);
                    entries.push((pane, row));
                }
            }
        }
        let mut fields = vec![
            Field::new("start", DataType::Int64, false),
            Field::new("end", DataType::Int64, false),
            Field::new("fired", DataType::Boolean, false),
            Field::new("dirty", DataType::Boolean, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|(p, _)| p.start),
            )),
            Arc::new(Int64Array::from_iter_values(
                entries.iter().map(|(p, _)| p.end),
            )),
            Arc::new(BooleanArray::from_iter(
                entries.iter().map(|(p, _)| Some(p.fired)),
            )),
            Arc::new(BooleanArray::from_iter(
                entries.iter().map(|(p, _)| Some(p.dirty)),
            )),
        ];
        for (j, &c) in pk.iter().enumerate() {
            let t = self.input.field(c).data_type();
            fields.push(Field::new(format!("p{j}"), t.clone(), true));
            columns.push(scalars_to_array(
                entries.iter().map(|(_, r)| r.key[j].clone()),
                t,
            )?);
        }
        fields.push(Field::new("t", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            entries.iter().map(|(_, r)| r.time),
        )));
        for (i, col) in self.agg_cols.iter().enumerate() {
            let Some(c) = col else { continue };
            let t = self.input.field(*c).data_type();
            let null = ScalarValue::try_from(t).unwrap_or(ScalarValue::Null);
            fields.push(Field::new(format!("v{i}"), t.clone(), true));
            columns.push(scalars_to_array(
                entries
                    .iter()
                    .map(|(_, r)| r.values[i].clone().unwrap_or_else(|| null.clone())),
                t,
            )?);
        }
        encode_keyed(
            &self.input,
            &self.key_cols,
            &keys,
            fields,
            columns,
            self.watermark,
        )
    }

    fn restore_upserts(&mut self, st: &KeyedState, pk: &[usize]) -> Result<(), String> {
        let int = |name: &str| st.typed::<Int64Array>(name);
        let (start, end, time) = (int("start")?, int("end")?, int("t")?);
        let (fired, dirty) = (
            st.typed::<BooleanArray>("fired")?,
            st.typed::<BooleanArray>("dirty")?,
        );
        let primary: Vec<ArrayRef> = (0..pk.len())
            .map(|j| st.column(&format!("p{j}")))
            .collect::<Result<_, _>>()?;
        let values: Vec<Option<ArrayRef>> = self
            .agg_cols
            .iter()
            .enumerate()
            .map(|(i, c)| c.map(|_| st.column(&format!("v{i}"))).transpose())
            .collect::<Result<_, _>>()?;
        let mut state: HashMap<Vec<ScalarValue>, BTreeMap<i64, Pane>> = HashMap::new();
        for row in 0..st.rows() {
            let key = st.key(row)?;
            let pk_values = primary
                .iter()
                .map(|a| st.scalar(a, row))
                .collect::<Result<Vec<_>, _>>()?;
            let row_values = values
                .iter()
                .map(|a| a.as_ref().map(|a| st.scalar(a, row)).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            let (s, e) = (start.value(row), end.value(row));
            let pane = state
                .entry(key)
                .or_default()
                .entry(s)
                .or_insert_with(|| Pane::new(s, e, &self.empty, true));
            pane.fired = fired.value(row);
            pane.dirty = dirty.value(row);
            if let Some(u) = &mut pane.upserts {
                u.upsert(&pk_values, time.value(row), &row_values);
            }
        }
        self.state = state;
        self.watermark = st.watermark;
        Ok(())
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

pub(crate) fn scalars_to_array(
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
fn merge_sessions(
    panes: &mut BTreeMap<i64, Pane>,
    start: i64,
    end: i64,
    accs: &[Acc],
    upsert: bool,
) -> i64 {
    let overlapping: Vec<i64> = panes
        .values()
        .filter(|p| p.start < end && start < p.end)
        .map(|p| p.start)
        .collect();
    let mut merged = Pane::new(start, end, accs, upsert);
    for s in overlapping {
        if let Some(p) = panes.remove(&s) {
            merged.start = merged.start.min(p.start);
            merged.end = merged.end.max(p.end);
            merged.fired |= p.fired;
            for (a, b) in merged.accs.iter_mut().zip(p.accs) {
                a.merge(b);
            }
            if let (Some(a), Some(b)) = (&mut merged.upserts, p.upserts) {
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
            let mut w = Window::new(spec, &input, "time", None, Arc::clone(&out)).expect("window");
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

    /// A tumbling window of 10 ns keyed by `host`, with 20 ns of allowed lateness, and its
    /// output columns: `(output, func, column)` per aggregate.
    fn by_host(input: &Schema, aggs: &[(&str, AggFunc, Option<&str>)]) -> (SchemaRef, WindowSpec) {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let mut fields = vec![
            Field::new("host", DataType::Utf8, true),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
        ];
        for (name, func, col) in aggs {
            let t = match (func, col) {
                (AggFunc::Count, _) => DataType::Int64,
                (AggFunc::Min | AggFunc::Max | AggFunc::First | AggFunc::Last, Some(c)) => {
                    input.field_with_name(c).unwrap().data_type().clone()
                }
                _ => DataType::Float64,
            };
            fields.push(Field::new(*name, t, true));
        }
        let spec = WindowSpec {
            key_by: vec![Named {
                name: "host".into(),
                loc: Default::default(),
            }],
            kind: WindowKind::Tumbling { size: 10 },
            aggregates: aggs
                .iter()
                .map(|(name, func, col)| Aggregate {
                    output: (*name).into(),
                    func: *func,
                    column: col.map(Into::into),
                    loc: Default::default(),
                })
                .collect(),
            allowed_lateness: 20,
        };
        (Arc::new(Schema::new(fields)), spec)
    }

    /// A window restored from its snapshot is indistinguishable from the original:
    /// every aggregate kind, keys with nulls, fired panes awaiting late rows.
    #[test]
    fn snapshot_and_restore_keep_every_accumulator() {
        use arrow::array::{Float64Array, StringArray};
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let input = Arc::new(Schema::new(vec![
            Field::new("host", DataType::Utf8, true),
            Field::new("v", DataType::Float64, true),
            Field::new("time", ts.clone(), true),
        ]));
        let aggs = [
            ("n", AggFunc::Count, None),
            ("s", AggFunc::Sum, Some("v")),
            ("a", AggFunc::Avg, Some("v")),
            ("lo", AggFunc::Min, Some("v")),
            ("hi", AggFunc::Max, Some("host")),
            ("f", AggFunc::First, Some("v")),
            ("l", AggFunc::Last, Some("host")),
            ("p", AggFunc::Percentile(0.9), Some("v")),
            ("ap", AggFunc::ApproxPercentile(0.9), Some("v")),
        ];
        let (out, spec) = by_host(&input, &aggs);
        let batch = |rows: &[(Option<&str>, Option<f64>, i64)]| {
            RecordBatch::try_new(
                Arc::clone(&input),
                vec![
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(Float64Array::from(
                        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    )),
                    Arc::new(
                        TimestampNanosecondArray::from(
                            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                ],
            )
            .expect("batch")
        };
        let new =
            || Window::new(spec.clone(), &input, "time", None, Arc::clone(&out)).expect("window");
        let mut original = new();
        original
            .on_batch(&batch(&[
                (Some("a"), Some(1.5), 1),
                (None, Some(2.0), 3),
                (Some("a"), None, 12),
                (Some("b"), Some(-4.0), 15),
                (Some("a"), Some(9.0), 18),
            ]))
            .expect("rows");
        // Fires [0, 10); it stays open for late rows until 30.
        original.on_watermark(11).expect("fire");
        let mut restored = new();
        restored
            .restore(&original.snapshot().expect("snapshot"))
            .expect("restore");
        assert_eq!(restored.open_windows(), original.open_windows());
        let more = batch(&[
            (Some("a"), Some(7.0), 2),
            (Some("b"), Some(3.0), 19),
            (None, None, 25),
        ]);
        let (x, y) = (
            original.on_batch(&more).expect("more"),
            restored.on_batch(&more).expect("more"),
        );
        assert_eq!(x.rows, y.rows, "late updates");
        assert!(x.rows.is_some());
        assert_eq!(
            original.on_watermark(i64::MAX).expect("fire"),
            restored.on_watermark(i64::MAX).expect("fire")
        );
        assert!(restored.restore(b"not a snapshot").is_err());
    }

    /// Over an upsert stream a window agrees with SQL over the deduplicated table: a row
    /// written again (whole or in part) counts once with its last values, also after the
    /// window fired (within lateness) and across a snapshot.
    #[test]
    fn an_upsert_stream_counts_each_primary_key_once() {
        use arrow::array::{Float64Array, StringArray};
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let input = Arc::new(Schema::new(vec![
            Field::new("host", DataType::Utf8, true),
            Field::new("u", DataType::Float64, true),
            Field::new("s", DataType::Float64, true),
            Field::new("time", ts.clone(), true),
        ]));
        let aggs = [
            ("n", AggFunc::Count, None),
            ("nu", AggFunc::Count, Some("u")),
            ("avg_u", AggFunc::Avg, Some("u")),
            ("max_s", AggFunc::Max, Some("s")),
            ("last_u", AggFunc::Last, Some("u")),
        ];
        let (out, spec) = by_host(&input, &aggs);
        type Row<'a> = (&'a str, Option<f64>, Option<f64>, i64);
        let batch = |rows: &[Row]| {
            RecordBatch::try_new(
                Arc::clone(&input),
                vec![
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(Float64Array::from(
                        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    )),
                    Arc::new(Float64Array::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )),
                    Arc::new(
                        TimestampNanosecondArray::from(
                            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                ],
            )
            .expect("batch")
        };
        let key = ["host".to_string(), "time".to_string()];
        let new = || {
            Window::new(spec.clone(), &input, "time", Some(&key), Arc::clone(&out)).expect("window")
        };
        // (n, count(u), avg(u), max(s), last(u)) of host a's window [0, 10).
        let row_a = |b: &RecordBatch| -> (i64, i64, f64, f64, f64) {
            let hosts = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let r = (0..b.num_rows())
                .find(|&r| hosts.value(r) == "a")
                .expect("a row for host a");
            let int = |c: usize| {
                b.column(c)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(r)
            };
            let float = |c: usize| {
                b.column(c)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap()
                    .value(r)
            };
            (int(3), int(4), float(5), float(6), float(7))
        };
        let mut w = new();
        w.on_batch(&batch(&[
            ("a", Some(1.0), Some(1.0), 1),
            ("a", Some(3.0), Some(2.0), 2),
            ("b", Some(5.0), None, 2),
            // The same point again, in the same batch: replaces it.
            ("a", Some(5.0), Some(1.5), 1),
        ]))
        .expect("rows");
        // A later write of only `s` keeps `u`.
        w.on_batch(&batch(&[("a", None, Some(9.0), 2)]))
            .expect("rows");
        let fired = w.on_watermark(10).expect("fire").expect("rows");
        assert_eq!(row_a(&fired), (2, 2, 4.0, 9.0, 3.0));
        // Within lateness: an overwrite emits the window again, corrected.
        let again = w
            .on_batch(&batch(&[("a", Some(7.0), None, 1)]))
            .expect("rows")
            .rows
            .expect("the window again");
        assert_eq!(row_a(&again), (2, 2, 5.0, 9.0, 3.0));
        // A new point in it counts.
        let mut restored = new();
        restored
            .restore(&w.snapshot().expect("snapshot"))
            .expect("restore");
        let more = batch(&[("a", Some(2.0), None, 3), ("a", Some(0.0), None, 2)]);
        let (x, y) = (
            w.on_batch(&more).expect("rows"),
            restored.on_batch(&more).expect("rows"),
        );
        assert_eq!(x.rows, y.rows);
        assert_eq!(row_a(&y.rows.expect("again")), (3, 3, 3.0, 9.0, 2.0));
        // The modes do not mix up their checkpoints.
        let plain =
            Window::new(spec.clone(), &input, "time", None, Arc::clone(&out)).expect("window");
        assert!(new().restore(&plain.snapshot().expect("snapshot")).is_err());
        assert!(
            Window::new(spec.clone(), &input, "time", None, Arc::clone(&out))
                .expect("window")
                .restore(&w.snapshot().expect("snapshot"))
                .is_err()
        );
    }

    #[test]
    fn approximate_percentiles_stay_close_in_bounded_memory_and_survive_checkpoints() {
        // 200,000 values in a scrambled order: 0.0 .. 199.999.
        let n = 200_000u64;
        let value = |i: u64| ((i * 7919) % n) as f64 / 1000.0;
        let (mut whole, mut left, mut right) = (Digest::new(), Digest::new(), Digest::new());
        for i in 0..n {
            whole.push(value(i));
            if i % 3 == 0 { &mut left } else { &mut right }.push(value(i));
        }
        whole.push(f64::NAN);
        left.merge(&right);
        for p in [0.01, 0.5, 0.9, 0.99] {
            let exact = percentile(&(0..n).map(value).collect::<Vec<_>>(), p).unwrap();
            for d in [&whole, &left] {
                let got = d.quantile(p).unwrap();
                // Within 0.5% of the range.
                assert!((got - exact).abs() < 1.0, "p{p}: {got} vs {exact}");
            }
        }
        // At most 100 centroids, whatever the row count.
        assert!(whole.encode().len() <= 4 + 2 * DEFAULT_MAX_SIZE);
        let restored = Digest::decode(&whole.encode()).unwrap();
        assert_eq!(restored.quantile(0.9), whole.quantile(0.9));
        assert_eq!(Digest::new().quantile(0.5), None);
        assert!(Digest::decode(&[1.0, 2.0]).is_err());
        assert!(Digest::decode(&[1.0, 2.0, 3.0, 1.0, 5.0]).is_err());
    }
}
