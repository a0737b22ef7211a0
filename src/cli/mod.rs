//! Command line: every flag can also be set from a `TIDEMARK_*` environment variable.

mod admin;
mod config;
mod import;
mod load;
mod post;
mod query;
mod serve;
mod topic;
mod topology;
mod write;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Stream and time-series processing engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: HTTP write and query API over durable storage.
    Serve(serve::ServeArgs),
    /// Write line protocol from a file or standard input to a server.
    Write(write::WriteArgs),
    /// Run a SQL query on a server and print the result.
    Query(query::QueryArgs),
    /// Create, configure, list and drop databases.
    #[command(subcommand)]
    Database(admin::DatabaseCommand),
    /// Configure and drop tables.
    #[command(subcommand)]
    Table(admin::TableCommand),
    /// Delete rows by time range and tag equalities.
    Delete(admin::DeleteArgs),
    /// Import line protocol, CSV and Parquet files (gzip too) into a database.
    Import(import::ImportArgs),
    /// Validate and explain dataflow topologies defined in YAML.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Create, list and delete topics; produce and consume their records.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Generate TSBS-style load (writes or queries) and report throughput and latency.
    #[command(subcommand)]
    Load(load::LoadCommand),
}

impl Cli {
    /// The config file `serve` was given, if any.
    fn config_file(&self) -> Option<std::path::PathBuf> {
        match &self.command {
            Command::Serve(args) => args.config.clone(),
            _ => None,
        }
    }
}

pub fn run() -> std::process::ExitCode {
    let cli = match config::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Write(args) => write::run(args),
        Command::Query(args) => query::run(args),
        Command::Database(cmd) => admin::database(cmd),
        Command::Table(cmd) => admin::table(cmd),
        Command::Delete(args) => admin::delete(args),
        Command::Import(args) => import::run(args),
        Command::Load(cmd) => load::run(cmd),
        Command::Topology(cmd) => topology::run(cmd),
        Command::Topic(cmd) => topic::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Common settings of the client commands.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the server.
    #[arg(long, env = "TIDEMARK_HOST", default_value = "http://127.0.0.1:8181")]
    pub host: String,
    /// Database to use.
    #[arg(long, env = "TIDEMARK_DATABASE")]
    pub db: String,
}

/// Turns an HTTP response into the body text or an error carrying the server's message.
pub fn check(resp: reqwest::blocking::Response) -> anyhow::Result<String> {
    let status = resp.status();
    let text = resp.text()?;
    if status.is_success() {
        return Ok(text);
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or(text);
    anyhow::bail!("server answered {status}: {message}")
}
