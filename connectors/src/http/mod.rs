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
