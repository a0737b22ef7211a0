//! Line protocol into a node: the one write routine every front end calls (HTTP endpoints,
//! the CLI's in-process paths, tests and benches).

use std::sync::Arc;

use tidemark_engine::{Error as NodeError, Node};
use tidemark_storage::batch::WriteBuilder;
use tidemark_storage::catalog::DatabaseSchema;

use crate::Error;
use crate::line_protocol::{LineError, LineLimits, Precision, parse_into};

/// How a write is to be taken.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub precision: Precision,
    /// Accept the good lines when some are bad (v3); otherwise any bad line rejects all.
    pub accept_partial: bool,
    /// Wait for fsync before answering (unless the node runs in `async` durability).
    pub durable: bool,
    pub limits: LineLimits,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            precision: Precision::Nanosecond,
            accept_partial: true,
            durable: true,
            limits: LineLimits::default(),
        }
    }
}

/// What a write accepted and refused.
#[derive(Debug)]
pub struct WriteOutcome {
    pub rows: usize,
    pub errors: Vec<LineError>,
}

/// How many times a write is re-validated when a concurrent write added a conflicting column.
const SCHEMA_RACE_RETRIES: usize = 3;

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Parses `body` and writes the accepted lines to `db`, creating the database if this write
/// has anything to put in it.
///
/// # Errors
/// [`Error::Rejected`] when nothing was accepted because of bad lines, and node errors.
///
/// # Cancellation
/// Once the rows are handed to the log they are written even if this future is dropped.
pub async fn write_lp(
    node: &Node,
    db: &str,
    body: &[u8],
    options: &WriteOptions,
) -> Result<WriteOutcome, Error> {
    // Stamped once, before logging, so that replay reproduces the same times.
    let default_time = now_nanos();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let schema = match node.database(db, false) {
            Ok(s) => s,
            // Validate against an empty schema; the database is created only once a line
            // has been accepted.
            Err(NodeError::DatabaseNotFound(_)) => {
                tidemark_storage::catalog::validate_database_name(db).map_err(NodeError::from)?;
                Arc::new(DatabaseSchema::new(db, node.config().partitions.max(1)))
            }
            Err(e) => return Err(e.into()),
        };
        let mut builder = WriteBuilder::new(schema, node.config().max_columns_per_table)
            .with_max_tables(node.config().max_tables_per_database);
        let errors = parse_into(
            body,
            options.precision,
            default_time,
            options.limits,
            &mut builder,
        );
        if !errors.is_empty() && (!options.accept_partial || builder.rows() == 0) {
            return Err(Error::Rejected(errors));
        }
        let batch = builder.finish().map_err(NodeError::from)?;
        if batch.rows == 0 {
            return Ok(WriteOutcome { rows: 0, errors });
        }
        node.database(db, true)?;
        match node.write(db, batch, options.durable).await {
            Ok(summary) => {
                return Ok(WriteOutcome {
                    rows: summary.rows,
                    errors,
                });
            }
            Err(NodeError::Storage(tidemark_storage::Error::SchemaConflict { .. }))
                if attempt < SCHEMA_RACE_RETRIES =>
            {
                // Another write added a column with another type meanwhile: validate again
                // against the new schema, which turns the losing lines into line errors.
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
