//! Running a validated topology in this process.
//!
//! Every chain of the physical plan (see `plan`) runs as one tokio task per parallel
//! instance: the chain's first node reads its inputs and hands each batch, watermark and
//! barrier to the nodes chained behind it by function call ([`Link`]). Every other edge
//! is a bounded channel of [`Msg`]s (batches, watermarks, barriers, idleness), so a slow
//! sink makes its upstream wait instead of buffering without end. A node's watermark is the minimum over its inputs; when every
//! input has ended, the node flushes (windows fire as if the watermark reached the end of
//! time) and closes its outputs, so a topology whose sources end drains completely.
//!
//! A coordinator task beside the nodes asks the sources for checkpoints every
//! `checkpoint_interval` (see `checkpoint` for the protocol), writes each complete one,
//! samples rates and backpressure once a second, and stops the topology when asked: the
//! sources take one last checkpoint and end, and, when that checkpoint is kept, nodes do
//! not fire their open windows (the restart carries on from that state instead).
//!
//! Sources and sinks are in `source` and `sink`; what cannot run yet is refused by
//! [`check_runnable`] with the node and the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::{mpsc, watch};

use super::checkpoint::Checkpoint;
use super::dedup::Dedup;
use super::join::Join;
use super::plan::Exchange;
use super::sink::Sink;
use super::source;
use super::spec::{FileFormat, Kind, NodeSpec, Problem};
use super::validate::Validated;
use super::window::Window;
use crate::Node;

pub use super::source::GENERATOR_EPOCH_NS;

/// What flows along an edge.
#[derive(Debug, Clone)]
pub enum Msg {
    Batch(RecordBatch),
    /// No row with an earlier event time (ns) is expected from this input.
    Watermark(i64),
    /// Everything of checkpoint epoch `n` came before this.
    Barrier(u64),
    /// The sender has had nothing to send for a while: leave it out of the watermark.
    Idle,
    /// The sender has rows again (a batch or a watermark says so too).
    Active,
}

/// Batches in flight per edge.
const CHANNEL_BATCHES: usize = 16;

/// Counters of one node, read while it runs.
#[derive(Debug)]
pub struct NodeStats {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    pub late_rows: AtomicU64,
    /// Rows a table sink could not write (the reason is in `last_error`).
    pub rejected_rows: AtomicU64,
    /// Last watermark passed on, ns (i64::MIN: none yet).
    pub watermark: AtomicI64,
    /// Time spent waiting for room downstream, ns.
    pub blocked_ns: AtomicU64,
    /// Rows out per second over the last second (set by the coordinator).
    pub rows_per_sec: AtomicU64,
    /// Share of the last second spent waiting downstream, in thousandths.
    pub backpressure_permille: AtomicU64,
    /// A table stream's log records not read yet.
    pub lag_records: AtomicU64,
    pub last_error: parking_lot::Mutex<Option<String>>,
}

impl Default for NodeStats {
    fn default() -> Self {
        Self {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            rejected_rows: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            blocked_ns: AtomicU64::new(0),
            rows_per_sec: AtomicU64::new(0),
            backpressure_permille: AtomicU64::new(0),
            lag_records: AtomicU64::new(0),
            last_error: parking_lot::Mutex::new(None),
        }
    }
}

/// What a run may use beyond the topology itself.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// The node whose tables `table_stream` sources read and `table` sinks write.
    pub node: Option<Arc<Node>>,
    /// Where checkpoints are kept; none: no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    /// State to start from.
    pub restore: Option<Checkpoint>,
    /// Set to true to stop the topology.
    pub stop: Option<watch::Receiver<bool>>,
    /// Told the epoch of every checkpoint written (and of the one restored from).
    pub on_checkpoint: Option<watch::Sender<u64>>,
}

impl Default for RunEnv {
    fn default() -> Self {
        Self {
            node: None,
            checkpoint_dir: None,
            checkpoint_interval: Duration::from_secs(10),
            restore: None,
            stop: None,
            on_checkpoint: None,
        }
    }
}

