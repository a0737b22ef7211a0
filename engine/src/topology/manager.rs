//! The topologies deployed on a server: deploy, list, status, remove, and restart
//! survival.
//!
//! A deployed topology lives in `<data-dir>/topologies/<name>/`: `topology.yaml` (the
//! text as deployed, written atomically before it starts) and `checkpoint` (see
//! `checkpoint`). Opening the manager starts every topology found there from its last
//! checkpoint; one that no longer validates (a table changed under it) is listed as
//! failed with the reasons, so that it can be seen and removed. Shutting down stops each
//! topology with a final checkpoint, so a restart carries on where it stopped.
//!
//! Flow: `deploy(yaml)` -> parse and validate against the node's catalog -> refuse what
//! cannot run -> write the file -> [`run`] in a task with a stop channel; the task's
//! result becomes the topology's state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::checkpoint::Checkpoint;
use super::run::{NodeStats, RunEnv, check_runnable, run};
use super::spec::{Kind, Problem, Role};
use super::validate::Validated;
use crate::Node;
use crate::stream::LogHold;

const SPEC_FILE: &str = "topology.yaml";
/// How long shutdown waits for a topology's final checkpoint.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Why a deployment was refused.
#[derive(Debug)]
pub enum DeployError {
    /// The YAML has problems (with their places).
    Invalid(Vec<Problem>),
    /// A topology of that name is deployed.
    Exists(String),
    /// The topology could not be saved.
    Io(String),
}

/// What a topology is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    /// Every source ended and everything drained.
    Finished,
    /// Stopped by shutdown.
    Stopped,
    Failed(String),
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Running => "running",
            State::Finished => "finished",
            State::Stopped => "stopped",
            State::Failed(_) => "failed",
        }
    }
}

/// One node of a topology, as its status shows it.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub kind: &'static str,
    pub role: &'static str,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_per_sec: u64,
    /// Last watermark passed on (ns), if any.
    pub watermark: Option<i64>,
    pub late_rows: u64,
    pub rejected_rows: u64,
    /// A table stream's records not yet read.
    pub lag_records: u64,
    /// Share of the last second spent waiting for downstream, 0..=1.
    pub backpressure: f64,
    pub last_error: Option<String>,
}

/// A topology's status.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: String,
    pub state: State,
    pub uptime: Duration,
    /// Epoch of the last checkpoint written (0: none yet).
    pub checkpoint: u64,
    pub nodes: Vec<NodeStatus>,
}

struct Deployed {
    name: String,
    /// Kind and role of each node, in spec order (empty when the spec did not load).
    nodes: Vec<(String, &'static str, &'static str)>,
    stats: Vec<Arc<NodeStats>>,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    checkpoint: watch::Receiver<u64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    started: Instant,
    /// After a stop or a failure: the log from the last checkpoint's offsets on, kept
    /// until this process ends so that the persister (at shutdown, say) cannot delete
    /// what the restart reads first.
    kept: Arc<Mutex<Vec<LogHold>>>,
}

impl Deployed {
    fn status(&self) -> Status {
        let nodes = self
            .nodes
            .iter()
            .zip(&self.stats)
            .map(|((name, kind, role), s)| {
                let wm = s.watermark.load(Ordering::Relaxed);
                NodeStatus {
                    name: name.clone(),
                    kind,
                    role,
                    rows_in: s.rows_in.load(Ordering::Relaxed),
                    rows_out: s.rows_out.load(Ordering::Relaxed),
                    rows_per_sec: s.rows_per_sec.load(Ordering::Relaxed),
                    watermark: (wm != i64::MIN).then_some(wm),
                    late_rows: s.late_rows.load(Ordering::Relaxed),
                    rejected_rows: s.rejected_rows.load(Ordering::Relaxed),
                    lag_records: s.lag_records.load(Ordering::Relaxed),
                    backpressure: s.backpressure_permille.load(Ordering::Relaxed) as f64 / 1000.0,
                    last_error: s.last_error.lock().clone(),
                }
            })
            .collect();
        Status {
            name: self.name.clone(),
            state: self.state.lock().clone(),
            uptime: self.started.elapsed(),
            checkpoint: *self.checkpoint.borrow(),
            nodes,
        }
    }

