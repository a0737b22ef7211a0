//! `/api/v3/query_sql`: SQL in (query string or JSON body), rows out in the asked format.
//!
//! JSON, JSON lines and CSV answers stream: each batch is encoded and sent as the query
//! produces it, with the query's time limit covering the whole response and the channel
//! from the query threads bounding what is held. Pretty and Parquet answers need the whole
//! result and are bounded by `max_result_bytes`.

use std::sync::Arc;

use std::time::Instant;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tidemark_engine::Node;
use tidemark_query::format::StreamEncoder;
use tidemark_query::{Error as QueryError, Format, QueryStream, format};

use super::auth::Access;
use super::{ApiError, ApiQuery, AppState, read_body};
use tidemark_storage::tokens::Permission;

#[derive(Debug, Deserialize)]
pub struct QueryParams {
    db: Option<String>,
    q: Option<String>,
    format: Option<String>,
    /// Answer from the other files when a table file is damaged.
    skip_damaged_files: Option<bool>,
}

pub async fn query_get(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    ApiQuery(params): ApiQuery<QueryParams>,
) -> Result<Response, ApiError> {
    run(&state, &access, params).await
}

pub async fn query_post(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    ApiQuery(url_params): ApiQuery<QueryParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, &state.config).await?;
    let mut params = if body.iter().all(u8::is_ascii_whitespace) {
        QueryParams {
            db: None,
            q: None,
            format: None,
            skip_damaged_files: None,
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
    params.skip_damaged_files = params.skip_damaged_files.or(url_params.skip_damaged_files);
    run(&state, &access, params).await
}

async fn run(state: &AppState, access: &Access, params: QueryParams) -> Result<Response, ApiError> {
    let db = params
        .db
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing parameter \"db\"".to_string()))?;
    access.require(Permission::Read, &db)?;
    let q = params.q.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::BadRequest("missing parameter \"q\": the SQL query".to_string())
    })?;
    let fmt: Format = params
        .format
        .as_deref()
        .unwrap_or("json")
        .parse()
        .map_err(ApiError::from_query)?;
    let started = Instant::now();
    let node = Arc::clone(&state.node);
    let mut stream = node
        .query_stream(&db, &q, params.skip_damaged_files)
        .await
        .map_err(ApiError::from_node)?;
    let failed = |e: QueryError| {
        node.metrics().query_error(e.kind());
        ApiError::from_query(e)
    };
    if !fmt.streams() {
        let limit = state.config.max_result_bytes;
        let mut batches = Vec::new();
        let mut held = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(failed)?;
            held += batch.get_array_memory_size();
            if held > limit {
                node.metrics().query_error("too_large");
                return Err(ApiError::BadRequest(format!(
                    "the result is larger than --max-result-bytes ({limit} bytes), which bounds formats that cannot stream ({}): use json, jsonl or csv, which stream, or narrow the query",
                    params.format.as_deref().unwrap_or_default()
                )));
            }
            batches.push(batch);
        }
        let bytes = format::encode(fmt, &stream.schema, &batches).map_err(failed)?;
        node.metrics().query_done(started.elapsed());
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, fmt.content_type())],
            bytes,
        )
            .into_response());
    }
    // The first batch is awaited before answering: an error that comes at once (most do)
    // still gets its status code. Later errors end the response early (the client sees an
    // incomplete body), as a streamed answer cannot change its status.
    let mut encoder = StreamEncoder::new(fmt, Arc::clone(&stream.schema)).map_err(failed)?;
    let mut head = encoder.start();
    match stream.next().await {
        Some(batch) => head.extend(encoder.batch(&batch.map_err(failed)?).map_err(failed)?),
        None => {
            head.extend(encoder.finish().map_err(failed)?);
            node.metrics().query_done(started.elapsed());
            return Ok(answer(fmt, Body::from(head)));
        }
    }
    let rest = Streaming {
        stream,
        encoder,
        node,
        started,
        done: false,
    };
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(futures::stream::unfold(rest, Streaming::step));
    Ok(answer(fmt, Body::from_stream(body)))
}

fn answer(fmt: Format, body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, fmt.content_type())],
        body,
    )
        .into_response()
}

/// The rest of a streamed answer: each step encodes the next batch.
struct Streaming {
    stream: QueryStream,
    encoder: StreamEncoder,
    node: Arc<Node>,
    started: Instant,
    done: bool,
}

impl Streaming {
    async fn step(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if self.done {
            return None;
        }
        let chunk = match self.stream.next().await {
            Some(Ok(batch)) => self.encoder.batch(&batch),
            Some(Err(e)) => Err(e),
            None => {
                self.done = true;
                self.node.metrics().query_done(self.started.elapsed());
                self.encoder.finish()
            }
        };
        match chunk {
            Ok(bytes) => Some((Ok(Bytes::from(bytes)), self)),
            Err(e) => {
                self.done = true;
                self.node.metrics().query_error(e.kind());
                tracing::warn!(error = %e, "query failed while its answer was streaming; the response ends early");
                Some((Err(std::io::Error::other(e.to_string())), self))
            }
        }
    }
}
