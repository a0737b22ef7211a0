//! Running a validated topology in this process.
//!
//! Every node is a tokio task; every edge a bounded channel of [`Msg`]s (batches and
//! watermarks), so a slow sink makes its upstream wait instead of buffering without end.
//! A node's watermark is the minimum over its inputs; when every input has ended, the
//! node flushes (windows fire as if the watermark reached the end of time) and closes its
//! outputs, so a topology whose sources end drains completely and stops.
//!
//! What runs today: `generator` and `file` sources (line-by-line JSON or CSV), `sql`,
//! `window` and `union` transforms, `stdout`, `file` and `blackhole` sinks, each node running as one
//! task. The other node kinds, and a parallelism above one, are refused by
//! [`check_runnable`] with the node and the reason.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use super::spec::{FileFormat, GeneratorKind, Kind, NodeSpec, Problem};
use super::validate::{Validated, generator_schema};
use super::window::{Window, event_times};

/// What flows along an edge.
#[derive(Debug, Clone)]
pub enum Msg {
    Batch(RecordBatch),
    /// No row with an earlier event time (ns) is expected from this input.
    Watermark(i64),
}

type Senders = Vec<mpsc::Sender<Msg>>;

/// Batches in flight per edge.
const CHANNEL_BATCHES: usize = 16;
/// Rows per batch a source makes.
const SOURCE_BATCH_ROWS: usize = 1024;
/// Event time of a generator's first row: 2026-01-01T00:00:00Z.
pub const GENERATOR_EPOCH_NS: i64 = 1_767_225_600_000_000_000;

/// Counters of one node, read while it runs.
#[derive(Debug)]
pub struct NodeStats {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    pub late_rows: AtomicU64,
    /// Last watermark passed on, ns (i64::MIN: none yet).
    pub watermark: std::sync::atomic::AtomicI64,
}

impl Default for NodeStats {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            watermark: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }
}

