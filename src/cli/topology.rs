//! `tidemark topology validate|explain|run FILE`: check a topology file, show its physical
//! plan, or run it in this process until its sources end, without a server. Checks that
//! need a table's schema (a `table_stream` source's columns, a `table` sink's column
//! types) are left to deployment, where the node's catalog knows them.
//!
//! `tidemark topology deploy FILE|list|status NAME|delete NAME`: a server's topologies,
//! through its `/api/v3/topologies` API; a refused deploy prints each problem with the
//! file's line and column, as `validate` does.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;
use tidemark_engine::topology::run::{self, NodeStats};
use tidemark_engine::topology::{self, NoTables};

use super::admin::{HostArg, send, send_raw};
use super::table::{cell, render};

#[derive(Debug, clap::Subcommand)]
pub enum TopologyCommand {
    /// Check a topology file; print every problem with its line and column.
    Validate {
        /// The topology's YAML file.
        file: PathBuf,
    },
    /// Print the physical plan of a topology file: chains, shuffles, parallelism, and each
    /// node's output columns and event time.
    Explain {
        /// The topology's YAML file.
        file: PathBuf,
    },
    /// Run a topology in this process until its sources end, with a live status line and
    /// a per-node summary (rows in and out, late rows, watermark).
    Run {
        /// The topology's YAML file (relative paths in it are read from the current
        /// directory).
        file: PathBuf,
        /// No status line.
        #[arg(long)]
        quiet: bool,
    },
    /// Deploy a topology file to a server, which runs it and keeps it across restarts.
    Deploy {
        #[command(flatten)]
        host: HostArg,
        /// The topology's YAML file.
        file: PathBuf,
    },
    /// List a server's topologies: state, uptime, last checkpoint, rows in and out.
    List {
        #[command(flatten)]
        host: HostArg,
    },
    /// Show one topology's state and, per node, rows in and out, rows/s, watermark, late
    /// and rejected rows, lag and backpressure.
    Status {
        #[command(flatten)]
        host: HostArg,
        /// The topology's name.
        name: String,
    },
    /// Stop a topology and delete it with its checkpoint (what it wrote stays).
    Delete {
        #[command(flatten)]
        host: HostArg,
        /// The topology's name.
        name: String,
    },
}

