//! Runs every `tests/slt/*.slt` file against a fresh in-process node.
//!
//! A statement starting with `write_lp <db>` writes the line protocol that follows it (all
//! lines must be accepted); every other statement or query is SQL against the database
//! `slt` through the same read-only query path the HTTP API uses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tidemark_connectors::write::{WriteOptions, write_lp};
use tidemark_engine::{Node, NodeConfig};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

struct TidemarkDb {
    node: Arc<Node>,
    _dir: tempfile::TempDir,
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

#[async_trait::async_trait]
impl AsyncDB for TidemarkDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if let Some(rest) = sql.trim_start().strip_prefix("write_lp ") {
            let (db, lines) = rest.split_once('\n').unwrap_or((rest, ""));
            let outcome = write_lp(
                &self.node,
                db.trim(),
                lines.as_bytes(),
                &WriteOptions::default(),
            )
            .await
            .map_err(|e| SltError(format!("{e}: {e:?}")))?;
            if !outcome.errors.is_empty() {
                return Err(SltError(format!("{:?}", outcome.errors)));
            }
            return Ok(DBOutput::StatementComplete(outcome.rows as u64));
        }
        if sql.trim() == "persist" {
            self.node
                .persist_all()
                .await
                .map_err(|e| SltError(e.to_string()))?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let out = self
            .node
            .query("slt", sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let types = out
            .schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &out.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SltError(e.to_string()))?;
            for r in 0..batch.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tidemark"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let mut runner = sqllogictest::Runner::new(|| async {
            let tmp = tempfile::tempdir().map_err(|e| SltError(e.to_string()))?;
            let mut config = NodeConfig::new(tmp.path());
            config.partitions = 3;
            let node = Node::open(config).map_err(|e| SltError(e.to_string()))?;
            Ok(TidemarkDb {
                node: Arc::new(node),
                _dir: tmp,
            })
        });
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
