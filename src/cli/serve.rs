//! `tidemark serve`: open the data directory (replaying its logs), then serve HTTP until
//! SIGINT or SIGTERM; on the signal, finish in-flight requests and sync the log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidemark_connectors::http::auth::Auth;
use tidemark_connectors::http::{AppState, HttpConfig, serve};
use tidemark_connectors::line_protocol::LineLimits;
use tidemark_engine::topology::manager::Topologies;
use tidemark_engine::topology::policy::default_max_parallelism;
use tidemark_engine::topology::{Policy, Sandbox};
use tidemark_engine::{Durability, MaintenanceConfig, Node, NodeConfig};
use tidemark_query::QueryConfig;
use tidemark_storage::log::LogWriterConfig;
use tidemark_storage::tokens::TokenStore;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    /// Acknowledge a write once it is fsynced.
    Sync,
    /// Acknowledge once written to the OS; fsync within --async-flush-ms.
    Async,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML file of settings: keys are these flags' names (like `http-bind = "0.0.0.0:8181"`);
    /// the command line and TIDEMARK_* variables override it.
    #[arg(long, env = "TIDEMARK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding all data.
    #[arg(long, env = "TIDEMARK_DATA_DIR", default_value = "./tidemark-data")]
    data_dir: PathBuf,
    /// Address of the HTTP API (port 0 picks a free port).
    #[arg(long, env = "TIDEMARK_HTTP_BIND", default_value = "127.0.0.1:8181")]
    http_bind: String,
    /// Log partitions of each new database (fixed at creation).
    #[arg(long, env = "TIDEMARK_PARTITIONS", default_value_t = 4)]
    partitions: u32,
    /// When writes are acknowledged.
    #[arg(long, env = "TIDEMARK_DURABILITY", value_enum, default_value = "sync")]
    durability: DurabilityArg,
    /// In async durability, the longest time written data waits for fsync.
    #[arg(long, env = "TIDEMARK_ASYNC_FLUSH_MS", default_value_t = 1000)]
    async_flush_ms: u64,
    /// Size at which a log segment is rolled.
    #[arg(long, env = "TIDEMARK_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    segment_bytes: u64,
    /// Memory the write buffer may use before writes get 503 + Retry-After, in MiB.
    #[arg(long, env = "TIDEMARK_BUFFER_LIMIT_MB", default_value_t = 4096)]
    buffer_limit_mb: usize,
    /// Largest HTTP request body (before and after gzip), in bytes.
    #[arg(long, env = "TIDEMARK_MAX_REQUEST_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_request_bytes: usize,
    /// HTTP connections served at once; more are answered 503 and closed.
    #[arg(long, env = "TIDEMARK_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, env = "TIDEMARK_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 60)]
    http_header_timeout_secs: u64,
    /// Seconds a client has to send a whole request body (408 past it).
    #[arg(long, env = "TIDEMARK_HTTP_BODY_TIMEOUT_SECS", default_value_t = 60)]
    http_body_timeout_secs: u64,
    /// Longest line protocol line, in bytes.
    #[arg(long, env = "TIDEMARK_MAX_LINE_BYTES", default_value_t = 1024 * 1024)]
    max_line_bytes: usize,
    /// Most fields in one line.
    #[arg(long, env = "TIDEMARK_MAX_FIELDS_PER_LINE", default_value_t = 1000)]
    max_fields_per_line: usize,
    /// Most columns in one table (tags, fields and time).
    #[arg(long, env = "TIDEMARK_MAX_COLUMNS_PER_TABLE", default_value_t = 500)]
    max_columns_per_table: usize,
    /// Most tables in one database.
    #[arg(long, env = "TIDEMARK_MAX_TABLES_PER_DATABASE", default_value_t = 1000)]
    max_tables_per_database: usize,
    /// Most databases on the node.
    #[arg(long, env = "TIDEMARK_MAX_DATABASES", default_value_t = 100)]
    max_databases: usize,
    /// Most topics on the node.
    #[arg(long, env = "TIDEMARK_MAX_TOPICS", default_value_t = 100)]
    max_topics: usize,
    /// Most partitions of one topic.
    #[arg(long, env = "TIDEMARK_MAX_TOPIC_PARTITIONS", default_value_t = 256)]
    max_topic_partitions: u32,
    /// Time limit of one query, in seconds.
    #[arg(long, env = "TIDEMARK_QUERY_TIMEOUT_SECS", default_value_t = 300)]
    query_timeout_secs: u64,
    /// Memory all running queries may use together, in MiB.
    #[arg(long, env = "TIDEMARK_QUERY_MEMORY_MB", default_value_t = 2048)]
    query_memory_mb: usize,
    /// Queries allowed to run at once (more get 503).
    #[arg(long, env = "TIDEMARK_MAX_CONCURRENT_QUERIES", default_value_t = 16)]
    max_concurrent_queries: usize,
    /// Answer queries from the other files when a table file is damaged (missing,
    /// truncated, unreadable) instead of failing them; the file is marked in system.files.
    #[arg(long, env = "TIDEMARK_SKIP_DAMAGED_FILES")]
    skip_damaged_files: bool,
    /// Largest result of a query in a format that cannot stream (pretty, parquet), in
    /// bytes of Arrow memory; json, jsonl and csv results stream.
    #[arg(long, env = "TIDEMARK_MAX_RESULT_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_result_bytes: usize,
    /// Length of the time windows Parquet files are cut by, in seconds.
    #[arg(long, env = "TIDEMARK_WINDOW_SECS", default_value_t = 600)]
    pub window_secs: u64,
    /// Persist the buffer to Parquet once it holds this many MiB.
    #[arg(long, env = "TIDEMARK_SNAPSHOT_MB", default_value_t = 512)]
    pub snapshot_mb: usize,
    /// Persist the buffer once its oldest write is this many seconds old.
    #[arg(long, env = "TIDEMARK_SNAPSHOT_AGE_SECS", default_value_t = 300)]
    pub snapshot_age_secs: u64,
    /// How often compaction and retention run, in seconds.
    #[arg(long, env = "TIDEMARK_COMPACTION_INTERVAL_SECS", default_value_t = 60)]
    pub compaction_interval_secs: u64,
    /// Compaction starts a new output file past this many MiB.
    #[arg(long, env = "TIDEMARK_COMPACTION_TARGET_MB", default_value_t = 256)]
    pub compaction_target_mb: usize,
    /// Rows a compaction merges per batch (its memory is about this times the inputs).
    #[arg(long, env = "TIDEMARK_COMPACTION_BATCH_ROWS", default_value_t = 8192)]
    pub compaction_batch_rows: usize,
    /// Write the node's own metrics into the `_internal` database every this many
    /// seconds (0: off).
    #[arg(long, env = "TIDEMARK_INTERNAL_METRICS_SECS", default_value_t = 0)]
    internal_metrics_secs: u64,
    /// Seconds between checkpoints of each deployed topology (what a crash can make a
    /// topology read again).
    #[arg(long, env = "TIDEMARK_TOPOLOGY_CHECKPOINT_SECS", default_value_t = 10)]
    topology_checkpoint_secs: u64,
    /// Require a token on every endpoint but /health and /ping (docs/security.md).
    #[arg(long, env = "TIDEMARK_AUTH")]
    auth: bool,
    /// PEM certificate chain: with --tls-key, the HTTP API speaks only HTTPS.
    #[arg(long, env = "TIDEMARK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TIDEMARK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Directory the `file` paths of deployed topologies resolve in (they cannot leave it);
    /// default `<data-dir>/files`.
    #[arg(long, env = "TIDEMARK_TOPOLOGY_FILES_DIR")]
    topology_files_dir: Option<PathBuf>,
    /// Hosts (`name`, `name:port`, an address) and address ranges (`10.0.0.0/8`) that
    /// `http` sinks of deployed topologies may post to besides public addresses,
    /// comma-separated; `*` allows any. Empty by default: no loopback, private or
    /// link-local address.
    #[arg(long, env = "TIDEMARK_HTTP_SINK_ALLOW", value_delimiter = ',')]
    http_sink_allow: Vec<String>,
    /// Highest `parallelism` of a topology node (default: 4 per core).
    #[arg(long, env = "TIDEMARK_MAX_TOPOLOGY_PARALLELISM")]
    max_topology_parallelism: Option<usize>,
    /// Log output format.
    #[arg(long, env = "TIDEMARK_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `tidemark_storage=debug,info`.
    #[arg(long, env = "TIDEMARK_LOG", default_value = "info")]
    log_filter: String,
}

