//! `tidemark load`: a load generator and benchmark client.
//!
//! `load write` produces TSBS-style data ([`tidemark_connectors::tsbs`]) deterministically
//! from a seed and sends it as line protocol over HTTP: `--workers` threads each take the
//! next batch number from one counter, generate that batch's rows, and POST it, retrying
//! while the server pushes back (503/429) or the connection fails. Rows count as sent only
//! once acknowledged. `load queries` runs the TSBS `cpu-only` query set against the same
//! data and reports latencies per query type. Both print a summary and can write a JSON
//! report.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use serde::Serialize;
use tidemark_connectors::tsbs::queries::{self, DataSpan, QUERY_TYPES};
use tidemark_connectors::tsbs::{Generator, UseCase};

use super::ClientArgs;
use super::post::{first_line, post_retrying};

#[derive(Debug, clap::Subcommand)]
pub enum LoadCommand {
    /// Generate TSBS-style data and write it to a server; report throughput and latency.
    Write(WriteArgs),
    /// Run the TSBS cpu-only query set over data written by `load write`; report latency.
    Queries(QueriesArgs),
}

/// What data set to generate (queries need the same values to aim inside the data).
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// TSBS use case: cpu-only (one `cpu` row per host and step) or devops (six
    /// measurements per host and step).
    #[arg(long, default_value = "cpu-only", value_parser = parse_use_case)]
    use_case: UseCase,
    /// Number of hosts.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// Timestamp of the first step (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    start: String,
    /// Time between two steps of one host (like 10s).
    #[arg(long, default_value = "10s")]
    interval: String,
    /// Time covered (like 3h or 2d); the data ends at start + span.
    #[arg(long, default_value = "1h", conflicts_with = "rows")]
    span: String,
    /// Exact number of rows to generate instead of a span.
    #[arg(long)]
    rows: Option<u64>,
    /// Seed of the data; the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_use_case(s: &str) -> Result<UseCase, String> {
    UseCase::parse(s).ok_or_else(|| format!("unknown use case {s:?}: expected cpu-only or devops"))
}

fn parse_positive_duration(what: &str, s: &str) -> anyhow::Result<i64> {
    match tidemark_connectors::http::parse_duration(s) {
        Ok(Some(ns)) if ns > 0 => Ok(ns),
        Ok(_) => bail!("--{what} must be a positive duration, got {s:?}"),
        Err(e) => bail!("--{what}: {e}"),
    }
}

impl DataArgs {
    /// The generator and the number of rows to produce.
    fn generator(&self) -> anyhow::Result<(Generator, u64)> {
        if self.hosts == 0 {
            bail!("--hosts must be at least 1");
        }
        let start = chrono::DateTime::parse_from_rfc3339(&self.start)
            .with_context(|| format!("--start {:?} is not an RFC 3339 timestamp", self.start))?;
        let start_ns = start
            .timestamp_nanos_opt()
            .context("--start is outside the nanosecond range (1677..2262)")?;
        let interval = parse_positive_duration("interval", &self.interval)?;
        let g = Generator::new(self.use_case, self.hosts, start_ns, interval, self.seed);
        let rows = match self.rows {
            Some(rows) => rows,
            None => {
                let span = parse_positive_duration("span", &self.span)?;
                let steps = (span + interval - 1) / interval;
                (steps as u64).saturating_mul(g.rows_per_step())
            }
        };
        Ok((g, rows))
    }
}

#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Rows per request.
    #[arg(long, default_value_t = 5000)]
    batch_size: u64,
    /// Gzip request bodies.
    #[arg(long)]
    gzip: bool,
    /// Attempts of one batch while the server answers 503/429 or cannot be reached.
    #[arg(long, default_value_t = 20)]
    retries: u32,
    /// Stop once this many batches have failed (0: never stop).
    #[arg(long, default_value_t = 10)]
    max_errors: u64,
    /// Write a JSON report here too.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// Append the row range of every acknowledged batch here (`FIRST END` per line,
    /// END exclusive), written as each acknowledgement arrives: what a crash test checks.
    #[arg(long)]
    ack_log: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct QueriesArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Query types to run, comma separated (default: all of TSBS cpu-only).
    #[arg(long, value_delimiter = ',')]
    queries: Vec<String>,
    /// Runs of each query type, each with its own hosts and time window.
    #[arg(long, default_value_t = 5)]
    runs: u64,
    /// Result format asked of the server.
    #[arg(long, default_value = "csv")]
    format: String,
    /// Print the queries as JSON and run nothing (to run the same set elsewhere).
    #[arg(long)]
    print: bool,
    /// Write a JSON report here too.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

