//! The HTTP API (axum): line protocol writes in the v1, v2 and v3 shapes, SQL queries,
//! database and table administration, deletes, topologies, topics, ping, health and
//! Prometheus metrics.
//!
//! A request body is read here, bounded by `max_request_bytes` both before and after gzip
//! decoding (413 past it), then handed to `crate::write::write_lp` or the query engine.
//! Errors become responses in `error` only.

mod admin;
pub mod auth;
mod error;
mod query;
mod topic;
mod topology;
mod write;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tidemark_engine::Node;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use admin::parse_duration;
pub use error::{ApiError, Dialect};
pub use topic::parse_records as parse_topic_records;

use crate::line_protocol::LineLimits;

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body, compressed or not.
    pub max_request_bytes: usize,
    pub line_limits: LineLimits,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an idle keep-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// Time a client has to send a whole request body (408 past it).
    pub body_timeout: Duration,
    /// Largest result of a query in a format that cannot stream (pretty, parquet), as
    /// Arrow memory; json, jsonl and csv stream and are bounded by the query time limit.
    pub max_result_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 10 * 1024 * 1024,
            line_limits: LineLimits::default(),
            max_connections: 1024,
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_result_bytes: 256 * 1024 * 1024,
        }
    }
}

/// axum's `Query`, whose refusal is a JSON 400 like every other error (axum's own is
/// plain text).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e| {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::BadRequest(format!("invalid query string: {detail}"))
            })
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub node: Arc<Node>,
    pub config: HttpConfig,
    /// The deployed topologies (none: this server runs none).
    pub topologies: Option<Arc<tidemark_engine::topology::manager::Topologies>>,
    /// `--auth`: the token store every request is checked against (none: open).
    pub auth: Option<auth::Auth>,
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let authenticate = axum::middleware::from_fn_with_state(Arc::clone(&state), auth::authenticate);
    Router::new()
        .route("/api/v3/write_lp", post(write::write_v3))
        .route("/api/v2/write", post(write::write_v2))
        .route("/write", post(write::write_v1))
        .route(
            "/api/v3/query_sql",
            get(query::query_get).post(query::query_post),
        )
        .route(
            "/api/v3/configure/database",
            post(admin::create_database)
                .get(admin::list_databases)
                .delete(admin::drop_database),
        )
        .route(
            "/api/v3/configure/table",
            post(admin::configure_table).delete(admin::drop_table),
        )
        .route(
            "/api/v3/configure/token",
            post(auth::create).get(auth::list).delete(auth::revoke),
        )
        .route("/api/v2/delete", post(admin::delete_v2))
        .route(
            "/api/v3/topologies",
            post(topology::deploy).get(topology::list),
        )
        .route(
            "/api/v3/topologies/{name}",
            get(topology::status).delete(topology::remove),
        )
        .route("/api/v3/topics", post(topic::create).get(topic::list))
        .route(
            "/api/v3/topics/{name}",
            get(topic::describe).delete(topic::delete),
        )
        .route(
            "/api/v3/topics/{name}/records",
            post(topic::produce).get(topic::consume),
        )
        .route("/ping", get(ping).head(ping))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        // Bodies are read and bounded by `read_body`, which also bounds what gzip expands to.
        .layer(DefaultBodyLimit::disable())
        .layer(authenticate)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            request_span,
        ))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
/// finish (idle connections are closed at once).
///
/// Each connection is served by hyper's HTTP/1 server with a header read timeout, so a
/// client that connects and sends nothing, or trickles its headers, or idles on a
/// keep-alive connection, is disconnected; `read_body` bounds the body the same way. Past
/// `max_connections` open connections, a new one is answered 503 with `Retry-After` and
/// closed, rather than left queued where the client cannot tell why it waits.
///
/// # Errors
/// None today: accept errors (like running out of file descriptors) are logged and
/// retried; the signature keeps room for listener setup errors.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = state.config.clone();
    let metrics_node = Arc::clone(&state.node);
    let service = TowerToHyperService::new(router(state));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let mut refuse = hyper::server::conn::http1::Builder::new();
    refuse
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .keep_alive(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to be freed.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        metrics_node.metrics().http_connections_accepted.inc();
        let _ = stream.set_nodelay(true);
        let permit = Arc::clone(&permits).try_acquire_owned().ok();
        let node = Arc::clone(&metrics_node);
        let (http, refuse, service) = (http.clone(), refuse.clone(), service.clone());
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let handshake_timeout = config.header_timeout;
        let max = config.max_connections;
        // Everything per connection, the TLS handshake included, runs in the
        // connection's own task: a slow client never holds up the accept loop.
        tokio::spawn(async move {
            let io: Box<dyn Io> = match acceptor {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let io = TokioIo::new(io);
            let Some(permit) = permit else {
                node.metrics().http_connections_refused.inc();
                let conn = refuse.serve_connection(
                    io,
                    hyper::service::service_fn(move |_req| async move {
                        Ok::<_, std::convert::Infallible>(too_many_connections(max))
                    }),
                );
                let _ = conn.await;
                return;
            };
            let conn = watcher.watch(http.serve_connection(io, service));
            node.metrics().http_connections.inc();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            node.metrics().http_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    // Long-polling topic readers answer now with what they have, rather than holding the
    // shutdown for up to their wait.
    metrics_node.end_topic_waits();
    graceful.shutdown().await;
    Ok(())
}

/// The answer to a connection past `--max-connections`.
fn too_many_connections(max: usize) -> hyper::Response<Body> {
    let body = serde_json::json!({
        "error": format!("the server has its maximum of {max} connections open; retry later"),
    });
    let mut resp = hyper::Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = resp.headers_mut();
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from(1));
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn ping() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("X-Influxdb-Version", "1.8.10"),
            ("X-Influxdb-Build", "OSS"),
            ("X-Tidemark-Version", env!("CARGO_PKG_VERSION")),
        ],
    )
        .into_response()
}

