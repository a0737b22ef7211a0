//! Administration over HTTP: databases and tables (create, retention, drop) and deletes.
//!
//! - `POST /api/v3/configure/database` `{"db", "retention_period"?}`: creates the database;
//!   for an existing one, sets its retention (409 if the body asks for nothing).
//! - `GET /api/v3/configure/database`: the databases with their retention.
//! - `DELETE /api/v3/configure/database?db=`: drops it with all its data.
//! - `POST /api/v3/configure/table` `{"db", "table", "retention_period"}`: table retention.
//! - `DELETE /api/v3/configure/table?db=&table=`: drops a table.
//! - `POST /api/v2/delete?bucket=|db=` `{"start", "stop", "predicate"?}`: InfluxDB v2 delete.
//!
//! Retention periods are durations like `30d`, `12h`, `1h30m`, `90s` (units ns, us, ms, s,
//! m, h, d, w); `none` or `infinite` (or null) means keep forever.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Access;
use super::{ApiError, ApiQuery, AppState, read_body};
use tidemark_storage::duration;
use tidemark_storage::tokens::Permission;

/// Parses a retention period; `None` means infinite.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration(s: &str) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    match duration::parse(s) {
        Some(ns) if ns > 0 => Ok(Some(ns)),
        Some(_) => Err(format!("duration {s:?} must be positive")),
        None => Err(format!(
            "invalid duration {s:?}: expected {}, or \"none\"",
            duration::EXPECTED
        )),
    }
}

/// A parsed v2 delete predicate: the measurement (if named) and tag equalities.
#[derive(Debug, Default, PartialEq)]
pub struct DeletePredicate {
    pub measurement: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// Parses InfluxDB v2's delete predicate: `key="value"` terms joined by `AND`, where
/// `_measurement` names the table and other keys are tags.
///
/// # Errors
/// A message naming the position and what was expected there.
pub fn parse_predicate(s: &str) -> Result<DeletePredicate, String> {
    let mut p = DeletePredicate::default();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let word = |i: &mut usize, what: &str| -> Result<String, String> {
        skip_ws(i);
        if *i >= chars.len() {
            return Err(format!("predicate ends where {what} was expected"));
        }
        if chars[*i] == '"' || chars[*i] == '\'' {
            let q = chars[*i];
            *i += 1;
            let mut out = String::new();
            while *i < chars.len() && chars[*i] != q {
                if chars[*i] == '\\' && *i + 1 < chars.len() {
                    *i += 1;
                }
                out.push(chars[*i]);
                *i += 1;
            }
            if *i >= chars.len() {
                return Err(format!("unterminated quote in predicate (expected {what})"));
            }
            *i += 1;
            Ok(out)
        } else {
            let start = *i;
            while *i < chars.len()
                && !chars[*i].is_whitespace()
                && !matches!(chars[*i], '=' | '!' | '<' | '>' | '(' | ')')
            {
                *i += 1;
            }
            if start == *i {
                return Err(format!(
                    "unexpected {:?} at position {start} (expected {what})",
                    chars[start]
                ));
            }
            Ok(chars[start..*i].iter().collect())
        }
    };
    skip_ws(&mut i);
    if i == chars.len() {
        return Ok(p);
    }
    loop {
        let key = word(&mut i, "a tag key or _measurement")?;
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(format!(
                "expected '=' after {key:?} at position {i}: only equality is supported"
            ));
        }
        i += 1;
        if chars.get(i) == Some(&'~') {
            // `=~ /re/` would otherwise read as equality with the text "~/re/" and
            // delete nothing, answered with 204: refuse it by name.
            return Err(format!(
                "{key:?} =~ at position {}: regular expressions are not supported in delete predicates (InfluxDB's delete predicate takes equalities joined by AND)",
                i - 1
            ));
        }
        let value = word(&mut i, "a value")?;
        match key.as_str() {
            "_measurement" => {
                if p.measurement.replace(value).is_some() {
                    return Err("_measurement is given twice".into());
                }
            }
            "_field" => return Err("deleting by _field is not supported".into()),
            _ => p.tags.push((key, value)),
        }
        skip_ws(&mut i);
        if i == chars.len() {
            return Ok(p);
        }
        let conj = word(&mut i, "AND")?;
        if conj.eq_ignore_ascii_case("or") {
            return Err(
                "OR is not supported in delete predicates; send one delete per term".into(),
            );
        }
        if !conj.eq_ignore_ascii_case("and") {
            return Err(format!("expected AND, found {conj:?}"));
        }
    }
}

/// Parses an RFC 3339 time (or integer nanoseconds) of a delete.
fn parse_time(v: &Value, what: &str) -> Result<i64, ApiError> {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{what} {s:?} is not an RFC 3339 time like 2024-01-01T00:00:00Z"
                ))
            }),
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            ApiError::BadRequest(format!("{what} must be RFC 3339 or integer nanoseconds"))
        }),
        _ => Err(ApiError::BadRequest(format!(
            "{what} is required (RFC 3339 time)"
        ))),
    }
}

/// Reads a request body (bounded, gzip allowed) as JSON.
async fn json_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let body = read_body(headers, body, &state.config).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest(format!("missing string field {key:?}")))
}

/// `retention_period` of a body: `Ok(None)` when absent, `Ok(Some(None))` for infinite.
fn retention_field(v: &Value) -> Result<Option<Option<i64>>, ApiError> {
    match v.get("retention_period") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => parse_duration(s).map(Some).map_err(ApiError::BadRequest),
        Some(_) => Err(ApiError::BadRequest(
            "retention_period must be a string like \"30d\" or null".into(),
        )),
    }
}

fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

pub async fn create_database(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = json_body(&state, &headers, body).await?;
    let db = str_field(&v, "db")?;
    let retention = retention_field(&v)?;
    let node = &state.node;
    if node.catalog().database(db).is_some() {
        let Some(r) = retention else {
            return Err(ApiError::Conflict(format!(
                "database {db:?} already exists"
            )));
        };
        node.set_retention(db, None, r)
            .map_err(ApiError::from_node)?;
        return Ok(ok(json!({ "db": db, "retention_period_ns": r })));
    }
    node.create_database(db, retention.flatten())
        .map_err(ApiError::from_node)?;
    Ok(ok(
        json!({ "db": db, "retention_period_ns": retention.flatten() }),
    ))
}

pub async fn list_databases(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let list: Vec<Value> = state.node.store().read(|s| {
        s.databases
            .iter()
            .map(|(name, d)| {
                json!({
                    "db": name,
                    "partitions": d.partitions,
                    "retention_period_ns": d.retention_ns,
                })
            })
            .collect()
    });
    Ok(ok(Value::Array(list)))
}

#[derive(Debug, Deserialize)]
pub struct DbParams {
    db: Option<String>,
    table: Option<String>,
}

fn required(v: Option<String>, name: &str) -> Result<String, ApiError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("missing query parameter {name:?}")))
}

pub async fn drop_database(
    State(state): State<Arc<AppState>>,
    ApiQuery(p): ApiQuery<DbParams>,
) -> Result<Response, ApiError> {
    let db = required(p.db, "db")?;
    state
        .node
        .drop_database(&db)
        .await
        .map_err(ApiError::from_node)?;
    Ok(ok(json!({ "dropped": db })))
}

pub async fn configure_table(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = json_body(&state, &headers, body).await?;
    let db = str_field(&v, "db")?;
    let table = str_field(&v, "table")?;
    let Some(retention) = retention_field(&v)? else {
        return Err(ApiError::BadRequest(
            "nothing to configure: give retention_period".into(),
        ));
    };
    state
        .node
        .set_retention(db, Some(table), retention)
        .map_err(ApiError::from_node)?;
    Ok(ok(
        json!({ "db": db, "table": table, "retention_period_ns": retention }),
    ))
}

pub async fn drop_table(
    State(state): State<Arc<AppState>>,
    ApiQuery(p): ApiQuery<DbParams>,
) -> Result<Response, ApiError> {
    let db = required(p.db, "db")?;
    let table = required(p.table, "table")?;
    state
        .node
        .drop_table(&db, &table)
        .await
        .map_err(ApiError::from_node)?;
    Ok(ok(json!({ "dropped": table, "db": db })))
}

#[derive(Debug, Deserialize)]
pub struct DeleteParams {
    bucket: Option<String>,
    db: Option<String>,
}

pub async fn delete_v2(
    State(state): State<Arc<AppState>>,
    Extension(access): Extension<Access>,
    ApiQuery(p): ApiQuery<DeleteParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let db = required(p.bucket.or(p.db), "bucket")?;
    access.require(Permission::Write, &db)?;
    let v = json_body(&state, &headers, body).await?;
    let start = parse_time(v.get("start").unwrap_or(&Value::Null), "start")?;
    let stop = parse_time(v.get("stop").unwrap_or(&Value::Null), "stop")?;
    let predicate = match v.get("predicate") {
        None | Some(Value::Null) => DeletePredicate::default(),
        Some(Value::String(s)) => parse_predicate(s)
            .map_err(|e| ApiError::BadRequest(format!("invalid predicate: {e}")))?,
        Some(_) => return Err(ApiError::BadRequest("predicate must be a string".into())),
    };
    state
        .node
        .delete(
            &db,
            predicate.measurement.as_deref(),
            start,
            stop,
            predicate.tags,
        )
        .await
        .map_err(ApiError::from_node)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(Some(5_400_000_000_000)));
        assert_eq!(parse_duration("7d"), Ok(Some(604_800_000_000_000)));
        assert_eq!(parse_duration("none"), Ok(None));
        assert!(parse_duration("7").unwrap_err().contains("unit"));
        assert!(parse_duration("3x").is_err());
    }

    #[test]
    fn predicates() {
        let p = parse_predicate(r#"_measurement="cpu" AND host="a b" and region=west"#).unwrap();
        assert_eq!(p.measurement.as_deref(), Some("cpu"));
        assert_eq!(
            p.tags,
            vec![
                ("host".to_string(), "a b".to_string()),
                ("region".to_string(), "west".to_string())
            ]
        );
        assert!(
            parse_predicate("host=\"a\" OR host=\"b\"")
                .unwrap_err()
                .contains("OR")
        );
        assert!(parse_predicate("host > 1").unwrap_err().contains("'='"));
        for regex in [
            "host=~/a/",
            "host =~ /a/",
            "_measurement=\"cpu\" AND host=~/^a$/",
        ] {
            let err = parse_predicate(regex).unwrap_err();
            assert!(
                err.contains("regular expressions are not supported"),
                "{regex}: {err}"
            );
        }
        assert!(parse_predicate("host!~/a/").unwrap_err().contains("'='"));
        assert!(
            parse_predicate("host=\"a")
                .unwrap_err()
                .contains("unterminated")
        );
        assert_eq!(parse_predicate("  ").unwrap(), DeletePredicate::default());
    }
}
