//! Topologies inside the server: deploy the downsampling topology over HTTP, write line
//! protocol, query the rollup with SQL; then restart cleanly and after SIGKILL, and check
//! that the rollup carries on from where it was, with no row lost or doubled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// 2026-01-01T00:00:00Z in ns.
const T0: i64 = 1_767_225_600_000_000_000;
const S: i64 = 1_000_000_000;

const ROLLUP: &str = "name: cpu_rollup
sources:
  cpu_in:
    type: table_stream
    database: metrics
    table: cpu
    from: earliest
    event_time: time
    watermark: { max_out_of_orderness: 5s }
transforms:
  per_1m:
    inputs: [cpu_in]
    type: window
    key_by: [host]
    window: { tumbling: 1m }
    aggregates: { avg_user: avg(usage_user), max_user: max(usage_user), n: count(*) }
    # Two tasks, each owning some hosts: checkpoints align across both.
    parallelism: 2
sinks:
  store: { inputs: [per_1m], type: table, database: metrics, table: cpu_1m }
";

fn write(server: &Server, lines: &[(&str, f64, i64)]) {
    let lp: Vec<String> = lines
        .iter()
        .map(|(host, v, t)| format!("cpu,host={host} usage_user={v} {t}"))
        .collect();
    let (status, body) = server.write_v3("metrics", &lp.join("\n"));
    assert!(status == 204 || status == 200, "{status} {body}");
}

/// The rollup's rows as (host, minute, avg, max, n), sorted.
fn rollup(server: &Server) -> Vec<(String, i64, f64, f64, i64)> {
    let (status, body) = server.query_raw(
        "metrics",
        "SELECT host, CAST(time AS BIGINT) AS t, avg_user, max_user, n FROM cpu_1m ORDER BY t, host",
        "json",
    );
    if status != 200 {
        // The table appears with the first rollup row.
        return Vec::new();
    }
    let rows: Vec<Value> = serde_json::from_slice(&body).expect("json");
    rows.iter()
        .map(|r| {
            (
                r["host"].as_str().expect("host").to_string(),
                (r["t"].as_i64().expect("t") - T0) / (60 * S),
                r["avg_user"].as_f64().expect("avg"),
                r["max_user"].as_f64().expect("max"),
                r["n"].as_i64().expect("n"),
            )
        })
        .collect()
}