pub fn run(cmd: TopologyCommand) -> anyhow::Result<ExitCode> {
    let (file, explain) = match cmd {
        TopologyCommand::Validate { file } => (file, false),
        TopologyCommand::Explain { file } => (file, true),
        TopologyCommand::Run { file, quiet } => return run_file(&file, quiet),
        TopologyCommand::Deploy { host, file } => return deploy(&host, &file),
        TopologyCommand::List { host } => return list(&host),
        TopologyCommand::Status { host, name } => return status(&host, &name),
        TopologyCommand::Delete { host, name } => {
            send(
                Method::DELETE,
                &host,
                &format!("/api/v3/topologies/{}", path_segment(&name)),
                &[],
                None,
            )?;
            println!("deleted topology {name}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(topology::load(&text, &NoTables)) {
        Ok(v) => {
            if explain {
                print!("{}", topology::explain(&v));
            } else {
                println!(
                    "{}: topology {:?} is valid ({} nodes)",
                    file.display(),
                    v.spec.name,
                    v.spec.nodes.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => Ok(report(&file, &problems)),
    }
}

fn report(file: &std::path::Path, problems: &[topology::Problem]) -> ExitCode {
    for p in problems {
        eprintln!("{}:{p}", file.display());
    }
    eprintln!("{} problem(s)", problems.len());
    ExitCode::FAILURE
}

fn run_file(file: &std::path::Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // A topology's SQL is planned and evaluated on these threads (see query::complexity).
        .thread_stack_size(tidemark_query::complexity::QUERY_STACK_BYTES)
        .enable_all()
        .thread_name("tidemark-topology")
        .build()
        .context("starting the async runtime")?;
    let v = match runtime.block_on(topology::load(&text, &NoTables)) {
        Ok(v) => v,
        Err(problems) => return Ok(report(file, &problems)),
    };
    if let Err(problems) = run::check_runnable(&v, false) {
        return Ok(report(file, &problems));
    }
    let stats: Vec<Arc<NodeStats>> = v.spec.nodes.iter().map(|_| Arc::default()).collect();
    let bar = indicatif::ProgressBar::new_spinner();
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let result = runtime.block_on(async {
        let status = async {
            loop {
                bar.set_message(status_line(&v, &stats, started));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        // Ctrl-C stops the sources; what is in flight drains and open windows fire.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop_tx.send_replace(true);
            }
        });
        let env = run::RunEnv {
            stop: Some(stop_rx),
            ..run::RunEnv::default()
        };
        tokio::select! {
            r = run::run(&v, &stats, env) => r,
            () = status => Ok(()),
        }
    });
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{:<20} {:>12} {:>12} {:>8}  watermark",
        "node", "rows in", "rows out", "late"
    );
    for (n, s) in v.spec.nodes.iter().zip(&stats) {
        let wm = s.watermark.load(Ordering::Relaxed);
        eprintln!(
            "{:<20} {:>12} {:>12} {:>8}  {}",
            n.name,
            s.rows_in.load(Ordering::Relaxed),
            s.rows_out.load(Ordering::Relaxed),
            s.late_rows.load(Ordering::Relaxed),
            if wm == i64::MIN {
                "-".to_string()
            } else {
                chrono::DateTime::from_timestamp_nanos(wm).to_rfc3339()
            }
        );
    }
    let produced: u64 = v
        .spec
        .nodes
        .iter()
        .zip(&stats)
        .filter(|(n, _)| n.role == tidemark_engine::topology::spec::Role::Source)
        .map(|(_, s)| s.rows_out.load(Ordering::Relaxed))
        .sum();
    eprintln!(
        "ran {seconds:.2} s: {produced} events from the sources, {:.0} events/s",
        produced as f64 / seconds.max(1e-9)
    );
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Rows from the sources, into the sinks, late so far, and rows/s.
fn status_line(v: &topology::Validated, stats: &[Arc<NodeStats>], started: Instant) -> String {
    use tidemark_engine::topology::spec::Role;
    let sum = |role: Role, f: fn(&NodeStats) -> u64| -> u64 {
        v.spec
            .nodes
            .iter()
            .zip(stats)
            .filter(|(n, _)| n.role == role)
            .map(|(_, s)| f(s))
            .sum()
    };
    let produced = sum(Role::Source, |s| s.rows_out.load(Ordering::Relaxed));
    let sunk = sum(Role::Sink, |s| s.rows_in.load(Ordering::Relaxed));
    let late: u64 = stats
        .iter()
        .map(|s| s.late_rows.load(Ordering::Relaxed))
        .sum();
    format!(
        "{produced} rows in ({:.0}/s), {sunk} rows out, {late} late",
        produced as f64 / started.elapsed().as_secs_f64().max(1e-9)
    )
}

/// A name as one URL path segment (percent-encoded).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn deploy(host: &HostArg, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let url = format!("{}/api/v3/topologies", host.host.trim_end_matches('/'));
    let resp = super::http_client()?
        .build()?
        .post(url)
        .header("content-type", "application/yaml")
        .body(text)
        .send()?;
    if resp.status() == reqwest::StatusCode::BAD_REQUEST {
        let body: Value = serde_json::from_str(&resp.text()?).unwrap_or(Value::Null);
        if let Some(problems) = body["problems"].as_array() {
            for p in problems {
                eprintln!(
                    "{}:{}:{}: {}",
                    file.display(),
                    cell(&p["line"]),
                    cell(&p["column"]),
                    cell(&p["message"])
                );
            }
            eprintln!("{} problem(s); nothing was deployed", problems.len());
            return Ok(ExitCode::FAILURE);
        }
        anyhow::bail!("server answered 400: {}", cell(&body["error"]));
    }
    let answer: Value = serde_json::from_str(&super::check(resp)?)?;
    println!(
        "deployed topology {} ({})",
        cell(&answer["name"]),
        cell(&answer["status"]["state"])
    );
    Ok(ExitCode::SUCCESS)
}

fn list(host: &HostArg) -> anyhow::Result<ExitCode> {
    let answer: Value = serde_json::from_str(&send_raw(
        Method::GET,
        host,
        "/api/v3/topologies",
        &[],
        None,
    )?)?;
    let rows: Vec<Vec<String>> = answer["topologies"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let nodes = t["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
            let sum = |role: &str, key: &str| -> u64 {
                nodes
                    .iter()
                    .filter(|n| n["role"] == role)
                    .filter_map(|n| n[key].as_u64())
                    .sum()
            };
            vec![
                cell(&t["name"]),
                cell(&t["state"]),
                format!("{:.0}", t["uptime_seconds"].as_f64().unwrap_or(0.0)),
                cell(&t["last_checkpoint"]),
                sum("source", "rows_out").to_string(),
                sum("sink", "rows_in").to_string(),
                cell(&t["error"]),
            ]
        })
        .collect();
    println!(
        "{}",
        render(
            &[
                "name",
                "state",
                "uptime_s",
                "checkpoint",
                "rows_in",
                "rows_out",
                "error"
            ],
            &rows
        )?
    );
    Ok(ExitCode::SUCCESS)
}

fn status(host: &HostArg, name: &str) -> anyhow::Result<ExitCode> {
    let t: Value = serde_json::from_str(&send_raw(
        Method::GET,
        host,
        &format!("/api/v3/topologies/{}", path_segment(name)),
        &[],
        None,
    )?)?;
    println!(
        "topology {}: {}, up {:.0} s, last checkpoint {}",
        cell(&t["name"]),
        cell(&t["state"]),
        t["uptime_seconds"].as_f64().unwrap_or(0.0),
        cell(&t["last_checkpoint"])
    );
    if !t["error"].is_null() {
        println!("error: {}", cell(&t["error"]));
    }
    let rows: Vec<Vec<String>> = t["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            vec![
                cell(&n["name"]),
                cell(&n["type"]),
                cell(&n["rows_in"]),
                cell(&n["rows_out"]),
                format!("{:.0}", n["rows_per_second"].as_f64().unwrap_or(0.0)),
                cell(&n["watermark"]),
                cell(&n["late_rows"]),
                cell(&n["rejected_rows"]),
                cell(&n["lag_records"]),
                format!("{:.2}", n["backpressure"].as_f64().unwrap_or(0.0)),
                cell(&n["last_error"]),
            ]
        })
        .collect();
    println!(
        "{}",
        render(
            &[
                "node",
                "type",
                "rows_in",
                "rows_out",
                "rows/s",
                "watermark",
                "late",
                "rejected",
                "lag",
                "backpressure",
                "last_error"
            ],
            &rows
        )?
    );
    Ok(ExitCode::SUCCESS)
}
