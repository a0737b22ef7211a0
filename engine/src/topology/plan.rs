//! The physical plan of a validated topology: which nodes run chained in one task, where
//! rows are shuffled by key, and how many parallel tasks each chain has.
//!
//! An edge is `forward` when the downstream node runs with the same parallelism and does
//! not need its rows grouped by key; it is a `shuffle` (by hash of the key columns over
//! the downstream's tasks) when the downstream groups by key (`key_by`, a keyed window,
//! `dedup`, `join`); it is a `rebalance` when only the parallelism changes. A node joins
//! the chain of its input when it has exactly one input, that input has exactly one
//! consumer, and the edge is forward: chained nodes pass batches by function call, with
//! no channel between them.

use std::fmt::Write as _;

use super::spec::{Kind, NodeSpec, WindowKind};
use super::validate::Validated;

/// How rows move along an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    Forward,
    Shuffle(Vec<String>),
    Rebalance,
}

/// One edge of the physical plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    /// `late` and the like; `None` for the main output.
    pub output: Option<String>,
    pub to: usize,
    pub exchange: Exchange,
}

/// Nodes run as one task per parallel instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub nodes: Vec<usize>,
    pub parallelism: usize,
}

#[derive(Debug, Clone)]
pub struct PhysicalPlan {
    pub chains: Vec<Chain>,
    pub edges: Vec<Edge>,
}

/// The columns a node needs its input grouped by, if any.
fn grouping(kind: &Kind) -> Option<Vec<String>> {
    let names = |v: &[super::spec::Named]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    match kind {
        Kind::KeyBy { columns } => Some(names(columns)),
        Kind::Window(w) if !w.key_by.is_empty() => Some(names(&w.key_by)),
        Kind::Dedup { key, .. } => Some(names(key)),
        Kind::Join { on, .. } => Some(names(on)),
        _ => None,
    }
}

/// Plans `v`.
pub fn plan(v: &Validated) -> PhysicalPlan {
    let nodes = &v.spec.nodes;
    let index = |name: &str| nodes.iter().position(|n| n.name == name);
    let mut edges = Vec::new();
    for (to, n) in nodes.iter().enumerate() {
        for input in &n.inputs {
            let Some(from) = index(&input.node) else {
                continue;
            };
            let exchange = match grouping(&n.kind) {
                // One task on each side: every key already meets in the one task.
                Some(_) if n.parallelism <= 1 && nodes[from].parallelism <= 1 => Exchange::Forward,
                // A window keyed like an upstream key_by with the same parallelism finds its
                // rows already grouped.
                Some(keys) if !already_grouped(nodes, from, &keys, n.parallelism) => {
                    Exchange::Shuffle(keys)
                }
                _ if nodes[from].parallelism != n.parallelism => Exchange::Rebalance,
                _ => Exchange::Forward,
            };
            edges.push(Edge {
                from,
                output: input.output.clone(),
                to,
                exchange,
            });
        }
    }
    let mut chain_of: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut chains: Vec<Chain> = Vec::new();
    for &i in &v.order {
        let ins: Vec<&Edge> = edges.iter().filter(|e| e.to == i).collect();
        let joinable = match ins.as_slice() {
            [e] if e.exchange == Exchange::Forward && e.output.is_none() => {
                let consumers = edges.iter().filter(|x| x.from == e.from).count();
                (consumers == 1).then_some(e.from)
            }
            _ => None,
        };
        match joinable.and_then(|from| chain_of[from]) {
            Some(c) => {
                chains[c].nodes.push(i);
                chain_of[i] = Some(c);
            }
            None => {
                chain_of[i] = Some(chains.len());
                chains.push(Chain {
                    nodes: vec![i],
                    parallelism: nodes[i].parallelism,
                });
            }
        }
    }
    PhysicalPlan { chains, edges }
}

/// Whether `from`'s output is already hash-partitioned by `keys` over `parallelism` tasks.
fn already_grouped(nodes: &[NodeSpec], from: usize, keys: &[String], parallelism: usize) -> bool {
    let n = &nodes[from];
    n.parallelism == parallelism
        && matches!(&n.kind, Kind::KeyBy { columns } if columns.iter().map(|c| &c.name).eq(keys.iter()))
}

fn duration(ns: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    for (scale, unit) in UNITS {
        if ns % scale == 0 {
            return format!("{}{unit}", ns / scale);
        }
    }
    format!("{ns}ns")
}

