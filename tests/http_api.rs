//! The HTTP API end to end through the real binary: each write endpoint, partial writes,
//! type conflicts, gzip, limits, query formats and errors, read-only SQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;

use common::Server;
use serde_json::json;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn each_write_endpoint_round_trips_exact_values() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);

    let (st, body) = s.post(
        "/api/v3/write_lp?db=metrics",
        "cpu,host=a,region=eu usage=1.5,count=3i,big=18446744073709551615u,ok=true,note=\"hi \\\"there\\\"\" 1700000000000000000\n",
    );
    assert_eq!(st, 204, "{body}");
    let (st, body) = s.post(
        "/api/v2/write?bucket=metrics&org=any&precision=s",
        "cpu,host=b,region=eu usage=2.5,count=4i 1700000001\n",
    );
    assert_eq!(st, 204, "{body}");
    let (st, body) = s.post(
        "/write?db=metrics&precision=ms",
        "cpu,host=c,region=us usage=-3e2,count=-5i 1700000002000\n",
    );
    assert_eq!(st, 204, "{body}");

    let rows = s.query(
        "metrics",
        "SELECT host, region, usage, count, big, ok, note, CAST(time AS BIGINT) AS t FROM cpu ORDER BY host",
    );
    assert_eq!(
        rows,
        vec![
            json!({"host":"a","region":"eu","usage":1.5,"count":3,"big":18446744073709551615u64,"ok":true,"note":"hi \"there\"","t":1700000000000000000i64}),
            json!({"host":"b","region":"eu","usage":2.5,"count":4,"t":1700000001000000000i64}),
            json!({"host":"c","region":"us","usage":-300.0,"count":-5,"t":1700000002000000000i64}),
        ]
    );
}

#[test]
fn the_quick_start_query_works() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let lp = "cpu,host=a usage_user=10 1\ncpu,host=a usage_user=30 2\ncpu,host=b usage_user=5 1\n";
    assert_eq!(s.write_v3("metrics", lp).0, 204);
    let resp = common::client()
        .get(s.url(
            "/api/v3/query_sql?db=metrics&q=SELECT+host,avg(usage_user)+AS+avg+FROM+cpu+GROUP+BY+host+ORDER+BY+host&format=json",
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v, json!([{"host":"a","avg":20.0},{"host":"b","avg":5.0}]));
}

#[test]
fn v3_accepts_good_lines_and_reports_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let (st, body) = s.write_v3(
        "db",
        "m,t=a v=1 1\nm,t=b v= 2\nm,t=c v=3 3\nnot line protocol\n",
    );
    assert_eq!(st, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "partial write of line protocol occurred");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["line_number"], 2);
    assert_eq!(data[0]["original_line"], "m,t=b v= 2");
    assert!(
        data[0]["error_message"]
            .as_str()
            .unwrap()
            .contains("empty value")
    );
    assert_eq!(data[1]["line_number"], 4);
    assert_eq!(s.count("db", "m"), 2);

    // accept_partial=false: nothing from a batch with a bad line.
    let (st, body) = s.post(
        "/api/v3/write_lp?db=db&accept_partial=false",
        "m,t=x v=1 10\nm,t=y v=oops 11\n",
    );
    assert_eq!(st, 400);
    assert!(body.contains("parsing failed"), "{body}");
    assert_eq!(s.count("db", "m"), 2);
}

#[test]
fn v1_and_v2_reject_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    assert_eq!(s.write_v3("db", "m v=0 1\n").0, 204);
    let (st, body) = s.post("/api/v2/write?bucket=db", "m v=1 2\nm v=bad 3\n");
    assert_eq!(st, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "invalid");
    assert!(v["message"].as_str().unwrap().contains("line 2"), "{body}");
    let (st, body) = s.post("/write?db=db", "m v=1 2\nm v=bad 3\n");
    assert_eq!(st, 400);
    assert!(body.contains("line 2"), "{body}");
    assert_eq!(s.count("db", "m"), 1);
}