/// Per-process prefix of generated request ids, so that ids of two runs differ.
static REQUEST_ID_PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
});
static REQUEST_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The client's `X-Request-Id` when it is a short printable token, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || {
                let n = REQUEST_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{:08x}{n:08x}", *REQUEST_ID_PREFIX)
            },
            str::to_string,
        )
}

/// Runs each request inside a `request` span carrying its id, method and path, so every
/// log line the request causes names it; logs how it ended and echoes the id back in
/// `X-Request-Id`.
async fn request_span(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let id = request_id(req.headers());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let started = std::time::Instant::now();
    // The route's template (bounded), not the path the client sent.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().clone();
    async move {
        let mut resp = next.run(req).await;
        let status = resp.status().as_u16();
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_secs_f64() * 1e3;
        state
            .node
            .metrics()
            .http_request(&route, method.as_str(), status, elapsed);
        let reason = resp
            .extensions()
            .get::<error::Refusal>()
            .map_or("", |r| r.0.as_str());
        // Successful requests log at debug: under load they are thousands a second.
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, reason, "request failed");
        } else if status >= 400 {
            tracing::info!(status, elapsed_ms, reason, "request refused");
        } else {
            tracing::debug!(status, elapsed_ms, "request finished");
        }
        if let Ok(v) = header::HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        resp
    }
    .instrument(span)
    .await
}

/// Prometheus scrape endpoint (OpenMetrics text).
async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics_text(&state),
    )
        .into_response()
}

/// The node's metrics with the topologies' before the closing `# EOF`.
fn metrics_text(state: &AppState) -> String {
    let mut text = state.node.metrics_text();
    if let Some(t) = &state.topologies {
        let at = text.rfind("# EOF").unwrap_or(text.len());
        text.insert_str(at, &t.metrics_text());
    }
    text
}

/// The endpoints, for answers that point a client at the right one.
const ENDPOINTS: &[&str] = &[
    "POST /api/v3/write_lp",
    "POST /api/v2/write",
    "POST /write",
    "GET|POST /api/v3/query_sql",
    "GET|POST|DELETE /api/v3/configure/database",
    "POST|DELETE /api/v3/configure/table",
    "GET|POST|DELETE /api/v3/configure/token",
    "POST /api/v2/delete",
    "GET|POST /api/v3/topologies",
    "GET|POST /api/v3/topics",
    "GET /health",
    "GET /ping",
    "GET /metrics",
];

/// Any other route: a JSON answer that says what exists (an empty 404 tells a client
/// nothing), with the alternative for what InfluxDB clients most often try.
async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let (status, hint) = match path {
        "/api/v2/query" => (
            StatusCode::NOT_IMPLEMENTED,
            "Flux is not supported: query with SQL on /api/v3/query_sql",
        ),
        "/query" | "/api/v3/query_influxql" => (
            StatusCode::NOT_IMPLEMENTED,
            "InfluxQL is not supported yet: query with SQL on /api/v3/query_sql",
        ),
        "/api/v2/buckets" | "/api/v2/orgs" => (
            StatusCode::NOT_IMPLEMENTED,
            "buckets are Tidemark databases: list and create them with /api/v3/configure/database",
        ),
        _ => (StatusCode::NOT_FOUND, "no such endpoint"),
    };
    (
        status,
        axum::Json(serde_json::json!({
            "error": format!("{method} {path}: {hint}"),
            "endpoints": ENDPOINTS,
        })),
    )
        .into_response()
}

async fn health(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    match state.node.poisoned() {
        None => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "name": "tidemark",
                "message": "ready for queries and writes",
                "status": "pass",
                "version": env!("CARGO_PKG_VERSION"),
            })),
        )
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "name": "tidemark",
                "message": format!("writes are refused: {reason}"),
                "status": "fail",
                "version": env!("CARGO_PKG_VERSION"),
            })),
        )
            .into_response(),
    }
}

/// Reads a request body, enforcing the size limit and the body timeout, and undoing gzip.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    config: &HttpConfig,
) -> Result<Bytes, ApiError> {
    let limit = config.max_request_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let read = tokio::time::timeout(config.body_timeout, axum::body::to_bytes(body, limit));
    let raw = read.await.map_err(|_| {
        ApiError::Timeout(format!(
            "the request body was not received within {} s",
            config.body_timeout.as_secs_f64()
        ))
    })?;
    let raw = raw.map_err(|e| {
        // axum reports an exceeded limit as a length-limit error in the source chain.
        let text = format!("{e:?}");
        if text.contains("LengthLimit") {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(raw),
        Some("gzip" | "x-gzip") => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
            decoder
                .read_to_end(&mut out)
                .map_err(|e| ApiError::BadRequest(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(ApiError::UnsupportedEncoding(other.to_string())),
    }
}
