//! Sinks of a running topology: `table`, `file`, `http`, `stdout` and `blackhole`.
//!
//! At a checkpoint barrier a sink makes what it wrote durable and reports where it is:
//! a file sink fsyncs and saves its length, and a restored one cuts the file back to that
//! length before appending, so rows written after the checkpoint are not written twice.
//! A table sink writes through the node's normal write path with durable
//! acknowledgement; rows that the restart sends again land on the same series and time
//! and replace themselves, so the table ends up the same. An `http` sink POSTs each batch
//! as a JSON array and returns once it is accepted; after a restart, batches since the
//! checkpoint are posted again (at least once).

use std::io::{Seek as _, Write as _};

use arrow::array::RecordBatch;

use super::checkpoint::{StateReader, StateWriter};
use super::run::{Ctl, NodeStats};
use super::spec::{FileFormat, Kind, NodeSpec};
use crate::Node;

pub(crate) enum Sink {
    Blackhole,
    Stdout,
    File {
        path: String,
        format: FileFormat,
        file: std::io::BufWriter<std::fs::File>,
        header: bool,
    },
    Http {
        client: reqwest::Client,
        url: String,
        max_retries: u32,
    },
    Table {
        node: std::sync::Arc<Node>,
        database: String,
        table: String,
        /// Event time of the input, used for `time` when it has no `time` column.
        event_time: Option<String>,
        /// The input's primary key, when it is an upsert stream: its columns are the
        /// tags (see [`Node::write_rows`]).
        key: Option<Vec<String>>,
    },
}

impl Sink {
    pub(crate) async fn open(
        node: &NodeSpec,
        event_time: Option<String>,
        key: Option<Vec<String>>,
        ctl: &Ctl,
    ) -> Result<Self, String> {
        Ok(match &node.kind {
            Kind::Blackhole => Sink::Blackhole,
            Kind::Stdout => Sink::Stdout,
            Kind::FileSink { path, format } => {
                let restored_len = match &ctl.restore {
                    Some(state) => Some(StateReader::new(state).u64()?),
                    None => None,
                };
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(restored_len.is_none())
                    .open(path)
                    .map_err(|e| format!("cannot create {path}: {e}"))?;
                if let Some(len) = restored_len {
                    file.set_len(len)
                        .and_then(|()| file.seek(std::io::SeekFrom::End(0)).map(|_| ()))
                        .map_err(|e| format!("cannot cut {path} back to {len} bytes: {e}"))?;
                }
                Sink::File {
                    path: path.clone(),
                    format: *format,
                    file: std::io::BufWriter::new(file),
                    header: restored_len.is_none_or(|l| l == 0),
                }
            }
            Kind::Http {
                url,
                max_retries,
                ca_file,
                allow,
            } => {
                crate::install_tls_provider();
                let mut client = reqwest::Client::builder().timeout(HTTP_TIMEOUT);
                if let Some(allow) = allow {
                    // A server's sandbox: connect only to allowed addresses, and do not
                    // follow a redirect to anywhere else.
                    client = client
                        .dns_resolver(std::sync::Arc::new(super::policy::GuardedResolver(
                            std::sync::Arc::clone(allow),
                        )))
                        .redirect(reqwest::redirect::Policy::none());
                }
                if let Some(ca) = ca_file {
                    client = client.tls_certs_merge(trusted_roots(&ca.name)?);
                }
                Sink::Http {
                    client: client
                        .build()
                        .map_err(|e| format!("cannot make an HTTP client: {}", chain(&e)))?,
                    url: url.clone(),
                    max_retries: *max_retries,
                }
            }
            Kind::TableSink { database, table } => Sink::Table {
                node: ctl
                    .node
                    .clone()
                    .ok_or("a table sink runs inside the server")?,
                database: database.clone(),
                table: table.clone(),
                event_time,
                key,
            },
            other => return Err(format!("{} sinks cannot run yet", other.type_name())),
        })
    }

    pub(crate) async fn write(&mut self, b: &RecordBatch, stats: &NodeStats) -> Result<(), String> {
        match self {
            Sink::Blackhole => Ok(()),
            Sink::Stdout => {
                let mut text = Vec::new();
                write_jsonl(&mut text, b)?;
                std::io::stdout()
                    .lock()
                    .write_all(&text)
                    .map_err(|e| e.to_string())
            }
            Sink::File {
                path,
                format,
                file,
                header,
            } => match format {
                FileFormat::Csv => {
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(*header)
                        .build(&mut *file);
                    *header = false;
                    w.write(b).map_err(|e| format!("writing {path}: {e}"))
                }
                _ => write_jsonl(file, b),
            },
            Sink::Http {
                client,
                url,
                max_retries,
            } => post_json(client, url, *max_retries, b).await,
            Sink::Table {
                node,
                database,
                table,
                event_time,
                key,
            } => {
                let written = node
                    .write_rows(database, table, b, event_time.as_deref(), key.as_deref())
                    .await
                    .map_err(|e| format!("writing to {database}.{table}: {e}"))?;
                if let Some(e) = written.first_error {
                    stats.rejected_rows.fetch_add(
                        written.rejected as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    tracing::warn!(database = %database, table = %table, rejected = written.rejected, error = %e, "a table sink rejected rows");
                    *stats.last_error.lock() = Some(e);
                }
                Ok(())
            }
        }
    }

    /// Makes what was written durable; the state a restart resumes from.
    pub(crate) fn checkpoint(&mut self) -> Result<Vec<u8>, String> {
        match self {
            Sink::File { path, file, .. } => {
                file.flush().map_err(|e| format!("writing {path}: {e}"))?;
                let f = file.get_mut();
                f.sync_data().map_err(|e| format!("syncing {path}: {e}"))?;
                let len = f
                    .stream_position()
                    .map_err(|e| format!("writing {path}: {e}"))?;
                Ok(StateWriter::default().u64(len).finish())
            }
            // Table writes are durable when acknowledged; stdout and blackhole keep nothing.
            _ => Ok(Vec::new()),
        }
    }
}

/// Time one POST may take.
const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// First wait before a retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// POSTs the rows of `batch` as one JSON array. Connection errors, timeouts, 408, 429 and
/// 5xx are retried up to `max_retries` times with doubling waits (the topology waits
/// meanwhile: backpressure); any other answer, or running out of retries, fails the
/// node, so no batch is dropped unnoticed.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    max_retries: u32,
    batch: &RecordBatch,
) -> Result<(), String> {
    let mut body = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut body);
        w.write(batch).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    let mut wait = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let why = match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text = text.chars().take(200).collect::<String>();
                let retry = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                if !retry {
                    return Err(format!(
                        "{url} refused a batch of {} rows: {status} {text}",
                        batch.num_rows()
                    ));
                }
                format!("{status} {text}")
            }
            // reqwest's own message is only "error sending request": the cause (refused
            // connection, certificate, timeout) is further down the chain.
            Err(e) => chain(&e),
        };
        if attempt >= max_retries {
            return Err(format!(
                "posting {} rows to {url} failed after {} attempts: {why}",
                batch.num_rows(),
                attempt + 1
            ));
        }
        attempt += 1;
        tracing::warn!(url, attempt, error = %why, "retrying an http sink batch");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// An error and its causes, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// The certificates of a PEM file, trusted by an https sink besides the system's roots.
pub(crate) fn trusted_roots(path: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{path} is not a PEM certificate file: {}", chain(&e)))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

pub(crate) fn write_jsonl(
    out: &mut impl std::io::Write,
    batch: &RecordBatch,
) -> Result<(), String> {
    let mut w = arrow::json::LineDelimitedWriter::new(out);
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}
