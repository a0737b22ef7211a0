//! What a hostile or careless user sends, through the real server: statements and
//! documents nested deep enough to overflow a stack, topologies that ask for unbounded
//! resources or reach for files and addresses outside their sandbox, and results larger
//! than the limits. Each gets a clear 400 (or ends within its limit), and the server keeps
//! serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{BIN, Server, client};
use serde_json::Value;

fn chain(op: &str, n: usize) -> String {
    vec!["1"; n].join(op)
}

fn alive(server: &Server) {
    let (code, _) = server.request("GET", "/health", None);
    assert_eq!(code, 200, "the server must still answer");
}

fn problems(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["message"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_else(|| body.to_string())
}

#[test]
fn deeply_nested_statements_and_documents_are_refused_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[]);
    assert_eq!(server.write_v3("db", "m v=1 1").0, 204);

    for (what, sql) in [
        ("2,000 +", format!("SELECT {}", chain("+", 2000))),
        (
            "5,000 OR",
            format!("SELECT * FROM m WHERE {}", chain(" = 1 OR ", 5000)),
        ),
        (
            "3,000 AND",
            format!(
                "SELECT * FROM m WHERE {}",
                vec!["v = 1"; 3000].join(" AND ")
            ),
        ),
        (
            "3,000 ||",
            format!("SELECT {}", vec!["'a'"; 3000].join(" || ")),
        ),
    ] {
        let (code, body) = server.query_raw("db", &sql, "json");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(code, 400, "{what}: {body}");
        assert!(body.contains("nests deeper than 1000"), "{what}: {body}");
        alive(&server);
    }
    // Below the limit, a long chain is planned and answered on the query threads' stack.
    let rows = server.query("db", &format!("SELECT {} AS n", chain("+", 900)));
    assert_eq!(rows[0]["n"], 900);

    // A YAML document nested 3,000 mappings deep.
    let mut deep = String::from(
        "name: t\nsources:\n  s: { type: generator, generator: sequence, rows: 1 }\nsinks:\n  o: { inputs: [s], type: blackhole }\nx:\n",
    );
    for i in 0..3000 {
        deep.push_str(&" ".repeat(2 * (i + 1)));
        deep.push_str("k:\n");
    }
    let (code, body) = server.post("/api/v3/topologies", deep);
    assert_eq!(code, 400, "{body}");
    assert!(
        problems(&body).contains("nest deeper than 64 levels"),
        "{body}"
    );
    // Flow style too.
    let flow = format!("name: t\nx: {}{}\n", "[".repeat(3000), "]".repeat(3000));
    let (code, body) = server.post("/api/v3/topologies", flow);
    assert_eq!(code, 400, "{body}");
    alive(&server);

    // A topology sql transform with a 3,000-term expression.
    let sql_topology = format!(
        "name: t\nsources:\n  s: {{ type: generator, generator: sequence, rows: 1 }}\ntransforms:\n  f: {{ inputs: [s], sql: \"SELECT value + {} AS v FROM input\" }}\nsinks:\n  o: {{ inputs: [f], type: blackhole }}\n",
        chain(" + ", 3000)
    );
    let (code, body) = server.post("/api/v3/topologies", sql_topology);
    assert_eq!(code, 400, "{body}");
    assert!(problems(&body).contains("nests deeper"), "{body}");
    alive(&server);
}

const SEQ: &str = "name: t\nsources:\n  s: { type: generator, generator: sequence, rows: 10 }\n";