/// Refuses what cannot run yet, naming the node; `with_node`: tables are at hand.
///
/// # Errors
/// One problem per node that cannot run.
pub fn check_runnable(v: &Validated, with_node: bool) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    for n in &v.spec.nodes {
        let why = match &n.kind {
            Kind::TableStream { .. } | Kind::TableSink { .. } if !with_node => Some(format!(
                "{} nodes run inside the server (POST the topology to /api/v3/topologies)",
                n.kind.type_name()
            )),
            Kind::Generator { .. }
            | Kind::TableStream { .. }
            | Kind::TableSink { .. }
            | Kind::FileSource { .. }
            | Kind::Sql { .. }
            | Kind::Window(_)
            | Kind::KeyBy { .. }
            | Kind::Dedup { .. }
            | Kind::Join { .. }
            | Kind::Union
            | Kind::Stdout
            | Kind::Blackhole => None,
            Kind::Http { .. } => None,
            Kind::FileSink { format, .. } => match format {
                FileFormat::Jsonl | FileFormat::Csv => None,
                _ => Some("a file sink writes jsonl or csv".to_string()),
            },
        };
        let parallel_why = match &n.kind {
            _ if n.parallelism <= 1 => None,
            Kind::FileSource { .. } => Some("a file source runs with parallelism 1 (one reader)"),
            Kind::FileSink { .. } | Kind::Stdout => {
                Some("file and stdout sinks run with parallelism 1 (one writer)")
            }
            _ => None,
        };
        let problem = match (why, parallel_why) {
            (Some(message), _) => Some((n.loc, message)),
            (None, Some(message)) => {
                Some((n.parallelism_loc.unwrap_or(n.loc), message.to_string()))
            }
            (None, None) => None,
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

/// What a node tells the coordinator.
enum Report {
    /// Its state at a checkpoint epoch.
    State(usize, u64, Vec<u8>),
    /// It ended on its own (inputs done); this state stands for every later epoch.
    Finished(usize, Vec<u8>),
}

/// A node's link to the coordinator.
pub(crate) struct Ctl {
    index: usize,
    /// This task's number among its node's tasks, and how many there are: a parallel
    /// source reads its share (every n-th generator row, every n-th log partition).
    pub(crate) instance: (usize, usize),
    /// Sources: the newest epoch asked for.
    pub(crate) barrier: watch::Receiver<u64>,
    /// The last epoch this node passed on.
    seen: u64,
    stopping: Arc<AtomicBool>,
    /// Open windows are kept, not fired, when stopping (the checkpoint holds them).
    keep_state_on_stop: bool,
    reports: mpsc::UnboundedSender<Report>,
    /// The epoch of the last checkpoint written.
    pub(crate) completed: watch::Receiver<u64>,
    /// This node's state in the checkpoint restored from.
    pub(crate) restore: Option<Vec<u8>>,
    /// The node whose tables table streams and table sinks use.
    pub(crate) node: Option<Arc<Node>>,
}

impl Ctl {
    fn report(&self, epoch: u64, state: Vec<u8>) {
        // A closed channel: the coordinator is gone because the run is failing.
        let _ = self.reports.send(Report::State(self.index, epoch, state));
    }

    /// The node ended because its inputs did.
    fn finished(&self, state: Vec<u8>) {
        if !self.stopping.load(Ordering::SeqCst) {
            let _ = self.reports.send(Report::Finished(self.index, state));
        }
    }

    /// Whether the end of the inputs is a stop whose checkpoint keeps the open state.
    fn keeps_state(&self) -> bool {
        self.keep_state_on_stop && self.stopping.load(Ordering::SeqCst)
    }

    /// Between two batches of a source: passes on a barrier for every epoch asked for
    /// since the last call, reporting `state` for each. Returns the epochs passed and
    /// whether the source must now stop.
    pub(crate) async fn source_barriers(
        &mut self,
        out: &mut Outputs,
        state: impl Fn() -> Vec<u8>,
    ) -> Result<(Option<u64>, bool), String> {
        let asked = *self.barrier.borrow_and_update();
        if asked <= self.seen {
            return Ok((None, false));
        }
        for epoch in self.seen + 1..=asked {
            self.report(epoch, state());
            out.barrier(epoch).await?;
        }
        self.seen = asked;
        Ok((Some(asked), self.stopping.load(Ordering::SeqCst)))
    }
}

/// Runs `v` until every source ends or `env.stop` is set; `stats` (one per node, in spec
/// order) are updated as it goes.
///
/// # Errors
/// The first node that failed, with its reason, or a checkpoint that could not be
/// written.
pub async fn run(v: &Validated, stats: &[Arc<NodeStats>], env: RunEnv) -> Result<(), String> {
    let nodes = &v.spec.nodes;
    // Instances: node i runs as `parallelism` tasks, numbered from `first[i]`.
    let mut first = Vec::with_capacity(nodes.len());
    let mut instances: Vec<(usize, usize)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        first.push(instances.len());
        instances.extend((0..n.parallelism.max(1)).map(|k| (i, k)));
    }
    let width = |i: usize| nodes[i].parallelism.max(1);
    // Per instance: its main and late outputs (one router per edge) and its inputs.
    let mut outputs: Vec<(Vec<Route>, Vec<Route>)> =
        instances.iter().map(|_| (Vec::new(), Vec::new())).collect();
    // Per instance: its receivers, each with the number of the input it belongs to.
    let mut inputs: Vec<Vec<(usize, mpsc::Receiver<Msg>)>> =
        instances.iter().map(|_| Vec::new()).collect();
    // Nodes chained behind another run in its task, fed by function call: their one
    // input edge gets no channel.
    let plan = super::plan::plan(v);
    let mut chained = vec![false; nodes.len()];
    for chain in &plan.chains {
        for &m in chain.nodes.iter().skip(1) {
            chained[m] = true;
        }
    }
    // Edges come in the order of each node's inputs.
    let mut input_no = vec![0; nodes.len()];
    for edge in &plan.edges {
        let (from, to) = (edge.from, edge.to);
        let side = input_no[to];
        input_no[to] += 1;
        if chained[to] {
            continue;
        }
        let forward = edge.exchange == Exchange::Forward && width(from) == width(to);
        for a in 0..width(from) {
            let mut senders = Vec::new();
            for b in 0..width(to) {
                if forward && a != b {
                    continue;
                }
                let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
                senders.push(tx);
                inputs[first[to] + b].push((side, rx));
            }
            let route = match &edge.exchange {
                Exchange::Shuffle(keys) if width(to) > 1 => Route::Hash {
                    to: senders,
                    keys: keys.clone(),
                },
                _ => Route::RoundRobin {
                    to: senders,
                    next: a,
                },
            };
            let out = &mut outputs[first[from] + a];
            match edge.output.as_deref() {
                Some("late") => out.1.push(route),
                _ => out.0.push(route),
            }
        }
    }
    let first_epoch = env.restore.as_ref().map_or(0, |c| c.epoch);
    let (barrier_tx, barrier_rx) = watch::channel(first_epoch);
    // The epoch of the last checkpoint written: the caller's channel when it watches.
    let completed_tx = env
        .on_checkpoint
        .clone()
        .unwrap_or_else(|| watch::channel(first_epoch).0);
    completed_tx.send_replace(first_epoch);
    let completed_rx = completed_tx.subscribe();
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let stopping = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = instances
        .iter()
        .map(|&(i, k)| instance_name(&nodes[i], k))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let ctl_of = |x: usize| Ctl {
        index: x,
        instance: (instances[x].1, width(instances[x].0)),
        barrier: barrier_rx.clone(),
        seen: first_epoch,
        stopping: Arc::clone(&stopping),
        keep_state_on_stop: env.checkpoint_dir.is_some(),
        reports: report_tx.clone(),
        completed: completed_rx.clone(),
        restore: env
            .restore
            .as_ref()
            .and_then(|c| c.states.get(&names[x]).cloned()),
        node: env.node.clone(),
    };
    for chain in &plan.chains {
        for k in 0..width(chain.nodes[0]) {
            // From the tail: each member becomes a link in its predecessor's outputs.
            for w in chain.nodes.windows(2).rev() {
                let (prev, member) = (w[0], w[1]);
                let x = first[member] + k;
                let (main, late) = std::mem::take(&mut outputs[x]);
                let ctl = ctl_of(x);
                let stage = match build_stage(&nodes[member], v, &ctl).await {
                    Ok(Stage::Op(op)) => Behind::Op(op),
                    Ok(Stage::Sink(sink)) => Behind::Sink(sink),
                    // The plan chains a node behind its one input: never a source.
                    Ok(Stage::Source) => {
                        Err("a source cannot run behind another node".to_string())?
                    }
                    Err(e) => Err(format!("{}: {e}", nodes[member].name))?,
                };
                let link = Link {
                    name: nodes[member].name.clone(),
                    stage,
                    out: Outputs {
                        main,
                        late,
                        stats: Arc::clone(&stats[member]),
                    },
                    ctl,
                };
                outputs[first[prev] + k]
                    .0
                    .push(Route::Chained(Box::new(link)));
            }
            let head = chain.nodes[0];
            let x = first[head] + k;
            let (main, late) = std::mem::take(&mut outputs[x]);
            let out = Outputs {
                main,
                late,
                stats: Arc::clone(&stats[head]),
            };
            let mut ctl = ctl_of(x);
            let stage = build_stage(&nodes[head], v, &ctl)
                .await
                .map_err(|e| format!("{}: {e}", nodes[head].name))?;
            let ins = std::mem::take(&mut inputs[x]);
            let node = nodes[head].clone();
            let out_schema = v.info[head].schema.clone();
            tasks.spawn(async move {
                let name = node.name.clone();
                drive(stage, &node, out_schema, ins, out, &mut ctl)
                    .await
                    .map_err(|e| format!("{name}: {e}"))
            });
        }
    }
    drop(report_tx);

    let mut coordinator = Coordinator {
        names: &names,
        epoch: first_epoch,
        pending: BTreeMap::new(),
        finished: BTreeMap::new(),
        env: &env,
        completed: completed_tx,
    };
    let mut stop = env.stop.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = Sampler::new(stats);
    let mut last_checkpoint = Instant::now();
    let mut first_error = None;
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                let Some(done) = done else { break };
                let result = done
                    .map_err(|e| format!("a node task failed: {e}"))
                    .and_then(|r| r);
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                    // The others stop as their channels close.
                    tasks.abort_all();
                }
            }
            Some(report) = report_rx.recv() => {
                if let Err(e) = coordinator.on_report(report) {
                    first_error.get_or_insert(e);
                    tasks.abort_all();
                }
            }
            _ = tick.tick() => {
                sampler.sample(stats);
                if env.checkpoint_dir.is_some()
                    && coordinator.pending.is_empty()
                    && last_checkpoint.elapsed() >= env.checkpoint_interval
                {
                    coordinator.epoch += 1;
                    barrier_tx.send_replace(coordinator.epoch);
                    last_checkpoint = Instant::now();
                }
            }
            changed = wait_for_stop(&mut stop) => {
                if changed {
                    // Set before the barrier is asked for, so that each source sees it
                    // when it passes that barrier on.
                    stopping.store(true, Ordering::SeqCst);
                    coordinator.epoch += 1;
                    barrier_tx.send_replace(coordinator.epoch);
                }
                stop = None;
            }
        }
    }
    // Reports sent just before the last tasks ended.
    while let Ok(report) = report_rx.try_recv() {
        if first_error.is_none()
            && let Err(e) = coordinator.on_report(report)
        {
            first_error = Some(e);
        }
    }
    sampler.sample(stats);
    first_error.map_or(Ok(()), Err)
}

