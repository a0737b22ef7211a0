//! Every limit in docs/configuration.md, triggered through the real server: each one gives
//! its documented error, and what was accepted before stays readable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Sends raw bytes and reads what comes back until the server closes or `wait` passes.
fn raw(s: &Server, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut c = TcpStream::connect(addr(s)).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    c.write_all(bytes).unwrap();
    read_until_closed(&mut c)
}

/// What the server sent, and whether it closed the connection.
fn read_until_closed(c: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// Reads one response (headers and a `content-length` body) off a kept-alive connection.
fn read_response(c: &mut TcpStream) -> String {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    if let Some(data) = v.get("data") {
        return data[0]["error_message"].as_str().unwrap().to_string();
    }
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn write_limits_give_their_documented_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        tmp.path(),
        &[
            "--max-request-bytes",
            "4000",
            "--max-line-bytes",
            "300",
            "--max-fields-per-line",
            "3",
            "--max-columns-per-table",
            "5",
            "--max-tables-per-database",
            "2",
            "--max-databases",
            "2",
        ],
    );
    assert_eq!(s.write_v3("a", "t1,host=h f=1 1").0, 204);

    // --max-request-bytes: 413, before or after gzip.
    let big = format!("t1,host=h f=1 1\n{}", "t1,host=h f=2 2\n".repeat(300));
    let (status, body) = s.write_v3("a", &big);
    assert_eq!(status, 413);
    assert_eq!(
        error_of(&body),
        "request body exceeds the limit of 4000 bytes"
    );

    // --max-line-bytes and --max-fields-per-line: the line is refused, the others written.
    let long = format!("t1,host=h s=\"{}\" 2", "x".repeat(400));
    let (status, body) = s.write_v3("a", &format!("t1,host=h f=3 3\n{long}"));
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "line is 416 bytes, more than the limit of 300"
    );
    let (status, body) = s.write_v3("a", "t1,host=h a=1,b=2,c=3,d=4 4");
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "line has 4 fields, more than the limit of 3"
    );

    // --max-columns-per-table: host, f, time are there; two more fit, a third does not.
    assert_eq!(s.write_v3("a", "t1,host=h g=1,k=1 5").0, 204);
    let (status, body) = s.write_v3("a", "t1,host=h m=1 6");
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "table \"t1\" would have more than 5 columns"
    );

    // --max-tables-per-database: t1 and t2 fit; t3 does not, in the same request or later.
    let (status, body) = s.write_v3("a", "t2 f=1 1\nt3 f=1 1\nt2 f=2 2");
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "table \"t3\" would be one more than the database's limit of 2 tables"
    );
    assert_eq!(s.write_v3("a", "t4 f=1 1").0, 400);
    assert_eq!(s.count("a", "t2"), 2);

    // --max-databases: a and b fit; c does not.
    assert_eq!(s.write_v3("b", "t f=1 1").0, 204);
    let (status, body) = s.write_v3("c", "t f=1 1");
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "cannot create database \"c\": the node already has the maximum of 2 databases"
    );

    // Everything accepted along the way is there.
    assert_eq!(s.count("a", "t1"), 3);
    let metrics = s.request("GET", "/metrics", None).1;
    assert!(
        metrics.contains("tidemark_write_errors_total{kind=\"too_large\"} 1"),
        "{metrics}"
    );
}