#[test]
fn topologies_cannot_ask_for_unbounded_resources() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_on(
        data.clone(),
        vec!["--max-topology-parallelism".into(), "8".into()],
    );
    let huge = format!(
        "{SEQ}transforms:\n  k: {{ inputs: [s], type: key_by, columns: [value], parallelism: 1000000000 }}\nsinks:\n  o: {{ inputs: [k], type: blackhole }}\n"
    );
    let (code, body) = server.post("/api/v3/topologies", huge.clone());
    assert_eq!(code, 400, "{body}");
    assert!(
        problems(&body).contains("parallelism 1000000000 is above this server's limit of 8"),
        "{body}"
    );
    alive(&server);
    drop(server);

    // A topology saved by an older server (or written by hand) that no longer passes is
    // listed as failed, and the server starts.
    let saved = data.join("topologies/t");
    std::fs::create_dir_all(&saved).unwrap();
    std::fs::write(saved.join("topology.yaml"), &huge).unwrap();
    let server = Server::start_on(
        data.clone(),
        vec!["--max-topology-parallelism".into(), "8".into()],
    );
    let (code, body) = server.request("GET", "/api/v3/topologies/t", None);
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["state"], "failed", "{body}");
    assert!(body.contains("above this server's limit"), "{body}");
    alive(&server);

    // On the command line, a file without line ends (a device) is read with a bound.
    let file = tmp.path().join("zero.yaml");
    for format in ["jsonl", "csv"] {
        std::fs::write(
            &file,
            format!("name: z\nsources:\n  s: {{ type: file, path: /dev/zero, format: {format} }}\nsinks:\n  o: {{ inputs: [s], type: blackhole }}\n"),
        )
        .unwrap();
        let started = Instant::now();
        let out = std::process::Command::new(BIN)
            .args(["topology", "validate"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{format}: {stderr}");
        assert!(stderr.contains("a line longer than"), "{format}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(60), "{format}");
    }
}

#[test]
fn deployed_topologies_stay_in_their_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_on(data.clone(), vec![]);
    let files = data.join("files");
    assert!(
        files.is_dir(),
        "the default topology files directory is made at start"
    );
    std::fs::write(files.join("in.jsonl"), "{\"a\":1}\n{\"a\":2}\n").unwrap();
    std::os::unix::fs::symlink("/etc", files.join("etc")).unwrap();
    std::os::unix::fs::symlink(data.join("catalog"), files.join("cat")).unwrap();
    let sink = |path: &str| {
        format!(
            "{SEQ}sinks:\n  o: {{ inputs: [s], type: file, path: \"{path}\", format: jsonl }}\n"
        )
    };
    let source = |path: &str, format: &str| {
        format!(
            "name: t\nsources:\n  s: {{ type: file, path: \"{path}\", format: {format} }}\nsinks:\n  o: {{ inputs: [s], type: blackhole }}\n"
        )
    };
    for (what, yaml, expect) in [
        (
            "absolute sink",
            sink("/tmp/owned.jsonl"),
            "relative to the topology files directory",
        ),
        (
            "sink into the catalog",
            sink("../catalog/00000000000000000000.clog"),
            "without \\\"..\\\"",
        ),
        (
            "sink through a link",
            sink("cat/x.jsonl"),
            "outside the topology files directory",
        ),
        (
            "absolute source",
            source("/etc/passwd", "csv"),
            "relative to the topology files directory",
        ),
        (
            "source through a link",
            source("etc/passwd", "csv"),
            "outside the topology files directory",
        ),
        (
            "missing source",
            source("nope.jsonl", "jsonl"),
            "does not exist",
        ),
    ] {
        let (code, body) = server.post("/api/v3/topologies", yaml);
        assert_eq!(code, 400, "{what}: {body}");
        assert!(body.contains(expect), "{what}: {body}");
        assert!(
            !body.contains("root:"),
            "{what}: file contents leaked: {body}"
        );
    }
    assert!(!std::path::Path::new("/tmp/owned.jsonl").exists());
    // A file inside the directory that does not parse: named, never quoted.
    std::fs::write(
        files.join("secret.jsonl"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    let (code, body) = server.post("/api/v3/topologies", source("secret.jsonl", "jsonl"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("does not parse") && !body.contains("root:x"),
        "{body}"
    );

    // Inside the directory, sources and sinks work as before.
    let yaml = "name: copy\nsources:\n  s: { type: file, path: in.jsonl, format: jsonl }\nsinks:\n  o: { inputs: [s], type: file, path: out.jsonl, format: jsonl }\n";
    let (code, body) = server.post("/api/v3/topologies", yaml);
    assert_eq!(code, 201, "{body}");
    let out = files.join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the copy did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }

    // http sinks: no loopback or private address unless allowed.
    for url in [
        "http://127.0.0.1:9/x".to_string(),
        "http://localhost:9/x".to_string(),
        "http://169.254.169.254/latest".to_string(),
        "http://10.0.0.1/x".to_string(),
        format!("{}/api/v3/configure/database", server.base),
    ] {
        let yaml = format!("{SEQ}sinks:\n  o: {{ inputs: [s], type: http, url: \"{url}\" }}\n");
        let (code, body) = server.post("/api/v3/topologies", yaml);
        assert_eq!(code, 400, "{url}: {body}");
        assert!(body.contains("not a public address"), "{url}: {body}");
    }
}

#[test]
fn an_allowed_http_sink_host_is_reachable() {
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = std::sync::Arc::clone(&got);
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in receiver.incoming().take(1) {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = vec![0u8; 65536];
            let mut text = String::new();
            while !text.contains("\"value\":9") {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            *kept.lock().unwrap() = text;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &["--http-sink-allow", "127.0.0.1"]);
    let yaml = format!(
        "{SEQ}sinks:\n  o: {{ inputs: [s], type: http, url: \"http://127.0.0.1:{port}/hook\" }}\n"
    );
    let (code, body) = server.post("/api/v3/topologies", yaml);
    assert_eq!(code, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !got.lock().unwrap().contains("\"value\":9") {
        assert!(Instant::now() < deadline, "nothing posted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn query_results_stay_within_the_time_and_size_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        tmp.path(),
        &["--query-timeout-secs", "2", "--max-result-bytes", "1000000"],
    );
    assert_eq!(server.write_v3("db", "m v=1 1").0, 204);

    // A result far larger than anything a client reads in time: the answer starts, then
    // ends at the time limit with an incomplete body instead of running on.
    let started = Instant::now();
    let resp = client()
        .get(server.url("/api/v3/query_sql"))
        .query(&[
            ("db", "db"),
            ("q", "SELECT * FROM generate_series(1, 200000000)"),
            ("format", "csv"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.bytes();
    let took = started.elapsed();
    assert!(body.is_err(), "a cut-off answer must not look complete");
    assert!(
        took < Duration::from_secs(15),
        "ran {took:?} past a 2 s limit"
    );
    alive(&server);

    // Formats that cannot stream are bounded by --max-result-bytes.
    let (code, body) =
        server.query_raw("db", "SELECT * FROM generate_series(1, 1000000)", "parquet");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("--max-result-bytes"), "{body}");

    // Streamed answers are whole and exact when they fit the time.
    let (code, body) = server.query_raw(
        "db",
        "SELECT value FROM generate_series(1, 50000) ORDER BY value",
        "json",
    );
    assert_eq!(code, 200);
    let rows: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.len(), 50000);
    assert_eq!(rows[49999]["value"], 50000);
    let (code, body) = server.query_raw("db", "SELECT * FROM m WHERE v > 5", "csv");
    assert_eq!(code, 200);
    assert_eq!(String::from_utf8_lossy(&body), "v,time\n");
    let (code, body) = server.query_raw("db", "SELECT * FROM m WHERE v > 5", "json");
    assert_eq!(
        (code, String::from_utf8_lossy(&body).into_owned()),
        (200, "[]".into())
    );
}

#[test]
fn smaller_refusals_say_what_was_wrong_in_json() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &["--max-request-bytes", "20000000"]);

    // 200,000 bad lines: the first 100 listed, the rest counted, nothing huge.
    let body = "m v=\n".repeat(200_000);
    let (code, answer) = server.write_v3("db", &body);
    assert_eq!(code, 400);
    assert!(answer.len() < 100_000, "{} bytes", answer.len());
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 100);
    assert_eq!(v["omitted_errors"], 199_900);
    assert!(
        v["error"].as_str().unwrap().contains("200000 bad lines"),
        "{answer}"
    );

    // A word where a value belongs is named for what it looks like.
    let (code, answer) = server.write_v3("db", "m v=tru 1");
    assert_eq!(code, 400);
    assert!(
        answer.contains("no boolean (true, false") && !answer.contains("unsigned"),
        "{answer}"
    );

    // Query-string errors are JSON like every other error.
    for path in [
        "/api/v3/write_lp?db=db&accept_partial=maybe",
        "/api/v3/topics/t/records?partition=-1",
    ] {
        let method = if path.contains("write_lp") {
            "POST"
        } else {
            "GET"
        };
        let (code, answer) = server.request(method, path, None);
        assert_eq!(code, 400, "{path}: {answer}");
        let v: Value =
            serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{path}: not JSON: {answer}"));
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid query string"),
            "{answer}"
        );
    }

    // Minutes and hours are v1's; v2 and v3 refuse them rather than guess.
    let (code, answer) = server.post("/api/v3/write_lp?db=db&precision=h", "m v=1 1");
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("v1 API"), "{answer}");
    let (code, _) = server.post("/write?db=db&precision=h", "m v=1 1");
    assert_eq!(code, 204);
    let rows = server.query("db", "SELECT CAST(time AS BIGINT) AS t FROM m");
    assert_eq!(rows[0]["t"], 3_600_000_000_000i64);

    // Unknown routes say what exists; Flux and InfluxQL point at SQL.
    for (method, path, status, says) in [
        ("POST", "/api/v2/query", 501, "/api/v3/query_sql"),
        ("GET", "/query?q=SHOW+DATABASES", 501, "/api/v3/query_sql"),
        ("GET", "/api/v2/buckets", 501, "/api/v3/configure/database"),
        ("GET", "/", 404, "no such endpoint"),
    ] {
        let (code, answer) = server.request(method, path, None);
        assert_eq!(code, status, "{path}: {answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert!(v["error"].as_str().unwrap().contains(says), "{answer}");
        assert!(v["endpoints"].as_array().unwrap().len() > 5, "{answer}");
    }

    // A regex delete predicate is refused, not answered 204 having deleted nothing.
    let (code, answer) = server.post(
        "/api/v2/delete?bucket=db",
        r#"{"start":"1970-01-01T00:00:00Z","stop":"2030-01-01T00:00:00Z","predicate":"host=~/a/"}"#,
    );
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer.contains("regular expressions are not supported"),
        "{answer}"
    );

    // The server's own database and names with control characters are refused.
    let (code, answer) = server.write_v3("_internal", "m v=1 1");
    assert_eq!(code, 400);
    assert!(answer.contains("server's own metrics"), "{answer}");
    let (code, answer) = server.write_v3("db", "bad\u{0}name v=1 1\nm,ta\u{1}g=x v=1 2\n");
    assert_eq!(code, 400);
    assert!(answer.contains("control character"), "{answer}");
    assert!(answer.contains("\"line_number\":2"), "{answer}");
}
