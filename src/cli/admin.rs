//! `tidemark database|table|delete`: administration through the server's HTTP API.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::check;
use super::table::{cell, render};
use tidemark_storage::duration;

/// Where the server is.
#[derive(Debug, clap::Args)]
pub struct HostArg {
    /// Base URL of the server.
    #[arg(long, env = "TIDEMARK_HOST", default_value = "http://127.0.0.1:8181")]
    pub host: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum DatabaseCommand {
    /// Create a database, optionally with a retention period (like 30d or 12h).
    Create {
        #[command(flatten)]
        host: HostArg,
        /// The database.
        name: String,
        /// How long rows are kept: `30d`, `12h`, `1h30m`... (`none`: for ever, the default).
        #[arg(long)]
        retention: Option<String>,
    },
    /// Change a database's retention period (`none` keeps data forever).
    Update {
        #[command(flatten)]
        host: HostArg,
        /// The database.
        name: String,
        /// How long rows are kept: `30d`, `12h`, `1h30m`... or `none`.
        #[arg(long)]
        retention: String,
    },
    /// List databases with their retention.
    List {
        #[command(flatten)]
        host: HostArg,
    },
    /// Drop a database and all its data.
    Drop {
        #[command(flatten)]
        host: HostArg,
        /// The database.
        name: String,
    },
}

/// The table a `table` command acts on: positional, or `--table`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which_table").required(true).args(["name", "table_flag"])))]
pub struct TableName {
    /// The database.
    #[arg(long)]
    db: String,
    /// The table.
    name: Option<String>,
    /// The table (instead of the positional name).
    #[arg(long = "table", id = "table_flag", value_name = "TABLE")]
    table_flag: Option<String>,
}

impl TableName {
    fn table(&self) -> &str {
        self.name
            .as_deref()
            .or(self.table_flag.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum TableCommand {
    /// Set a table's own retention period (`none` falls back to the database's).
    Update {
        #[command(flatten)]
        host: HostArg,
        #[command(flatten)]
        table: TableName,
        /// How long the table's rows are kept: `7d`, `12h`... or `none`.
        #[arg(long)]
        retention: String,
    },
    /// Drop a table and its data.
    Drop {
        #[command(flatten)]
        host: HostArg,
        #[command(flatten)]
        table: TableName,
    },
}

/// Delete rows (InfluxDB v2 delete semantics).
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    host: HostArg,
    /// The database.
    #[arg(long)]
    db: String,
    /// Start of the time range, RFC 3339 (inclusive).
    #[arg(long)]
    start: String,
    /// End of the time range, RFC 3339 (inclusive).
    #[arg(long)]
    stop: String,
    /// `_measurement="cpu" AND host="a"`: equalities joined by AND.
    #[arg(long)]
    predicate: Option<String>,
}

/// Sends a JSON request (or none) and answers the response body.
pub(super) fn send(
    method: reqwest::Method,
    host: &HostArg,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> anyhow::Result<String> {
    let body = body
        .map(|b| serde_json::to_vec(&b).map(|v| ("application/json", v)))
        .transpose()?;
    send_raw(method, host, path, query, body)
}

/// Sends a request with a body of the given content type (or none).
pub(super) fn send_raw(
    method: reqwest::Method,
    host: &HostArg,
    path: &str,
    query: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<String> {
    send_with(
        &super::http_client()?.build()?,
        method,
        host,
        path,
        query,
        body,
    )
}

/// [`send_raw`] over a client the caller keeps (and so its kept-alive connections).
pub(super) fn send_with(
    client: &reqwest::blocking::Client,
    method: reqwest::Method,
    host: &HostArg,
    path: &str,
    query: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", host.host.trim_end_matches('/'));
    let mut req = client.request(method, url).query(query);
    if let Some((content_type, b)) = body {
        req = req.header("content-type", content_type).body(b);
    }
    check(req.send()?)
}

pub(super) fn print(text: &str) -> anyhow::Result<ExitCode> {
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

fn retention(v: &str) -> Value {
    if v.eq_ignore_ascii_case("none") {
        Value::Null
    } else {
        Value::String(v.to_string())
    }
}

pub fn database(cmd: DatabaseCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let path = "/api/v3/configure/database";
    let listing = matches!(cmd, DatabaseCommand::List { .. });
    let text = match cmd {
        DatabaseCommand::Create {
            host,
            name,
            retention: r,
        } => {
            let mut body = json!({ "db": name });
            if let Some(r) = r {
                body["retention_period"] = retention(&r);
            }
            send(Method::POST, &host, path, &[], Some(body))?
        }
        DatabaseCommand::Update {
            host,
            name,
            retention: r,
        } => send(
            Method::POST,
            &host,
            path,
            &[],
            Some(json!({ "db": name, "retention_period": retention(&r) })),
        )?,
        DatabaseCommand::List { host } => send(Method::GET, &host, path, &[], None)?,
        DatabaseCommand::Drop { host, name } => {
            send(Method::DELETE, &host, path, &[("db", &name)], None)?;
            println!("dropped database {name}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    // One database (create, update) or a list of them.
    let answer: Value = serde_json::from_str(&text)?;
    let list = match answer {
        Value::Array(list) => list,
        one => vec![one],
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                cell(&d["db"]),
                cell(&d["partitions"]),
                retention_cell(&d["retention_period_ns"]),
            ]
        })
        .collect();
    // Create and update answer without the partition count.
    if !listing {
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| vec![r[0].clone(), r[2].clone()])
            .collect();
        println!("{}", render(&["db", "retention"], &rows)?);
    } else {
        println!("{}", render(&["db", "partitions", "retention"], &rows)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// A retention period in nanoseconds as a table shows it: `30d`, or `none`.
fn retention_cell(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "none".to_string(), duration::format)
}

pub fn table(cmd: TableCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let path = "/api/v3/configure/table";
    match cmd {
        TableCommand::Update {
            host,
            table,
            retention: r,
        } => {
            let text = send(
                Method::POST,
                &host,
                path,
                &[],
                Some(
                    json!({ "db": table.db, "table": table.table(), "retention_period": retention(&r) }),
                ),
            )?;
            let t: Value = serde_json::from_str(&text)?;
            let row = vec![
                cell(&t["db"]),
                cell(&t["table"]),
                retention_cell(&t["retention_period_ns"]),
            ];
            println!("{}", render(&["db", "table", "retention"], &[row])?);
        }
        TableCommand::Drop { host, table } => {
            send(
                Method::DELETE,
                &host,
                path,
                &[("db", &table.db), ("table", table.table())],
                None,
            )?;
            println!("dropped table {}.{}", table.db, table.table());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "start": args.start, "stop": args.stop });
    if let Some(p) = args.predicate {
        body["predicate"] = Value::String(p);
    }
    send(
        reqwest::Method::POST,
        &args.host,
        "/api/v2/delete",
        &[("bucket", &args.db)],
        Some(body),
    )?;
    Ok(ExitCode::SUCCESS)
}
