//! `tidemark database|table|delete`: administration through the server's HTTP API.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::check;

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
        name: String,
        #[arg(long)]
        retention: Option<String>,
    },
    /// Change a database's retention period (`none` keeps data forever).
    Update {
        #[command(flatten)]
        host: HostArg,
        name: String,
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
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TableCommand {
    /// Set a table's own retention period (`none` falls back to the database's).
    Update {
        #[command(flatten)]
        host: HostArg,
        #[arg(long)]
        db: String,
        name: String,
        #[arg(long)]
        retention: String,
    },
    /// Drop a table and its data.
    Drop {
        #[command(flatten)]
        host: HostArg,
        #[arg(long)]
        db: String,
        name: String,
    },
}

/// Delete rows (InfluxDB v2 delete semantics).
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    host: HostArg,
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
    let url = format!("{}{path}", host.host.trim_end_matches('/'));
    let mut req = super::http_client()?
        .build()?
        .request(method, url)
        .query(query);
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
            send(Method::DELETE, &host, path, &[("db", &name)], None)?
        }
    };
    print(&text)
}

pub fn table(cmd: TableCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let path = "/api/v3/configure/table";
    let text = match cmd {
        TableCommand::Update {
            host,
            db,
            name,
            retention: r,
        } => send(
            Method::POST,
            &host,
            path,
            &[],
            Some(json!({ "db": db, "table": name, "retention_period": retention(&r) })),
        )?,
        TableCommand::Drop { host, db, name } => send(
            Method::DELETE,
            &host,
            path,
            &[("db", &db), ("table", &name)],
            None,
        )?,
    };
    print(&text)
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
