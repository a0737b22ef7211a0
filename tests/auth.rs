//! Tokens and TLS through the real binary: a server with `--auth` refuses what a token may
//! not do (401 without a valid one, 403 without the right), counts the refusals, and takes
//! tokens from every shape of client (Bearer, Token, Basic, v1 `p`); `tidemark token`
//! makes the first admin token on the data directory while the server runs, and more
//! through the server. With `--tls-cert` and `--tls-key` the API speaks HTTPS only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{BIN, Server, client};
use serde_json::Value;

/// Runs the CLI; returns (success, stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("TIDEMARK_TOKEN")
        .env_remove("TIDEMARK_DATA_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn send(
    server: &Server,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client()
        .request(method, server.url(path))
        .body(body.to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap_or_default())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn tokens_decide_who_may_do_what() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_on(data.clone(), vec!["--auth".into()]);
    let data_arg = data.to_str().unwrap();

    // Open endpoints stay open; everything else needs a token.
    assert_eq!(send(&server, "GET", "/health", None, "").0, 200);
    assert_eq!(send(&server, "GET", "/ping", None, "").0, 204);
    let (code, body) = send(
        &server,
        "POST",
        "/api/v3/write_lp?db=metrics",
        None,
        "m v=1 1",
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("requires a token"), "{body}");
    assert_eq!(send(&server, "GET", "/metrics", None, "").0, 401);
    let (code, _) = send(
        &server,
        "GET",
        "/api/v3/query_sql?db=metrics&q=SELECT+1",
        Some("Bearer tdm_nope"),
        "",
    );
    assert_eq!(code, 401);

    // The first admin token, made on the data directory while the server runs.
    let (ok, admin, stderr) = cli(
        &[
            "token",
            "create",
            "--admin",
            "--name",
            "root",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(admin.starts_with("tdm_") && admin.len() == 68, "{admin}");
    assert!(stderr.contains("shown only now"), "{stderr}");
    let store = std::fs::read(data.join("tokens/tokens")).unwrap();
    assert!(
        !String::from_utf8_lossy(&store).contains(&admin),
        "only a hash is stored"
    );
    // The running server picks it up.
    let (code, body) = send(
        &server,
        "POST",
        "/api/v3/write_lp?db=metrics",
        Some(&bearer(&admin)),
        "m v=1 1",
    );
    assert_eq!(code, 204, "{body}");

    // More tokens through the server, with the admin token.
    let host = server.base.clone();
    let env = [("TIDEMARK_TOKEN", admin.as_str())];
    let make = |args: &[&str]| {
        let mut all = vec!["token", "create", "--host", host.as_str()];
        all.extend_from_slice(args);
        let (ok, token, stderr) = cli(&all, &env);
        assert!(ok, "{stderr}");
        token
    };
    let reader = make(&["--database", "metrics", "--read", "--name", "grafana"]);
    let writer = make(&["--database", "metrics", "--write", "--name", "telegraf"]);
    let other = make(&["--database", "other", "--read", "--write"]);

    // Writes in every client's shape.
    let (code, body) = send(
        &server,
        "POST",
        "/api/v3/write_lp?db=metrics",
        Some(&bearer(&writer)),
        "m v=2 2",
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = send(
        &server,
        "POST",
        "/api/v2/write?bucket=metrics",
        Some(&format!("Token {writer}")),
        "m v=3 3",
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = send(
        &server,
        "POST",
        &format!("/write?db=metrics&u=x&p={writer}"),
        None,
        "m v=4 4",
    );
    assert_eq!(code, 204, "{body}");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{writer}"));
    let (code, body) = send(
        &server,
        "POST",
        "/write?db=metrics",
        Some(&format!("Basic {basic}")),
        "m v=5 5",
    );
    assert_eq!(code, 204, "{body}");

    // Reads with the read token; every other combination is 403.
    let q = "/api/v3/query_sql?db=metrics&q=SELECT+count(*)+AS+n+FROM+m";
    let (code, body) = send(&server, "GET", q, Some(&bearer(&reader)), "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"n\":5"), "{body}");
    let (code, body) = send(
        &server,
        "POST",
        "/api/v3/query_sql",
        Some(&bearer(&reader)),
        r#"{"db":"metrics","q":"SELECT 1"}"#,
    );
    assert_eq!(code, 200, "{body}");
    for (what, token, method, path, body) in [
        ("write token reads", &writer, "GET", q, ""),
        (
            "read token writes",
            &reader,
            "POST",
            "/api/v3/write_lp?db=metrics",
            "m v=9 9",
        ),
        ("other database", &other, "GET", q, ""),
        (
            "query in the body",
            &other,
            "POST",
            "/api/v3/query_sql",
            r#"{"db":"metrics","q":"SELECT 1"}"#,
        ),
        (
            "admin route",
            &writer,
            "POST",
            "/api/v3/configure/database",
            r#"{"db":"x"}"#,
        ),
        (
            "delete",
            &reader,
            "POST",
            "/api/v2/delete?bucket=metrics",
            r#"{"start":"1970-01-01T00:00:00Z","stop":"2030-01-01T00:00:00Z"}"#,
        ),
        ("tokens", &reader, "GET", "/api/v3/configure/token", ""),
        ("topologies", &reader, "GET", "/api/v3/topologies", ""),
    ] {
        let (code, answer) = send(&server, method, path, Some(&bearer(token)), body);
        assert_eq!(code, 403, "{what}: {answer}");
        assert!(
            answer.contains("may not") || answer.contains("admin token"),
            "{what}: {answer}"
        );
    }
    // Topics follow the same scopes.
    let (code, body) = send(
        &server,
        "POST",
        "/api/v3/topics",
        Some(&bearer(&admin)),
        r#"{"name":"metrics","partitions":1}"#,
    );
    assert_eq!(code, 201, "{body}");
    let records = "/api/v3/topics/metrics/records";
    assert_eq!(
        send(
            &server,
            "POST",
            records,
            Some(&bearer(&writer)),
            r#"{"value":1}"#
        )
        .0,
        200
    );
    assert_eq!(
        send(
            &server,
            "POST",
            records,
            Some(&bearer(&reader)),
            r#"{"value":1}"#
        )
        .0,
        403
    );
    let consume = format!("{records}?partition=0&offset=earliest");
    assert_eq!(
        send(&server, "GET", &consume, Some(&bearer(&reader)), "").0,
        200
    );
    assert_eq!(
        send(&server, "GET", &consume, Some(&bearer(&other)), "").0,
        403
    );
    // limit=0 asks for nothing: refused rather than answered with a record.
    let (code, body) = send(
        &server,
        "GET",
        &format!("{consume}&limit=0"),
        Some(&bearer(&reader)),
        "",
    );
    assert_eq!(code, 400, "{body}");

    // Listing shows no texts or hashes; revoking takes effect at once.
    let (ok, listed, stderr) = cli(&["token", "list", "--host", &host], &env);
    assert!(ok, "{stderr}");
    assert!(
        !listed.contains(&reader) && !listed.contains("hash"),
        "{listed}"
    );
    let list: Value = serde_json::from_str(&listed).unwrap();
    let id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "grafana")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, _, stderr) = cli(&["token", "revoke", &id, "--host", &host], &env);
    assert!(ok, "{stderr}");
    let (code, _) = send(&server, "GET", q, Some(&bearer(&reader)), "");
    assert_eq!(code, 401);

    // The client commands send --token.
    let (ok, out, stderr) = cli(
        &[
            "query",
            "--host",
            &host,
            "--db",
            "metrics",
            "SELECT count(*) AS n FROM m",
        ],
        &[("TIDEMARK_TOKEN", writer.as_str())],
    );
    assert!(!ok && stderr.contains("403"), "{out} {stderr}");
    let (ok, out, stderr) = cli(
        &[
            "query",
            "--host",
            &host,
            "--db",
            "metrics",
            "--token",
            &admin,
            "SELECT count(*) AS n FROM m",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(out.contains('5'), "{out}");

    // Refusals are counted by reason.
    let (code, metrics) = send(&server, "GET", "/metrics", Some(&bearer(&admin)), "");
    assert_eq!(code, 200);
    for reason in ["missing", "invalid", "forbidden"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "tidemark_http_auth_failures_total{{reason=\"{reason}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no {reason} counter in {metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
}

#[test]
fn the_api_speaks_https_with_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let signed = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert, signed.cert.pem()).unwrap();
    std::fs::write(&key, signed.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        tmp.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    tidemark_engine::install_tls_provider();
    let trusting = reqwest::blocking::Client::builder()
        .tls_certs_merge(
            reqwest::Certificate::from_pem_bundle(signed.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let resp = trusting.get(server.url("/health")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Plain HTTP on the same port gets no answer.
    let plain = server.base.replace("https://", "http://");
    assert!(client().get(format!("{plain}/health")).send().is_err());
    // A client that does not trust the certificate is refused by its own TLS.
    assert!(client().get(server.url("/health")).send().is_err());

    // The CLI over HTTPS with --tls-ca.
    let host = server.base.clone();
    let ca = cert.to_str().unwrap();
    let lp = tmp.path().join("a.lp");
    std::fs::write(&lp, "m v=1 1\nm v=2 2\n").unwrap();
    let (ok, _, stderr) = cli(
        &[
            "write",
            "--host",
            &host,
            "--db",
            "db",
            "--tls-ca",
            ca,
            lp.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let (ok, out, stderr) = cli(
        &[
            "query",
            "--host",
            &host,
            "--db",
            "db",
            "SELECT sum(v) AS s FROM m",
        ],
        &[("TIDEMARK_TLS_CA", ca)],
    );
    assert!(ok, "{stderr}");
    assert!(out.contains('3'), "{out}");
    let (ok, _, stderr) = cli(&["query", "--host", &host, "--db", "db", "SELECT 1"], &[]);
    assert!(!ok, "{stderr}");
}