#[test]
fn a_type_conflict_rejects_that_line_only() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    assert_eq!(s.write_v3("db", "m,t=a v=1.5 1\n").0, 204);
    let (st, body) = s.write_v3("db", "m,t=b v=2i 2\nm,t=c v=3.5 3\nm,v=x w=1 4\n");
    assert_eq!(st, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{body}");
    let msg = data[0]["error_message"].as_str().unwrap();
    assert!(
        msg.contains("\"v\"") && msg.contains("a float field") && msg.contains("an integer field"),
        "{msg}"
    );
    assert_eq!(data[0]["line_number"], 1);
    let msg = data[1]["error_message"].as_str().unwrap();
    assert!(msg.contains("a tag"), "{msg}");
    let rows = s.query("db", "SELECT t, v FROM m ORDER BY t");
    assert_eq!(
        rows,
        vec![json!({"t":"a","v":1.5}), json!({"t":"c","v":3.5})]
    );
}

#[test]
fn gzip_bodies_and_size_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--max-request-bytes", "2000"]);
    let lp = "m,t=a v=1 1\nm,t=b v=2 2\n";
    let (st, body) = s.post_with(
        "/api/v2/write?bucket=db",
        &[("content-encoding", "gzip")],
        gzip(lp.as_bytes()),
    );
    assert_eq!(st, 204, "{body}");
    assert_eq!(s.count("db", "m"), 2);

    let (st, _) = s.post_with(
        "/api/v3/write_lp?db=db",
        &[("content-encoding", "gzip")],
        b"not gzip at all".to_vec(),
    );
    assert_eq!(st, 400);

    // Too large as sent.
    let big = "m,t=c v=1 3\n".repeat(500);
    let (st, body) = s.write_v3("db", &big);
    assert_eq!(st, 413, "{body}");
    // Small when sent, too large once decompressed.
    let (st, _) = s.post_with(
        "/api/v3/write_lp?db=db",
        &[("content-encoding", "gzip")],
        gzip(big.as_bytes()),
    );
    assert_eq!(st, 413);
    let (st, _) = s.post_with(
        "/api/v3/write_lp?db=db",
        &[("content-encoding", "br")],
        b"x".to_vec(),
    );
    assert_eq!(st, 415);
    assert_eq!(s.count("db", "m"), 2);
}

#[test]
fn duplicate_points_read_last_write_wins_per_field() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    assert_eq!(
        s.write_v3("db", "m,h=a x=1,y=1 100\nm,h=b x=7 100\n").0,
        204
    );
    assert_eq!(s.write_v3("db", "m,h=a x=2 100\n").0, 204);
    assert_eq!(s.write_v3("db", "m,h=a y=3 100\nm,h=a x=4 100\n").0, 204);
    let rows = s.query("db", "SELECT h, x, y FROM m ORDER BY h");
    assert_eq!(
        rows,
        vec![json!({"h":"a","x":4.0,"y":3.0}), json!({"h":"b","x":7.0})]
    );
}

#[test]
fn points_without_timestamps_get_the_server_time() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let before = chrono_now();
    assert_eq!(s.write_v3("db", "m v=1\n").0, 204);
    let after = chrono_now();
    let rows = s.query("db", "SELECT CAST(time AS BIGINT) AS t FROM m");
    let t = rows[0]["t"].as_i64().unwrap();
    assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[test]