    async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().take();
        if let Some(mut task) = task
            && tokio::time::timeout(STOP_WAIT, &mut task).await.is_err()
        {
            tracing::warn!(topology = %self.name, "did not stop in time; its last periodic checkpoint stands");
            task.abort();
        }
    }
}

/// The topologies of a node.
pub struct Topologies {
    node: Arc<Node>,
    dir: PathBuf,
    checkpoint_interval: Duration,
    /// What deployed topologies may touch (see `policy`).
    policy: super::Policy,
    deployed: Mutex<BTreeMap<String, Arc<Deployed>>>,
    /// Serializes deploy and remove (each checks, then writes files).
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Topologies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topologies")
            .field("dir", &self.dir)
            .field("deployed", &self.deployed.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Topologies {
    /// Starts every topology saved in the node's data directory. One that cannot be read,
    /// no longer validates or is refused by `policy` is listed as failed and not started:
    /// a bad saved topology never keeps the server from starting.
    ///
    /// # Errors
    /// The topologies directory cannot be read or created.
    pub async fn open(
        node: Arc<Node>,
        checkpoint_interval: Duration,
        policy: super::Policy,
    ) -> std::io::Result<Self> {
        let dir = node.config().data_dir.join("topologies");
        std::fs::create_dir_all(&dir)?;
        let me = Self {
            node,
            dir,
            checkpoint_interval,
            policy,
            deployed: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&me.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() && entry.path().join(SPEC_FILE).exists() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        for name in names {
            let dir = me.dir.join(&name);
            let text = match std::fs::read_to_string(dir.join(SPEC_FILE)) {
                Ok(text) => text,
                Err(e) => {
                    let deployed = me.failed(&name, format!("cannot read {SPEC_FILE}: {e}"));
                    me.deployed.lock().insert(name, deployed);
                    continue;
                }
            };
            let deployed = match me.check(&text).await {
                Ok(v) if v.spec.name == name => me.start(v, dir),
                Ok(v) => me.failed(
                    &name,
                    format!("the saved topology is named {:?}", v.spec.name),
                ),
                Err(problems) => me.failed(
                    &name,
                    format!(
                        "the saved topology no longer validates: {}",
                        problems
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ),
            };
            tracing::info!(topology = %name, state = deployed.state.lock().name(), "topology restored");
            me.deployed.lock().insert(name, deployed);
        }
        Ok(me)
    }

    /// Validates `text` against the node's tables and checks that it can run here.
    async fn check(&self, text: &str) -> Result<Validated, Vec<Problem>> {
        let v = super::load_with(text, &*self.node, &self.policy).await?;
        check_runnable(&v, true)?;
        // A table stream needs its table's columns to plan what reads it.
        let missing: Vec<Problem> = v
            .spec
            .nodes
            .iter()
            .zip(&v.info)
            .filter_map(|(n, info)| match &n.kind {
                Kind::TableStream {
                    database, table, ..
                } if info.schema.is_none() => Some(Problem {
                    loc: n.loc,
                    path: n.path(),
                    message: format!(
                        "table {database}.{table} does not exist yet: write to it, then deploy"
                    ),
                }),
                _ => None,
            })
            .collect();
        // A topology writing the table it streams would read its own rows back forever.
        let mut problems = missing;
        for n in &v.spec.nodes {
            if let Kind::TableSink { database, table } = &n.kind {
                let loops = v.spec.nodes.iter().any(|m| {
                    matches!(&m.kind, Kind::TableStream { database: d, table: t, .. } if d == database && t == table)
                });
                if loops {
                    problems.push(Problem {
                        loc: n.loc,
                        path: n.path(),
                        message: format!(
                            "writes {database}.{table}, which this topology also streams: every row written would be read again"
                        ),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(v)
        } else {
            Err(problems)
        }
    }

    /// Validates, saves and starts a topology; returns its name.
    ///
    /// # Errors
    /// See [`DeployError`].
    pub async fn deploy(&self, text: &str) -> Result<String, DeployError> {
        let _changing = self.changes.lock().await;
        let v = self.check(text).await.map_err(DeployError::Invalid)?;
        let name = v.spec.name.clone();
        if self.deployed.lock().contains_key(&name) {
            return Err(DeployError::Exists(name));
        }
        let dir = self.dir.join(&name);
        save(&dir, text).map_err(|e| DeployError::Io(format!("{}: {e}", dir.display())))?;
        let deployed = self.start(v, dir);
        self.deployed.lock().insert(name.clone(), deployed);
        tracing::info!(topology = %name, "topology deployed");
        Ok(name)
    }

    fn start(&self, v: Validated, dir: PathBuf) -> Arc<Deployed> {
        let stats: Vec<Arc<NodeStats>> = v.spec.nodes.iter().map(|_| Arc::default()).collect();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (checkpoint_tx, checkpoint_rx) = watch::channel(0);
        let state = Arc::new(Mutex::new(State::Running));
        let deployed = Arc::new(Deployed {
            name: v.spec.name.clone(),
            nodes: v
                .spec
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.kind.type_name(), role_name(n.role)))
                .collect(),
            stats: stats.clone(),
            state: Arc::clone(&state),
            stop: stop_tx,
            checkpoint: checkpoint_rx.clone(),
            task: Mutex::new(None),
            started: Instant::now(),
            kept: Arc::default(),
        });
        let kept = Arc::clone(&deployed.kept);
        let node = Arc::clone(&self.node);
        let interval = self.checkpoint_interval;
        let task = tokio::spawn(async move {
            let restore = match Checkpoint::read(&dir) {
                Ok(c) => c,
                Err(e) => {
                    *state.lock() = State::Failed(format!("cannot restore: {e}"));
                    return;
                }
            };
            // Until the sources take holds of their own, keep the log they resume from.
            let early_holds = restored_holds(&node, &v, restore.as_ref());
            let restored_epoch = restore.as_ref().map_or(0, |c| c.epoch);
            let mut written = checkpoint_rx.clone();
            let released = tokio::spawn(async move {
                let _ = written.wait_for(|epoch| *epoch > restored_epoch).await;
                drop(early_holds);
            });
            let env = RunEnv {
                node: Some(Arc::clone(&node)),
                checkpoint_dir: Some(dir.clone()),
                checkpoint_interval: interval,
                restore,
                stop: Some(stop_rx.clone()),
                on_checkpoint: Some(checkpoint_tx),
            };
            let result = run(&v, &stats, env).await;
            released.abort();
            let stopped = *stop_rx.borrow();
            // Stopped or failed, it will resume from its last checkpoint (after a restart).
            if (stopped || result.is_err())
                && let Ok(Some(last)) = Checkpoint::read(&dir)
            {
                *kept.lock() = restored_holds(&node, &v, Some(&last));
            }
            let mut state = state.lock();
            *state = match result {
                Ok(()) if stopped => State::Stopped,
                Ok(()) => State::Finished,
                Err(e) => {
                    tracing::error!(topology = %v.spec.name, error = %e, "topology failed");
                    State::Failed(e)
                }
            };
        });
        *deployed.task.lock() = Some(task);
        deployed
    }

    fn failed(&self, name: &str, why: String) -> Arc<Deployed> {
        tracing::error!(topology = %name, error = %why, "topology not started");
        let (stop, _) = watch::channel(false);
        let (_, checkpoint) = watch::channel(0);
        Arc::new(Deployed {
            name: name.to_string(),
            nodes: Vec::new(),
            stats: Vec::new(),
            state: Arc::new(Mutex::new(State::Failed(why))),
            stop,
            checkpoint,
            task: Mutex::new(None),
            started: Instant::now(),
            kept: Arc::default(),
        })
    }

    /// Every topology's status, by name.
    pub fn list(&self) -> Vec<Status> {
        self.deployed.lock().values().map(|d| d.status()).collect()
    }

    pub fn status(&self, name: &str) -> Option<Status> {
        self.deployed.lock().get(name).map(|d| d.status())
    }

    /// Stops a topology and deletes it with its checkpoint; `false` when there is none
    /// of that name.
    ///
    /// # Errors
    /// Its directory could not be removed (it is stopped and forgotten either way, and
    /// would come back at the next start).
    pub async fn remove(&self, name: &str) -> std::io::Result<bool> {
        let _changing = self.changes.lock().await;
        let Some(d) = self.deployed.lock().remove(name) else {
            return Ok(false);
        };
        d.stop().await;
        let dir = self.dir.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::File::open(&self.dir)?.sync_all()?;
        tracing::info!(topology = %name, "topology removed");
        Ok(true)
    }

    /// Stops every topology, each with a final checkpoint.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Deployed>> = self.deployed.lock().values().cloned().collect();
        futures::future::join_all(all.iter().map(|d| d.stop())).await;
    }

    /// Per-node counters of every running topology, in the Prometheus text format.
    /// Labels are the topology and node names: bounded by what is deployed.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let statuses = self.list();
        let mut out = String::new();
        let metrics: [Metric; 7] = [
            (
                "tidemark_topology_rows_in",
                "counter",
                "Rows a topology node received.",
                |n| n.rows_in as f64,
            ),
            (
                "tidemark_topology_rows_out",
                "counter",
                "Rows a topology node sent on.",
                |n| n.rows_out as f64,
            ),
            (
                "tidemark_topology_late_rows",
                "counter",
                "Rows a window received after its allowed lateness.",
                |n| n.late_rows as f64,
            ),
            (
                "tidemark_topology_rejected_rows",
                "counter",
                "Rows a table sink could not write.",
                |n| n.rejected_rows as f64,
            ),
            (
                "tidemark_topology_lag_records",
                "gauge",
                "Log records a table stream has not read yet.",
                |n| n.lag_records as f64,
            ),
            (
                "tidemark_topology_backpressure_ratio",
                "gauge",
                "Share of the last second a node waited for downstream.",
                |n| n.backpressure,
            ),
            (
                "tidemark_topology_watermark_seconds",
                "gauge",
                "Last watermark a node passed on.",
                |n| n.watermark.map_or(f64::NAN, |w| w as f64 / 1e9),
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let suffix = if kind == "counter" { "_total" } else { "" };
            for s in &statuses {
                for n in &s.nodes {
                    let _ = writeln!(
                        out,
                        "{name}{suffix}{{topology=\"{}\",node=\"{}\"}} {}",
                        s.name,
                        n.name,
                        value(n)
                    );
                }
            }
        }
        out
    }
}

/// Name, type, help and value of one exported metric.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&NodeStatus) -> f64,
);

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Source => "source",
        Role::Transform => "transform",
        Role::Sink => "sink",
    }
}

/// Holds of the log offsets the table streams of `v` resume from.
fn restored_holds(node: &Node, v: &Validated, restore: Option<&Checkpoint>) -> Vec<LogHold> {
    let Some(restore) = restore else {
        return Vec::new();
    };
    v.spec
        .nodes
        .iter()
        .flat_map(|n| match &n.kind {
            Kind::TableStream { database, .. } => (0..n.parallelism.max(1))
                .filter_map(|k| {
                    let state = restore.states.get(&super::run::instance_name(n, k))?;
                    let offsets = super::source::table_stream_offsets(state).ok()?;
                    Some(node.hold_log(database, offsets))
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Writes the topology's file atomically into `dir`.
fn save(dir: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{SPEC_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(SPEC_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
