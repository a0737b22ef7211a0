//! `tidemark topology validate|explain|run` through the binary, and the golden topologies
//! (through the binary, or in this process on a simulated clock).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::BIN;

const GOOD: &str = "name: hot_items
sources:
  bids:
    type: generator
    generator: bids
    event_time: date_time
    watermark: { max_out_of_orderness: 2s, idle_timeout: 30s }
transforms:
  cheap:
    inputs: [bids]
    sql: \"SELECT auction, price * 0.908 AS price_eur, date_time FROM input WHERE price < 1000\"
  per_auction:
    inputs: [cheap]
    type: window
    key_by: [auction]
    window: { sliding: { size: 10s, slide: 2s } }
    aggregates: { n: count(*), top: max(price_eur), p99: \"percentile(price_eur, 0.99)\" }
    allowed_lateness: 5s
    parallelism: 2
sinks:
  out: { inputs: [per_auction], type: stdout }
  late: { inputs: [per_auction.late], type: file, path: late.jsonl }
";

fn run(args: &[&str], file: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).arg(file).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_and_explain_a_topology_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("hot.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let (ok, stdout, stderr) = run(&["topology", "validate"], &file);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("topology \"hot_items\" is valid (5 nodes)"),
        "{stdout}"
    );

    let (ok, plan, stderr) = run(&["topology", "explain"], &file);
    assert!(ok, "{stderr}");
    for expected in [
        "topology hot_items: 5 nodes in 4 chains",
        "chain 1 (parallelism 1)\n  bids [generator bids at 1000 rows/s]",
        "  cheap [sql: SELECT auction, price * 0.908 AS price_eur, date_time FROM input WHERE price < 1000]",
        "      out: auction Int64, price_eur Float64, date_time Timestamp(ns, \"UTC\")",
        "chain 2 (parallelism 2)\n  <- cheap (chain 1): shuffle by hash(auction)",
        "per_auction [window sliding 10s every 2s by auction, n=count(*), top=max(price_eur), p99=percentile(price_eur, 0.99), lateness 5s]",
        "      event time: window_end",
        "  <- per_auction.late (chain 2): rebalance\n  late [file late.jsonl (Jsonl)]",
    ] {
        assert!(plan.contains(expected), "missing {expected:?} in\n{plan}");
    }
}

#[test]
fn every_problem_is_printed_with_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.yaml");
    let bad = GOOD
        .replace("inputs: [cheap]", "inputs: [chaep]")
        .replace("max(price_eur)", "max(price_usd)")
        .replace("type: stdout", "type: stdout, format: json");
    std::fs::write(&file, bad).unwrap();
    let (ok, stdout, stderr) = run(&["topology", "validate"], &file);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    let f = file.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{f}:13:14: transforms.per_auction: unknown input \"chaep\"; the sources and transforms are bids, cheap, per_auction").as_str(),
            format!("{f}:21:47: sinks.out: unknown key \"format\"; expected one of: type, inputs, parallelism").as_str(),
            "2 problem(s)",
        ],
        "{stderr}"
    );
    // With the input fixed, the column is checked against what `cheap` puts out.
    let bad = GOOD.replace("max(price_eur)", "max(price_usd)");
    std::fs::write(&file, bad).unwrap();
    let (ok, _, stderr) = run(&["topology", "explain"], &file);
    assert!(!ok);
    assert!(
        stderr.starts_with(&format!(
            "{f}:17:37: transforms.per_auction: unknown column \"price_usd\"; the input has auction, price_eur, date_time"
        )),
        "{stderr}"
    );
}

/// The golden cases: directories of tests/topologies, sorted; `simulated`: the ones
/// with a `timeline.txt`, which run in this process on a simulated clock.
fn golden_cases(simulated: bool) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/topologies");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("timeline.txt").exists() == simulated)
        .collect();
    cases.sort();
    cases
}

/// Copies a golden case's files into a fresh directory.
fn copy_case(case: &std::path::Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(case).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    tmp
}