fn query_formats_errors_and_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    assert_eq!(
        s.write_v3("db", "m,h=a v=1 1000000000\nm,h=b v=2 2000000000\n")
            .0,
        204
    );

    let q = "SELECT h, v FROM m ORDER BY h";
    let (st, csv) = s.query_raw("db", q, "csv");
    assert_eq!(st, 200);
    assert_eq!(String::from_utf8(csv).unwrap(), "h,v\na,1.0\nb,2.0\n");
    let (_, jsonl) = s.query_raw("db", q, "jsonl");
    assert_eq!(
        String::from_utf8(jsonl).unwrap(),
        "{\"h\":\"a\",\"v\":1.0}\n{\"h\":\"b\",\"v\":2.0}\n"
    );
    let (_, pretty) = s.query_raw("db", q, "pretty");
    let pretty = String::from_utf8(pretty).unwrap();
    assert!(pretty.contains("| h | v   |"), "{pretty}");
    let (_, parquet) = s.query_raw("db", q, "parquet");
    assert_eq!(&parquet[..4], b"PAR1");
    assert_eq!(&parquet[parquet.len() - 4..], b"PAR1");
    let (_, empty) = s.query_raw("db", "SELECT h FROM m WHERE v > 10", "json");
    assert_eq!(empty, b"[]");

    let (st, body) = s.query_raw("db", q, "xml");
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));

    // SHOW TABLES and information_schema.
    let rows = s.query("db", "SHOW TABLES");
    assert!(
        rows.iter()
            .any(|r| r["table_name"] == "m" && r["table_schema"] == "iox")
    );
    let rows = s.query(
        "db",
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'm' ORDER BY column_name",
    );
    assert_eq!(rows.len(), 3);

    // SQL errors carry DataFusion's message.
    let (st, body) = s.query_raw("db", "SELECT nope FROM m", "json");
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&body).contains("nope"));
    // ... as sentences: no Rust names, no chain of contexts.
    let (st, body) = s.query_raw("db", "SELECT h, v top FROM m", "json");
    assert_eq!(st, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        err["error"],
        "syntax error: Expected: end of statement, found: top at Line: 1, Column: 13"
    );
    let (st, body) = s.query_raw("db", "SELECT * FROM m WHERE time < 5", "json");
    assert_eq!(st, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let text = err["error"].as_str().unwrap();
    assert!(
        text.starts_with("Cannot infer common argument type") && !text.contains("caused by"),
        "{text}"
    );
    // No rows: the column headers still.
    let (st, body) = s.query_raw("db", "SELECT h, v FROM m WHERE v < -1000", "pretty");
    assert_eq!(st, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("| h | v |"), "{text}");
    let (st, _) = s.query_raw("missing", "SELECT 1", "json");
    assert_eq!(st, 404);

    // Read-only: no DDL, DML, COPY, external tables, or SET.
    let copy_target = tmp.path().join("out.csv");
    let copy = format!("COPY m TO '{}'", copy_target.display());
    for sql in [
        "CREATE TABLE x (a INT)",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO m (h, v) VALUES ('z', 1)",
        copy.as_str(),
        "DROP TABLE m",
        "SET datafusion.execution.batch_size = 1",
        "CREATE VIEW v AS SELECT 1",
    ] {
        let (st, body) = s.query_raw("db", sql, "json");
        assert_eq!(
            st,
            400,
            "{sql} was allowed: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Local files are not tables.
    let (st, _) = s.query_raw("db", "SELECT * FROM '/etc/passwd'", "json");
    assert_eq!(st, 400);
    assert_eq!(s.count("db", "m"), 2);
    assert!(!copy_target.exists(), "COPY wrote a file");
}

#[test]
fn ping_and_health() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let resp = common::client().get(s.url("/ping")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.headers().contains_key("x-influxdb-version"));
    let resp = common::client().head(s.url("/ping")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let resp = common::client().get(s.url("/health")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["status"], "pass");
}

#[test]
fn bad_parameters_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let (st, body) = s.post("/api/v3/write_lp", "m v=1");
    assert_eq!(st, 400);
    assert!(body.contains("db"), "{body}");
    let (st, body) = s.post("/api/v3/write_lp?db=x&precision=fortnight", "m v=1");
    assert_eq!(st, 400);
    assert!(body.contains("precision"), "{body}");
    let (st, body) = s.post("/api/v3/write_lp?db=../etc", "m v=1");
    assert_eq!(st, 400);
    assert!(body.contains("invalid database name"), "{body}");
    // A batch with no good line creates no database.
    let (st, _) = s.post("/api/v3/write_lp?db=empty", "garbage\n");
    assert_eq!(st, 400);
    let (st, _) = s.query_raw("empty", "SELECT 1", "json");
    assert_eq!(st, 404);
}

#[test]
fn a_full_write_buffer_makes_writes_wait_for_the_persister_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--buffer-limit-mb", "1"]);
    let client = common::client();
    for batch in 0..30 {
        let mut lp = String::new();
        for i in 0..2000 {
            lp.push_str(&format!(
                "m,host=h{i} v={batch}.5,s=\"padding padding\" {batch}\n"
            ));
        }
        let resp = client
            .post(s.url("/api/v3/write_lp?db=db"))
            .body(lp)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "batch {batch}");
    }
    // 30 batches of ~1 MiB each went through a 1 MiB buffer: the persister made room.
    assert_eq!(s.count("db", "m"), 30 * 2000);
    let files = s.query("db", "SELECT count(*) AS n FROM system.files");
    assert!(files[0]["n"].as_i64().unwrap() > 0, "{files:?}");
}

