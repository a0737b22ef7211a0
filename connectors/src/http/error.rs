//! Every HTTP error response is made here: one mapping from errors to status codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tidemark_engine::Error as NodeError;
use tidemark_query::Error as QueryError;
use tidemark_storage::Error as StorageError;

use crate::Error as ConnectorError;
use crate::line_protocol::LineError;

/// Which API shape an error is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V1,
    V2,
    V3,
}

/// An error answered over HTTP.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge(usize),
    UnsupportedEncoding(String),
    /// Line errors of a write, `partial` when the good lines were written.
    Lines {
        dialect: Dialect,
        partial: bool,
        errors: Vec<LineError>,
    },
    /// The node cannot take this now; the client should retry after the given seconds.
    Unavailable {
        message: String,
        retry_after: u32,
    },
    Timeout(String),
    /// The token may not do this (403).
    Forbidden(String),
    Internal(String),
    /// A topology with problems, each with its place in the YAML.
    Topology(Vec<tidemark_engine::topology::Problem>),
}

impl ApiError {
    pub fn from_node(e: NodeError) -> Self {
        match e {
            NodeError::DatabaseNotFound(db) => {
                ApiError::NotFound(format!("database {db:?} not found"))
            }
            NodeError::TooManyDatabases { .. }
            | NodeError::TooManyTopics { .. }
            | NodeError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            NodeError::TableNotFound { .. } | NodeError::TopicNotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            NodeError::DatabaseExists(_) | NodeError::TopicExists(_) => {
                ApiError::Conflict(e.to_string())
            }
            NodeError::Storage(s) => Self::from_storage(s),
            NodeError::Query(q) => Self::from_query(q),
        }
    }

    fn from_storage(e: StorageError) -> Self {
        match e {
            StorageError::InvalidDatabaseName { .. } | StorageError::SchemaConflict { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            StorageError::BufferFull { .. } => ApiError::Unavailable {
                message: e.to_string(),
                retry_after: 1,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }

    pub fn from_query(e: QueryError) -> Self {
        match e {
            QueryError::DatabaseNotFound(db) => {
                ApiError::NotFound(format!("database {db:?} not found"))
            }
            QueryError::Sql(_)
            | QueryError::TooComplex(_)
            | QueryError::NotAllowed(_)
            | QueryError::UnknownFormat(_)
            | QueryError::MemoryLimit(_) => ApiError::BadRequest(e.to_string()),
            QueryError::Timeout(_) => ApiError::Timeout(e.to_string()),
            QueryError::TooManyQueries(_) => ApiError::Unavailable {
                message: e.to_string(),
                retry_after: 1,
            },
            QueryError::Storage(s) => Self::from_storage(s),
            other => ApiError::Internal(other.to_string()),
        }
    }

    /// A short fixed name of the error's kind, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::UnsupportedEncoding(_) | ApiError::Topology(_) => {
                "bad_request"
            }
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "too_large",
            ApiError::Lines { .. } => "bad_lines",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Timeout(_) => "timeout",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn from_write(e: ConnectorError, dialect: Dialect) -> Self {
        match e {
            ConnectorError::Rejected(errors) => ApiError::Lines {
                dialect,
                partial: false,
                errors,
            },
            ConnectorError::Node(n) => Self::from_node(n),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let reason = body
        .get("error")
        .or_else(|| body.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| {
            // A log line, not the answer: the start of a long message is enough.
            let end = (0..=m.len().min(300))
                .rev()
                .find(|&i| m.is_char_boundary(i))
                .unwrap_or(0);
            Refusal(m[..end].to_string())
        });
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(r) = reason {
        resp.extensions_mut().insert(r);
    }
    resp
}

/// Why a request was refused, carried on the response for the request's log line.
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

/// Most line errors a v3 write answer lists; the rest are counted.
pub const MAX_LISTED_LINE_ERRORS: usize = 100;

/// Summary of line errors for the v1/v2 shapes, which carry one message.
fn summarize(errors: &[LineError]) -> String {
    let shown: Vec<String> = errors.iter().take(5).map(ToString::to_string).collect();
    let more = errors.len().saturating_sub(shown.len());
    let mut s = format!(
        "{} bad line(s), nothing written: {}",
        errors.len(),
        shown.join("; ")
    );
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(m) => {
                json_response(StatusCode::BAD_REQUEST, json!({ "error": m }))
            }
            ApiError::Topology(problems) => json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": format!("the topology has {} problem(s)", problems.len()),
                    "problems": problems.iter().map(|p| json!({
                        "line": p.loc.line,
                        "column": p.loc.column,
                        "path": p.path,
                        "message": p.message,
                    })).collect::<Vec<_>>(),
                }),
            ),
            ApiError::NotFound(m) => json_response(StatusCode::NOT_FOUND, json!({ "error": m })),
            ApiError::Conflict(m) => json_response(StatusCode::CONFLICT, json!({ "error": m })),
            ApiError::PayloadTooLarge(limit) => json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "error": format!("request body exceeds the limit of {limit} bytes") }),
            ),
            ApiError::UnsupportedEncoding(e) => json_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({ "error": format!("unsupported Content-Encoding {e:?}: send identity or gzip") }),
            ),
            ApiError::Lines {
                dialect: Dialect::V3,
                partial,
                errors,
            } => {
                // A body of a million bad lines must not answer with a million errors.
                let shown = &errors[..errors.len().min(MAX_LISTED_LINE_ERRORS)];
                let omitted = errors.len() - shown.len();
                let what = if partial {
                    "partial write of line protocol occurred"
                } else {
                    "parsing failed for write_lp endpoint"
                };
                let mut body = json!({
                    "error": if omitted > 0 {
                        format!("{what}: {} bad lines, the first {} listed", errors.len(), shown.len())
                    } else {
                        what.to_string()
                    },
                    "data": shown,
                });
                if omitted > 0 {
                    body["omitted_errors"] = json!(omitted);
                }
                json_response(StatusCode::BAD_REQUEST, body)
            }
            ApiError::Lines {
                dialect: Dialect::V2,
                errors,
                ..
            } => json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "code": "invalid",
                    "message": summarize(&errors),
                    "line": errors.first().map(|e| e.line_number),
                }),
            ),
            ApiError::Lines {
                dialect: Dialect::V1,
                errors,
                ..
            } => json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": summarize(&errors) }),
            ),
            ApiError::Unavailable {
                message,
                retry_after,
            } => {
                let mut r =
                    json_response(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": message }));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                r
            }
            ApiError::Timeout(m) => {
                json_response(StatusCode::REQUEST_TIMEOUT, json!({ "error": m }))
            }
            ApiError::Forbidden(m) => json_response(StatusCode::FORBIDDEN, json!({ "error": m })),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error answering a request");
                json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": m }))
            }
        }
    }
}
