//! `/api/v3/topics`: create, list, describe and delete topics; produce and consume records.
//!
//! - `POST /api/v3/topics` `{"name", "partitions"?}`: 201 with the topic; 409 when it
//!   exists; 400 for a bad name or partition count, or past the topic limit.
//! - `GET /api/v3/topics`: `{"topics": [topic...]}`; `GET /api/v3/topics/{name}`: one topic,
//!   each with its partitions' first and end offsets.
//! - `DELETE /api/v3/topics/{name}`: deletes it and its records.
//! - `POST /api/v3/topics/{name}/records` (JSON lines, gzip allowed): one record a line,
//!   `{"value": <any JSON>, "key"?: string|null, "timestamp"?: ns|RFC 3339}`. Every line is
//!   checked before anything is appended: one bad line refuses the request (400, naming each
//!   bad line) and appends nothing. Answers `{"records": [{"partition", "offset"}...]}` in
//!   line order once durable (`no_sync=true` answers before the fsync).
//! - `GET /api/v3/topics/{name}/records?partition=P&offset=earliest|latest|N&limit=&max_bytes=&wait_ms=`:
//!   records of one partition from an offset, waiting up to `wait_ms` when there are none
//!   yet; answers the records and the `next_offset` to ask for next.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidemark_engine::topics::{FetchLimits, ProducerRecord, StartAt, TopicInfo};

use super::auth::Access;
use super::{ApiError, ApiQuery, AppState, read_body};
use tidemark_storage::tokens::Permission;

/// At most this many bad lines are described in one answer.
const MAX_REPORTED: usize = 20;
const DEFAULT_LIMIT: usize = 500;
const MAX_LIMIT: usize = 10_000;
const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
const MAX_MAX_BYTES: usize = 64 * 1024 * 1024;
const MAX_WAIT_MS: u64 = 30_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    name: String,
    partitions: Option<u32>,
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, &state.config).await?;
    let req: CreateTopic = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"name\": string, \"partitions\": number}}: {e}"
        ))
    })?;
    let partitions = req.partitions.unwrap_or(state.node.config().partitions);
    let info = state
        .node
        .create_topic(&req.name, partitions)
        .map_err(ApiError::from_node)?;
    Ok((StatusCode::CREATED, axum::Json(info_json(&info))).into_response())
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
) -> Response {
    // A scoped token sees the topics it may read.
    let all: Vec<Value> = state
        .node
        .topics()
        .iter()
        .filter(|t| access.require(Permission::Read, &t.name).is_ok())
        .map(info_json)
        .collect();
    axum::Json(json!({ "topics": all })).into_response()
}

pub async fn describe(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    access.require(Permission::Read, &name)?;
    let info = state.node.topic(&name).map_err(ApiError::from_node)?;
    Ok(axum::Json(info_json(&info)).into_response())
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state
        .node
        .delete_topic(&name)
        .await
        .map_err(ApiError::from_node)?;
    Ok(axum::Json(json!({ "deleted": name })).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ProduceParams {
    no_sync: Option<bool>,
}

/// One line of a produce body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    /// Checked to be JSON, and kept as the text it was sent as.
    value: Box<RawValue>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Timestamp {
    Nanos(i64),
    Text(String),
}

impl Timestamp {
    fn nanos(&self) -> Result<i64, String> {
        match self {
            Timestamp::Nanos(n) => Ok(*n),
            Timestamp::Text(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("timestamp {t:?} is not RFC 3339 ({e})"))?
                .timestamp_nanos_opt()
                .ok_or_else(|| format!("timestamp {t:?} is outside 1677..2262")),
        }
    }
}

/// Parses a produce body: every line, or every bad line's error.
pub fn parse_records(body: &[u8]) -> Result<Vec<ProducerRecord>, Vec<String>> {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<Line>(line)
            .map_err(|e| {
                format!(
                    "expected {{\"value\": any JSON, \"key\"?: string, \"timestamp\"?: ns or \
                     RFC 3339}}: {e}"
                )
            })
            .and_then(|l| {
                let timestamp = l.timestamp.as_ref().map(Timestamp::nanos).transpose()?;
                Ok(ProducerRecord {
                    key: l.key.map(String::into_bytes),
                    value: l.value.get().as_bytes().to_vec(),
                    timestamp,
                })
            });
        match parsed {
            Ok(r) => records.push(r),
            Err(e) => errors.push(format!("line {}: {e}", i + 1)),
        }
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(errors)
    }
}

pub async fn produce(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<ProduceParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    access.require(Permission::Write, &name)?;
    // Before the body: an unknown topic is a 404 whatever the body holds.
    state.node.topic(&name).map_err(ApiError::from_node)?;
    let bytes = read_body(&headers, body, &state.config).await?;
    let records = parse_records(&bytes).map_err(|errors| {
        let shown = errors.len().min(MAX_REPORTED);
        let more = errors.len() - shown;
        let mut message = format!(
            "{} bad line(s), nothing was appended: {}",
            errors.len(),
            errors[..shown].join("; ")
        );
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        ApiError::BadRequest(message)
    })?;
    let durable = !params.no_sync.unwrap_or(false);
    let placed = state
        .node
        .produce(&name, records, durable)
        .await
        .map_err(ApiError::from_node)?;
    let records: Vec<Value> = placed
        .iter()
        .map(|(p, o)| json!({ "partition": p, "offset": o }))
        .collect();
    Ok(axum::Json(json!({ "records": records })).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ConsumeParams {
    partition: Option<u32>,
    offset: Option<String>,
    limit: Option<usize>,
    max_bytes: Option<usize>,
    wait_ms: Option<u64>,
}

fn start_at(offset: Option<&str>) -> Result<StartAt, ApiError> {
    match offset {
        None | Some("earliest") => Ok(StartAt::Earliest),
        Some("latest") => Ok(StartAt::Latest),
        Some(n) => n.parse().map(StartAt::Offset).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid offset {n:?}: expected earliest, latest or a number"
            ))
        }),
    }
}