fn wait_for_rows(server: &Server, n: usize) -> Vec<(String, i64, f64, f64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = rollup(server);
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(server: &Server) -> Value {
    let (code, body) = server.request("GET", "/api/v3/topologies/cpu_rollup", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status json")
}

/// Waits until a checkpoint newer than `after` is written; returns its epoch.
fn wait_for_checkpoint(server: &Server, after: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let epoch = status(server)["last_checkpoint"].as_u64().expect("epoch");
        if epoch > after {
            return epoch;
        }
        assert!(Instant::now() < deadline, "no checkpoint after {after}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn downsampling_topology_survives_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let args = vec!["--topology-checkpoint-secs".to_string(), "1".to_string()];
    let server = Server::start_on(tmp.path().join("data"), args.clone());

    // A table stream needs its table: deploying first says so, at the source's line.
    let (code, body) = server.post("/api/v3/topologies", ROLLUP);
    assert_eq!(code, 400, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["problems"][0]["line"], 3, "{body}");
    assert!(
        err["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("table metrics.cpu does not exist yet"),
        "{body}"
    );

    // Minutes 0 and 1 for two hosts, and one row in minute 2 that moves time on.
    let mut first = Vec::new();
    for k in 0..12 {
        first.push(("a", k as f64, T0 + k * 10 * S));
        first.push(("b", 100.0 - k as f64, T0 + k * 10 * S));
    }
    first.push(("a", 50.0, T0 + 130 * S));
    write(&server, &first);

    let (code, body) = server.post("/api/v3/topologies", ROLLUP);
    assert_eq!(code, 201, "{body}");
    let (code, body) = server.post("/api/v3/topologies", ROLLUP);
    assert_eq!(code, 409, "{body}");
    let bad = ROLLUP.replace("max(usage_user)", "max(usage_sys)");
    let (code, body) = server.post("/api/v3/topologies", bad.replace("cpu_rollup", "bad"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("usage_sys"), "{body}");
    let looped = ROLLUP
        .replace("table: cpu_1m", "table: cpu")
        .replace("cpu_rollup", "looped");
    let (code, body) = server.post("/api/v3/topologies", looped);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("which this topology also streams"), "{body}");

    let rows = wait_for_rows(&server, 4);
    let avg = |from: f64| (0..6).map(|k| from + k as f64).sum::<f64>() / 6.0;
    assert_eq!(
        rows,
        vec![
            ("a".into(), 1, avg(0.0), 5.0, 6),
            ("b".into(), 1, 100.0 - avg(0.0), 100.0, 6),
            ("a".into(), 2, avg(6.0), 11.0, 6),
            ("b".into(), 2, 100.0 - avg(6.0), 94.0, 6),
        ],
        "rows are stamped with their window's end"
    );

    let s = status(&server);
    assert_eq!(s["state"], "running", "{s}");
    let source = &s["nodes"][0];
    assert_eq!(source["name"], "cpu_in");
    assert_eq!(source["rows_out"], 25, "{s}");
    assert_eq!(source["lag_records"], 0, "{s}");
    assert!(
        source["watermark"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T00:02:05"),
        "{s}"
    );
    assert_eq!(s["nodes"][2]["rows_in"], 4, "{s}");
    let (code, list) = server.request("GET", "/api/v3/topologies", None);
    assert_eq!(code, 200);
    assert!(list.contains("\"cpu_rollup\""), "{list}");
    let (_, metrics) = server.request("GET", "/metrics", None);
    assert!(
        metrics
            .contains("tidemark_topology_rows_in_total{topology=\"cpu_rollup\",node=\"store\"} 4"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"));

    // A clean restart: the open window of minute 2 (one row of host a) comes back from
    // the final checkpoint and takes the rows written after the restart.
    assert!(server.terminate().success());
    let server = Server::start_on(tmp.path().join("data"), args.clone());
    assert_eq!(status(&server)["state"], "running");
    write(
        &server,
        &[("a", 70.0, T0 + 140 * S), ("b", 10.0, T0 + 190 * S)],
    );
    let rows = wait_for_rows(&server, 5);
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[4], ("a".into(), 3, 60.0, 70.0, 2));

    // SIGKILL after a checkpoint: the rows after it are read again and the windows they
    // update are written again, onto the same rows.
    let epoch = status(&server)["last_checkpoint"].as_u64().unwrap();
    write(&server, &[("b", 30.0, T0 + 200 * S)]);
    wait_for_checkpoint(&server, epoch);
    let server = server.crash_and_restart();
    write(&server, &[("a", 1.0, T0 + 250 * S)]);
    let rows = wait_for_rows(&server, 6);
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert_eq!(rows[5], ("b".into(), 4, 20.0, 30.0, 2));

    // Removing it stops it and forgets it, also across a restart.
    let (code, body) = server.request("DELETE", "/api/v3/topologies/cpu_rollup", None);
    assert_eq!(code, 200, "{body}");
    let (code, _) = server.request("GET", "/api/v3/topologies/cpu_rollup", None);
    assert_eq!(code, 404);
    assert!(server.terminate().success());
    let server = Server::start_on(tmp.path().join("data"), args);
    let (code, _) = server.request("GET", "/api/v3/topologies/cpu_rollup", None);
    assert_eq!(code, 404);
    assert_eq!(rollup(&server).len(), 6);
}

/// Two table streams in a union: once one goes quiet for its `idle_timeout`, the other
/// alone moves time on and the window fires; without it the quiet one would hold the
/// watermark back for ever.
#[test]
fn an_idle_source_stops_holding_the_watermark_back() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[]);
    for table in ["ta", "tb"] {
        let (status, body) = server.write_v3("m", &format!("{table},host=h v=1 {T0}"));
        assert_eq!(status, 204, "{body}");
    }
    let source = |table: &str| {
        format!(
            "{{ type: table_stream, database: m, table: {table}, from: earliest, event_time: time,
         watermark: {{ idle_timeout: 500ms }} }}"
        )
    };
    let topology = format!(
        "name: both
sources:
  a: {}
  b: {}
transforms:
  all: {{ inputs: [a, b], type: union }}
  per_10s: {{ inputs: [all], type: window, window: {{ tumbling: 10s }}, aggregates: {{ n: count(*) }} }}
sinks:
  store: {{ inputs: [per_10s], type: table, database: m, table: counts }}
",
        source("ta"),
        source("tb")
    );
    let (code, body) = server.post("/api/v3/topologies", topology);
    assert_eq!(code, 201, "{body}");
    // Both go idle; then only `ta` gets rows, far enough on to close the first window.
    std::thread::sleep(Duration::from_millis(1200));
    let (status, body) = server.write_v3("m", &format!("ta,host=h v=2 {}", T0 + 25 * S));
    assert_eq!(status, 204, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let counts = loop {
        let (status, body) = server.query_raw(
            "m",
            "SELECT CAST(time AS BIGINT) AS t, n FROM counts ORDER BY t",
            "json",
        );
        if status == 200 {
            let rows: Vec<Value> = serde_json::from_slice(&body).unwrap();
            if !rows.is_empty() {
                break rows;
            }
        }
        assert!(Instant::now() < deadline, "no window fired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(counts[0]["t"].as_i64(), Some(T0 + 10 * S));
    assert_eq!(counts[0]["n"].as_i64(), Some(2), "{counts:?}");
}

/// A table stream read by two tasks: each reads half of the database's partitions, the
/// window sees every row once, and a restart resumes each task from its own offsets.
#[test]
fn a_table_stream_read_by_two_tasks_splits_the_partitions() {
    let tmp = tempfile::tempdir().unwrap();
    let args = vec!["--topology-checkpoint-secs".to_string(), "1".to_string()];
    let server = Server::start_on(tmp.path().join("data"), args.clone());
    let hosts: Vec<String> = (0..8).map(|h| format!("h{h}")).collect();
    let write_at = |server: &Server, seconds: &[i64]| {
        let lines: Vec<(&str, f64, i64)> = seconds
            .iter()
            .flat_map(|s| hosts.iter().map(move |h| (h.as_str(), 1.0, T0 + s * S)))
            .collect();
        write(server, &lines);
    };
    write_at(&server, &(0..10).collect::<Vec<_>>());
    let topology = "name: split
sources:
  cpu_in: { type: table_stream, database: metrics, table: cpu, from: earliest, event_time: time, parallelism: 2 }
transforms:
  per_10s:
    inputs: [cpu_in]
    type: window
    key_by: [host]
    window: { tumbling: 10s }
    aggregates: { n: count(*) }
sinks:
  store: { inputs: [per_10s], type: table, database: metrics, table: counts }
";
    let (code, body) = server.post("/api/v3/topologies", topology);
    assert_eq!(code, 201, "{body}");
    // Rows at 25 s move both tasks' watermarks past the first window.
    write_at(&server, &[25]);
    let counts = |server: &Server, want: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = server.query_raw(
                "metrics",
                "SELECT host, CAST(time AS BIGINT) AS t, n FROM counts ORDER BY t, host",
                "json",
            );
            let rows: Vec<(String, i64, i64)> = if status == 200 {
                let rows: Vec<Value> = serde_json::from_slice(&body).unwrap();
                rows.iter()
                    .map(|r| {
                        let t = (r["t"].as_i64().unwrap() - T0) / S;
                        (
                            r["host"].as_str().unwrap().to_string(),
                            t,
                            r["n"].as_i64().unwrap(),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if rows.len() >= want || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let expected = |window_end: i64, n: i64| {
        hosts
            .iter()
            .map(move |h| (h.clone(), window_end, n))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&server, 8), expected(10, 10));
    let (code, body) = server.request("GET", "/api/v3/topologies/split", None);
    assert_eq!(code, 200, "{body}");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["nodes"][0]["rows_out"], 88, "{s}");
    assert_eq!(s["nodes"][0]["lag_records"], 0, "{s}");

    // After a clean restart each task carries on from its own partitions' offsets: the
    // window of 20 s..30 s gets its rows once.
    assert!(server.terminate().success());
    let server = Server::start_on(tmp.path().join("data"), args);
    write_at(&server, &[27, 41]);
    let mut want = expected(10, 10);
    want.extend(expected(30, 2));
    assert_eq!(counts(&server, 16), want);
    assert!(server.terminate().success());
}

/// The rollup of a table as SQL computes it over the table (deduplicated: one row per
/// series and time, fields merged): (host, minute of the window's end, avg, max, count),
/// for windows ending at or before `until_minute`.
fn sql_rollup(server: &Server, until_minute: i64) -> Vec<(String, i64, f64, f64, i64)> {
    let rows = server.query(
        "metrics",
        &format!(
            "SELECT host, CAST(date_bin(INTERVAL '1 minute', time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) + 60000000000 AS t, \
             avg(usage_user) AS a, max(usage_user) AS m, count(*) AS n FROM cpu \
             WHERE CAST(time AS BIGINT) < {} GROUP BY 1, 2 ORDER BY t, host",
            T0 + until_minute * 60 * S
        ),
    );
    rows.iter()
        .map(|r| {
            (
                r["host"].as_str().expect("host").to_string(),
                (r["t"].as_i64().expect("t") - T0) / (60 * S),
                r["a"].as_f64().expect("avg"),
                r["m"].as_f64().expect("max"),
                r["n"].as_i64().expect("n"),
            )
        })
        .collect()
}

/// Waits until the rollup's windows ending at or before `until_minute` equal SQL's.
fn wait_for_agreement(server: &Server, until_minute: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = sql_rollup(server, until_minute);
        let got: Vec<_> = rollup(server)
            .into_iter()
            .filter(|r| r.1 <= until_minute)
            .collect();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the rollup {got:?} disagrees with SQL {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A table stream carries the table's upsert semantics: a point written again (whole or
/// in part) is one row of the table, and the rollup counts it once with its last values,
/// whether the overwrite comes in the same window, after the window fired (within its
/// allowed lateness) or across a restart and a crash.
#[test]
fn a_rollup_over_a_table_agrees_with_sql_over_it() {
    let tmp = tempfile::tempdir().unwrap();
    let args = vec!["--topology-checkpoint-secs".to_string(), "1".to_string()];
    let server = Server::start_on(tmp.path().join("data"), args.clone());
    let write_lines = |server: &Server, lines: &[String]| {
        let (status, body) = server.write_v3("metrics", &lines.join("\n"));
        assert_eq!(status, 204, "{body}");
    };
    let point = |host: &str, user: f64, t: i64| {
        format!(
            "cpu,host={host} usage_user={user},usage_system=1 {}",
            T0 + t * S
        )
    };
    // The README's cpu.lp twice, the second time with other values; and a duplicate
    // inside one request.
    write_lines(
        &server,
        &[
            point("a", 12.5, 0),
            point("b", 55.0, 0),
            point("a", 17.5, 10),
        ],
    );
    write_lines(
        &server,
        &[
            point("a", 12.5, 0),
            point("b", 55.0, 0),
            point("a", 17.5, 10),
            point("a", 30.0, 20),
            point("a", 40.0, 20),
        ],
    );
    // A write of another field only: usage_user keeps its value.
    write_lines(
        &server,
        &[format!("cpu,host=a usage_system=9 {}", T0 + 10 * S)],
    );
    let topology = ROLLUP.replace(
        "    parallelism: 2\n",
        "    parallelism: 2\n    allowed_lateness: 2m\n",
    );
    let (code, body) = server.post("/api/v3/topologies", topology);
    assert_eq!(code, 201, "{body}");
    // A row 70 s in fires minute 0.
    write_lines(&server, &[point("a", 1.0, 70)]);
    wait_for_agreement(&server, 1);
    assert_eq!(
        rollup(&server)[0],
        ("a".into(), 1, (12.5 + 17.5 + 40.0) / 3.0, 40.0, 3)
    );

    // After the window fired, within its lateness: its row is written again, corrected.
    write_lines(&server, &[point("a", 2.0, 0), point("b", 5.0, 30)]);
    wait_for_agreement(&server, 1);
    assert_eq!(
        rollup(&server)[0],
        ("a".into(), 1, (2.0 + 17.5 + 40.0) / 3.0, 40.0, 3)
    );

    // Across a clean restart (the panes come back from the final checkpoint)...
    assert!(server.terminate().success());
    let server = Server::start_on(tmp.path().join("data"), args.clone());
    write_lines(&server, &[point("a", 50.5, 10), point("b", 7.0, 30)]);
    wait_for_agreement(&server, 1);
    assert_eq!(
        rollup(&server)[0],
        ("a".into(), 1, (2.0 + 50.5 + 40.0) / 3.0, 50.5, 3)
    );

    // ...and a crash after a checkpoint: rows read again replace themselves.
    let epoch = status(&server)["last_checkpoint"].as_u64().unwrap();
    write_lines(&server, &[point("b", 8.0, 0)]);
    wait_for_checkpoint(&server, epoch);
    write_lines(&server, &[point("a", 3.0, 20)]);
    let server = server.crash_and_restart();
    write_lines(&server, &[point("b", 9.0, 40), point("a", 4.0, 130)]);
    wait_for_agreement(&server, 2);
    let rows = rollup(&server);
    assert_eq!(rows[1], ("b".into(), 1, (8.0 + 7.0 + 9.0) / 3.0, 9.0, 3));
    assert!(server.terminate().success());
}

/// A window keyed by an integer column writes one table row per key and window: its keys
/// become tags of the table. A table that already holds a key column as a field would
/// collapse rows of different keys, so such a sink is refused at validation.
#[test]
fn a_table_sink_keeps_every_row_a_window_emits() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[]);
    // 60 bids on 7 auctions over two 10 s windows, each at its own time.
    let lines: Vec<String> = (0..60)
        .map(|i| {
            format!(
                "bids,src=web auction={}i,price={} {}",
                i % 7,
                i * 3,
                T0 + i * S / 3
            )
        })
        .collect();
    let (status, body) = server.write_v3("nx", &lines.join("\n"));
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.write_v3("nx", &format!("taken auction=1i,n=1i {T0}"));
    assert_eq!(status, 204, "{body}");
    let topology = |name: &str, table: &str| {
        format!(
            "name: {name}
sources:
  bids: {{ type: table_stream, database: nx, table: bids, from: earliest, event_time: time }}
transforms:
  per_auction:
    inputs: [bids]
    type: window
    key_by: [auction]
    window: {{ tumbling: 10s }}
    aggregates: {{ n: count(*), highest: max(price) }}
sinks:
  store: {{ inputs: [per_auction], type: table, database: nx, table: {table} }}
"
        )
    };
    let (code, body) = server.post("/api/v3/topologies", topology("refused", "taken"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("\\\"auction\\\" identifies the input's rows")
            && body.contains("holds it as a Int64 field"),
        "{body}"
    );
    let (code, body) = server.post("/api/v3/topologies", topology("by_auction", "by_auction"));
    assert_eq!(code, 201, "{body}");
    // A bid at 30 s fires both windows.
    let (status, body) = server.write_v3(
        "nx",
        &format!("bids,src=web auction=1i,price=1 {}", T0 + 30 * S),
    );
    assert_eq!(status, 204, "{body}");
    let want = server.query(
        "nx",
        &format!(
            "SELECT CAST(auction AS VARCHAR) AS auction, count(*) AS n, max(price) AS highest FROM bids \
             WHERE CAST(time AS BIGINT) < {} GROUP BY auction, date_bin(INTERVAL '10 seconds', time) \
             ORDER BY 1, 2, 3",
            T0 + 20 * S
        ),
    );
    assert_eq!(want.len(), 14, "{want:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = server.query_raw(
            "nx",
            "SELECT auction, n, highest FROM by_auction ORDER BY 1, 2, 3",
            "json",
        );
        if status == 200 {
            let got: Vec<Value> = serde_json::from_slice(&body).unwrap();
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "{got:?} vs {want:?}");
        }
        assert!(
            Instant::now() < deadline,
            "no rows: {}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tags = server.query(
        "nx",
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'by_auction' \
         AND data_type LIKE 'Dictionary%' ORDER BY 1",
    );
    assert_eq!(tags, vec![serde_json::json!({"column_name": "auction"})]);
    assert!(server.terminate().success());
}

/// A generator deployed to a server is paced at `rate` rows per second of wall time
/// unless it says `throttle: false`: deploying an example does not flood the server.
#[test]
fn a_deployed_generator_is_paced_in_wall_time() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &[]);
    let topology = "name: gen
sources:
  seq: { type: generator, generator: sequence, rate: 20, event_time: time }
sinks:
  store: { inputs: [seq], type: table, database: g, table: seq }
";
    let started = Instant::now();
    let (code, body) = server.post("/api/v3/topologies", topology);
    assert_eq!(code, 201, "{body}");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = server.request("GET", "/api/v3/topologies/gen", None);
    assert_eq!(code, 200, "{body}");
    let s: Value = serde_json::from_str(&body).unwrap();
    let rows = s["nodes"][0]["rows_out"].as_u64().unwrap();
    let most = 20.0 * (started.elapsed().as_secs_f64() + 0.2);
    assert!(
        rows > 0 && (rows as f64) <= most,
        "{rows} rows, at most {most}"
    );
    let (code, body) = server.request("DELETE", "/api/v3/topologies/gen", None);
    assert_eq!(code, 200, "{body}");
    assert!(server.terminate().success());
}
