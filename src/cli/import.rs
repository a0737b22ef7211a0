//! `tidemark import FILE...`: bulk import of line protocol, CSV and Parquet files (each
//! optionally gzip-compressed) into a database over the HTTP write API.
//!
//! A reader thread turns the files, one after the other, into batches of line protocol
//! ([`tidemark_connectors::import`]); the main thread sends them in order (so that a later
//! duplicate point wins, as it would in one request), retrying while the server pushes
//! back. Rows the reader refuses and lines the server refuses are counted as rejected and
//! written, with the file, the line (or Parquet row) and the error, to `--rejects`.
//! For CSV and Parquet files, the columns of an existing table decide which columns are
//! tags and what type fields are, unless flags say otherwise.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemark_connectors::import::{
    self, Batch, BatchLimits, ColumnKind, Format, Options, Rejected,
};
use tidemark_connectors::line_protocol::Precision;

use super::ClientArgs;
use super::post::{Refused, first_line, post_retrying};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Format of the files: lp, csv or parquet (default: from each file's extension,
    /// looking through .gz).
    #[arg(long)]
    format: Option<String>,
    /// Precision of line protocol timestamps and of integer times in CSV: ns, us, ms, s.
    #[arg(long, default_value = "ns")]
    precision: String,
    /// Table of the rows of CSV and Parquet files (default: the file name up to its
    /// first dot).
    #[arg(long)]
    table: Option<String>,
    /// CSV/Parquet column that names each row's table, instead of --table.
    #[arg(long, conflicts_with = "table")]
    table_column: Option<String>,
    /// CSV/Parquet column holding the time.
    #[arg(long, default_value = "time")]
    time_column: String,
    /// CSV/Parquet columns that are tags, comma separated.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Type of a CSV/Parquet field column, as NAME=TYPE with TYPE float, integer,
    /// unsigned, string or boolean (repeatable).
    #[arg(long = "field-type", value_name = "NAME=TYPE")]
    field_types: Vec<String>,
    /// CSV/Parquet columns to leave out, comma separated.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Field separator of CSV files (one character; `\t` for tab).
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Write every rejected row here, each after a `# FILE:LINE: ERROR` comment line.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Rows per request.
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
    /// Largest request body, in bytes (a batch ends at the first line past it).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    batch_bytes: usize,
    /// Gzip request bodies.
    #[arg(long)]
    gzip: bool,
    /// Attempts of one batch while the server answers 503/429 or cannot be reached.
    #[arg(long, default_value_t = 20)]
    retries: u32,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Files to import.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// A batch of one file on its way to the sender, and why the file could not be read any
/// further, if it could not.
struct Work {
    file: usize,
    batch: Batch,
    failure: Option<String>,
    /// The input read when this batch was complete: where the bar stands once it is sent
    /// (the reader runs ahead of the sender, so its own count would reach the end first).
    read_to: u64,
}

#[derive(Default)]
struct Totals {
    accepted: u64,
    rejected: u64,
    requests: u64,
    retries: u64,
    failed_files: u64,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let precision = Precision::parse(&args.precision)
        .with_context(|| format!("--precision {:?}: expected ns, us, ms or s", args.precision))?;
    let mut formats = Vec::with_capacity(args.files.len());
    let mut total_bytes = 0;
    for path in &args.files {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        total_bytes += meta.len();
        let format = match &args.format {
            Some(f) => Format::parse(f)
                .with_context(|| format!("--format {f:?}: expected lp, csv or parquet"))?,
            None => Format::from_path(path).with_context(|| {
                format!(
                    "cannot tell the format of {} from its name: give --format lp, csv or parquet",
                    path.display()
                )
            })?,
        };
        formats.push(format);
    }
    let options = options(&args, precision)?;
    let client = super::http_client()?
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = args.client.host.trim_end_matches('/').to_string();
    let mut rejects = match &args.rejects {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create the rejects file {}", p.display()))?,
        )),
        None => None,
    };

    // Per file: the options with what the existing table says about its columns.
    let mut per_file = Vec::with_capacity(args.files.len());
    for (path, format) in args.files.iter().zip(&formats) {
        let mut o = options.clone();
        if *format != Format::LineProtocol && o.table_column.is_none() {
            let table = o.table_for(path);
            for (name, kind) in existing_columns(&client, &base, &args.client.db, &table)? {
                o.columns.entry(name).or_insert(kind);
            }
        }
        per_file.push(o);
    }

    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    if args.quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let progress = Arc::new(AtomicU64::new(0));
    let limits = BatchLimits {
        max_lines: args.batch_size.max(1),
        max_bytes: args.batch_bytes.max(1),
    };
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut shown = 0;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Work>(2);
    let files = args.files.clone();
    let file_formats = formats.clone();
    let reader_progress = Arc::clone(&progress);
    let reader = std::thread::spawn(move || {
        for (i, ((path, format), options)) in files.iter().zip(formats).zip(per_file).enumerate() {
            let mut source =
                match import::open(path, format, &options, Arc::clone(&reader_progress)) {
                    Ok(s) => s,
                    Err(e) => {
                        let failure = Some(e.to_string());
                        let work = Work {
                            file: i,
                            batch: Batch::default(),
                            failure,
                            read_to: reader_progress.load(Ordering::Relaxed),
                        };
                        if tx.send(work).is_err() {
                            return;
                        }
                        continue;
                    }
                };
            loop {
                let mut batch = Batch::default();
                let (more, failure) = match source.fill(&mut batch, limits) {
                    Ok(more) => (more, None),
                    Err(e) => (false, Some(e.to_string())),
                };
                if (!batch.is_empty() || failure.is_some())
                    && tx
                        .send(Work {
                            file: i,
                            batch,
                            failure,
                            read_to: reader_progress.load(Ordering::Relaxed),
                        })
                        .is_err()
                {
                    return;
                }
                if !more {
                    break;
                }
            }
        }
    });

    let url = format!("{base}/api/v3/write_lp");
    let mut fatal = None;
    for mut work in rx {
        let path = &args.files[work.file];
        let mut rejected = std::mem::take(&mut work.batch.rejected);
        if !work.batch.lines.is_empty() {
            match send(&client, &url, &args, &work.batch, &mut totals) {
                Ok((accepted, refused)) => {
                    totals.accepted += accepted;
                    rejected.extend(refused);
                }
                Err(e) => {
                    fatal = Some(format!("{}: {e}", path.display()));
                    break;
                }
            }
        }
        rejected.sort_by_key(|r| r.location);
        totals.rejected += rejected.len() as u64;
        let unit = if file_formats[work.file] == Format::Parquet {
            "row "
        } else {
            ""
        };
        for r in &rejected {
            if let Some(out) = &mut rejects {
                writeln!(
                    out,
                    "# {}:{unit}{}: {}\n{}",
                    path.display(),
                    r.location,
                    r.error.replace('\n', " "),
                    r.original
                )?;
            } else if shown < 5 {
                bar.suspend(|| {
                    eprintln!("{}:{unit}{}: {}", path.display(), r.location, r.error);
                });
                shown += 1;
            }
        }
        if let Some(failure) = work.failure {
            totals.failed_files += 1;
            bar.suspend(|| eprintln!("error: {failure}"));
        }
        bar.set_position(work.read_to);
        bar.set_message(format!(
            "{} rows, {} rejected",
            totals.accepted, totals.rejected
        ));
    }
    // The reader stops at its next send once the receiver is gone.
    drop(reader.join());
    bar.finish_and_clear();
    if let Some(out) = &mut rejects {
        out.flush()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {} file(s) in {seconds:.1} s: {} rows accepted, {} rejected ({:.0} rows/s; {} requests, {} retries)",
        args.files.len() - totals.failed_files as usize,
        totals.accepted,
        totals.rejected,
        totals.accepted as f64 / seconds.max(1e-9),
        totals.requests,
        totals.retries,
    );
    if totals.rejected > 0 {
        match &args.rejects {
            Some(p) => println!("rejected rows and their errors are in {}", p.display()),
            None if totals.rejected > shown => println!(
                "{} more rejected; --rejects FILE keeps them all",
                totals.rejected - shown
            ),
            None => {}
        }
    }
    if let Some(e) = fatal {
        bail!("stopped: {e}");
    }
    Ok(if totals.rejected > 0 || totals.failed_files > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn options(args: &ImportArgs, precision: Precision) -> anyhow::Result<Options> {
    let delimiter = match args.delimiter.as_str() {
        "\\t" | "tab" => b'\t',
        d if d.len() == 1 => d.as_bytes()[0],
        d => bail!("--delimiter {d:?}: expected one character"),
    };
    let mut columns = HashMap::new();
    for t in &args.tags {
        columns.insert(t.trim().to_string(), ColumnKind::Tag);
    }
    for spec in &args.field_types {
        let (name, kind) = spec
            .split_once('=')
            .and_then(|(n, t)| Some((n.trim(), ColumnKind::parse(t.trim())?)))
            .with_context(|| {
                format!(
                    "--field-type {spec:?}: expected NAME=TYPE with TYPE float, integer, unsigned, string or boolean"
                )
            })?;
        columns.insert(name.to_string(), kind);
    }
    Ok(Options {
        precision,
        table: args.table.clone(),
        table_column: args.table_column.clone(),
        time_column: args.time_column.clone(),
        columns,
        exclude: args.exclude.clone(),
        delimiter,
    })
}

/// Tags and field types of `table` if it exists.
fn existing_columns(
    client: &reqwest::blocking::Client,
    base: &str,
    db: &str,
    table: &str,
) -> anyhow::Result<Vec<(String, ColumnKind)>> {
    let sql = format!(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{}'",
        table.replace('\'', "''")
    );
    let resp = client
        .get(format!("{base}/api/v3/query_sql"))
        .query(&[("db", db), ("q", sql.as_str()), ("format", "json")])
        .send()
        .with_context(|| format!("cannot reach {base}"))?;
    if resp.status().as_u16() == 404 {
        // No such database yet: the import creates it.
        return Ok(Vec::new());
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&super::check(resp)?).context("reading the table's columns")?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name = row.get("column_name")?.as_str()?;
            let kind = match row.get("data_type")?.as_str()? {
                t if t.starts_with("Dictionary") => ColumnKind::Tag,
                "Float64" => ColumnKind::parse("float")?,
                "Int64" => ColumnKind::parse("integer")?,
                "UInt64" => ColumnKind::parse("unsigned")?,
                "Utf8" => ColumnKind::parse("string")?,
                "Boolean" => ColumnKind::parse("boolean")?,
                _ => return None,
            };
            Some((name.to_string(), kind))
        })
        .collect())
}

