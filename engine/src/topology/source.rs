//! Sources of a running topology: `generator`, `file` (jsonl, csv, parquet, and line
//! protocol through `lp_file`) and `table_stream`.
//!
//! A followed file (jsonl or line protocol, `follow: true`) is read to its end and then
//! checked for appended lines every [`FOLLOW_POLL`]; like a caught-up table stream it
//! goes idle after its `idle_timeout` without rows (see [`Quiet`]) and never ends by
//! itself.
//!
//! Each source makes batches, follows them with a watermark (highest event time seen
//! minus `max_out_of_orderness`) and, between batches, passes on the checkpoint barriers
//! the coordinator asked for with its position: the next row (generator), rows read and
//! the highest event time (file), or the next log offset of every partition and the
//! highest event time (table stream). Restored, it starts from that position.
//!
//! A table stream reads the database's partition logs (see `crate::stream`): from offset
//! zero (`from: earliest`, the oldest record still in the log) or the end (`latest`) on
//! the first start, from its checkpoint after a restart; it holds the log segments from
//! the last checkpoint's offsets on, so that a restart can read them again even if they
//! were persisted meanwhile. Caught up, it waits for the next write.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;

use super::checkpoint::{StateReader, StateWriter};
use super::lines::{JsonlFile, Lines, Next};
use super::lp_file::{LpBatches, LpFile};
use super::run::{Ctl, Outputs};
use super::spec::{FileFormat, GeneratorKind, Kind, NodeSpec, Precision, StartFrom};
use super::validate::generator_schema;
use super::window::event_times;

/// Rows per batch a source makes.
const SOURCE_BATCH_ROWS: usize = 1024;
/// Log records a table stream reads from one partition at a time.
const LOG_RECORDS_PER_READ: usize = 16;
/// Event time of a generator's first row: 2026-01-01T00:00:00Z.
pub const GENERATOR_EPOCH_NS: i64 = 1_767_225_600_000_000_000;

/// Runs the source `node` until it ends or is stopped; returns its final state.
pub(crate) async fn run(
    node: &NodeSpec,
    schema: Option<SchemaRef>,
    out: &mut Outputs,
    ctl: &mut Ctl,
) -> Result<Vec<u8>, String> {
    match &node.kind {
        Kind::Generator {
            generator,
            rows,
            rate,
            seed,
            throttle,
        } => {
            // In a server, pace by default: an unpaced generator floods it.
            let paced = throttle.unwrap_or(ctl.node.is_some());
            let rows = Rows {
                total: *rows,
                rate: *rate,
                paced,
            };
            generate(node, *generator, rows, *seed, out, ctl).await
        }
        Kind::FileSource {
            path,
            format,
            precision,
            measurement,
            follow,
        } => {
            let lp = (*precision, measurement.as_deref());
            read_file(node, path, *format, lp, *follow, schema, out, ctl).await
        }
        Kind::TableStream {
            database,
            table,
            from,
        } => {
            let schema = schema.ok_or_else(|| {
                format!("table {database}.{table} does not exist (write to it first)")
            })?;
            table_stream(node, database, table, *from, schema, out, ctl).await
        }
        other => Err(format!("{} is not a source", other.type_name())),
    }
}

/// The watermark a source sends after seeing event times up to `max_time`.
fn source_watermark(node: &NodeSpec, max_time: i64) -> Option<i64> {
    let lag = node.watermark.map_or(0, |w| w.max_out_of_orderness);
    (node.event_time.is_some() && max_time > i64::MIN).then(|| max_time.saturating_sub(lag))
}

/// The index of the source's event-time column, if it has one.
fn event_time_column(node: &NodeSpec, schema: &SchemaRef) -> Result<Option<usize>, String> {
    node.event_time
        .as_ref()
        .map(|t| schema.index_of(&t.name))
        .transpose()
        .map_err(|e| e.to_string())
}

