//! `tidemark topic ...`: create, list, describe and delete topics, and produce and consume
//! records, through the server's `/api/v3/topics` API.
//!
//! `produce` reads records a line at a time (from a file or standard input), checks each
//! batch with the server's own parser so that a bad line is reported with its line in the
//! input, and sends batches of about 1 MiB; `consume` prints one JSON object a record.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use tidemark_connectors::http::parse_topic_records;

use super::admin::{HostArg, print, send, send_raw, send_with};

/// A batch is sent once it holds this many bytes.
const BATCH_BYTES: usize = 1024 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        #[command(flatten)]
        host: HostArg,
        /// The topic.
        name: String,
        /// Partitions (the server's --partitions when not given).
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// List topics with their partitions' offsets.
    List {
        #[command(flatten)]
        host: HostArg,
    },
    /// Show one topic's partitions and offsets.
    Describe {
        #[command(flatten)]
        host: HostArg,
        /// The topic.
        name: String,
    },
    /// Delete a topic and its records.
    Delete {
        #[command(flatten)]
        host: HostArg,
        /// The topic.
        name: String,
    },
    /// Append records, one a line, from a file or standard input.
    ///
    /// A line is `{"value": any JSON, "key"?: string, "timestamp"?: ns or RFC 3339}`; with
    /// --values a line is the value itself (JSON when it parses, else a string).
    Produce {
        #[command(flatten)]
        host: HostArg,
        /// The topic.
        name: String,
        /// Read from this file instead of standard input.
        file: Option<std::path::PathBuf>,
        /// Each line is a record's value, not a record.
        #[arg(long)]
        values: bool,
        /// With --values: the key of every record (records without a key are spread over
        /// the partitions).
        #[arg(long, requires = "values")]
        key: Option<String>,
        /// Answer before the records are fsynced.
        #[arg(long)]
        no_sync: bool,
    },
    /// Print records as JSON lines: {"partition", "offset", "timestamp", "key", "value"}.
    Consume {
        #[command(flatten)]
        host: HostArg,
        /// The topic.
        name: String,
        /// Only this partition (all of them, one after another, when not given).
        #[arg(long)]
        partition: Option<u32>,
        /// Where each partition starts: earliest, latest or an offset.
        #[arg(long, default_value = "earliest")]
        offset: String,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// Keep waiting for new records (until Ctrl-C or --limit).
        #[arg(long)]
        follow: bool,
    },
}

pub fn run(cmd: TopicCommand) -> anyhow::Result<ExitCode> {
    let path = "/api/v3/topics";
    match cmd {
        TopicCommand::Create {
            host,
            name,
            partitions,
        } => {
            let mut body = json!({ "name": name });
            if let Some(p) = partitions {
                body["partitions"] = json!(p);
            }
            print(&send(Method::POST, &host, path, &[], Some(body))?)
        }
        TopicCommand::List { host } => print(&send(Method::GET, &host, path, &[], None)?),
        TopicCommand::Describe { host, name } => print(&send(
            Method::GET,
            &host,
            &format!("{path}/{name}"),
            &[],
            None,
        )?),
        TopicCommand::Delete { host, name } => print(&send(
            Method::DELETE,
            &host,
            &format!("{path}/{name}"),
            &[],
            None,
        )?),
        TopicCommand::Produce {
            host,
            name,
            file,
            values,
            key,
            no_sync,
        } => {
            let input: Box<dyn BufRead> = match &file {
                Some(f) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(f)
                        .with_context(|| format!("cannot open {}", f.display()))?,
                )),
                None => Box::new(std::io::stdin().lock()),
            };
            let shape = Shape { values, key };
            let sent = produce(&host, &name, input, &shape, no_sync)?;
            let noun = if sent == 1 { "record" } else { "records" };
            eprintln!("produced {sent} {noun} to topic {name:?}");
            Ok(ExitCode::SUCCESS)
        }
        TopicCommand::Consume {
            host,
            name,
            partition,
            offset,
            limit,
            follow,
        } => consume(&host, &name, partition, &offset, limit, follow),
    }
}

/// How input lines become records.
struct Shape {
    values: bool,
    key: Option<String>,
}