/// Sends one batch; returns how many lines the server accepted and the lines it refused.
/// A batch too large for the server is sent in halves.
///
/// # Errors
/// Answers that are not about lines (like a database that cannot be created), and
/// requests that fail after every retry: the import stops.
fn send(
    client: &reqwest::blocking::Client,
    url: &str,
    args: &ImportArgs,
    batch: &Batch,
    totals: &mut Totals,
) -> anyhow::Result<(u64, Vec<Rejected>)> {
    let payload = bytes::Bytes::from(if args.gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(batch.body.as_bytes())?;
        enc.finish()?
    } else {
        batch.body.clone().into_bytes()
    });
    let full_url = reqwest::Url::parse_with_params(
        url,
        [
            ("db", args.client.db.as_str()),
            ("precision", batch.precision.name()),
            ("accept_partial", "true"),
        ],
    )?;
    let result = post_retrying(
        client,
        full_url.as_str(),
        &payload,
        args.gzip,
        args.retries,
        |_, retry| {
            totals.requests += 1;
            if retry {
                totals.retries += 1;
            }
        },
    );
    match result {
        Ok(_) => Ok((batch.lines.len() as u64, Vec::new())),
        Err(Refused::Status { status: 413, body }) => {
            let n = batch.lines.len();
            if n > 1 {
                let (a, mut refused) = send(client, url, args, &batch.part(0..n / 2), totals)?;
                let (b, more) = send(client, url, args, &batch.part(n / 2..n), totals)?;
                refused.extend(more);
                return Ok((a + b, refused));
            }
            Ok((
                0,
                batch
                    .lines
                    .iter()
                    .map(|l| Rejected {
                        location: l.location,
                        original: batch.text(l).to_string(),
                        error: first_line(&body),
                    })
                    .collect(),
            ))
        }
        Err(Refused::Status { status: 400, body }) => {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let Some(data) = value.get("data").and_then(|d| d.as_array()) else {
                bail!("server answered 400: {}", first_line(&body));
            };
            let mut refused = Vec::with_capacity(data.len());
            for e in data {
                let n = e
                    .get("line_number")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                let Some(l) = batch.line_at(n as usize) else {
                    bail!("the server refused line {n} of a request that has no such line");
                };
                refused.push(Rejected {
                    location: l.location,
                    original: batch.text(l).to_string(),
                    error: e
                        .get("error_message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("refused by the server")
                        .to_string(),
                });
            }
            Ok(((batch.lines.len() - refused.len()) as u64, refused))
        }
        Err(r) => bail!("{}", r.kind()),
    }
}