pub fn run(cmd: LoadCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LoadCommand::Write(args) => write(args),
        LoadCommand::Queries(args) => run_queries(args),
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[i.min(samples.len() - 1)].as_secs_f64() * 1e3
        };
        Self {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            min_ms: at(0.0),
            max_ms: at(1.0),
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct WriteReport {
    use_case: String,
    hosts: usize,
    rows_planned: u64,
    /// Rows in acknowledged requests.
    rows_sent: u64,
    field_values_sent: u64,
    /// Request bodies as sent (after gzip when on).
    bytes_sent: u64,
    requests: u64,
    /// Attempts refused for a retryable reason and tried again.
    retries: u64,
    /// Batches given up on, by reason.
    errors: std::collections::BTreeMap<String, u64>,
    seconds: f64,
    rows_per_sec: f64,
    field_values_per_sec: f64,
    latency: Latency,
}

#[derive(Default)]
struct Shared {
    rows: AtomicU64,
    values: AtomicU64,
    bytes: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
    latencies: Mutex<Vec<Duration>>,
}

impl Shared {
    fn error(&self, kind: String) {
        *self.errors.lock().entry(kind).or_default() += 1;
    }

    fn error_count(&self) -> u64 {
        self.errors.lock().values().sum()
    }
}

fn progress_bar(len: u64, quiet: bool, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = format!(
        "{{elapsed_precise}} [{{bar:30}}] {{human_pos}}/{{human_len}} {what} ({{whole_per_sec}}) {{msg}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> ").with_key(
            "whole_per_sec",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&whole_per_sec(s.per_sec()));
            },
        ));
    }
    bar
}

/// A rate as a whole number per second (`12345/s`, not `12345.6789/s`).
pub(super) fn whole_per_sec(rate: f64) -> String {
    if rate.is_finite() {
        format!("{rate:.0}/s")
    } else {
        "-/s".to_string()
    }
}