/// Refuses what cannot run yet, naming the node.
///
/// # Errors
/// One problem per node that cannot run.
pub fn check_runnable(v: &Validated) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    for n in &v.spec.nodes {
        let why = match &n.kind {
            Kind::Generator {
                generator: GeneratorKind::Auctions | GeneratorKind::Persons,
                ..
            } => Some("the auctions and persons generators cannot run yet".to_string()),
            _ if n.watermark.is_some_and(|w| w.idle_timeout.is_some()) => Some(
                "idle_timeout cannot run yet (a source that goes quiet holds the watermark back)"
                    .to_string(),
            ),
            Kind::Generator { .. }
            | Kind::FileSource { .. }
            | Kind::Sql { .. }
            | Kind::Window(_)
            | Kind::Union
            | Kind::Stdout
            | Kind::Blackhole => None,
            Kind::FileSink { format, .. } => match format {
                FileFormat::Jsonl | FileFormat::Csv => None,
                _ => Some("a file sink writes jsonl or csv".to_string()),
            },
            other => Some(format!(
                "{} nodes cannot run yet (validate and explain know them)",
                other.type_name()
            )),
        };
        let problem = match why {
            Some(message) => Some((n.loc, message)),
            None if n.parallelism > 1 => Some((
                n.parallelism_loc.unwrap_or(n.loc),
                "parallelism above 1 cannot run yet".to_string(),
            )),
            None => None,
        };
        if let Some((loc, message)) = problem {
            problems.push(Problem {
                loc,
                path: n.path(),
                message,
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Runs `v` until every source ends; `stats` (one per node, in spec order) are updated
/// as it goes.
///
/// # Errors
/// The first node that failed, with its reason.
pub async fn run(v: &Validated, stats: &[Arc<NodeStats>]) -> Result<(), String> {
    let nodes = &v.spec.nodes;
    // One channel per edge: the sender goes to the producer's main or late outputs.
    // Per node: the senders of its main output and of its `late` output.
    let mut outputs: Vec<(Senders, Senders)> =
        (0..nodes.len()).map(|_| (Vec::new(), Vec::new())).collect();
    let mut inputs: Vec<Vec<mpsc::Receiver<Msg>>> = (0..nodes.len()).map(|_| Vec::new()).collect();
    for (to, n) in nodes.iter().enumerate() {
        for input in &n.inputs {
            let Some(from) = nodes.iter().position(|m| m.name == input.node) else {
                continue;
            };
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            match input.output.as_deref() {
                Some("late") => outputs[from].1.push(tx),
                _ => outputs[from].0.push(tx),
            }
            inputs[to].push(rx);
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, n) in nodes.iter().enumerate().rev() {
        let (main, late) = std::mem::take(&mut outputs[i]);
        let out = Outputs {
            main,
            late,
            stats: Arc::clone(&stats[i]),
        };
        let ins = std::mem::take(&mut inputs[i]);
        let node = n.clone();
        let info_in: Option<(SchemaRef, Option<String>)> = n
            .inputs
            .first()
            .and_then(|inp| nodes.iter().position(|m| m.name == inp.node))
            .and_then(|j| {
                v.info[j]
                    .schema
                    .clone()
                    .map(|s| (s, v.info[j].event_time.clone()))
            });
        let out_schema = v.info[i].schema.clone();
        tasks.spawn(async move {
            let name = node.name.clone();
            run_node(node, ins, out, info_in, out_schema)
                .await
                .map_err(|e| format!("{name}: {e}"))
        });
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let result = done
            .map_err(|e| format!("a node task failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = result {
            first_error.get_or_insert(e);
            // The others stop as their channels close.
            tasks.abort_all();
        }
    }
    first_error.map_or(Ok(()), Err)
}

struct Outputs {
    main: Vec<mpsc::Sender<Msg>>,
    late: Vec<mpsc::Sender<Msg>>,
    stats: Arc<NodeStats>,
}

impl Outputs {
    async fn batch(&self, batch: RecordBatch) -> Result<(), String> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.stats
            .rows_out
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        send_all(&self.main, Msg::Batch(batch)).await
    }

    async fn late(&self, batch: RecordBatch) -> Result<(), String> {
        self.stats
            .late_rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        send_all(&self.late, Msg::Batch(batch)).await
    }

    async fn watermark(&self, wm: i64) -> Result<(), String> {
        self.stats.watermark.store(wm, Ordering::Relaxed);
        send_all(&self.main, Msg::Watermark(wm)).await?;
        send_all(&self.late, Msg::Watermark(wm)).await
    }
}

async fn send_all(to: &[mpsc::Sender<Msg>], msg: Msg) -> Result<(), String> {
    for tx in to {
        // A closed receiver means the topology is stopping after a failure elsewhere.
        tx.send(msg.clone())
            .await
            .map_err(|_| "a downstream node stopped".to_string())?;
    }
    Ok(())
}

/// Reads the inputs of a node as one stream: batches as they come, and the watermark as
/// the minimum over inputs that have not ended.
struct Inputs {
    rx: Vec<Option<mpsc::Receiver<Msg>>>,
    marks: Vec<i64>,
    current: i64,
}

enum Event {
    Batch(RecordBatch),
    Watermark(i64),
}

impl Inputs {
    fn new(rx: Vec<mpsc::Receiver<Msg>>) -> Self {
        let n = rx.len();
        Self {
            rx: rx.into_iter().map(Some).collect(),
            marks: vec![i64::MIN; n],
            current: i64::MIN,
        }
    }

    /// The next event; `None` once every input has ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.rx.iter().all(Option::is_none) {
                return None;
            }
            let polls = self.rx.iter_mut().enumerate().filter_map(|(i, r)| {
                r.as_mut()
                    .map(|r| Box::pin(async move { (i, r.recv().await) }))
            });
            let ((i, msg), _, _) = futures::future::select_all(polls).await;
            match msg {
                Some(Msg::Batch(b)) => return Some(Event::Batch(b)),
                Some(Msg::Watermark(w)) => self.marks[i] = self.marks[i].max(w),
                None => {
                    self.rx[i] = None;
                    self.marks[i] = i64::MAX;
                }
            }
            let wm = self.marks.iter().copied().min().unwrap_or(i64::MAX);
            if wm > self.current && wm != i64::MAX {
                self.current = wm;
                return Some(Event::Watermark(wm));
            }
        }
    }
}

impl Inputs {
    /// A transform that keeps rows in step with watermarks: each batch through `f`, each
    /// watermark passed on.
    async fn map(
        mut self,
        out: &Outputs,
        mut f: impl FnMut(RecordBatch) -> Result<RecordBatch, String>,
    ) -> Result<(), String> {
        while let Some(ev) = self.next().await {
            match ev {
                Event::Batch(b) => {
                    out.stats
                        .rows_in
                        .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    out.batch(f(b)?).await?;
                }
                Event::Watermark(w) => out.watermark(w).await?,
            }
        }
        Ok(())
    }

    /// A sink: every batch to `f`, counted; watermarks are of no use to it.
    async fn drain(
        mut self,
        stats: &NodeStats,
        mut f: impl FnMut(&RecordBatch) -> Result<(), String>,
    ) -> Result<(), String> {
        while let Some(ev) = self.next().await {
            if let Event::Batch(b) = ev {
                stats
                    .rows_in
                    .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                f(&b)?;
            }
        }
        Ok(())
    }
}

async fn run_node(
    node: NodeSpec,
    ins: Vec<mpsc::Receiver<Msg>>,
    out: Outputs,
    input: Option<(SchemaRef, Option<String>)>,
    out_schema: Option<SchemaRef>,
) -> Result<(), String> {
    match &node.kind {
        Kind::Generator {
            generator,
            rows,
            rate,
            seed,
        } => generate(&node, *generator, *rows, *rate, *seed, &out).await,
        Kind::FileSource { path, format } => {
            read_file(&node, path, *format, out_schema, &out).await
        }
        Kind::Sql { sql, .. } => {
            let (schema, _) = input.ok_or("the input's columns are unknown")?;
            let compiled = super::sql::compile(&schema, sql).await?;
            Inputs::new(ins).map(&out, |b| compiled.apply(&b)).await
        }
        Kind::Union => Inputs::new(ins).map(&out, Ok).await,
        Kind::Window(spec) => {
            let (schema, event_time) = input.ok_or("the input's columns are unknown")?;
            let event_time = event_time.ok_or("the input has no event time")?;
            let out_schema = out_schema.ok_or("the output's columns are unknown")?;
            let mut window = Window::new(spec.clone(), &schema, &event_time, out_schema)?;
            let mut ins = Inputs::new(ins);
            while let Some(ev) = ins.next().await {
                match ev {
                    Event::Batch(b) => {
                        out.stats
                            .rows_in
                            .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        let result = window.on_batch(&b)?;
                        if let Some(rows) = result.rows {
                            out.batch(rows).await?;
                        }
                        if let Some(late) = result.late {
                            out.late(late).await?;
                        }
                    }
                    Event::Watermark(w) => {
                        if let Some(rows) = window.on_watermark(w)? {
                            out.batch(rows).await?;
                        }
                        out.watermark(w).await?;
                    }
                }
            }
            // Every input ended: what is open fires.
            if let Some(rows) = window.on_watermark(i64::MAX)? {
                out.batch(rows).await?;
            }
            Ok(())
        }
        Kind::Blackhole => Inputs::new(ins).drain(&out.stats, |_| Ok(())).await,
        Kind::Stdout => {
            Inputs::new(ins)
                .drain(&out.stats, |b| {
                    let mut text = Vec::new();
                    write_jsonl(&mut text, b)?;
                    std::io::stdout()
                        .lock()
                        .write_all(&text)
                        .map_err(|e| e.to_string())
                })
                .await
        }
        Kind::FileSink { path, format } => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|e| format!("cannot create {path}: {e}"))?,
            );
            let mut header = true;
            Inputs::new(ins)
                .drain(&out.stats, |b| match format {
                    FileFormat::Csv => {
                        let mut w = arrow::csv::WriterBuilder::new()
                            .with_header(header)
                            .build(&mut file);
                        header = false;
                        w.write(b).map_err(|e| e.to_string())
                    }
                    _ => write_jsonl(&mut file, b),
                })
                .await?;
            file.flush().map_err(|e| format!("writing {path}: {e}"))
        }
        other => Err(format!("{} nodes cannot run yet", other.type_name())),
    }
}