/// The highest of `max` and the event times in `batch`.
fn max_event_time(batch: &RecordBatch, time_col: Option<usize>, max: i64) -> Result<i64, String> {
    let Some(c) = time_col else {
        return Ok(max);
    };
    Ok(event_times(batch.column(c))?
        .into_iter()
        .flatten()
        .fold(max, i64::max))
}

/// splitmix64: deterministic per (seed, row).
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How many rows a generator makes and how fast.
struct Rows {
    /// Stop after (none: run until stopped).
    total: Option<u64>,
    /// Rows per second of event time (and of wall time when paced).
    rate: u64,
    paced: bool,
}

/// Longest a paced generator sleeps before it looks for barriers and a stop again.
const PACE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

async fn generate(
    node: &NodeSpec,
    kind: GeneratorKind,
    rows: Rows,
    seed: u64,
    out: &mut Outputs,
    ctl: &mut Ctl,
) -> Result<Vec<u8>, String> {
    let schema = generator_schema(kind);
    let rate = rows.rate.max(1);
    let step = 1_000_000_000 / rate as i64;
    let total = rows.total.unwrap_or(u64::MAX);
    // Task k of n makes rows k, k + n, k + 2n...: together, the rows one task would make.
    let (k, n_tasks) = (ctl.instance.0 as u64, ctl.instance.1.max(1) as u64);
    let row_of = move |j: u64| k.saturating_add(j.saturating_mul(n_tasks));
    // The number of this task's rows made so far.
    let mut next = match &ctl.restore {
        Some(state) => StateReader::new(state).u64()?,
        None => 0,
    };
    let state = |next: u64| StateWriter::default().u64(next).finish();
    // Paced: this task's share of `rate` rows per wall second, in batches of about a
    // tenth of a second, each sent when the wall clock reaches its last row's turn.
    let task_rate = (rate as f64 / n_tasks as f64).max(f64::MIN_POSITIVE);
    let batch_rows = if rows.paced {
        ((task_rate / 10.0) as usize).clamp(1, SOURCE_BATCH_ROWS)
    } else {
        SOURCE_BATCH_ROWS
    };
    let (started, first) = (tokio::time::Instant::now(), next);
    while row_of(next) < total {
        if rows.paced {
            let due =
                started + std::time::Duration::from_secs_f64((next - first) as f64 / task_rate);
            loop {
                let now = tokio::time::Instant::now();
                if now >= due {
                    break;
                }
                tokio::time::sleep((due - now).min(PACE_TICK)).await;
                if ctl.source_barriers(out, || state(next)).await?.1 {
                    return Ok(state(next));
                }
            }
        }
        let mut ids: Vec<u64> = Vec::with_capacity(batch_rows);
        while ids.len() < batch_rows && row_of(next) < total {
            ids.push(row_of(next));
            next += 1;
        }
        let ids = &ids;
        let times: Vec<i64> = ids
            .iter()
            .map(|&i| GENERATOR_EPOCH_NS.saturating_add((i as i64).saturating_mul(step)))
            .collect();
        let tz = Some(Arc::from("UTC"));
        let time_col = || -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from(times.clone()).with_timezone_opt(tz.clone()))
        };
        let columns: Vec<ArrayRef> = match kind {
            GeneratorKind::Sequence => vec![
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64))),
                time_col(),
            ],
            GeneratorKind::Bids => {
                // Nexmark-like: a few hot auctions take most bids.
                let r: Vec<u64> = ids.iter().map(|&i| mix(seed, i)).collect();
                let auction = r.iter().map(|x| if x % 100 < 90 { (x >> 8) % 10 } else { 10 + (x >> 8) % 1000 } as i64);
                vec![
                    Arc::new(Int64Array::from_iter_values(auction)),
                    Arc::new(Int64Array::from_iter_values(
                        r.iter().map(|x| ((x >> 20) % 10_000) as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        r.iter().map(|x| ((x >> 32) % 10_000 + 1) as i64),
                    )),
                    Arc::new(StringArray::from_iter_values(r.iter().map(|x| {
                        ["apple", "google", "facebook", "baidu"][(x >> 44) as usize % 4]
                    }))),
                    Arc::new(StringArray::from_iter_values(r.iter().map(|x| {
                        format!("https://www.nexmark.com/item/{}", (x >> 8) % 1000)
                    }))),
                    time_col(),
                    Arc::new(StringArray::from_iter_values(r.iter().map(|_| ""))),
                ]
            }
            GeneratorKind::Auctions => {
                // Sellers are among the first 1,000 people, categories 10..15; an
                // auction runs 10 to 20 s.
                let r: Vec<u64> = ids.iter().map(|&i| mix(seed, i)).collect();
                let initial: Vec<i64> = r.iter().map(|x| (1 + x % 1000) as i64).collect();
                let expires = times
                    .iter()
                    .zip(&r)
                    .map(|(t, x)| t.saturating_add((10 + (x >> 40) % 11) as i64 * 1_000_000_000));
                vec![
                    Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64))),
                    Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("item-{i}")),
                    )),
                    Arc::new(StringArray::from_iter_values(r.iter().map(|x| {
                        ["new", "used", "vintage", "refurbished"][(x >> 52) as usize % 4]
                    }))),
                    Arc::new(Int64Array::from_iter_values(initial.iter().copied())),
                    Arc::new(Int64Array::from_iter_values(
                        initial
                            .iter()
                            .zip(&r)
                            .map(|(b, x)| b + ((x >> 20) % 1000) as i64),
                    )),
                    time_col(),
                    Arc::new(
                        TimestampNanosecondArray::from_iter_values(expires)
                            .with_timezone_opt(tz.clone()),
                    ),
                    Arc::new(Int64Array::from_iter_values(
                        r.iter().map(|x| ((x >> 8) % 1000) as i64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        r.iter().map(|x| (10 + (x >> 32) % 5) as i64),
                    )),
                    Arc::new(StringArray::from_iter_values(r.iter().map(|_| ""))),
                ]
            }
            GeneratorKind::Persons => {
                const FIRST: [&str; 8] = [
                    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie",
                ];
                const LAST: [&str; 8] = [
                    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones",
                ];
                const CITIES: [&str; 6] = [
                    "Phoenix",
                    "Los Angeles",
                    "Boise",
                    "Portland",
                    "Seattle",
                    "Cheyenne",
                ];
                const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
                let r: Vec<u64> = ids.iter().map(|&i| mix(seed, i)).collect();
                let name = |x: &u64| {
                    format!(
                        "{} {}",
                        FIRST[(*x % 8) as usize],
                        LAST[((x >> 8) % 8) as usize]
                    )
                };
                let place = |x: &u64| ((x >> 16) % 6) as usize;
                vec![
                    Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64))),
                    Arc::new(StringArray::from_iter_values(r.iter().map(name))),
                    Arc::new(StringArray::from_iter_values(r.iter().zip(ids).map(
                        |(x, i)| {
                            format!(
                                "{}{i}@example.com",
                                name(x).replace(' ', ".").to_lowercase()
                            )
                        },
                    ))),
                    Arc::new(StringArray::from_iter_values(
                        r.iter()
                            .map(|x| format!("{:016}", (x >> 4) % 10_000_000_000_000_000)),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        r.iter().map(|x| CITIES[place(x)]),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        r.iter().map(|x| STATES[place(x)]),
                    )),
                    time_col(),
                    Arc::new(StringArray::from_iter_values(r.iter().map(|_| ""))),
                ]
            }
        };
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
        out.batch(batch).await?;
        if let Some(wm) = source_watermark(node, times.last().copied().unwrap_or(i64::MIN)) {
            out.watermark(wm).await?;
        }
        if ctl.source_barriers(out, || state(next)).await?.1 {
            break;
        }
    }
    Ok(state(next))
}

