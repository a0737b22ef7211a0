//! `/api/v3/topologies`: deploy (POST a YAML body), list, status and remove the dataflow
//! topologies of the server; the work is done by the engine's topology manager.
//!
//! - `POST /api/v3/topologies` (YAML): 201 `{"name", "state"}`; 400 with every problem
//!   and its line and column; 409 when one of that name is deployed.
//! - `GET /api/v3/topologies`: `{"topologies": [status...]}`.
//! - `GET /api/v3/topologies/{name}`: its status: state, last checkpoint, and per node
//!   rows in and out, rows/s, watermark, late and rejected rows, lag and backpressure.
//! - `DELETE /api/v3/topologies/{name}`: stops it and deletes it with its checkpoint.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tidemark_engine::topology::manager::{DeployError, State as TopologyState, Status, Topologies};

use super::{ApiError, AppState, read_body};

fn topologies(state: &AppState) -> Result<&Arc<Topologies>, ApiError> {
    state
        .topologies
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this server runs no topologies".to_string()))
}

pub async fn deploy(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let manager = topologies(&state)?;
    let bytes = read_body(&headers, body, &state.config).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the topology is not UTF-8: {e}")))?;
    match manager.deploy(text).await {
        Ok(name) => {
            let status = manager.status(&name).map(|s| to_json(&s));
            Ok((
                StatusCode::CREATED,
                axum::Json(json!({ "name": name, "status": status })),
            )
                .into_response())
        }
        Err(DeployError::Invalid(problems)) => Err(ApiError::Topology(problems)),
        Err(DeployError::Exists(name)) => Err(ApiError::Conflict(format!(
            "topology {name:?} is already deployed: DELETE it first to replace it"
        ))),
        Err(DeployError::Io(e)) => {
            Err(ApiError::Internal(format!("cannot save the topology: {e}")))
        }
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let all: Vec<Value> = topologies(&state)?.list().iter().map(to_json).collect();
    Ok(axum::Json(json!({ "topologies": all })).into_response())
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    match topologies(&state)?.status(&name) {
        Some(s) => Ok(axum::Json(to_json(&s)).into_response()),
        None => Err(ApiError::NotFound(format!("no topology named {name:?}"))),
    }
}

pub async fn remove(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    match topologies(&state)?.remove(&name).await {
        Ok(true) => Ok(axum::Json(json!({ "removed": name })).into_response()),
        Ok(false) => Err(ApiError::NotFound(format!("no topology named {name:?}"))),
        Err(e) => Err(ApiError::Internal(format!(
            "topology {name:?} is stopped but its files could not be removed: {e}"
        ))),
    }
}

fn to_json(s: &Status) -> Value {
    let time = |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339();
    json!({
        "name": s.name,
        "state": s.state.name(),
        "error": match &s.state { TopologyState::Failed(e) => Some(e), _ => None },
        "uptime_seconds": s.uptime.as_secs_f64(),
        "last_checkpoint": s.checkpoint,
        "nodes": s.nodes.iter().map(|n| json!({
            "name": n.name,
            "type": n.kind,
            "role": n.role,
            "rows_in": n.rows_in,
            "rows_out": n.rows_out,
            "rows_per_second": n.rows_per_sec,
            "watermark": n.watermark.map(time),
            "late_rows": n.late_rows,
            "rejected_rows": n.rejected_rows,
            "lag_records": n.lag_records,
            "backpressure": n.backpressure,
            "last_error": n.last_error,
        })).collect::<Vec<_>>(),
    })
}