/// `a, b, c`
fn names(v: &[super::spec::Named]) -> String {
    v.iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line about what a node does.
pub fn describe(n: &NodeSpec) -> String {
    match &n.kind {
        Kind::Generator {
            generator,
            rows,
            rate,
            throttle,
            ..
        } => format!(
            "generator {} at {rate} rows/s{}{}",
            generator.name(),
            match throttle {
                Some(true) => " (paced in wall time)",
                Some(false) => " (unpaced)",
                None => "",
            },
            rows.map_or(String::new(), |r| format!(", {r} rows"))
        ),
        Kind::TableStream {
            database,
            table,
            from,
        } => format!(
            "table_stream {database}.{table} from {}",
            match from {
                super::spec::StartFrom::Earliest => "earliest",
                super::spec::StartFrom::Latest => "latest",
            }
        ),
        Kind::FileSource {
            path,
            format,
            follow: true,
            ..
        } => format!("file {path} ({format:?}, followed)"),
        Kind::FileSource { path, format, .. } | Kind::FileSink { path, format } => {
            format!("file {path} ({format:?})")
        }
        Kind::Sql { sql, .. } => format!(
            "sql: {}",
            sql.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        Kind::Window(w) => {
            let shape = match w.kind {
                WindowKind::Tumbling { size } => format!("tumbling {}", duration(size)),
                WindowKind::Sliding { size, slide } => {
                    format!("sliding {} every {}", duration(size), duration(slide))
                }
                WindowKind::Session { gap } => format!("session gap {}", duration(gap)),
            };
            let aggs: Vec<String> = w
                .aggregates
                .iter()
                .map(|a| {
                    let p = match a.func {
                        super::spec::AggFunc::Percentile(p)
                        | super::spec::AggFunc::ApproxPercentile(p) => format!(", {p}"),
                        _ => String::new(),
                    };
                    format!(
                        "{}={}({}{p})",
                        a.output,
                        a.func.name(),
                        a.column.as_deref().unwrap_or("*")
                    )
                })
                .collect();
            format!(
                "window {shape}{}, {}{}",
                if w.key_by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", names(&w.key_by))
                },
                aggs.join(", "),
                if w.allowed_lateness > 0 {
                    format!(", lateness {}", duration(w.allowed_lateness))
                } else {
                    String::new()
                }
            )
        }
        Kind::KeyBy { columns } => format!("key_by {}", names(columns)),
        Kind::Union => "union".to_string(),
        Kind::Dedup { key, within } => {
            format!("dedup by {} within {}", names(key), duration(*within))
        }
        Kind::Join { on, within } => format!(
            "interval join on {} within {}",
            names(on),
            duration(*within)
        ),
        Kind::TableSink { database, table } => format!("table {database}.{table}"),
        Kind::Stdout => "stdout".to_string(),
        Kind::Blackhole => "blackhole".to_string(),
        Kind::Http { url, .. } => format!("http POST {url}"),
    }
}

/// The plan as text, for `tidemark topology explain`.
pub fn explain(v: &Validated) -> String {
    let p = plan(v);
    let nodes = &v.spec.nodes;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "topology {}: {} nodes in {} chains",
        v.spec.name,
        nodes.len(),
        p.chains.len()
    );
    let chain_of = |i: usize| {
        p.chains
            .iter()
            .position(|c| c.nodes.contains(&i))
            .unwrap_or(0)
    };
    for (c, chain) in p.chains.iter().enumerate() {
        let _ = writeln!(out, "\nchain {} (parallelism {})", c + 1, chain.parallelism);
        for e in p
            .edges
            .iter()
            .filter(|e| chain.nodes.first() == Some(&e.to))
        {
            let from = &nodes[e.from];
            let how = match &e.exchange {
                Exchange::Forward => "forward".to_string(),
                Exchange::Shuffle(keys) => format!("shuffle by hash({})", keys.join(", ")),
                Exchange::Rebalance => "rebalance".to_string(),
            };
            let _ = writeln!(
                out,
                "  <- {}{} (chain {}): {how}",
                from.name,
                e.output.as_ref().map_or(String::new(), |o| format!(".{o}")),
                chain_of(e.from) + 1
            );
        }
        for &i in &chain.nodes {
            let n = &nodes[i];
            let info = &v.info[i];
            let _ = writeln!(out, "  {} [{}]", n.name, describe(n));
            if let Some(schema) = &info.schema {
                let cols: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect();
                let _ = writeln!(out, "      out: {}", cols.join(", "));
            }
            if let Some(t) = &info.event_time {
                let wm = n.watermark.map_or(String::new(), |w| {
                    format!(
                        ", watermark {} behind{}",
                        duration(w.max_out_of_orderness.max(1)),
                        w.idle_timeout
                            .map_or(String::new(), |d| format!(", idle after {}", duration(d)))
                    )
                });
                let _ = writeln!(out, "      event time: {t}{wm}");
            }
        }
    }
    out
}
