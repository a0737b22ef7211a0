//! `/api/v3/query_sql`: SQL in (query string or JSON body), rows out in the asked format.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tidemark_query::{Format, format};

use super::{ApiError, AppState, read_body};

#[derive(Debug, Deserialize)]
pub struct QueryParams {
    db: Option<String>,
    q: Option<String>,
    format: Option<String>,
}

pub async fn query_get(
    State(state): State<Arc<AppState>>,
    Query(params): Query<QueryParams>,
) -> Result<Response, ApiError> {
    run(&state, params).await
}

pub async fn query_post(
    State(state): State<Arc<AppState>>,
    Query(url_params): Query<QueryParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, &state.config).await?;
    let mut params = if body.iter().all(u8::is_ascii_whitespace) {
        QueryParams {
            db: None,
            q: None,
            format: None,
        }
    } else {
        serde_json::from_slice::<QueryParams>(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body must be a JSON object with \"db\", \"q\" and optional \"format\": {e}"
            ))
        })?
    };
    params.db = params.db.or(url_params.db);
    params.q = params.q.or(url_params.q);
    params.format = params.format.or(url_params.format);
    run(&state, params).await
}

async fn run(state: &AppState, params: QueryParams) -> Result<Response, ApiError> {
    let db = params
        .db
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing parameter \"db\"".to_string()))?;
    let q = params.q.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::BadRequest("missing parameter \"q\": the SQL query".to_string())
    })?;
    let fmt: Format = params
        .format
        .as_deref()
        .unwrap_or("json")
        .parse()
        .map_err(ApiError::from_query)?;
    let output = state
        .node
        .query(&db, &q)
        .await
        .map_err(ApiError::from_node)?;
    let bytes =
        format::encode(fmt, &output.schema, &output.batches).map_err(ApiError::from_query)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, fmt.content_type())],
        bytes,
    )
        .into_response())
}