fn write_jsonl(out: &mut impl std::io::Write, batch: &RecordBatch) -> Result<(), String> {
    let mut w = arrow::json::LineDelimitedWriter::new(out);
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}

/// splitmix64: deterministic per (seed, row).
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn generate(
    node: &NodeSpec,
    kind: GeneratorKind,
    rows: Option<u64>,
    rate: u64,
    seed: u64,
    out: &Outputs,
) -> Result<(), String> {
    let schema = generator_schema(kind);
    let lag = node.watermark.map_or(0, |w| w.max_out_of_orderness);
    let step = 1_000_000_000 / rate.max(1) as i64;
    let total = rows.unwrap_or(u64::MAX);
    let mut next = 0u64;
    while next < total {
        let n = (total - next).min(SOURCE_BATCH_ROWS as u64);
        let range = next..next + n;
        let times: Vec<i64> = range
            .clone()
            .map(|i| GENERATOR_EPOCH_NS + i as i64 * step)
            .collect();
        let tz = Some(Arc::from("UTC"));
        let time_col = || -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from(times.clone()).with_timezone_opt(tz.clone()))
        };
        let columns: Vec<ArrayRef> = match kind {
            GeneratorKind::Sequence => vec![
                Arc::new(Int64Array::from_iter_values(
                    range.clone().map(|i| i as i64),
                )),
                time_col(),
            ],
            GeneratorKind::Bids => {
                // Nexmark-like: a few hot auctions take most bids.
                let r: Vec<u64> = range.clone().map(|i| mix(seed, i)).collect();
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
            GeneratorKind::Auctions | GeneratorKind::Persons => {
                return Err(format!("the {} generator cannot run yet", kind.name()));
            }
        };
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
        out.batch(batch).await?;
        if node.event_time.is_some() {
            out.watermark(times.last().copied().unwrap_or(i64::MIN) - lag)
                .await?;
        }
        next += n;
    }
    Ok(())
}