/// `true` once the stop flag is set; pends forever without a stop channel.
async fn wait_for_stop(stop: &mut Option<watch::Receiver<bool>>) -> bool {
    let Some(rx) = stop else {
        return std::future::pending().await;
    };
    loop {
        if *rx.borrow_and_update() {
            return true;
        }
        if rx.changed().await.is_err() {
            // Nobody can ask any more.
            return false;
        }
    }
}

/// Collects node states per epoch and writes each checkpoint once complete.
struct Coordinator<'a> {
    /// Per task, the name its state is saved under.
    names: &'a [String],
    epoch: u64,
    pending: BTreeMap<u64, BTreeMap<usize, Vec<u8>>>,
    finished: BTreeMap<usize, Vec<u8>>,
    env: &'a RunEnv,
    completed: watch::Sender<u64>,
}

impl Coordinator<'_> {
    fn on_report(&mut self, report: Report) -> Result<(), String> {
        match report {
            Report::State(node, epoch, state) => {
                self.pending.entry(epoch).or_default().insert(node, state);
            }
            Report::Finished(node, state) => {
                self.finished.insert(node, state);
            }
        }
        // Epochs complete in order: a node passes barriers in order.
        while let Some((&epoch, states)) = self.pending.first_key_value() {
            let complete = (0..self.names.len())
                .all(|i| states.contains_key(&i) || self.finished.contains_key(&i));
            if !complete {
                break;
            }
            let Some((_, mut states)) = self.pending.pop_first() else {
                break;
            };
            for (i, s) in &self.finished {
                states.entry(*i).or_insert_with(|| s.clone());
            }
            let checkpoint = Checkpoint {
                epoch,
                states: states
                    .into_iter()
                    .map(|(i, s)| (self.names[i].clone(), s))
                    .collect(),
            };
            if let Some(dir) = &self.env.checkpoint_dir {
                checkpoint
                    .write(dir)
                    .map_err(|e| format!("writing checkpoint {epoch}: {e}"))?;
                tracing::debug!(epoch, dir = %dir.display(), "checkpoint written");
            }
            self.completed.send_replace(epoch);
        }
        Ok(())
    }
}

