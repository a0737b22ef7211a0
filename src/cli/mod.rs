//! Command line: every flag can also be set from a `TIDEMARK_*` environment variable.

mod admin;
mod config;
mod import;
mod load;
mod post;
mod query;
mod repair;
mod serve;
mod table;
mod token;
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
    /// Token the client commands send (Authorization: Bearer) to a server with --auth.
    #[arg(long, env = "TIDEMARK_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file of certificates the client commands trust for an https:// --host,
    /// besides the system's roots.
    #[arg(long, env = "TIDEMARK_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
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
    /// Topologies in YAML: validate, explain or run a file here; deploy, list, status
    /// and delete a server's.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Create, list and delete topics; produce and consume their records.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Generate TSBS-style load (writes or queries) and report throughput and latency.
    #[command(subcommand)]
    Load(load::LoadCommand),
    /// Create, list and revoke API tokens (for servers started with --auth).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Rebuild a lost or damaged catalog from the table files (the server must be stopped).
    Repair(repair::RepairArgs),
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
    let _ = CLIENT.set(ClientSettings {
        token: cli.token.clone(),
        tls_ca: cli.tls_ca.clone(),
    });
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
        Command::Token(cmd) => token::run(cmd),
        Command::Repair(args) => repair::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = unreachable_hint(&e) {
                eprintln!("{hint}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// For an error that is a server not answering at all: which address was tried and how
/// to point the command elsewhere.
fn unreachable_hint(e: &anyhow::Error) -> Option<String> {
    let e = e
        .chain()
        .find_map(|c| c.downcast_ref::<reqwest::Error>())
        .filter(|e| e.is_connect())?;
    let tried = e.url().map_or_else(
        || "the server".to_string(),
        |u| format!("{}://{}", u.scheme(), u.authority()),
    );
    Some(format!(
        "could not connect to {tried}: is `tidemark serve` running there? --host or TIDEMARK_HOST sets the server's address"
    ))
}

/// What every client command's HTTP client carries: the token and extra trusted roots.
#[derive(Debug, Default)]
struct ClientSettings {
    token: Option<String>,
    tls_ca: Option<std::path::PathBuf>,
}

static CLIENT: std::sync::OnceLock<ClientSettings> = std::sync::OnceLock::new();

/// An HTTP client builder for talking to a server: the token (`--token`) as a default
/// `Authorization` header (marked sensitive, so it is never printed) and the extra roots
/// of `--tls-ca`.
///
/// # Errors
/// A token that cannot be a header, or a CA file that cannot be read.
pub fn http_client() -> anyhow::Result<reqwest::blocking::ClientBuilder> {
    tidemark_engine::install_tls_provider();
    let mut builder = reqwest::blocking::Client::builder();
    let Some(settings) = CLIENT.get() else {
        return Ok(builder);
    };
    if let Some(token) = &settings.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("--token holds characters a header cannot carry"))?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    if let Some(ca) = &settings.tls_ca {
        let pem = std::fs::read(ca)
            .map_err(|e| anyhow::anyhow!("cannot read --tls-ca {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("--tls-ca {} is not a PEM file: {e}", ca.display()))?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder)
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