fn init_logging(args: &ServeArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a file or a journal are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // A topology's SQL is planned and evaluated on these threads (see query::complexity).
        .thread_stack_size(tidemark_query::complexity::QUERY_STACK_BYTES)
        .enable_all()
        .thread_name("tidemark")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve_main(args))
}

async fn serve_main(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = NodeConfig::new(&args.data_dir);
    config.partitions = args.partitions.max(1);
    config.durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Async => Durability::Async,
    };
    config.buffer_limit_bytes = args.buffer_limit_mb.saturating_mul(1024 * 1024);
    config.max_databases = args.max_databases;
    config.topics.max_topics = args.max_topics;
    config.topics.max_partitions = args.max_topic_partitions;
    config.max_columns_per_table = args.max_columns_per_table;
    config.max_tables_per_database = args.max_tables_per_database;
    config.log = LogWriterConfig {
        segment_bytes: args.segment_bytes,
        async_flush_interval: Duration::from_millis(args.async_flush_ms.max(1)),
        ..LogWriterConfig::default()
    };
    config.maintenance = MaintenanceConfig {
        window: Duration::from_secs(args.window_secs.max(1)),
        snapshot_bytes: args.snapshot_mb.saturating_mul(1024 * 1024),
        snapshot_age: Duration::from_secs(args.snapshot_age_secs.max(1)),
        compaction_interval: Duration::from_secs(args.compaction_interval_secs.max(1)),
        compaction_target_bytes: args.compaction_target_mb.saturating_mul(1024 * 1024),
        compaction_batch_rows: args.compaction_batch_rows.max(1),
        // Replaced files outlive any query that could be reading them.
        file_gc_delay: Duration::from_secs(args.query_timeout_secs.max(1) + 1),
        ..MaintenanceConfig::default()
    };
    config.query = QueryConfig {
        timeout: Duration::from_secs(args.query_timeout_secs.max(1)),
        memory_limit: args.query_memory_mb.saturating_mul(1024 * 1024),
        max_concurrent: args.max_concurrent_queries.max(1),
        skip_damaged_files: args.skip_damaged_files,
        ..QueryConfig::default()
    };

    let data_dir = args.data_dir.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(config))
        .await
        .context("opening the node")?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let node = Arc::new(node);
    let files_dir = args
        .topology_files_dir
        .clone()
        .unwrap_or_else(|| node.config().data_dir.join("files"));
    let policy = Policy {
        max_parallelism: args
            .max_topology_parallelism
            .unwrap_or_else(default_max_parallelism)
            .max(1),
        sandbox: Some(
            Sandbox::new(&files_dir, &node.config().data_dir, &args.http_sink_allow)
                .map_err(anyhow::Error::msg)
                .context("setting up the topology sandbox")?,
        ),
    };
    // Before maintenance starts: restored topologies hold the log they resume from.
    let topologies = Arc::new(
        Topologies::open(
            Arc::clone(&node),
            Duration::from_secs(args.topology_checkpoint_secs.max(1)),
            policy,
        )
        .await
        .context("starting the deployed topologies")?,
    );
    let (stop_background, stop_rx) = tokio::sync::watch::channel(false);
    let self_metrics = (args.internal_metrics_secs > 0).then(|| {
        tokio::spawn(tidemark_connectors::internal::run_self_metrics(
            Arc::clone(&node),
            Duration::from_secs(args.internal_metrics_secs),
            stop_rx.clone(),
        ))
    });
    let background = tokio::spawn(Arc::clone(&node).run_background(stop_rx));

    let auth = if args.auth {
        let store = TokenStore::open(&node.config().data_dir).context("opening the token store")?;
        if !store.has_admin() {
            tracing::warn!(
                "--auth is on but there is no admin token yet: make one with `tidemark token create --admin --data-dir {}`",
                args.data_dir.display()
            );
        }
        Some(Auth::new(store))
    } else {
        None
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(&args.http_bind)
        .await
        .with_context(|| format!("binding the HTTP API to {}", args.http_bind))?;
    let addr = listener.local_addr()?;
    if !args.auth && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the HTTP API is reachable beyond this machine and anyone can read, write and administer it: start with --auth (docs/security.md)"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to find the port when binding to port 0.
    println!("tidemark listening on {scheme}://{addr}");
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "serving");

    let state = Arc::new(AppState {
        node: Arc::clone(&node),
        config: HttpConfig {
            max_request_bytes: args.max_request_bytes,
            line_limits: LineLimits {
                max_line_bytes: args.max_line_bytes,
                max_fields: args.max_fields_per_line,
            },
            max_connections: args.max_connections.max(1),
            header_timeout: Duration::from_secs(args.http_header_timeout_secs.max(1)),
            body_timeout: Duration::from_secs(args.http_body_timeout_secs.max(1)),
            max_result_bytes: args.max_result_bytes.max(1),
        },
        topologies: Some(Arc::clone(&topologies)),
        auth,
    });
    serve(state, listener, tls, shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("HTTP stopped; stopping topologies at a checkpoint");
    topologies.shutdown().await;
    tracing::info!("persisting the buffer and syncing the log");
    let _ = stop_background.send(true);
    if let Some(task) = self_metrics {
        let _ = task.await;
    }
    if let Err(e) = background.await {
        tracing::error!(error = %e, "background task failed");
    }
    node.shutdown().await;
    tracing::info!("shut down cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The HTTPS settings of `--tls-cert` and `--tls-key` (rustls with ring).
fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no PEM certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves on SIGINT or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Resolves on the first signal, and from then on exits the process at a second one.
async fn shutdown_signal() {
    signal().await;
    tracing::info!("shutdown signal received; a second one exits at once");
    // Shutdown persists the buffer, which can take a while; an operator who does not want
    // to wait sends the signal again. Exiting then is as safe as a crash: every
    // acknowledged write is in the log and is replayed at the next start.
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second shutdown signal: exiting without finishing the shutdown");
        std::process::exit(130);
    });
}