/// How often a followed file is checked for appended lines.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// A file source's reader.
enum FileReader {
    /// CSV and Parquet, through Arrow's readers.
    Arrow(Box<dyn Iterator<Item = Result<RecordBatch, String>> + Send>),
    Jsonl(JsonlFile),
    Lp(LpBatches),
}

impl FileReader {
    fn next(&mut self) -> Result<Next, String> {
        match self {
            FileReader::Arrow(batches) => match batches.next() {
                Some(b) => b.map(Next::Batch),
                None => Ok(Next::End),
            },
            FileReader::Jsonl(f) => f.next(),
            FileReader::Lp(f) => f.next(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_file(
    node: &NodeSpec,
    path: &str,
    format: FileFormat,
    (precision, measurement): (Precision, Option<&str>),
    follow: bool,
    schema: Option<SchemaRef>,
    out: &mut Outputs,
    ctl: &mut Ctl,
) -> Result<Vec<u8>, String> {
    let schema = schema.ok_or("the file's columns are unknown")?;
    let open = || {
        std::fs::File::open(path)
            .map(|f| std::io::BufReader::new(super::lines::LineBound::new(f)))
            .map_err(|e| format!("cannot read {path}: {e}"))
    };
    let batch_rows = node.batch_rows.unwrap_or(SOURCE_BATCH_ROWS).max(1);
    let shown = path.to_string();
    let arrow_error = move |e: arrow::error::ArrowError| format!("reading {shown}: {e}");
    let mut reader = match format {
        FileFormat::Jsonl => FileReader::Jsonl(JsonlFile::new(
            Lines::open(path, follow)?,
            Arc::clone(&schema),
            batch_rows,
        )?),
        FileFormat::Csv => FileReader::Arrow(Box::new(
            arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
                .with_header(true)
                .with_batch_size(batch_rows)
                .build(open()?)
                .map_err(|e| e.to_string())?
                .map(move |b| b.map_err(&arrow_error)),
        )),
        FileFormat::Parquet => FileReader::Arrow(Box::new(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?,
            )
            .map_err(|e| format!("cannot read {path} as Parquet: {e}"))?
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| format!("cannot read {path} as Parquet: {e}"))?
            .map(move |b| b.map_err(&arrow_error)),
        )),
        FileFormat::LineProtocol => FileReader::Lp(LpBatches::new(
            LpFile::open(path, precision, follow)?,
            measurement.map(str::to_string),
            Arc::clone(&schema),
            batch_rows,
        )),
    };
    let time_col = event_time_column(node, &schema)?;
    // Restored: skip the rows sent before the checkpoint.
    let (mut skip, mut max_time) = match &ctl.restore {
        Some(state) => {
            let mut r = StateReader::new(state);
            (r.u64()?, r.i64()?)
        }
        None => (0, i64::MIN),
    };
    let mut read = skip;
    let state = |read: u64, max_time: i64| StateWriter::default().u64(read).i64(max_time).finish();
    let mut quiet = Quiet::new(node);
    loop {
        let mut batch = match reader.next()? {
            Next::Batch(b) => b,
            Next::End => break,
            Next::Pending => {
                // Followed and caught up: checkpoints and a stop still go through.
                if ctl.source_barriers(out, || state(read, max_time)).await?.1 {
                    break;
                }
                // Biased: lines appended by the time the source would go idle count.
                tokio::select! {
                    biased;
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    () = quiet.timed_out() => quiet.went_idle(out).await?,
                    _ = ctl.barrier.changed() => {}
                }
                continue;
            }
        };
        if skip > 0 {
            let drop = (skip as usize).min(batch.num_rows());
            batch = batch.slice(drop, batch.num_rows() - drop);
            skip -= drop as u64;
            if batch.num_rows() == 0 {
                continue;
            }
        }
        quiet.rows(out).await?;
        max_time = max_event_time(&batch, time_col, max_time)?;
        read += batch.num_rows() as u64;
        out.batch(batch).await?;
        if let Some(wm) = source_watermark(node, max_time) {
            out.watermark(wm).await?;
        }
        if ctl.source_barriers(out, || state(read, max_time)).await?.1 {
            break;
        }
    }
    Ok(state(read, max_time))
}

/// Idleness of a source that can go quiet (a table stream, a followed file): after its
/// `idle_timeout` without rows it tells its consumers not to wait for its watermark; its
/// next rows make it active again.
struct Quiet {
    timeout: Option<std::time::Duration>,
    last_rows: tokio::time::Instant,
    idle: bool,
}

impl Quiet {
    fn new(node: &NodeSpec) -> Self {
        Self {
            timeout: node
                .watermark
                .and_then(|w| w.idle_timeout)
                .map(|ns| std::time::Duration::from_nanos(ns.max(0) as u64)),
            last_rows: tokio::time::Instant::now(),
            idle: false,
        }
    }

    /// The source has rows to send.
    async fn rows(&mut self, out: &mut Outputs) -> Result<(), String> {
        self.last_rows = tokio::time::Instant::now();
        if self.idle {
            self.idle = false;
            out.idle(false).await?;
        }
        Ok(())
    }

    /// Resolves once the source has been quiet for its timeout; never without one, or
    /// when it is idle already.
    fn timed_out(&self) -> impl Future<Output = ()> + use<> {
        let at = self
            .timeout
            .filter(|_| !self.idle)
            .map(|t| self.last_rows + t);
        async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        }
    }

    async fn went_idle(&mut self, out: &mut Outputs) -> Result<(), String> {
        self.idle = true;
        out.idle(true).await
    }
}

/// Casts or fills each column of `schema` from a logged batch of the table (which may
/// lack columns added later, or have ones added since the topology was validated).
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => cast(c, f.data_type()).map_err(|e| format!("column {}: {e}", f.name())),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, String>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| e.to_string())
}