async fn read_file(
    node: &NodeSpec,
    path: &str,
    format: FileFormat,
    schema: Option<SchemaRef>,
    out: &Outputs,
) -> Result<(), String> {
    let schema = schema.ok_or("the file's columns are unknown")?;
    let file = std::io::BufReader::new(
        std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?,
    );
    let reader: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send> =
        match format {
            FileFormat::Jsonl => Box::new(
                arrow::json::ReaderBuilder::new(Arc::clone(&schema))
                    .with_batch_size(file_batch_rows(node))
                    .build(file)
                    .map_err(|e| e.to_string())?,
            ),
            FileFormat::Csv => Box::new(
                arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
                    .with_header(true)
                    .with_batch_size(file_batch_rows(node))
                    .build(file)
                    .map_err(|e| e.to_string())?,
            ),
            _ => return Err("a file source reads jsonl or csv".into()),
        };
    let time_col = node
        .event_time
        .as_ref()
        .map(|t| schema.index_of(&t.name))
        .transpose()
        .map_err(|e| e.to_string())?;
    let lag = node.watermark.map_or(0, |w| w.max_out_of_orderness);
    let mut max_time = i64::MIN;
    for batch in reader {
        let batch = batch.map_err(|e| format!("reading {path}: {e}"))?;
        if let Some(c) = time_col {
            max_time = event_times(batch.column(c))?
                .into_iter()
                .flatten()
                .fold(max_time, i64::max);
        }
        out.batch(batch).await?;
        if time_col.is_some() && max_time > i64::MIN {
            out.watermark(max_time.saturating_sub(lag)).await?;
        }
    }
    Ok(())
}

fn file_batch_rows(node: &NodeSpec) -> usize {
    match &node.kind {
        Kind::FileSource { .. } => node.batch_rows.unwrap_or(SOURCE_BATCH_ROWS).max(1),
        _ => SOURCE_BATCH_ROWS,
    }
}
