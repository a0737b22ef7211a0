//! `tidemark topology validate|explain|run FILE`: check a topology file, show its physical
//! plan, or run it in this process until its sources end, without a server. Checks that need a table's schema (a `table_stream` source's
//! columns, a `table` sink's column types) are left to deployment, where the node's
//! catalog knows them.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tidemark_engine::topology::run::{self, NodeStats};
use tidemark_engine::topology::{self, NoTables};

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
}

pub fn run(cmd: TopologyCommand) -> anyhow::Result<ExitCode> {
    let (file, explain) = match cmd {
        TopologyCommand::Validate { file } => (file, false),
        TopologyCommand::Explain { file } => (file, true),
        TopologyCommand::Run { file, quiet } => return run_file(&file, quiet),
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
    eprintln!("ran {seconds:.2} s");
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
