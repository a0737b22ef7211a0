//! Write endpoints: `/api/v3/write_lp`, `/api/v2/write` and `/write` (v1).
//!
//! v3 accepts the good lines of a batch by default (`accept_partial=true`) and reports the
//! bad ones; v1 and v2 write all lines or none, as InfluxDB 1.x and 2.x clients expect.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Access;
use super::{ApiError, ApiQuery, AppState, Dialect, read_body};
use crate::internal::INTERNAL_DATABASE;
use crate::line_protocol::Precision;
use crate::write::{WriteOptions, write_lp};
use tidemark_storage::tokens::Permission;

#[derive(Debug, Deserialize)]
pub struct V3Params {
    db: Option<String>,
    precision: Option<String>,
    accept_partial: Option<bool>,
    no_sync: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct V2Params {
    bucket: Option<String>,
    precision: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct V1Params {
    db: Option<String>,
    precision: Option<String>,
}

/// The precision of a write: v1 takes InfluxDB 1.x's names (`n u ms s m h`, minutes and
/// hours included); v2 and v3 take `ns us ms s` (and v3's long names up to `second`), as
/// InfluxDB 2 and 3 do, so `m` is never mistaken there for milliseconds.
fn precision(p: Option<&str>, dialect: Dialect) -> Result<Precision, ApiError> {
    let s = match p {
        None | Some("") => return Ok(Precision::Nanosecond),
        Some(s) => s,
    };
    let v1_only = matches!(s, "n" | "u" | "m" | "h" | "minute" | "hour");
    match Precision::parse(s) {
        Some(p) if dialect == Dialect::V1 || !v1_only => Ok(p),
        _ if dialect == Dialect::V1 => Err(ApiError::BadRequest(format!(
            "invalid precision {s:?}: expected n, u, ms, s, m or h"
        ))),
        _ => Err(ApiError::BadRequest(format!(
            "invalid precision {s:?}: expected ns, us, ms or s (minutes and hours are the v1 API's /write only)"
        ))),
    }
}

fn required(value: Option<String>, name: &str) -> Result<String, ApiError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::BadRequest(format!(
            "missing query parameter {name:?}: the database to write to"
        ))),
    }
}

/// Counts a write request and how it ended in the node's metrics.
fn counted(state: &AppState, result: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let metrics = state.node.metrics();
    metrics.write_requests.inc();
    if let Err(e) = &result {
        metrics.write_error(e.kind());
        if let ApiError::Lines { errors, .. } = e {
            metrics.write_rejected_lines.inc_by(errors.len() as u64);
        }
    }
    result
}

async fn write(
    state: &AppState,
    (access, db): (&Access, &str),
    headers: &HeaderMap,
    body: Body,
    options: WriteOptions,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    access.require(Permission::Write, db)?;
    if db == INTERNAL_DATABASE {
        return Err(ApiError::BadRequest(format!(
            "the {INTERNAL_DATABASE} database holds the server's own metrics (--internal-metrics-secs) and takes no writes from clients"
        )));
    }
    let body = read_body(headers, body, &state.config).await?;
    let metrics = state.node.metrics();
    metrics.write_bytes.inc_by(body.len() as u64);
    let outcome = write_lp(&state.node, db, &body, &options)
        .await
        .map_err(|e| ApiError::from_write(e, dialect))?;
    metrics.write_lines.inc_by(outcome.rows as u64);
    if outcome.errors.is_empty() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::Lines {
            dialect,
            partial: true,
            errors: outcome.errors,
        })
    }
}

pub async fn write_v3(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    ApiQuery(params): ApiQuery<V3Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = async {
        let db = required(params.db, "db")?;
        let options = WriteOptions {
            precision: precision(params.precision.as_deref(), Dialect::V3)?,
            accept_partial: params.accept_partial.unwrap_or(true),
            durable: !params.no_sync.unwrap_or(false),
            limits: state.config.line_limits,
        };
        write(&state, (&access, &db), &headers, body, options, Dialect::V3).await
    }
    .await;
    counted(&state, result)
}

/// v1 and v2: all lines or none, always durable.
async fn write_all_or_nothing(
    state: &AppState,
    (access, db): (&Access, &str),
    precision_param: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let options = WriteOptions {
        precision: precision(precision_param, dialect)?,
        accept_partial: false,
        durable: true,
        limits: state.config.line_limits,
    };
    write(state, (access, db), headers, body, options, dialect).await
}

pub async fn write_v2(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    ApiQuery(params): ApiQuery<V2Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = async {
        let bucket = required(params.bucket, "bucket")?;
        // v1-compatible bucket names are "db/retention_policy"; the database is the first part.
        let db = bucket.split('/').next().unwrap_or(&bucket);
        write_all_or_nothing(
            &state,
            (&access, db),
            params.precision.as_deref(),
            &headers,
            body,
            Dialect::V2,
        )
        .await
    }
    .await;
    counted(&state, result)
}

pub async fn write_v1(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    ApiQuery(params): ApiQuery<V1Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = async {
        let db = required(params.db, "db")?;
        write_all_or_nothing(
            &state,
            (&access, &db),
            params.precision.as_deref(),
            &headers,
            body,
            Dialect::V1,
        )
        .await
    }
    .await;
    counted(&state, result)
}