impl Shape {
    /// The record line the API takes for one input line.
    fn record(&self, line: &str) -> String {
        if !self.values {
            return line.to_string();
        }
        // A line that is JSON goes as it is (checked, not parsed into numbers, so 1e999
        // stays 1e999); any other line becomes a JSON string.
        let value = match serde_json::from_str::<&serde_json::value::RawValue>(line) {
            Ok(raw) => raw.get().to_string(),
            Err(_) => Value::String(line.to_string()).to_string(),
        };
        match &self.key {
            Some(k) => format!("{{\"key\":{},\"value\":{value}}}", Value::String(k.clone())),
            None => format!("{{\"value\":{value}}}"),
        }
    }
}

fn produce(
    host: &HostArg,
    name: &str,
    input: Box<dyn BufRead>,
    shape: &Shape,
    no_sync: bool,
) -> anyhow::Result<u64> {
    let path = format!("/api/v3/topics/{name}/records");
    let query: &[(&str, &str)] = if no_sync { &[("no_sync", "true")] } else { &[] };
    let mut sent = 0u64;
    let mut batch = String::new();
    let mut first_line = 1usize;
    let mut flush = |batch: &mut String, first_line: usize| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // The server's parser, so a bad line is named by its line in the input, and no
        // batch after it is sent.
        let records = parse_topic_records(batch.as_bytes()).map_err(|errors| {
            let shifted: Vec<String> = errors
                .iter()
                .map(|e| shift_line(e, first_line - 1))
                .collect();
            anyhow::anyhow!(
                "{}; {sent} records before it were produced",
                shifted.join("; ")
            )
        })?;
        if !records.is_empty() {
            send_raw(
                Method::POST,
                host,
                &path,
                query,
                Some(("application/jsonl", std::mem::take(batch).into_bytes())),
            )?;
            sent += records.len() as u64;
        } else {
            batch.clear();
        }
        Ok(())
    };
    let mut lines_in_batch = 0usize;
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", i + 1))?;
        let record = if line.trim().is_empty() {
            String::new()
        } else {
            shape.record(&line)
        };
        batch.push_str(&record);
        batch.push('\n');
        lines_in_batch += 1;
        if batch.len() >= BATCH_BYTES {
            flush(&mut batch, first_line)?;
            first_line += lines_in_batch;
            lines_in_batch = 0;
        }
    }
    flush(&mut batch, first_line)?;
    Ok(sent)
}

/// Turns "line N: ..." of a batch into the line of the input.
fn shift_line(error: &str, by: usize) -> String {
    error
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(n, msg)| {
            n.parse::<usize>()
                .ok()
                .map(|n| format!("line {}:{msg}", n + by))
        })
        .unwrap_or_else(|| error.to_string())
}

/// One answer of the records endpoint, its values kept as raw JSON text.
#[derive(serde::Deserialize)]
struct Fetched<'a> {
    #[serde(borrow)]
    records: Vec<FetchedRecord<'a>>,
    next_offset: u64,
}

#[derive(serde::Deserialize)]
struct FetchedRecord<'a> {
    offset: u64,
    #[serde(borrow, default)]
    timestamp: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    key: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    value: &'a serde_json::value::RawValue,
}