fn write(args: WriteArgs) -> anyhow::Result<ExitCode> {
    let (generator, total) = args.data.generator()?;
    if args.workers == 0 || args.batch_size == 0 {
        bail!("--workers and --batch-size must be at least 1");
    }
    let url = format!(
        "{}/api/v3/write_lp?db={}",
        args.client.host.trim_end_matches('/'),
        args.client.db
    );
    let client = super::http_client()?
        .timeout(Duration::from_secs(120))
        .build()?;
    let batches = total.div_ceil(args.batch_size);
    let ack_log = match &args.ack_log {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the ack log {}", path.display()))?,
        )),
        None => None,
    };
    let next = AtomicU64::new(0);
    let shared = Shared::default();
    let bar = progress_bar(total, args.quiet, "rows");
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.workers {
            s.spawn(|| {
                let mut body = Vec::new();
                let mut latencies = Vec::new();
                loop {
                    if args.max_errors > 0 && shared.error_count() >= args.max_errors {
                        break;
                    }
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        break;
                    }
                    let rows = b * args.batch_size..((b + 1) * args.batch_size).min(total);
                    let n = rows.end - rows.start;
                    body.clear();
                    let values = generator.write_rows(&mut body, rows.clone());
                    match send_batch(&client, &url, &body, &args, &shared, &mut latencies) {
                        Ok(()) => {
                            if let Some(log) = &ack_log {
                                // One write per line: whole lines even if we are killed.
                                let line = format!("{} {}\n", rows.start, rows.end);
                                if let Err(e) = log.lock().write_all(line.as_bytes()) {
                                    shared.error(format!("ack log: {e}"));
                                }
                            }
                            shared.rows.fetch_add(n, Ordering::Relaxed);
                            shared.values.fetch_add(values, Ordering::Relaxed);
                        }
                        Err(kind) => {
                            shared.error(kind);
                            bar.set_message(format!("errors: {}", shared.error_count()));
                        }
                    }
                    bar.inc(n);
                }
                shared.latencies.lock().extend(latencies);
            });
        }
    });
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let rows_sent = shared.rows.load(Ordering::Relaxed);
    let values = shared.values.load(Ordering::Relaxed);
    let report = WriteReport {
        use_case: generator.use_case().name().to_string(),
        hosts: generator.hosts(),
        rows_planned: total,
        rows_sent,
        field_values_sent: values,
        bytes_sent: shared.bytes.load(Ordering::Relaxed),
        requests: shared.requests.load(Ordering::Relaxed),
        retries: shared.retries.load(Ordering::Relaxed),
        errors: std::mem::take(&mut *shared.errors.lock()),
        seconds,
        rows_per_sec: rows_sent as f64 / seconds.max(1e-9),
        field_values_per_sec: values as f64 / seconds.max(1e-9),
        latency: Latency::of(std::mem::take(&mut *shared.latencies.lock())),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rows sent: {} of {} in {:.1} s: {:.0} rows/s, {:.0} field values/s",
        report.rows_sent,
        report.rows_planned,
        seconds,
        report.rows_per_sec,
        report.field_values_per_sec
    )?;
    writeln!(
        out,
        "requests: {} ({} bytes), retries: {}, failed batches: {}",
        report.requests,
        report.bytes_sent,
        report.retries,
        report.errors.values().sum::<u64>()
    )?;
    for (kind, n) in &report.errors {
        writeln!(out, "  {n} x {kind}")?;
    }
    let failed: u64 = report.errors.values().sum();
    if args.max_errors > 0 && failed >= args.max_errors {
        writeln!(out, "gave up after {failed} failed batches (--max-errors)")?;
    }
    writeln!(
        out,
        "request latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms
    )?;
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sends one batch until it is acknowledged, refused for good, or out of attempts; on
/// failure returns what went wrong, as a short kind for the summary.
fn send_batch(
    client: &reqwest::blocking::Client,
    url: &str,
    lines: &[u8],
    args: &WriteArgs,
    shared: &Shared,
    latencies: &mut Vec<Duration>,
) -> Result<(), String> {
    let body = bytes::Bytes::from(if args.gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(lines)
            .and_then(|()| enc.finish())
            .map_err(|e| format!("gzip: {e}"))?
    } else {
        lines.to_vec()
    });
    let latency = post_retrying(
        client,
        url,
        &body,
        args.gzip,
        args.retries,
        |bytes, retry| {
            shared.requests.fetch_add(1, Ordering::Relaxed);
            shared.bytes.fetch_add(bytes, Ordering::Relaxed);
            if retry {
                shared.retries.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .map_err(|r| r.kind())?;
    latencies.push(latency);
    Ok(())
}

#[derive(Debug, Serialize)]
struct QueryTypeReport {
    kind: String,
    runs: u64,
    errors: u64,
    /// Rows returned by the last run (csv and jsonl only).
    rows: Option<u64>,
    latency: Latency,
}

fn run_queries(args: QueriesArgs) -> anyhow::Result<ExitCode> {
    let (generator, rows) = args.data.generator()?;
    if generator.use_case() != UseCase::CpuOnly {
        bail!("the query set is TSBS cpu-only; use --use-case cpu-only");
    }
    let span = DataSpan::of(&generator, rows);
    let kinds: Vec<String> = if args.queries.is_empty() {
        QUERY_TYPES.iter().map(|k| k.to_string()).collect()
    } else {
        args.queries.clone()
    };
    let mut plan = Vec::new();
    for kind in &kinds {
        let mut runs = Vec::new();
        for i in 0..args.runs {
            runs.push(
                queries::query(kind, span, args.data.seed, i).with_context(|| {
                    format!(
                        "unknown query type {kind:?}; the types are: {}",
                        QUERY_TYPES.join(", ")
                    )
                })?,
            );
        }
        plan.push((kind.clone(), runs));
    }
    if args.print {
        let all: Vec<_> = plan.iter().flat_map(|(_, runs)| runs).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    let url = format!(
        "{}/api/v3/query_sql",
        args.client.host.trim_end_matches('/')
    );
    let client = super::http_client()?
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut reports = Vec::new();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:>5} {:>10} {:>10} {:>10} {:>10}",
        "query", "runs", "median ms", "min ms", "max ms", "rows"
    )?;
    for (kind, runs) in plan {
        let mut samples = Vec::new();
        let mut errors = 0;
        let mut last_rows = None;
        for q in &runs {
            let t = Instant::now();
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&serde_json::json!({
                    "db": args.client.db,
                    "q": q.sql,
                    "format": args.format,
                }))?)
                .send();
            match resp.and_then(|r| {
                let ok = r.status().is_success();
                r.bytes().map(|b| (ok, b))
            }) {
                Ok((true, body)) => {
                    samples.push(t.elapsed());
                    last_rows = count_rows(&args.format, &body);
                }
                Ok((false, body)) => {
                    errors += 1;
                    eprintln!("{kind}: {}", first_line(&String::from_utf8_lossy(&body)));
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("{kind}: {e}");
                }
            }
        }
        let latency = Latency::of(samples);
        writeln!(
            out,
            "{:<24} {:>5} {:>10.1} {:>10.1} {:>10.1} {:>10}",
            kind,
            runs.len(),
            latency.p50_ms,
            latency.min_ms,
            latency.max_ms,
            last_rows.map_or("-".to_string(), |r| r.to_string())
        )?;
        reports.push(QueryTypeReport {
            kind,
            runs: runs.len() as u64,
            errors,
            rows: last_rows,
            latency,
        });
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(if reports.iter().any(|r| r.errors > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn count_rows(format: &str, body: &[u8]) -> Option<u64> {
    let lines = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    match format {
        "csv" => Some(lines.saturating_sub(1)),
        "jsonl" => Some(lines),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers() {
        assert_eq!(whole_per_sec(12_345.678_9), "12346/s");
        assert_eq!(whole_per_sec(0.4), "0/s");
        assert_eq!(whole_per_sec(f64::INFINITY), "-/s");
    }
}