/// Turns counters into per-second rates.
struct Sampler {
    at: Instant,
    last: Vec<(u64, u64)>,
}

impl Sampler {
    fn new(stats: &[Arc<NodeStats>]) -> Self {
        Self {
            at: Instant::now(),
            last: stats.iter().map(|_| (0, 0)).collect(),
        }
    }

    fn sample(&mut self, stats: &[Arc<NodeStats>]) {
        let dt = self.at.elapsed().as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        self.at = Instant::now();
        for (s, last) in stats.iter().zip(&mut self.last) {
            let now = (
                s.rows_out.load(Ordering::Relaxed),
                s.blocked_ns.load(Ordering::Relaxed),
            );
            let rate = now.0.saturating_sub(last.0) as f64 / dt;
            let blocked = now.1.saturating_sub(last.1) as f64 / (dt * 1e9);
            s.rows_per_sec.store(rate as u64, Ordering::Relaxed);
            s.backpressure_permille
                .store((blocked * 1000.0).min(1000.0) as u64, Ordering::Relaxed);
            *last = now;
        }
    }
}

/// The name a task's state is saved under: the node's, with `#k` for instance k of a
/// node that runs in parallel.
pub(crate) fn instance_name(n: &NodeSpec, k: usize) -> String {
    if n.parallelism > 1 {
        format!("{}#{k}", n.name)
    } else {
        n.name.clone()
    }
}

/// Where one edge takes a task's batches: to one of the consumer's tasks in turn, or to
/// the task that owns each row's key. Watermarks and barriers go to every task.
enum Route {
    RoundRobin {
        to: Vec<mpsc::Sender<Msg>>,
        next: usize,
    },
    Hash {
        to: Vec<mpsc::Sender<Msg>>,
        keys: Vec<String>,
    },
    /// The next node of the chain, in this task.
    Chained(Box<Link>),
}

impl Route {
    fn senders(&self) -> &[mpsc::Sender<Msg>] {
        match self {
            Route::RoundRobin { to, .. } | Route::Hash { to, .. } => to,
            Route::Chained(_) => &[],
        }
    }
}

