//! The HTTP API (axum): line protocol writes in the v1, v2 and v3 shapes, SQL queries,
//! database and table administration, deletes, ping, health and Prometheus metrics.
//!
//! A request body is read here, bounded by `max_request_bytes` both before and after gzip
//! decoding (413 past it), then handed to `crate::write::write_lp` or the query engine.
//! Errors become responses in `error` only.

mod admin;
mod error;
mod query;
mod write;

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tidemark_engine::Node;
use tokio::net::TcpListener;

pub use admin::parse_duration;
pub use error::{ApiError, Dialect};

use crate::line_protocol::LineLimits;

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body, compressed or not.
    pub max_request_bytes: usize,
    pub line_limits: LineLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 10 * 1024 * 1024,
            line_limits: LineLimits::default(),
        }
    }
}

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub node: Arc<Node>,
    pub config: HttpConfig,
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
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
        .route("/api/v2/delete", post(admin::delete_v2))
        .route("/ping", get(ping).head(ping))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        // Bodies are read and bounded by `read_body`, which also bounds what gzip expands to.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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
async fn request_span(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let id = request_id(req.headers());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let started = std::time::Instant::now();
    async move {
        let mut resp = next.run(req).await;
        let status = resp.status().as_u16();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        // Successful requests log at debug: under load they are thousands a second.
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else if status >= 400 {
            tracing::info!(status, elapsed_ms, "request refused");
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
        state.node.metrics_text(),
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

/// Reads a request body, enforcing the size limit and undoing gzip.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
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