fn bounded<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: Option<T>,
    default: T,
    max: T,
) -> Result<T, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v <= max => Ok(v),
        Some(v) => Err(ApiError::BadRequest(format!(
            "{name}={v} is over its maximum of {max}"
        ))),
    }
}

pub async fn consume(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<ConsumeParams>,
) -> Result<Response, ApiError> {
    access.require(Permission::Read, &name)?;
    if params.limit == Some(0) {
        return Err(ApiError::BadRequest(
            "limit=0 asks for no record: give at least 1".into(),
        ));
    }
    let partition = params.partition.ok_or_else(|| {
        ApiError::BadRequest("missing query parameter \"partition\": the partition to read".into())
    })?;
    let limits = FetchLimits {
        max_records: bounded("limit", params.limit, DEFAULT_LIMIT, MAX_LIMIT)?.max(1),
        max_bytes: bounded(
            "max_bytes",
            params.max_bytes,
            DEFAULT_MAX_BYTES,
            MAX_MAX_BYTES,
        )?
        .max(1),
        wait: std::time::Duration::from_millis(bounded("wait_ms", params.wait_ms, 0, MAX_WAIT_MS)?),
    };
    let start = start_at(params.offset.as_deref())?;
    let fetch = state
        .node
        .consume(&name, partition, start, limits)
        .await
        .map_err(ApiError::from_node)?;
    let records = fetch
        .records
        .iter()
        .map(|r| RecordOut {
            offset: r.offset,
            timestamp: chrono::DateTime::from_timestamp_nanos(r.timestamp)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            key: r.key.as_deref().map(String::from_utf8_lossy),
            value: ValueOut::of(&r.value),
        })
        .collect();
    Ok(axum::Json(FetchOut {
        topic: &name,
        partition,
        records,
        next_offset: fetch.next_offset,
        end_offset: fetch.end_offset,
    })
    .into_response())
}

/// A consume answer, serialized without building a JSON tree of the values.
#[derive(Serialize)]
struct FetchOut<'a> {
    topic: &'a str,
    partition: u32,
    records: Vec<RecordOut<'a>>,
    next_offset: u64,
    end_offset: u64,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    offset: u64,
    timestamp: String,
    key: Option<std::borrow::Cow<'a, str>>,
    value: ValueOut<'a>,
}

/// A stored value: the JSON it was produced as, or (were it not JSON) a string.
#[derive(Serialize)]
#[serde(untagged)]
enum ValueOut<'a> {
    Json(&'a RawValue),
    Text(std::borrow::Cow<'a, str>),
}

impl<'a> ValueOut<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
            .map_or_else(
                || ValueOut::Text(String::from_utf8_lossy(bytes)),
                ValueOut::Json,
            )
    }
}

fn info_json(info: &TopicInfo) -> Value {
    json!({
        "name": info.name,
        "partitions": info.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "first_offset": p.first_offset,
            "end_offset": p.end_offset,
        })).collect::<Vec<_>>(),
    })
}
