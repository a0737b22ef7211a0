//! Who may call the HTTP API, when the server runs with `--auth`.
//!
//! Every request but `/health` and `/ping` must carry a token: `Authorization: Bearer <t>`
//! or `Token <t>` (InfluxDB 2 clients), `Basic` with the token as password, or the v1
//! `p=<t>` query parameter. [`authenticate`] (a middleware) finds the token in the store,
//! answers 401 without a valid one, answers 403 when a scoped token calls an admin route
//! (administration, topologies, creating and deleting topics, tokens), and otherwise hands
//! the handlers an [`Access`] that they check against the database or topic they touch.
//! Failures are counted by reason in `/metrics`; token texts are never logged.
//!
//! Tokens are made, listed and revoked through `/api/v3/configure/token` (admin). The first
//! admin token is made with `tidemark token create --admin --data-dir`, which writes the
//! store directly (a running server picks it up): nothing on the network can make one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;
use tidemark_storage::parquet_file::unescape_hex;
use tidemark_storage::tokens::{Permission, TokenInfo, TokenSpec, TokenStore};

use super::{ApiError, ApiQuery, AppState};

/// The token store of a server with `--auth`.
#[derive(Debug)]
pub struct Auth {
    store: Mutex<TokenStore>,
}

impl Auth {
    pub fn new(store: TokenStore) -> Self {
        Self {
            store: Mutex::new(store),
        }
    }

    /// The token of this text. The store looks at its file first (one `stat`; it is read
    /// again only when it changed), so a token made or revoked by `tidemark token
    /// --data-dir` while the server runs counts at once.
    fn lookup(&self, text: &str) -> Option<TokenInfo> {
        let mut store = self.store.lock();
        if let Err(e) = store.reload_if_changed() {
            tracing::error!(error = %e, "cannot re-read the token store");
        }
        store.authenticate(text).cloned()
    }
}

/// What the caller of a request may do (handlers check it for what they touch).
#[derive(Debug, Clone)]
pub enum Access {
    /// The server runs without `--auth`.
    Open,
    Token(TokenInfo),
}

impl Access {
    /// # Errors
    /// 403 when the token may not do `what` on the database or topic `name`.
    pub fn require(&self, what: Permission, name: &str) -> Result<(), ApiError> {
        match self {
            Access::Open => Ok(()),
            Access::Token(t) if t.allows(what, name) => Ok(()),
            Access::Token(t) => Err(ApiError::Forbidden(format!(
                "token {:?} ({}) may not {} {name:?}",
                t.name,
                t.id,
                match what {
                    Permission::Read => "read",
                    Permission::Write => "write",
                }
            ))),
        }
    }
}

/// The token a request carries, if any.
fn presented(req: &Request) -> Option<String> {
    if let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            return Some(rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            return text.split_once(':').map(|(_, p)| p.to_string());
        }
    }
    // InfluxDB 1.x clients: `u` and `p` query parameters.
    let query = req.uri().query()?;
    url_params(query).find_map(|(k, v)| (k == "p").then_some(v))
}

fn url_params(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| unescape_hex(&s.replace('+', " "), b'%');
        Some((decode(k)?, decode(v)?))
    })
}

/// Routes only an admin token may call.
fn admin_only(method: &Method, path: &str) -> bool {
    path.starts_with("/api/v3/configure/")
        || path.starts_with("/api/v3/topologies")
        || (path == "/api/v3/topics" && method == Method::POST)
        || (path.starts_with("/api/v3/topics/")
            && !path.ends_with("/records")
            && method == Method::DELETE)
}

/// Routes anyone may call.
fn public(path: &str) -> bool {
    matches!(path, "/health" | "/ping")
}

fn refused(
    state: &AppState,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Response {
    state.node.metrics().auth_failure(reason);
    let mut resp = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = header::HeaderValue::from_str("Bearer realm=\"tidemark\"")
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The middleware: see the module header.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(auth) = &state.auth else {
        req.extensions_mut().insert(Access::Open);
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    if public(&path) {
        return next.run(req).await;
    }
    let Some(text) = presented(&req) else {
        return refused(
            &state,
            StatusCode::UNAUTHORIZED,
            "missing",
            "this server requires a token: send Authorization: Bearer <token> (tidemark token create makes one)".into(),
        );
    };
    let Some(token) = auth.lookup(&text) else {
        return refused(
            &state,
            StatusCode::UNAUTHORIZED,
            "invalid",
            "the token is not valid (unknown or revoked)".into(),
        );
    };
    if !token.admin && admin_only(req.method(), &path) {
        return refused(
            &state,
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {:?} ({}) is not an admin token; {} {path} needs one",
                token.name,
                token.id,
                req.method()
            ),
        );
    }
    req.extensions_mut().insert(Access::Token(token));
    let resp = next.run(req).await;
    if resp.status() == StatusCode::FORBIDDEN {
        state.node.metrics().auth_failure("forbidden");
    }
    resp
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[serde(default)]
    name: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    databases: Vec<String>,
    #[serde(default)]
    permissions: Vec<Permission>,
}

fn store_of(state: &AppState) -> Result<&Auth, ApiError> {
    state.auth.as_ref().ok_or_else(|| {
        ApiError::BadRequest("this server runs without --auth: it has no tokens".into())
    })
}

fn created(text: &str, info: &TokenInfo) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({
            "id": info.id,
            "name": info.name,
            "token": text,
            "admin": info.admin,
            "databases": info.databases,
            "permissions": info.permissions,
            "note": "the token is shown only now: the server keeps only its hash",
        })),
    )
        .into_response()
}

/// `POST /api/v3/configure/token` (admin): a new token.
pub async fn create(
    State(state): State<Arc<AppState>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let auth = store_of(&state)?;
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
    let spec: CreateToken = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"name\", \"admin\": bool, \"databases\": [..], \"permissions\": [\"read\"|\"write\"]}}: {e}"
        ))
    })?;
    let new = auth
        .store
        .lock()
        .create(TokenSpec {
            name: spec.name,
            admin: spec.admin,
            databases: spec.databases,
            permissions: spec.permissions,
        })
        .map_err(|e| match e {
            tidemark_storage::Error::Catalog(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        })?;
    tracing::info!(id = %new.info.id, name = %new.info.name, admin = new.info.admin, "token created");
    Ok(created(&new.text, &new.info))
}

/// `GET /api/v3/configure/token` (admin): every token, without texts or hashes.
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let auth = store_of(&state)?;
    let mut store = auth.store.lock();
    let _ = store.reload_if_changed();
    let tokens: Vec<serde_json::Value> = store.list().iter().map(TokenInfo::summary).collect();
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RevokeParams {
    id: Option<String>,
}

/// `DELETE /api/v3/configure/token?id=` (admin): revokes a token at once.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    ApiQuery(p): ApiQuery<RevokeParams>,
) -> Result<Response, ApiError> {
    let auth = store_of(&state)?;
    let id =
        p.id.filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::BadRequest("missing parameter \"id\"".into()))?;
    let removed = auth
        .store
        .lock()
        .revoke(&id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !removed {
        return Err(ApiError::NotFound(format!("no token with id {id:?}")));
    }
    tracing::info!(%id, "token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
