//! Persistence through the real binary: crashes at every step of persist and compaction,
//! retention, deletes and drops over the HTTP API, checked with SQL and on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Server, table_files};

/// Fast maintenance so tests do not wait: persist after 1 s, compact every second.
fn fast() -> Vec<String> {
    [
        "--snapshot-age-secs",
        "1",
        "--compaction-interval-secs",
        "1",
        "--window-secs",
        "60",
        "--query-timeout-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn catalog_files(s: &Server, db: &str) -> HashSet<PathBuf> {
    s.query(db, "SELECT path FROM system.files")
        .iter()
        .map(|r| s.data_dir.join(r["path"].as_str().unwrap()))
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines for hosts 0..n at second `t` (values depend on `t`, so rewrites are visible).
fn lines(n: usize, t: i64, v: i64) -> String {
    (0..n)
        .map(|h| format!("cpu,host=h{h} v={v}i {}\n", t * 1_000_000_000))
        .collect()
}

fn sum_v(s: &Server) -> i64 {
    s.query("db", "SELECT sum(v) AS s FROM cpu")[0]["s"]
        .as_i64()
        .unwrap()
}

#[test]
fn crashes_during_persist_and_compaction_lose_nothing_and_leave_no_orphans() {
    for point in [
        "persist_after_intent",
        "persist_mid_files",
        "persist_before_commit",
        "persist_after_commit",
        "compact_before_commit",
        "compact_after_commit",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let s = Server::start_env(data.clone(), fast(), &[]);
        // Two generations of files in one window (so compaction has work), acknowledged.
        assert_eq!(s.write_v3("db", &lines(20, 10, 1)).0, 204);
        wait_until("first persist", || !catalog_files(&s, "db").is_empty());
        drop(s);
        // Restart armed: the next persist or compaction aborts at the point.
        let mut s = Server::start_env(data.clone(), fast(), &[("TIDEMARK_FAILPOINTS", point)]);
        // Overwrite half the keys and add new ones in the same window.
        assert_eq!(s.write_v3("db", &lines(10, 10, 5)).0, 204);
        assert_eq!(s.write_v3("db", &lines(20, 20, 2)).0, 204);
        assert!(
            s.wait_for_exit(Duration::from_secs(30)),
            "{point}: the failpoint was never reached"
        );
        let s = Server::start_env(data.clone(), fast(), &[]);
        // Every acknowledged row, once, with the last write winning.
        assert_eq!(s.count("db", "cpu"), 40, "{point}");
        assert_eq!(sum_v(&s), 10 * 5 + 10 + 20 * 2, "{point}");
        // Only committed files remain on disk.
        assert_eq!(table_files(&data), catalog_files(&s, "db"), "{point}");
        drop(s);
    }
}

#[test]
fn retention_hides_and_drops_old_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_env(tmp.path().join("data"), fast(), &[]);
    let (st, body) = s.request(
        "POST",
        "/api/v3/configure/database",
        Some(r#"{"db":"db","retention_period":"1h"}"#),
    );
    assert_eq!(st, 200, "{body}");
    let (st, _) = s.request("POST", "/api/v3/configure/database", Some(r#"{"db":"db"}"#));
    assert_eq!(st, 409, "creating twice conflicts");
    let (st, body) = s.request(
        "POST",
        "/api/v3/configure/database",
        Some(r#"{"db":"db","retention_period":"forever"}"#),
    );
    assert_eq!(st, 400);
    assert!(body.contains("invalid duration"), "{body}");

    let now = chrono::Utc::now().timestamp();
    let mut lp = lines(5, now - 3 * 3600, 1); // expired
    lp.push_str(&lines(5, now - 60, 2)); // kept
    assert_eq!(s.write_v3("db", &lp).0, 204);
    assert_eq!(s.count("db", "cpu"), 5, "expired rows are never visible");
    // Persist skips expired windows; only the recent window reaches disk.
    wait_until("persist", || !catalog_files(&s, "db").is_empty());
    let files = s.query("db", "SELECT min_time FROM system.files");
    assert_eq!(files.len(), 1, "{files:?}");

    // Shortening the retention later drops the window that is now expired, on disk too.
    let (st, body) = s.request(
        "POST",
        "/api/v3/configure/database",
        Some(r#"{"db":"db","retention_period":"10s"}"#),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(s.count("db", "cpu"), 0);
    wait_until("expired files deleted", || {
        table_files(&s.data_dir).is_empty() && catalog_files(&s, "db").is_empty()
    });
    let listed = s.request("GET", "/api/v3/configure/database", None).1;
    assert!(listed.contains("10000000000"), "{listed}");
}

#[test]
fn deletes_hide_rows_at_once_and_compaction_removes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_env(tmp.path().join("data"), fast(), &[]);
    assert_eq!(s.write_v3("db", &lines(4, 10, 1)).0, 204);
    wait_until("persist", || !catalog_files(&s, "db").is_empty());
    assert_eq!(s.write_v3("db", &lines(4, 20, 1)).0, 204);

    let (st, body) = s.request(
        "POST",
        "/api/v2/delete?bucket=db",
        Some(
            r#"{"start":"1970-01-01T00:00:00Z","stop":"1970-01-01T00:01:00Z","predicate":"_measurement=\"cpu\" AND host=\"h1\""}"#,
        ),
    );
    assert_eq!(st, 204, "{body}");
    assert_eq!(
        s.count("db", "cpu"),
        6,
        "h1 hidden in the file and in the buffer"
    );
    let (st, body) = s.request(
        "POST",
        "/api/v2/delete?bucket=db",
        Some(r#"{"start":"yesterday","stop":"1970-01-01T00:01:00Z"}"#),
    );
    assert_eq!(st, 400);
    assert!(body.contains("RFC 3339"), "{body}");
    let (st, body) = s.request(
        "POST",
        "/api/v2/delete?bucket=db",
        Some(r#"{"start":"1970-01-01T00:00:00Z","stop":"1970-01-01T00:01:00Z","predicate":"host=\"a\" OR host=\"b\""}"#),
    );
    assert_eq!(st, 400);
    assert!(body.contains("OR"), "{body}");

    // Compaction rewrites the file without the deleted rows and retires the tombstone.
    wait_until("compaction applied the delete", || {
        let rows: i64 = s
            .query("db", "SELECT sum(rows) AS r FROM system.files")
            .first()
            .and_then(|r| r["r"].as_i64())
            .unwrap_or(0);
        rows == 6
    });
    assert_eq!(s.count("db", "cpu"), 6);
    // Rows written after the delete are not affected by it.
    assert_eq!(s.write_v3("db", &lines(4, 30, 1)).0, 204);
    assert_eq!(s.count("db", "cpu"), 10);
    let s = s.crash_and_restart();
    assert_eq!(s.count("db", "cpu"), 10, "after restart");
}

#[test]
fn drop_table_and_database_remove_data_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_env(tmp.path().join("data"), fast(), &[]);
    let mut lp = lines(3, 10, 1);
    lp.push_str("mem,host=a free=1i 10000000000\n");
    assert_eq!(s.write_v3("db", &lp).0, 204);
    wait_until("persist", || catalog_files(&s, "db").len() == 2);
    let (st, body) = s.request("DELETE", "/api/v3/configure/table?db=db&table=cpu", None);
    assert_eq!(st, 200, "{body}");
    let (st, _) = s.request("DELETE", "/api/v3/configure/table?db=db&table=cpu", None);
    assert_eq!(st, 404);
    let (st, _) = s.query_raw("db", "SELECT * FROM cpu", "json");
    assert_eq!(st, 400, "the table is gone");
    wait_until("the dropped table's files are deleted", || {
        table_files(&s.data_dir).len() == 1
    });
    // Re-created by a write, with only the new rows; and it stays that way after a crash.
    assert_eq!(s.write_v3("db", &lines(2, 50, 1)).0, 204);
    let s = s.crash_and_restart();
    assert_eq!(s.count("db", "cpu"), 2);
    assert_eq!(s.count("db", "mem"), 1);

    let (st, body) = s.request("DELETE", "/api/v3/configure/database?db=db", None);
    assert_eq!(st, 200, "{body}");
    let (st, _) = s.query_raw("db", "SELECT 1", "json");
    assert_eq!(st, 404);
    assert!(table_files(&s.data_dir).is_empty());
    let s = s.crash_and_restart();
    let (st, _) = s.query_raw("db", "SELECT 1", "json");
    assert_eq!(st, 404, "a dropped database stays dropped");
}

/// The default data directory is relative (`./tidemark-data`): persisted files must be
/// found by queries all the same.
#[test]
fn a_relative_data_dir_serves_its_parquet_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), "rel-data", &["--snapshot-age-secs", "1"]);
    assert_eq!(s.write_v3("m", "cpu,host=a v=1 1\ncpu,host=b v=2 2").0, 204);
    wait_until("the rows are persisted", || {
        let files = s.query("m", "SELECT count(*) AS n FROM system.files");
        files[0]["n"].as_i64().unwrap_or(0) > 0
            && s.query("m", "SELECT sum(buffered_rows) AS r FROM system.tables")[0]["r"]
                .as_i64()
                .unwrap_or(1)
                == 0
    });
    assert_eq!(
        s.query("m", "SELECT host, v FROM cpu ORDER BY host"),
        vec![
            serde_json::json!({"host": "a", "v": 1.0}),
            serde_json::json!({"host": "b", "v": 2.0})
        ]
    );
    assert!(tmp.path().join("rel-data/tables").is_dir());
}