/// Splits `batch` by a hash of its `keys` columns into one batch per task (the same key
/// always goes to the same task: the hash is xxh3 of Arrow's row encoding of the key).
fn split_by_key(
    batch: &RecordBatch,
    keys: &[String],
    tasks: usize,
) -> Result<Vec<RecordBatch>, String> {
    use arrow::row::{RowConverter, SortField};
    let columns = keys
        .iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .cloned()
                .ok_or_else(|| format!("no key column {k:?} to shuffle by"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(|e| e.to_string())?;
    let rows = converter
        .convert_columns(&columns)
        .map_err(|e| e.to_string())?;
    let mut picks: Vec<Vec<u32>> = vec![Vec::new(); tasks];
    for (i, row) in rows.iter().enumerate() {
        let t = (xxhash_rust::xxh3::xxh3_64(row.as_ref()) % tasks as u64) as usize;
        picks[t].push(i as u32);
    }
    picks
        .into_iter()
        .map(|p| {
            arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(p))
                .map_err(|e| e.to_string())
        })
        .collect()
}

pub(crate) struct Outputs {
    main: Vec<Route>,
    late: Vec<Route>,
    pub(crate) stats: Arc<NodeStats>,
}

impl Outputs {
    pub(crate) async fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.stats
            .rows_out
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Self::route(&mut self.main, batch, &self.stats).await
    }

    async fn late(&mut self, batch: RecordBatch) -> Result<(), String> {
        self.stats
            .late_rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Self::route(&mut self.late, batch, &self.stats).await
    }

    /// Sends a batch along every edge.
    async fn route(
        routes: &mut [Route],
        batch: RecordBatch,
        stats: &NodeStats,
    ) -> Result<(), String> {
        for r in routes {
            match r {
                Route::RoundRobin { to, next } => {
                    if to.is_empty() {
                        continue;
                    }
                    *next = (*next + 1) % to.len();
                    send(&to[*next], Msg::Batch(batch.clone()), stats).await?;
                }
                Route::Hash { to, keys } => {
                    for (tx, part) in to.iter().zip(split_by_key(&batch, keys, to.len())?) {
                        if part.num_rows() > 0 {
                            send(tx, Msg::Batch(part), stats).await?;
                        }
                    }
                }
                Route::Chained(link) => link.batch(batch.clone()).await?,
            }
        }
        Ok(())
    }

    pub(crate) async fn watermark(&mut self, wm: i64) -> Result<(), String> {
        self.stats.watermark.store(wm, Ordering::Relaxed);
        self.broadcast(Msg::Watermark(wm)).await
    }

    async fn barrier(&mut self, epoch: u64) -> Result<(), String> {
        self.broadcast(Msg::Barrier(epoch)).await
    }

    /// Tells consumers this task is idle (or active again).
    pub(crate) async fn idle(&mut self, idle: bool) -> Result<(), String> {
        self.broadcast(if idle { Msg::Idle } else { Msg::Active })
            .await
    }

    /// Sends `msg` to every task of every consumer (and hands it to chained nodes).
    async fn broadcast(&mut self, msg: Msg) -> Result<(), String> {
        for r in self.main.iter_mut().chain(self.late.iter_mut()) {
            if let Route::Chained(link) = r {
                match &msg {
                    Msg::Watermark(w) => link.watermark(*w).await?,
                    Msg::Barrier(e) => link.barrier(*e).await?,
                    Msg::Idle => link.idle(true).await?,
                    Msg::Active => link.idle(false).await?,
                    Msg::Batch(_) => {}
                }
                continue;
            }
            for tx in r.senders() {
                send(tx, msg.clone(), &self.stats).await?;
            }
        }
        Ok(())
    }

    /// The inputs ended: the nodes chained behind end too (channels close on drop).
    async fn finish(&mut self) -> Result<(), String> {
        for r in self.main.iter_mut().chain(self.late.iter_mut()) {
            if let Route::Chained(link) = r {
                link.finish().await?;
            }
        }
        Ok(())
    }
}

/// Sends one message, counting the time spent waiting for room as backpressure.
async fn send(tx: &mpsc::Sender<Msg>, msg: Msg, stats: &NodeStats) -> Result<(), String> {
    // A closed receiver means the topology is stopping after a failure elsewhere.
    let closed = |_| "a downstream node stopped".to_string();
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(msg)) => {
            let waited = Instant::now();
            tx.send(msg).await.map_err(closed)?;
            stats
                .blocked_ns
                .fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err("a downstream node stopped".into()),
    }
}

/// Reads the inputs of a node as one stream: batches as they come, the watermark as the
/// minimum over inputs that have not ended, and a barrier once it came through every
/// input that has not ended (an input that delivered it is not read until then).
struct Inputs {
    rx: Vec<Option<mpsc::Receiver<Msg>>>,
    /// Per receiver, the number of the node input it belongs to.
    side: Vec<usize>,
    /// The input the last batch came from.
    last: usize,
    marks: Vec<i64>,
    current: i64,
    /// Per input, the barrier it delivered that the others have not yet.
    aligned: Vec<Option<u64>>,
    /// Per input, whether it said it is idle.
    idle: Vec<bool>,
    /// Whether this node told its consumers it is idle (every live input is).
    idle_sent: bool,
    /// A message read but not yet handled (an `Active` event went first).
    pending: Option<(usize, Option<Msg>)>,
}

enum Event {
    Batch(RecordBatch),
    Watermark(i64),
    Barrier(u64),
    /// Every live input is idle: so is this node.
    Idle,
    /// An input is active again after all were idle.
    Active,
}

impl Inputs {
    fn new(rx: Vec<(usize, mpsc::Receiver<Msg>)>) -> Self {
        let n = rx.len();
        let (side, rx): (Vec<usize>, Vec<_>) = rx.into_iter().unzip();
        Self {
            side,
            last: 0,
            rx: rx.into_iter().map(Some).collect(),
            marks: vec![i64::MIN; n],
            current: i64::MIN,
            aligned: vec![None; n],
            idle: vec![false; n],
            idle_sent: false,
            pending: None,
        }
    }

    /// The barrier every live input delivered, if they all did.
    fn take_aligned(&mut self) -> Option<u64> {
        let live = || {
            self.rx
                .iter()
                .zip(&self.aligned)
                .filter(|(r, _)| r.is_some())
        };
        if live().next().is_none() || !live().all(|(_, a)| a.is_some()) {
            return None;
        }
        let epoch = live().filter_map(|(_, a)| *a).min();
        self.aligned.iter_mut().for_each(|a| *a = None);
        epoch
    }