fn consume(
    host: &HostArg,
    name: &str,
    partition: Option<u32>,
    offset: &str,
    limit: Option<u64>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    // One client for the whole run: its pool keeps connections alive between requests.
    let client = super::http_client()?.build()?;
    let path = format!("/api/v3/topics/{name}");
    let info: Value =
        serde_json::from_str(&send_with(&client, Method::GET, host, &path, &[], None)?)?;
    let count = info["partitions"].as_array().map_or(0, Vec::len) as u32;
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    let reader = Reader {
        client,
        host,
        path: format!("{path}/records"),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    let left =
        |printed: u64| limit.map_or(FETCH_LIMIT, |l| l.saturating_sub(printed).min(FETCH_LIMIT));
    if follow && partitions.len() > 1 {
        // Every partition long-polls at once, each on its own kept-alive connection, so
        // a record in any of them is printed as soon as it is written.
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<anyhow::Result<Vec<String>>>(partitions.len());
        std::thread::scope(|scope| -> anyhow::Result<ExitCode> {
            for &p in &partitions {
                let (tx, reader) = (tx.clone(), &reader);
                let mut next = offset.to_string();
                scope.spawn(move || {
                    loop {
                        let got = reader.fetch(p, &next, FETCH_LIMIT, LONG_POLL_MS);
                        let stop = got.is_err();
                        let lines = got.map(|(lines, n)| {
                            next = n.to_string();
                            lines
                        });
                        // The receiver is gone once the limit is printed or it failed.
                        if tx.send(lines).is_err() || stop {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for lines in rx {
                for line in lines? {
                    if left(printed) == 0 {
                        break;
                    }
                    writeln!(out, "{line}")?;
                    printed += 1;
                }
                out.flush()?;
                if left(printed) == 0 {
                    // The readers end at their next answer; do not wait for it.
                    std::process::exit(0);
                }
            }
            Ok(ExitCode::SUCCESS)
        })
    } else {
        // Per partition, where to read next (the first read uses the user's --offset).
        let mut next: Vec<String> = vec![offset.to_string(); partitions.len()];
        let wait = if follow { LONG_POLL_MS } else { 0 };
        loop {
            let mut got = 0usize;
            for (i, &p) in partitions.iter().enumerate() {
                if left(printed) == 0 {
                    return Ok(ExitCode::SUCCESS);
                }
                let (lines, n) = reader.fetch(p, &next[i], left(printed), wait)?;
                for line in &lines {
                    writeln!(out, "{line}")?;
                }
                printed += lines.len() as u64;
                got += lines.len();
                next[i] = n.to_string();
            }
            out.flush()?;
            if got == 0 && !follow {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// Records asked for in one request.
const FETCH_LIMIT: u64 = 10_000;

/// How long a following reader's request waits at the server for a new record (below the
/// client's 30 s request timeout).
const LONG_POLL_MS: u64 = 10_000;

/// Reads one topic's records over one client (one pool of kept-alive connections).
struct Reader<'a> {
    client: reqwest::blocking::Client,
    host: &'a HostArg,
    path: String,
}

impl Reader<'_> {
    /// Up to `limit` records of partition `p` from `offset`, as the lines `consume`
    /// prints, and the offset to read from next; waits up to `wait_ms` for a first one.
    fn fetch(
        &self,
        p: u32,
        offset: &str,
        limit: u64,
        wait_ms: u64,
    ) -> anyhow::Result<(Vec<String>, u64)> {
        let text = send_with(
            &self.client,
            Method::GET,
            self.host,
            &self.path,
            &[
                ("partition", &p.to_string()),
                ("offset", offset),
                ("limit", &limit.to_string()),
                ("wait_ms", &wait_ms.to_string()),
            ],
            None,
        )?;
        // Values are passed through as the stored JSON text, never parsed: a value no
        // JSON library reads into numbers or trees (1e999, 10,000 nested arrays) is
        // still printed exactly as it was produced.
        let fetch: Fetched<'_> = serde_json::from_str(&text).with_context(|| {
            format!("the answer for partition {p} from offset {offset} is not the records shape")
        })?;
        let lines = fetch
            .records
            .iter()
            .map(|r| {
                format!(
                    "{{\"partition\":{p},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{}}}",
                    r.offset,
                    r.timestamp.map_or("null", |t| t.get()),
                    r.key.map_or("null", |k| k.get()),
                    r.value.get()
                )
            })
            .collect();
        Ok((lines, fetch.next_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_input_line() {
        assert_eq!(shift_line("line 3: bad", 10), "line 13: bad");
        assert_eq!(shift_line("other", 10), "other");
    }

    #[test]
    fn values_become_records() {
        let shape = Shape {
            values: true,
            key: Some("k".into()),
        };
        assert_eq!(shape.record("{\"a\":1}"), r#"{"key":"k","value":{"a":1}}"#);
        assert_eq!(
            shape.record("plain text"),
            r#"{"key":"k","value":"plain text"}"#
        );
    }
}