/// Asserts that the sinks of a golden case wrote its expected rows (`expected.jsonl` for
/// `out.jsonl`, `expected_late.jsonl` for `late.jsonl`).
fn assert_expected_rows(case: &std::path::Path, dir: &std::path::Path) {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let topology = std::fs::read_to_string(case.join("topology.yaml")).unwrap();
    for (written, expected) in [
        ("out.jsonl", "expected.jsonl"),
        ("late.jsonl", "expected_late.jsonl"),
    ] {
        let expected = dir.join(expected);
        if !expected.exists() {
            continue;
        }
        let got = std::fs::read_to_string(dir.join(written)).unwrap_or_default();
        let want = std::fs::read_to_string(&expected).unwrap();
        let mut got: Vec<&str> = got.lines().collect();
        let mut want: Vec<&str> = want.lines().collect();
        // Rows from several tasks (parallel ones, or two sources feeding a join) meet in
        // no fixed order; which rows they are is fixed. Such topologies say so in their
        // first line.
        if topology.starts_with("# rows: unordered") {
            got.sort_unstable();
            want.sort_unstable();
        }
        assert_eq!(got, want, "{name}: {written}");
    }
}

/// Golden tests: each directory of tests/topologies holds a topology, its input files and
/// the rows its sinks must write. Event time comes from the files: nothing waits on the
/// clock.
#[test]
fn golden_topologies_write_their_expected_rows() {
    let cases = golden_cases(false);
    assert!(cases.len() >= 5, "{cases:?}");
    for case in cases {
        let tmp = copy_case(&case);
        let out = Command::new(BIN)
            .args(["topology", "run", "--quiet", "topology.yaml"])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // The summary ends with the run's throughput.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("ran ")
                && last.contains(" events from the sources, ")
                && last.ends_with(" events/s"),
            "{}: {stderr}",
            case.display()
        );
        assert_expected_rows(&case, tmp.path());
    }
}

/// Golden tests whose sources follow files that grow while they run (idle sources):
/// `timeline.txt` says, in seconds after the start, when a line is appended to which file
/// (`2.25 append a.jsonl {...}`) and when the topology is stopped (`22 stop`). The clock
/// is tokio's paused one, which jumps to the next timer whenever every task waits, so
/// idle timeouts and file polls happen at exact simulated times and nothing sleeps.
#[tokio::test(start_paused = true)]
async fn golden_topologies_on_a_simulated_clock() {
    use tidemark_engine::topology::{self, run};

    let cases = golden_cases(true);
    assert!(!cases.is_empty());
    for case in cases {
        let tmp = copy_case(&case);
        let name = case.display();
        // The topology's files are relative to the directory it runs in.
        let yaml = std::fs::read_to_string(tmp.path().join("topology.yaml"))
            .unwrap()
            .replace("path: ", &format!("path: {}/", tmp.path().display()));
        let v = topology::load(&yaml, &topology::NoTables)
            .await
            .unwrap_or_else(|p| panic!("{name}: {p:?}"));
        run::check_runnable(&v, false).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        let stats: Vec<_> = v.spec.nodes.iter().map(|_| Default::default()).collect();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let env = run::RunEnv {
            stop: Some(stop_rx),
            ..run::RunEnv::default()
        };
        let start = tokio::time::Instant::now();
        let running = tokio::spawn(async move { run::run(&v, &stats, env).await });
        let timeline = std::fs::read_to_string(tmp.path().join("timeline.txt")).unwrap();
        for step in timeline
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (at, what) = step.split_once(' ').unwrap();
            let at = std::time::Duration::from_secs_f64(at.parse().unwrap());
            tokio::time::sleep_until(start + at).await;
            assert!(!running.is_finished(), "{name}: ended before {step:?}");
            match what.split_once(' ') {
                Some(("append", rest)) => {
                    use std::io::Write;
                    let (file, line) = rest.split_once(' ').unwrap();
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(tmp.path().join(file))
                        .unwrap();
                    writeln!(f, "{line}").unwrap();
                }
                None if what == "stop" => {
                    stop_tx.send_replace(true);
                }
                _ => panic!("{name}: cannot read timeline step {step:?}"),
            }
        }
        let result = running.await.unwrap();
        assert!(result.is_ok(), "{name}: {result:?}");
        assert_expected_rows(&case, tmp.path());
    }
}