#[test]
fn slow_clients_are_disconnected_and_connections_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        tmp.path(),
        &[
            "--http-header-timeout-secs",
            "1",
            "--http-body-timeout-secs",
            "1",
            "--max-connections",
            "3",
        ],
    );
    // Headers that never end: the connection is closed after the header timeout.
    let started = Instant::now();
    let (_, closed) = raw(
        &s,
        b"GET /ping HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(closed, "a client trickling headers keeps its connection");
    assert!(started.elapsed() < Duration::from_secs(8));

    // A body that never arrives in full: 408.
    let (answer, _) = raw(
        &s,
        b"POST /api/v3/write_lp?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nt f=1 1\n",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within 1 s"), "{answer}");
    // Nothing of it was written.
    assert_eq!(
        s.request("GET", "/api/v3/query_sql?db=x&q=SELECT+1", None)
            .0,
        404
    );

    // Three idle connections hold every slot; a fourth is answered 503 and closed. The
    // first is one that saw itself alone in the connection gauge: earlier connections
    // close asynchronously, and one still open would take a slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let mut c = TcpStream::connect(addr(&s)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        if read_response(&mut c).contains("tidemark_http_connections 1\n") {
            break c;
        }
        assert!(Instant::now() < deadline, "earlier connections stay open");
        std::thread::sleep(Duration::from_millis(50));
    };
    let held: Vec<TcpStream> = std::iter::once(first)
        .chain((0..2).map(|_| TcpStream::connect(addr(&s)).unwrap()))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (answer, closed) = raw(
        &s,
        b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("maximum of 3 connections"), "{answer}");
    assert!(closed);
    // The idle connections are closed by the server once the header timeout passes, and
    // the slots come back.
    for mut c in held {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (_, closed) = read_until_closed(&mut c);
        assert!(
            closed,
            "an idle connection was kept past the header timeout"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (answer, _) = raw(
            &s,
            b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        if answer.starts_with("HTTP/1.1 204") {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back: {answer}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // At least the one above (a retry can race the closing of the held connections).
    let metrics = s.request("GET", "/metrics", None).1;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tidemark_http_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{metrics}");
}

#[test]
fn query_limits_give_their_documented_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lp = String::new();
    for i in 0..50_000 {
        lp.push_str(&format!("t,k=k{} s=\"{:0>40}\" {i}\n", i % 10, i));
    }
    let s = Server::start(tmp.path(), &["--query-memory-mb", "1"]);
    assert_eq!(s.write_v3("db", &lp).0, 204);

    // --query-memory-mb: the build side of a hash join (which cannot spill) is larger
    // than 1 MiB.
    let (status, body) = s.query_raw(
        "db",
        "SELECT count(*) FROM t a JOIN t b ON a.s = b.s",
        "json",
    );
    let body: String = String::from_utf8_lossy(&body).chars().take(500).collect();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more memory than the limit"), "{body}");

    drop(s);

    let s = Server::start_on(
        tmp.path().join("data2"),
        ["--query-timeout-secs", "1", "--max-concurrent-queries", "1"]
            .map(String::from)
            .to_vec(),
    );
    assert_eq!(s.write_v3("db", &lp).0, 204);
    // --query-timeout-secs: 408; meanwhile --max-concurrent-queries turns others away.
    // 250M joined rows: seconds of work, in small steps.
    let slow = "SELECT count(*) FROM t a JOIN t b ON a.k = b.k";
    let base = s.base.clone();
    let runner = std::thread::spawn(move || {
        let client = common::client();
        loop {
            let started = Instant::now();
            let resp = client
                .get(format!("{base}/api/v3/query_sql"))
                .query(&[("db", "db"), ("q", slow)])
                .send()
                .unwrap();
            // The probe below may hold the only slot for a moment.
            if resp.status().as_u16() != 503 {
                return (
                    resp.status().as_u16(),
                    resp.text().unwrap(),
                    started.elapsed(),
                );
            }
        }
    });
    let mut saw_busy = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !saw_busy && !runner.is_finished() {
        let (status, body) = s.query_raw("db", "SELECT 1", "json");
        if status == 503 {
            assert!(String::from_utf8_lossy(&body).contains("too many concurrent queries"));
            saw_busy = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body, took) = runner.join().unwrap();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("time limit of 1s"), "{body}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        saw_busy,
        "a second query ran while the first held the only slot"
    );
    // The slot comes back once the aborted query has really stopped (at its next yield).
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.query_raw("db", "SELECT 1", "json").0 == 503 {
        assert!(
            Instant::now() < deadline,
            "the timed-out query never stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.query("db", "SELECT count(*) AS n FROM t")[0]["n"], 50_000);
}

#[test]
fn topic_limits_give_their_documented_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        tmp.path(),
        &["--max-topics", "1", "--max-topic-partitions", "4"],
    );
    let create = |body: &str| s.request("POST", "/api/v3/topics", Some(body));

    // --max-topic-partitions: 1 to 4.
    for (partitions, status) in [(0, 400), (5, 400), (4, 201)] {
        let (got, body) = create(&format!(
            r#"{{"name": "t{partitions}", "partitions": {partitions}}}"#
        ));
        assert_eq!(got, status, "{body}");
        if status == 400 {
            assert_eq!(
                error_of(&body),
                format!("invalid request: a topic has 1 to 4 partitions, not {partitions}")
            );
        }
    }
    // --max-topics: t4 fits; a second does not.
    let (status, body) = create(r#"{"name": "other", "partitions": 1}"#);
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "cannot create topic \"other\": the node already has the maximum of 1 topics"
    );
    // Names follow the database rules.
    let (status, body) = create(r#"{"name": "../x"}"#);
    assert_eq!(status, 400);
    assert!(
        error_of(&body).starts_with("invalid request: invalid topic name \"../x\""),
        "{body}"
    );

    // A key over 64 KiB is refused, and the good record before it is not appended either.
    let big = "k".repeat(70_000);
    let (status, body) = s.post(
        "/api/v3/topics/t4/records",
        format!("{{\"value\": 1}}\n{{\"key\": \"{big}\", \"value\": 2}}\n"),
    );
    assert_eq!(status, 400);
    assert_eq!(
        error_of(&body),
        "invalid request: record 2: its key is 70000 bytes, more than the 65536 a key may have"
    );
    let info: serde_json::Value =
        serde_json::from_str(&s.request("GET", "/api/v3/topics/t4", None).1).unwrap();
    assert!(
        info["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["end_offset"] == 0),
        "{info}"
    );
}