    /// The next event; `None` once every input has ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let (i, msg) = match self.pending.take() {
                Some(held) => held,
                None => {
                    if self.rx.iter().all(Option::is_none) {
                        return None;
                    }
                    let polls = self
                        .rx
                        .iter_mut()
                        .zip(&self.aligned)
                        .enumerate()
                        .filter(|(_, (_, a))| a.is_none())
                        .filter_map(|(i, (r, _))| {
                            r.as_mut()
                                .map(|r| Box::pin(async move { (i, r.recv().await) }))
                        });
                    let ((i, msg), _, _) = futures::future::select_all(polls).await;
                    if matches!(msg, Some(Msg::Batch(_) | Msg::Watermark(_) | Msg::Active)) {
                        self.idle[i] = false;
                        if self.idle_sent {
                            // Consumers hear that this node is active before what made it so.
                            self.idle_sent = false;
                            self.pending = Some((i, msg));
                            return Some(Event::Active);
                        }
                    }
                    (i, msg)
                }
            };
            if let Some(event) = self.on_msg(i, msg) {
                return Some(event);
            }
            let mut live = self
                .rx
                .iter()
                .zip(&self.idle)
                .filter(|(r, _)| r.is_some())
                .peekable();
            let all_idle = live.peek().is_some() && live.all(|(_, idle)| *idle);
            if all_idle && !self.idle_sent {
                self.idle_sent = true;
                return Some(Event::Idle);
            }
            // Idle inputs do not hold the watermark back (when all are, it stays).
            let wm = self
                .marks
                .iter()
                .zip(&self.idle)
                .filter(|(_, idle)| !**idle)
                .map(|(m, _)| *m)
                .min()
                .unwrap_or(i64::MAX);
            if wm > self.current && wm != i64::MAX {
                self.current = wm;
                return Some(Event::Watermark(wm));
            }
        }
    }

    /// Applies one message of input `i`; a batch or an aligned barrier is an event.
    fn on_msg(&mut self, i: usize, msg: Option<Msg>) -> Option<Event> {
        match msg {
            Some(Msg::Batch(b)) => {
                self.last = self.side[i];
                Some(Event::Batch(b))
            }
            Some(Msg::Idle) => {
                self.idle[i] = true;
                None
            }
            Some(Msg::Active) => None,
            Some(Msg::Watermark(w)) => {
                self.marks[i] = self.marks[i].max(w);
                None
            }
            Some(Msg::Barrier(e)) => {
                self.aligned[i] = Some(e);
                self.take_aligned().map(Event::Barrier)
            }
            None => {
                self.rx[i] = None;
                self.marks[i] = i64::MAX;
                self.aligned[i] = None;
                self.idle[i] = false;
                self.take_aligned().map(Event::Barrier)
            }
        }
    }

    /// A sink: every batch written, counted; at a barrier it flushes and reports where
    /// it is.
    async fn drain(mut self, stats: &NodeStats, ctl: &Ctl, mut sink: Sink) -> Result<(), String> {
        while let Some(ev) = self.next().await {
            match ev {
                Event::Batch(b) => {
                    stats
                        .rows_in
                        .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                    sink.write(&b, stats).await?;
                }
                Event::Watermark(_) | Event::Idle | Event::Active => {}
                Event::Barrier(e) => ctl.report(e, sink.checkpoint()?),
            }
        }
        let state = sink.checkpoint()?;
        ctl.finished(state);
        Ok(())
    }
}

/// What a transform made of a batch.
#[derive(Default)]
pub(crate) struct Produced {
    pub(crate) rows: Option<RecordBatch>,
    /// Rows too late for it (a window's `late` output).
    pub(crate) late: Option<RecordBatch>,
}

/// A transform, as [`run_operator`] drives it.
pub(crate) trait Operator: Send {
    /// Takes a batch of input number `input`.
    fn on_batch(&mut self, input: usize, batch: &RecordBatch) -> Result<Produced, String>;
    /// Rows the watermark releases, and the watermark to pass on.
    fn on_watermark(&mut self, watermark: i64) -> Result<(Option<RecordBatch>, i64), String>;
    /// Rows still held once every input ended.
    fn on_end(&mut self) -> Result<Option<RecordBatch>, String> {
        Ok(None)
    }
    fn snapshot(&self) -> Result<Vec<u8>, String>;
    fn restore(&mut self, state: &[u8]) -> Result<(), String>;
}

/// A row-by-row transform without state.
struct Stateless<F>(F);

impl<F: FnMut(RecordBatch) -> Result<RecordBatch, String> + Send> Operator for Stateless<F> {
    fn on_batch(&mut self, _: usize, batch: &RecordBatch) -> Result<Produced, String> {
        Ok(Produced {
            rows: Some((self.0)(batch.clone())?),
            late: None,
        })
    }