#[test]
fn run_refuses_what_cannot_run_yet_and_sql_that_is_not_row_by_row() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.yaml");
    std::fs::write(
        &file,
        "name: t
sources:
  bids: { type: generator, generator: bids, event_time: date_time, parallelism: 2 }
transforms:
  k: { inputs: [bids, bids], type: join, on: [auction], within: 1m }
sinks:
  store: { inputs: [k], type: table, database: m, table: bids }
  show: { inputs: [k], type: stdout, parallelism: 2 }
",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["topology", "run"], &file);
    assert!(!ok);
    let f = file.display();
    assert!(stderr.ends_with("2 problem(s)\n"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{f}:8:51: sinks.show: file and stdout sinks run with parallelism 1 (one writer)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{f}:7:3: sinks.store: table nodes run inside the server (POST the topology to /api/v3/topologies)"
        )),
        "{stderr}"
    );

    std::fs::write(
        &file,
        "name: t
sources:
  bids: { type: generator, generator: bids, event_time: date_time }
transforms:
  s: { inputs: [bids], sql: \"SELECT auction, count(*) FROM input GROUP BY auction\" }
sinks:
  out: { inputs: [s], type: stdout }
",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["topology", "validate"], &file);
    assert!(!ok);
    assert!(
        stderr.contains(
            "a sql transform runs row by row: SELECT expressions FROM input [WHERE condition]"
        ),
        "{stderr}"
    );
}

/// Bodies of the requests an endpoint accepted, and how many requests came.
type Bodies = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
type Requests = std::sync::Arc<std::sync::atomic::AtomicUsize>;

/// A tiny HTTP endpoint on a free local port: answers each POST with the next status of
/// `statuses` (then 200) and keeps the bodies of the ones it accepted.
fn endpoint(statuses: Vec<u16>) -> (String, Bodies, Requests) {
    endpoint_with(statuses, None)
}

/// [`endpoint`], speaking HTTPS with `tls` when given.
fn endpoint_with(
    statuses: Vec<u16>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> (String, Bodies, Requests) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
    let bodies = Bodies::default();
    let requests = Requests::default();
    let (kept, seen) = (bodies.clone(), requests.clone());
    fn answer(
        stream: impl Read + Write,
        statuses: &[u16],
        kept: &Bodies,
        seen: &Requests,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let status = statuses.get(n).copied().unwrap_or(200);
        if status == 200 {
            kept.lock().unwrap().push(String::from_utf8(body).unwrap());
        }
        let stream = reader.get_mut();
        write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
        )?;
        stream.flush()
    }
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            // A client that gives up (a refused certificate) is no failure of the endpoint.
            let _ = match &tls {
                Some(config) => match rustls::ServerConnection::new(config.clone()) {
                    Ok(conn) => answer(
                        rustls::StreamOwned::new(conn, stream),
                        &statuses,
                        &kept,
                        &seen,
                    ),
                    Err(_) => continue,
                },
                None => answer(stream, &statuses, &kept, &seen),
            };
        }
    });
    (url, bodies, requests)
}