/// The offset of a partition another task of the same table stream reads.
const NOT_MINE: u64 = u64::MAX;

/// A table stream's state: its offsets (one per partition, [`NOT_MINE`] for partitions
/// another task reads) and highest event time.
fn table_stream_state_bytes(offsets: &[u64], max_time: i64) -> Vec<u8> {
    offsets
        .iter()
        .fold(StateWriter::default().u64(offsets.len() as u64), |w, o| {
            w.u64(*o)
        })
        .i64(max_time)
        .finish()
}

/// A table stream's saved offsets (one per partition) and highest event time.
fn table_stream_state(state: &[u8]) -> Result<(Vec<u64>, i64), String> {
    let mut r = StateReader::new(state);
    let n = r.u64()? as usize;
    let offsets = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
    Ok((offsets, r.i64()?))
}

/// The log offsets a table stream's checkpointed state resumes from.
pub(crate) fn table_stream_offsets(state: &[u8]) -> Result<Vec<u64>, String> {
    table_stream_state(state).map(|(o, _)| o)
}

async fn table_stream(
    node: &NodeSpec,
    database: &str,
    table: &str,
    from: StartFrom,
    schema: SchemaRef,
    out: &mut Outputs,
    ctl: &mut Ctl,
) -> Result<Vec<u8>, String> {
    let engine = ctl
        .node
        .clone()
        .ok_or("a table stream runs inside the server")?;
    let end = engine.log_end(database).map_err(|e| e.to_string())?;
    // Task k of n reads partitions k, k + n...; the others' offsets are NOT_MINE.
    let (k, n_tasks) = (ctl.instance.0, ctl.instance.1.max(1));
    let mine = |p: usize| p % n_tasks == k;
    let (mut offsets, mut max_time) = match &ctl.restore {
        Some(state) => table_stream_state(state)?,
        None => {
            let first = match from {
                StartFrom::Earliest => vec![0; end.len()],
                StartFrom::Latest => end.clone(),
            };
            let offsets = first
                .into_iter()
                .enumerate()
                .map(|(p, o)| if mine(p) { o } else { NOT_MINE })
                .collect();
            (offsets, i64::MIN)
        }
    };
    if offsets.len() != end.len() {
        return Err(format!(
            "the checkpoint has {} partitions of {database}, which has {}",
            offsets.len(),
            end.len()
        ));
    }
    if offsets
        .iter()
        .enumerate()
        .any(|(p, o)| mine(p) == (*o == NOT_MINE))
    {
        return Err(format!(
            "the checkpoint's partitions of {database} were read by another number of tasks than {n_tasks}"
        ));
    }
    if !(0..end.len()).any(mine) {
        // More tasks than partitions: this one has nothing to read, and ends (an ended
        // input holds no watermark back).
        return Ok(table_stream_state_bytes(&offsets, max_time));
    }
    if ctl.restore.is_some() {
        // Only a log deleted by hand (or a bug) can lack what a checkpoint holds: say so
        // rather than skip rows silently.
        let start = engine.log_start(database).map_err(|e| e.to_string())?;
        let missing: u64 = start
            .iter()
            .zip(&offsets)
            .map(|(s, o)| s.saturating_sub(*o))
            .sum();
        if missing > 0 {
            let why = format!(
                "{missing} log records of {database} after the checkpoint are no longer in the log; their rows are skipped"
            );
            tracing::error!(topology_node = %node.name, "{why}");
            *out.stats.last_error.lock() = Some(why);
        }
    }
    let state = table_stream_state_bytes;
    let hold = engine.hold_log(database, offsets.clone());
    // Offsets of checkpoints not yet known to be written, by epoch.
    let mut pending: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut writes = engine.subscribe_writes();
    let mut quiet = Quiet::new(node);
    let mut my_lag = 0u64;
    let mut last_watermark = i64::MIN;
    let time_col = event_time_column(node, &schema)?;
    loop {
        // Marked seen before reading: a write landing during the read wakes the wait.
        writes.borrow_and_update();
        let mut progressed = false;
        for (p, offset) in offsets.iter_mut().enumerate() {
            if *offset == NOT_MINE {
                continue;
            }
            let (db, t, from) = (database.to_string(), table.to_string(), *offset);
            let reader = Arc::clone(&engine);
            let (batches, next) = tokio::task::spawn_blocking(move || {
                reader.read_table_stream(&db, &t, p, from, LOG_RECORDS_PER_READ)
            })
            .await
            .map_err(|e| format!("reading the log: {e}"))?
            .map_err(|e| e.to_string())?;
            progressed |= next != *offset;
            *offset = next;
            if !batches.is_empty() {
                quiet.rows(out).await?;
            }
            for b in batches {
                let b = conform(&b, &schema)?;
                max_time = max_event_time(&b, time_col, max_time)?;
                out.batch(b).await?;
            }
        }
        let end = engine.log_end(database).map_err(|e| e.to_string())?;
        let lag: u64 = end
            .iter()
            .zip(&offsets)
            .map(|(e, o)| e.saturating_sub(*o))
            .sum();
        // The node's lag is the sum over its tasks: each adds how its own share moved.
        if lag >= my_lag {
            out.stats
                .lag_records
                .fetch_add(lag - my_lag, Ordering::Relaxed);
        } else {
            out.stats
                .lag_records
                .fetch_sub(my_lag - lag, Ordering::Relaxed);
        }
        my_lag = lag;
        // Only a new watermark is sent: a repeated one would mark an idle source active.
        if let Some(wm) = source_watermark(node, max_time).filter(|w| *w > last_watermark) {
            last_watermark = wm;
            out.watermark(wm).await?;
        }
        let (passed, stop) = ctl
            .source_barriers(out, || state(&offsets, max_time))
            .await?;
        if let Some(epoch) = passed {
            pending.push((epoch, offsets.clone()));
        }
        // Once a checkpoint is written, the log before its offsets is no longer needed.
        let written = *ctl.completed.borrow_and_update();
        if let Some(i) = pending.iter().rposition(|(e, _)| *e <= written) {
            hold.set(pending[i].1.clone());
            pending.drain(..=i);
        }
        if stop {
            return Ok(state(&offsets, max_time));
        }
        if !progressed {
            tokio::select! {
                () = quiet.timed_out() => quiet.went_idle(out).await?,
                changed = writes.changed() => {
                    if changed.is_err() {
                        return Err("the node shut down".into());
                    }
                }
                // The coordinator outlives the sources: these only end in a failing run.
                _ = ctl.barrier.changed() => {}
                _ = ctl.completed.changed() => {}
            }
        }
    }
}
