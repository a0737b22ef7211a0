//! Sinks of a running topology: `table`, `file`, `stdout` and `blackhole`.
//!
//! At a checkpoint barrier a sink makes what it wrote durable and reports where it is:
//! a file sink fsyncs and saves its length, and a restored one cuts the file back to that
//! length before appending, so rows written after the checkpoint are not written twice.
//! A table sink writes through the node's normal write path with durable
//! acknowledgement; rows that the restart sends again land on the same series and time
//! and replace themselves, so the table ends up the same.

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
    Table {
        node: std::sync::Arc<Node>,
        database: String,
        table: String,
        /// Event time of the input, used for `time` when it has no `time` column.
        event_time: Option<String>,
    },
}

impl Sink {
    pub(crate) async fn open(
        node: &NodeSpec,
        event_time: Option<String>,
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
            Kind::TableSink { database, table } => Sink::Table {
                node: ctl
                    .env
                    .node
                    .clone()
                    .ok_or("a table sink runs inside the server")?,
                database: database.clone(),
                table: table.clone(),
                event_time,
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
            Sink::Table {
                node,
                database,
                table,
                event_time,
            } => {
                let written = node
                    .write_rows(database, table, b, event_time.as_deref())
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

pub(crate) fn write_jsonl(
    out: &mut impl std::io::Write,
    batch: &RecordBatch,
) -> Result<(), String> {
    let mut w = arrow::json::LineDelimitedWriter::new(out);
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}