#[test]
fn every_log_line_of_a_request_carries_its_id() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--http-bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args([
            "--log-filter",
            "tidemark_connectors=debug,warn",
            "--data-dir",
        ])
        .arg(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("tidemark listening on ")
        .unwrap()
        .to_string();
    let client = common::client();
    let resp = client
        .post(format!("{base}/api/v3/write_lp?db=ids"))
        .header("x-request-id", "client-chosen-7")
        .body("m v=1 1\n")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-7");
    let resp = client
        .get(format!(
            "{base}/api/v3/query_sql?db=ids&q=SELECT+nope+FROM+m"
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 16, "{generated}");
    let _ = child.kill();
    let _ = child.wait();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |id: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    };
    let write = of("client-chosen-7");
    assert!(!write.is_empty(), "{logs}");
    assert_eq!(write[0]["span"]["path"], "/api/v3/write_lp");
    assert_eq!(
        write.last().unwrap()["fields"]["message"],
        "request finished"
    );
    let query = of(&generated);
    assert_eq!(
        query.last().unwrap()["fields"]["message"],
        "request refused",
        "{logs}"
    );
    assert_eq!(query.last().unwrap()["fields"]["status"], 400);
}

#[test]
fn the_node_writes_its_own_metrics_into_internal() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--internal-metrics-secs", "1"]);
    for i in 0..3 {
        assert_eq!(s.write_v3("m", &format!("cpu v={i} {i}")).0, 204);
    }
    assert_eq!(s.write_v3("m", "cpu v=\"x\" 9").0, 400);
    // Within a few ticks the counters show the writes above.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = s.query_raw(
            "_internal",
            "SELECT max(r.total) AS r, max(l.total) AS l FROM write_requests r, write_lines l",
            "json",
        );
        if status == 200 {
            let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            if rows[0]["r"].as_f64().unwrap_or(0.0) >= 4.0 {
                assert!(rows[0]["l"].as_f64().unwrap() >= 3.0, "{rows:?}");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no self-metrics: {status} {}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Labels are tags; histograms keep their sum and count.
    let errors = s.query(
        "_internal",
        "SELECT max(total) AS n FROM write_errors WHERE kind = 'bad_lines'",
    );
    assert_eq!(errors[0]["n"], 1.0);
    let columns = s.query(
        "_internal",
        "SELECT column_name FROM information_schema.columns \
         WHERE table_name = 'log_fsync_duration_seconds' ORDER BY column_name",
    );
    assert_eq!(
        columns,
        vec![
            serde_json::json!({"column_name": "count"}),
            serde_json::json!({"column_name": "sum"}),
            serde_json::json!({"column_name": "time"}),
        ]
    );
    // One table per metric family: `queries` and `query_duration_seconds`, no `query`.
    let tables: Vec<String> = s
        .query("_internal", "SHOW TABLES")
        .iter()
        .filter(|r| r["table_schema"] == "iox")
        .map(|r| r["table_name"].as_str().unwrap().to_string())
        .collect();
    for t in [
        "queries",
        "query_duration_seconds",
        "process_cpu_seconds",
        "http_requests",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t}: {tables:?}");
    }
    assert!(
        !tables.iter().any(|x| x == "query" || x == "write"),
        "{tables:?}"
    );
}

