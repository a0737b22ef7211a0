//! `tidemark load` against a running server: what it reports sent is what the server holds,
//! however the work is split, and the query set runs over it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, Server};

fn load(s: &Server, args: &[&str], report: &Path) -> (bool, String, serde_json::Value) {
    let out = Command::new(BIN)
        .arg("load")
        .args(args)
        .args(["--host", &s.base, "--report", report.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read(report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.success(), text, report)
}

#[test]
fn rows_reported_sent_are_the_rows_stored_however_the_load_is_split() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let data = ["--hosts", "20", "--span", "30m", "--seed", "5"];
    let report = tmp.path().join("a.json");
    let (ok, out, a) = load(
        &s,
        &[
            &[
                "write",
                "--db",
                "a",
                "--workers",
                "3",
                "--batch-size",
                "700",
            ][..],
            &data,
        ]
        .concat(),
        &report,
    );
    assert!(ok, "{out}");
    // 30 minutes at 10 s is 180 steps of 20 hosts.
    assert_eq!(a["rows_sent"], 3600, "{out}");
    assert_eq!(a["field_values_sent"], 36_000);
    assert_eq!(a["requests"], 6);
    assert!(out.contains("rows sent: 3600 of 3600"), "{out}");
    assert_eq!(s.count("a", "cpu"), 3600);

    let report = tmp.path().join("b.json");
    let (ok, out, b) = load(
        &s,
        &[
            &[
                "write",
                "--db",
                "b",
                "--workers",
                "1",
                "--batch-size",
                "5000",
                "--gzip",
            ][..],
            &data,
        ]
        .concat(),
        &report,
    );
    assert!(ok, "{out}");
    assert_eq!(b["rows_sent"], 3600);
    let digest = "SELECT count(*) AS n, count(DISTINCT hostname) AS hosts, sum(usage_user) AS u, \
                  sum(usage_guest_nice) AS g, min(time) AS t0, max(time) AS t1 FROM cpu";
    let da = s.query("a", digest);
    assert_eq!(da, s.query("b", digest), "same seed, same data");
    assert_eq!(da[0]["hosts"], 20);
    assert_eq!(da[0]["t0"], "2026-01-01T00:00:00Z");
    assert_eq!(da[0]["t1"], "2026-01-01T00:29:50Z");
}

#[test]
fn devops_writes_six_measurements() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let report = tmp.path().join("r.json");
    let (ok, out, r) = load(
        &s,
        &[
            "write",
            "--db",
            "d",
            "--use-case",
            "devops",
            "--hosts",
            "3",
            "--rows",
            "1000",
        ],
        &report,
    );
    assert!(ok, "{out}");
    assert_eq!(r["rows_sent"], 1000);
    let total: i64 = ["cpu", "diskio", "disk", "kernel", "mem", "net"]
        .iter()
        .map(|t| s.count("d", t))
        .sum();
    assert_eq!(total, 1000);
    assert_eq!(
        s.count("d", "disk"),
        167,
        "1000 rows of 18 per step: 55 steps and 10 rows"
    );
}

#[test]
fn the_query_set_runs_over_the_written_data() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let data = ["--db", "q", "--hosts", "12", "--span", "2h"];
    let (ok, out, _) = load(
        &s,
        &[&["write"][..], &data].concat(),
        &tmp.path().join("w.json"),
    );
    assert!(ok, "{out}");
    let (ok, out, r) = load(
        &s,
        &[&["queries", "--runs", "2"][..], &data].concat(),
        &tmp.path().join("q.json"),
    );
    assert!(ok, "{out}");
    let kinds = r.as_array().unwrap();
    assert_eq!(kinds.len(), 15, "{out}");
    let by_kind = |k: &str| kinds.iter().find(|r| r["kind"] == k).unwrap().clone();
    for k in kinds {
        assert_eq!(k["errors"], 0, "{k}");
        assert_eq!(k["runs"], 2);
        assert!(k["latency"]["p50_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(by_kind("lastpoint")["rows"], 12);
    assert_eq!(by_kind("groupby-orderby-limit")["rows"], 5);
    // 12 hosts, a 12-hour window clamped to the 2 hours of data: 2 hours x 12 hosts.
    assert_eq!(by_kind("double-groupby-all")["rows"], 24);

    let out = Command::new(BIN)
        .args([
            "load",
            "queries",
            "--print",
            "--queries",
            "lastpoint,high-cpu-1",
        ])
        .args(["--host", &s.base])
        .args(data)
        .output()
        .unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.as_array().unwrap().len(), 10);
    let high = s.query("q", printed[5]["sql"].as_str().unwrap());
    assert!(
        high.iter()
            .all(|r| r["usage_user"].as_f64().unwrap() > 90.0)
    );

    let out = Command::new(BIN)
        .args([
            "load",
            "queries",
            "--queries",
            "nope",
            "--db",
            "q",
            "--host",
            &s.base,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown query type \"nope\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_during_load_keeps_every_acknowledged_row() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let data_dir = s.data_dir.clone();
    let report = tmp.path().join("r.json");
    let mut load = Command::new(BIN)
        .args([
            "load", "write", "--db", "t", "--hosts", "200", "--rows", "5000000",
        ])
        .args([
            "--workers",
            "3",
            "--batch-size",
            "2000",
            "--retries",
            "1",
            "--quiet",
        ])
        .args(["--host", &s.base, "--report", report.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The database exists once the first batch is in.
    let stored = |s: &Server| match s.query_raw("t", "SELECT count(*) FROM cpu", "csv") {
        (200, body) => String::from_utf8_lossy(&body)
            .lines()
            .nth(1)
            .unwrap()
            .parse::<i64>()
            .unwrap(),
        _ => 0,
    };
    while stored(&s) < 20_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = s.terminate();
    assert!(status.success(), "graceful shutdown: {status}");
    let load_status = load.wait().unwrap();
    assert!(!load_status.success(), "the load lost its server");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let acked = r["rows_sent"].as_i64().unwrap();
    assert!((20_000..5_000_000).contains(&acked), "{r}");

    let s = Server::start_on(data_dir, vec![]);
    let stored = s.count("t", "cpu");
    assert!(stored >= acked, "acknowledged {acked}, stored {stored}");
    // Only batches in flight when the server stopped can be stored without an answer.
    assert!(
        stored <= acked + 3 * 2000,
        "acknowledged {acked}, stored {stored}"
    );
}