/// `rows` sequence rows into an http sink posting to `url`, with the sink keys `extra`.
fn http_topology(url: &str, rows: u64, extra: &str) -> String {
    format!(
        "name: t
sources:
  seq: {{ type: generator, generator: sequence, rows: {rows} }}
sinks:
  hook: {{ inputs: [seq], type: http, url: \"{url}\", {extra} }}
"
    )
}

#[test]
fn http_sink_posts_json_batches_and_retries() {
    let (url, bodies, requests) = endpoint(vec![503, 200, 429]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.yaml");
    let topology = |url: &str| http_topology(url, 2500, "max_retries: 3");
    std::fs::write(&file, topology(&url)).unwrap();
    let (ok, _, stderr) = run(&["topology", "run"], &file);
    assert!(ok, "{stderr}");
    // 3 batches (1024, 1024, 452 rows), two of them after a retry.
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 5);
    let mut values = Vec::new();
    for body in bodies.lock().unwrap().iter() {
        let rows: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
        values.extend(rows.iter().map(|r| r["value"].as_i64().unwrap()));
    }
    assert_eq!(values, (0..2500).collect::<Vec<_>>());

    // An answer that retrying cannot fix fails the run, saying why.
    let (url, _, _) = endpoint(vec![400]);
    std::fs::write(&file, topology(&url)).unwrap();
    let (ok, _, stderr) = run(&["topology", "run"], &file);
    assert!(!ok);
    assert!(
        stderr.contains("refused a batch of 1024 rows: 400"),
        "{stderr}"
    );
    // Out of retries.
    let (url, _, requests) = endpoint(vec![500; 10]);
    std::fs::write(&file, topology(&url)).unwrap();
    let (ok, _, stderr) = run(&["topology", "run"], &file);
    assert!(!ok);
    assert!(stderr.contains("failed after 4 attempts: 500"), "{stderr}");
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 4);
}

/// An https sink trusts the system's roots and those of its `ca_file`: with the file
/// that signed the endpoint's certificate it posts, without it the run fails saying why.
#[test]
fn http_sink_posts_over_https_trusting_its_ca_file() {
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let signed = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, signed.cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![signed.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(signed.signing_key.serialize_der().into()),
        )
        .unwrap();
    let (url, bodies, _) = endpoint_with(vec![], Some(Arc::new(config)));
    let file = tmp.path().join("t.yaml");
    let trusting = format!("max_retries: 1, ca_file: {}", ca.display());
    std::fs::write(&file, http_topology(&url, 3, &trusting)).unwrap();
    let (ok, _, stderr) = run(&["topology", "run"], &file);
    assert!(ok, "{stderr}");
    let kept = bodies.lock().unwrap().clone();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&kept[0]).unwrap();
    assert_eq!(rows.len(), 3);

    // The system's roots alone do not know the endpoint's certificate.
    std::fs::write(&file, http_topology(&url, 3, "max_retries: 1")).unwrap();
    let (ok, _, stderr) = run(&["topology", "run"], &file);
    assert!(!ok);
    assert!(stderr.contains("failed after 2 attempts"), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
}

/// A Parquet file as a source: its columns come from the file's schema at validation,
/// its rows flow through a window.
#[test]
fn a_parquet_file_feeds_a_window() {
    use std::sync::Arc;

    use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    let tmp = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("host", DataType::Utf8, false),
        Field::new("v", DataType::Float64, false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
    ]));
    let t0 = 1_767_225_600_000_000_000i64;
    let s = 1_000_000_000i64;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec!["a", "b", "a", "a", "b"])),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
            Arc::new(
                TimestampNanosecondArray::from(vec![
                    t0,
                    t0 + s,
                    t0 + 5 * s,
                    t0 + 12 * s,
                    t0 + 13 * s,
                ])
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(tmp.path().join("in.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    std::fs::write(
        tmp.path().join("t.yaml"),
        "name: t
sources:
  input: { type: file, path: in.parquet, event_time: time }
transforms:
  per_10s: { inputs: [input], type: window, key_by: [host], window: { tumbling: 10s }, aggregates: { total: sum(v) } }
sinks:
  out: { inputs: [per_10s], type: file, path: out.jsonl }
",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["topology", "run", "--quiet", "t.yaml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = std::fs::read_to_string(tmp.path().join("out.jsonl")).unwrap();
    let got: Vec<(String, f64)> = rows
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["host"].as_str().unwrap().to_string(),
                v["total"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), 4.0),
            ("b".into(), 2.0),
            ("a".into(), 4.0),
            ("b".into(), 5.0)
        ]
    );
}