    fn on_watermark(&mut self, watermark: i64) -> Result<(Option<RecordBatch>, i64), String> {
        Ok((None, watermark))
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

impl Operator for Window {
    fn on_batch(&mut self, _: usize, batch: &RecordBatch) -> Result<Produced, String> {
        let out = Window::on_batch(self, batch)?;
        Ok(Produced {
            rows: out.rows,
            late: out.late,
        })
    }

    fn on_watermark(&mut self, watermark: i64) -> Result<(Option<RecordBatch>, i64), String> {
        Ok((Window::on_watermark(self, watermark)?, watermark))
    }

    fn on_end(&mut self) -> Result<Option<RecordBatch>, String> {
        // What is open fires, as if the watermark reached the end of time.
        Window::on_watermark(self, i64::MAX)
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Window::snapshot(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        Window::restore(self, state)
    }
}

impl Operator for Dedup {
    fn on_batch(&mut self, _: usize, batch: &RecordBatch) -> Result<Produced, String> {
        Ok(Produced {
            rows: Some(Dedup::on_batch(self, batch)?),
            late: None,
        })
    }

    fn on_watermark(&mut self, watermark: i64) -> Result<(Option<RecordBatch>, i64), String> {
        Dedup::on_watermark(self, watermark);
        Ok((None, watermark))
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Dedup::snapshot(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        Dedup::restore(self, state)
    }
}

impl Operator for Join {
    fn on_batch(&mut self, input: usize, batch: &RecordBatch) -> Result<Produced, String> {
        Ok(Produced {
            rows: Join::on_batch(self, input, batch)?,
            late: None,
        })
    }

    fn on_watermark(&mut self, watermark: i64) -> Result<(Option<RecordBatch>, i64), String> {
        Ok((None, Join::on_watermark(self, watermark)))
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        Join::snapshot(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        Join::restore(self, state)
    }
}

/// Drives a transform: batches through it, watermarks and idleness passed on, its state
/// saved at each barrier (and restored first); at the end of the inputs what it still
/// holds is flushed, unless the run stopped at a checkpoint that keeps it.
async fn run_operator(
    mut op: Box<dyn Operator>,
    ins: Vec<(usize, mpsc::Receiver<Msg>)>,
    out: &mut Outputs,
    ctl: &Ctl,
) -> Result<(), String> {
    let mut ins = Inputs::new(ins);
    while let Some(ev) = ins.next().await {
        match ev {
            Event::Batch(b) => {
                out.stats
                    .rows_in
                    .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                let produced = op.on_batch(ins.last, &b)?;
                if let Some(rows) = produced.rows {
                    out.batch(rows).await?;
                }
                if let Some(late) = produced.late {
                    out.late(late).await?;
                }
            }
            Event::Watermark(w) => {
                let (rows, passed_on) = op.on_watermark(w)?;
                if let Some(rows) = rows {
                    out.batch(rows).await?;
                }
                out.watermark(passed_on).await?;
            }
            Event::Idle => out.idle(true).await?,
            Event::Active => out.idle(false).await?,
            Event::Barrier(e) => {
                ctl.report(e, op.snapshot()?);
                out.barrier(e).await?;
            }
        }
    }
    end_operator(op.as_mut(), out, ctl).await
}

/// The inputs of an operator ended: it flushes what it holds (unless the run stopped at
/// a checkpoint that keeps it) and the nodes chained behind it end too.
async fn end_operator(op: &mut dyn Operator, out: &mut Outputs, ctl: &Ctl) -> Result<(), String> {
    if !ctl.keeps_state() {
        if let Some(rows) = op.on_end()? {
            out.batch(rows).await?;
        }
        ctl.finished(op.snapshot()?);
    }
    out.finish().await
}

/// What a node chained behind another does (a source never is).
enum Behind {
    Op(Box<dyn Operator>),
    Sink(Sink),
}

/// A node chained behind another: it runs in that node's task, called for each batch,
/// watermark, barrier and status change instead of reading a channel.
struct Link {
    name: String,
    stage: Behind,
    out: Outputs,
    ctl: Ctl,
}

type LinkFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

impl Link {
    fn named(&self, e: String) -> String {
        format!("{}: {e}", self.name)
    }

    fn batch(&mut self, b: RecordBatch) -> LinkFuture<'_> {
        Box::pin(async move {
            self.out
                .stats
                .rows_in
                .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            let result = match &mut self.stage {
                Behind::Op(op) => match op.on_batch(0, &b) {
                    Ok(produced) => {
                        if let Some(rows) = produced.rows {
                            self.out.batch(rows).await?;
                        }
                        match produced.late {
                            Some(late) => self.out.late(late).await,
                            None => Ok(()),
                        }
                    }
                    Err(e) => Err(e),
                },
                Behind::Sink(sink) => sink.write(&b, &self.out.stats).await,
            };
            result.map_err(|e| self.named(e))
        })
    }

    fn watermark(&mut self, w: i64) -> LinkFuture<'_> {
        Box::pin(async move {
            if let Behind::Op(op) = &mut self.stage {
                let (rows, passed_on) = op.on_watermark(w).map_err(|e| self.named(e))?;
                if let Some(rows) = rows {
                    self.out.batch(rows).await?;
                }
                self.out.watermark(passed_on).await?;
            }
            Ok(())
        })
    }

    fn barrier(&mut self, epoch: u64) -> LinkFuture<'_> {
        Box::pin(async move {
            let state = match &mut self.stage {
                Behind::Op(op) => op.snapshot(),
                Behind::Sink(sink) => sink.checkpoint(),
            }
            .map_err(|e| self.named(e))?;
            self.ctl.report(epoch, state);
            self.out.barrier(epoch).await
        })
    }

    fn idle(&mut self, idle: bool) -> LinkFuture<'_> {
        Box::pin(async move {
            match self.stage {
                Behind::Op(_) => self.out.idle(idle).await,
                _ => Ok(()),
            }
        })
    }

    fn finish(&mut self) -> LinkFuture<'_> {
        Box::pin(async move {
            match &mut self.stage {
                Behind::Op(op) => end_operator(op.as_mut(), &mut self.out, &self.ctl)
                    .await
                    .map_err(|e| format!("{}: {e}", self.name)),
                Behind::Sink(sink) => {
                    let state = sink
                        .checkpoint()
                        .map_err(|e| format!("{}: {e}", self.name))?;
                    self.ctl.finished(state);
                    Ok(())
                }
            }
        })
    }
}

