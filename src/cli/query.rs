//! `tidemark query`: SQL to a server's `/api/v3/query_sql`, result to standard output.

use std::io::Write;
use std::process::ExitCode;

use super::{ClientArgs, check};

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Output format: pretty, csv, json, jsonl (parquet writes binary to standard output).
    #[arg(long, env = "TIDEMARK_FORMAT", default_value = "pretty")]
    format: String,
    /// The SQL query.
    sql: String,
}

pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let url = format!(
        "{}/api/v3/query_sql",
        args.client.host.trim_end_matches('/')
    );
    let resp = super::http_client()?
        .build()?
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&serde_json::json!({
            "db": args.client.db,
            "q": args.sql,
            "format": args.format,
        }))?)
        .send()?;
    let status = resp.status();
    if args.format == "parquet" && status.is_success() {
        let bytes = resp.bytes()?;
        std::io::stdout().write_all(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = check(resp)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}