/// `topology run` on a followed line protocol file: rows appended while it runs come out
/// (a line only once its newline is written), and Ctrl-C ends the run cleanly.
#[test]
fn run_follows_a_growing_line_protocol_file_until_interrupted() {
    use std::io::{BufRead, Write};
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().unwrap();
    let lp = tmp.path().join("cpu.lp");
    std::fs::write(&lp, "cpu,host=a usage=1 1767225600\n").unwrap();
    std::fs::write(
        tmp.path().join("topology.yaml"),
        "name: tail
sources:
  cpu: { type: file, path: cpu.lp, precision: s, follow: true, event_time: time }
sinks:
  out: { inputs: [cpu], type: stdout }
",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["topology", "run", "--quiet", "topology.yaml"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rows) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_row = || {
        rows.recv_timeout(Duration::from_secs(20))
            .expect("a row within 20 s")
    };
    assert_eq!(
        next_row(),
        r#"{"host":"a","usage":1.0,"time":"2026-01-01T00:00:00Z"}"#
    );
    let mut file = std::fs::OpenOptions::new().append(true).open(&lp).unwrap();
    // Half a line: nothing comes out, and it is no error.
    file.write_all(b"cpu,host=b usage=").unwrap();
    assert!(rows.recv_timeout(Duration::from_millis(1500)).is_err());
    file.write_all(b"2 1767225601\ncpu,host=c usage=3 1767225602\n")
        .unwrap();
    assert_eq!(
        next_row(),
        r#"{"host":"b","usage":2.0,"time":"2026-01-01T00:00:01Z"}"#
    );
    assert_eq!(
        next_row(),
        r#"{"host":"c","usage":3.0,"time":"2026-01-01T00:00:02Z"}"#
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the run ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("cpu "), "{stderr}");
}

/// A generator with `throttle: true` makes `rate` rows per second of wall time (here
/// tokio's paused clock, so the test measures simulated time and never waits); without
/// it, `topology run` makes them as fast as it can.
#[tokio::test(start_paused = true)]
async fn a_throttled_generator_keeps_to_its_rate_in_wall_time() {
    use std::sync::atomic::Ordering;
    use tidemark_engine::topology::{self, run};

    for (throttle, parallelism) in [("true", 1), ("true", 2), ("false", 1)] {
        let yaml = format!(
            "name: paced
sources:
  seq: {{ type: generator, generator: sequence, rate: 200, rows: 1000, throttle: {throttle}, parallelism: {parallelism} }}
sinks:
  drop: {{ inputs: [seq], type: blackhole }}
"
        );
        let v = topology::load(&yaml, &topology::NoTables).await.unwrap();
        let stats: Vec<std::sync::Arc<run::NodeStats>> =
            v.spec.nodes.iter().map(|_| Default::default()).collect();
        let start = tokio::time::Instant::now();
        let seen = stats.clone();
        let running =
            tokio::spawn(async move { run::run(&v, &stats, run::RunEnv::default()).await });
        if throttle == "true" {
            // Half-way through its five seconds, about half the rows are out.
            tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
            let out = seen[0].rows_out.load(Ordering::Relaxed);
            assert!(
                (440..=560).contains(&out),
                "{throttle}/{parallelism}: {out} rows at 2.5 s"
            );
        }
        running.await.unwrap().unwrap();
        let took = start.elapsed().as_secs_f64();
        assert_eq!(seen[0].rows_out.load(Ordering::Relaxed), 1000);
        if throttle == "true" {
            assert!((4.8..5.3).contains(&took), "{parallelism}: {took} s");
        } else {
            assert!(took < 0.5, "unpaced took {took} s");
        }
    }
}