/// What a node does, ready to run.
enum Stage {
    Source,
    Op(Box<dyn Operator>),
    Sink(Sink),
}

/// Prepares node `n` of `v`: compiles its SQL, sets up its state (restored from the
/// checkpoint), opens its sink.
async fn build_stage(n: &NodeSpec, v: &Validated, ctl: &Ctl) -> Result<Stage, String> {
    let nodes = &v.spec.nodes;
    let inputs: Vec<Option<(SchemaRef, Option<String>)>> = n
        .inputs
        .iter()
        .map(|inp| {
            nodes.iter().position(|m| m.name == inp.node).and_then(|j| {
                v.info[j]
                    .schema
                    .clone()
                    .map(|s| (s, v.info[j].event_time.clone()))
            })
        })
        .collect();
    let out_schema = nodes
        .iter()
        .position(|m| m.name == n.name)
        .and_then(|i| v.info[i].schema.clone());
    let input = inputs.first().cloned().flatten();
    // The first input's primary key, when it is an upsert stream.
    let input_key: Option<Vec<String>> = n.inputs.first().and_then(|inp| {
        let j = nodes.iter().position(|m| m.name == inp.node)?;
        v.info[j].key.clone()
    });
    let mut op: Box<dyn Operator> = match &n.kind {
        Kind::Generator { .. } | Kind::FileSource { .. } | Kind::TableStream { .. } => {
            return Ok(Stage::Source);
        }
        Kind::Blackhole
        | Kind::Stdout
        | Kind::FileSink { .. }
        | Kind::TableSink { .. }
        | Kind::Http { .. } => {
            let event_time = input.and_then(|(_, t)| t);
            return Ok(Stage::Sink(
                Sink::open(n, event_time, input_key, ctl).await?,
            ));
        }
        Kind::Sql { sql, .. } => {
            let (schema, _) = input.ok_or("the input's columns are unknown")?;
            let compiled = super::sql::compile(&schema, sql).await?;
            Box::new(Stateless(move |b: RecordBatch| compiled.apply(&b)))
        }
        // A key_by only decides where rows go: its output edges shuffle them.
        Kind::Union | Kind::KeyBy { .. } => Box::new(Stateless(Ok)),
        Kind::Window(spec) => {
            let (schema, event_time) = input.ok_or("the input's columns are unknown")?;
            let event_time = event_time.ok_or("the input has no event time")?;
            let out_schema = out_schema.ok_or("the output's columns are unknown")?;
            Box::new(Window::new(
                spec.clone(),
                &schema,
                &event_time,
                input_key.as_deref(),
                out_schema,
            )?)
        }
        Kind::Dedup { key, within } => {
            let (schema, event_time) = input.ok_or("the input's columns are unknown")?;
            let event_time = event_time.ok_or("the input has no event time")?;
            let keys: Vec<String> = key.iter().map(|k| k.name.clone()).collect();
            Box::new(Dedup::new(&keys, *within, &schema, &event_time)?)
        }
        Kind::Join { on, within } => {
            let side = |k: usize| -> Result<(SchemaRef, String), String> {
                match inputs.get(k).cloned().flatten() {
                    Some((schema, Some(t))) => Ok((schema, t)),
                    _ => Err("an input's columns or event time are unknown".to_string()),
                }
            };
            let ((ls, lt), (rs, rt)) = (side(0)?, side(1)?);
            let keys: Vec<String> = on.iter().map(|k| k.name.clone()).collect();
            let out_schema = out_schema.ok_or("the output's columns are unknown")?;
            Box::new(Join::new(
                &keys,
                *within,
                [(&ls, &lt), (&rs, &rt)],
                out_schema,
            )?)
        }
    };
    if let Some(state) = &ctl.restore {
        op.restore(state)?;
    }
    Ok(Stage::Op(op))
}

/// Runs the first node of a chain (with the rest behind it in `out`) until its inputs
/// end or the run stops.
async fn drive(
    stage: Stage,
    node: &NodeSpec,
    out_schema: Option<SchemaRef>,
    ins: Vec<(usize, mpsc::Receiver<Msg>)>,
    mut out: Outputs,
    ctl: &mut Ctl,
) -> Result<(), String> {
    match stage {
        Stage::Source => {
            let state = source::run(node, out_schema, &mut out, ctl).await?;
            ctl.finished(state);
            out.finish().await
        }
        Stage::Op(op) => run_operator(op, ins, &mut out, ctl).await,
        Stage::Sink(sink) => Inputs::new(ins).drain(&out.stats, ctl, sink).await,
    }
}