/// `process_*` and per-route request metrics are exported, and every family `/metrics`
/// serves is in docs/metrics.md (and every documented one is served).
#[test]
fn metrics_cover_the_process_and_each_route_and_match_the_docs() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    assert_eq!(s.write_v3("m", "cpu v=1 1").0, 204);
    assert_eq!(s.write_v3("m", "cpu v=\"x\" 2").0, 400);
    let (code, _) = s.request("GET", "/api/v3/topics/nope", None);
    assert_eq!(code, 404);
    let (code, _) = s.request("GET", "/no/such/route", None);
    assert_eq!(code, 404);
    assert_eq!(s.query_raw("m", "SELECT nope FROM cpu", "json").0, 400);
    let (_, text) = s.request("GET", "/metrics", None);
    for want in [
        "tidemark_http_requests_total{route=\"/api/v3/write_lp\",method=\"POST\",status=\"204\"} 1",
        "tidemark_http_requests_total{route=\"/api/v3/write_lp\",method=\"POST\",status=\"400\"} 1",
        "tidemark_http_requests_total{route=\"/api/v3/topics/{name}\",method=\"GET\",status=\"404\"} 1",
        "tidemark_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "tidemark_http_request_duration_seconds_count{route=\"/api/v3/write_lp\",method=\"POST\"} 2",
        "# TYPE process_cpu_seconds counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        "# TYPE tidemark_http_connections_accepted counter",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"),
    )
    .unwrap();
    // Documented names: the first column of the tables, without labels.
    let documented: std::collections::BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(|n| n.split('{').next().unwrap_or(n).to_string())
        .collect();
    let served: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            }
        })
        // Topology and topic families appear once one is deployed or created.
        .filter(|n| !n.starts_with("tidemark_topology_") && !n.starts_with("tidemark_topic_"))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(missing.is_empty(), "served but not documented: {missing:?}");
    let stale: Vec<_> = documented
        .difference(&served)
        .filter(|n| !n.starts_with("tidemark_topology_") && !n.starts_with("tidemark_topic_"))
        // Served by a server with --auth once a request is refused (tests/auth.rs).
        .filter(|n| *n != "tidemark_http_auth_failures_total")
        .collect();
    assert!(stale.is_empty(), "documented but not served: {stale:?}");
}

/// Logs written to a file have no colour codes, and a refused request's line says why.
#[test]
fn logs_to_a_file_are_plain_and_refusals_carry_their_reason() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("server.log");
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "--http-bind", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("TIDEMARK_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.trim().strip_prefix("tidemark listening on ") {
            break rest.to_string();
        }
    };
    let resp = common::client()
        .post(format!("{base}/api/v3/write_lp?db=m"))
        .body("cpu v=1 1\ncpu v=\"x\" 2")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = common::client()
        .get(format!("{base}/api/v3/query_sql?db=nope&q=SELECT+1"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // SIGTERM: a clean stop that flushes the log.
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a file:\n{text}");
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert!(
        refused.iter().any(|l| l.contains("status=400")
            && l.contains("reason=")
            && l.contains("partial write of line protocol occurred")),
        "{text}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("status=404") && l.contains("database \\\"nope\\\" not found")),
        "{text}"
    );
}
