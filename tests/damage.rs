//! Damage to the data directory never turns into silent loss: a flipped byte in the last
//! catalog record, a missing catalog and a missing log segment each make the node refuse
//! to start, naming what is wrong, with every table file left in place; repaired, the node
//! starts with every acknowledged row. A table file no catalog entry owns is quarantined,
//! never deleted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server, table_files};

/// Starts `tidemark serve` on `data` expecting it to refuse; returns its stderr.
fn refused_start(data: &Path) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--http-bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("TIDEMARK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a damaged data directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A data directory with 3,000 acknowledged rows, persisted to Parquet by a graceful stop.
fn persisted(tmp: &Path) -> (PathBuf, std::collections::HashSet<PathBuf>) {
    let data = tmp.join("data");
    let server = Server::start_on(data.clone(), vec!["--partitions".into(), "2".into()]);
    for chunk in 0..3 {
        let lines: Vec<String> = (0..1000)
            .map(|i| {
                let n: i64 = chunk * 1000 + i;
                // Two hours apart: two time windows, two files.
                let t = 1_700_000_000_000_000_000i64 + (n / 1500) * 7_200_000_000_000 + n;
                format!("cpu,host=h{} v={n} {t}", n % 7)
            })
            .collect();
        assert_eq!(server.write_v3("db", &lines.join("\n")).0, 204);
    }
    assert!(server.terminate().success());
    let files = table_files(&data);
    assert!(!files.is_empty(), "the stop persisted the buffer");
    (data, files)
}

fn assert_all_rows(data: &Path) {
    let server = Server::start_on(data.to_path_buf(), vec![]);
    assert_eq!(server.count("db", "cpu"), 3000);
    let rows = server.query("db", "SELECT sum(v) AS s FROM cpu");
    assert_eq!(rows[0]["s"], (0..3000).sum::<i64>() as f64);
}

fn newest_catalog_log(data: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(data.join("catalog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "clog"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn a_flipped_byte_in_the_last_catalog_record_is_refused_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, files) = persisted(tmp.path());
    let log = newest_catalog_log(&data);
    let original = std::fs::read(&log).unwrap();
    let mut damaged = original.clone();
    let at = damaged.len() - 10;
    damaged[at] ^= 0x20;
    std::fs::write(&log, &damaged).unwrap();

    let err = refused_start(&data);
    assert!(
        err.contains("damaged, not torn") && err.contains(".clog"),
        "{err}"
    );
    assert_eq!(table_files(&data), files, "no table file may be touched");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        damaged,
        "the record is not cut off"
    );

    std::fs::write(&log, &original).unwrap();
    assert_all_rows(&data);
}

#[test]
fn a_missing_catalog_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, files) = persisted(tmp.path());
    let aside = tmp.path().join("catalog-aside");
    std::fs::rename(data.join("catalog"), &aside).unwrap();

    let err = refused_start(&data);
    assert!(
        err.contains("catalog directory") && err.contains("missing"),
        "{err}"
    );
    assert!(err.contains("table file(s)"), "{err}");
    assert_eq!(table_files(&data), files);

    // An empty catalog directory is no better.
    std::fs::create_dir_all(data.join("catalog")).unwrap();
    let err = refused_start(&data);
    assert!(err.contains("missing or empty"), "{err}");

    std::fs::remove_dir(data.join("catalog")).unwrap();
    std::fs::rename(&aside, data.join("catalog")).unwrap();
    assert_all_rows(&data);
}

#[test]
fn a_missing_log_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = persisted(tmp.path());
    let partition = data.join("log/db/0");
    let segments: Vec<PathBuf> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    let last = segments.iter().max().unwrap().clone();
    let kept = std::fs::read(&last).unwrap();
    std::fs::remove_file(&last).unwrap();

    let err = refused_start(&data);
    assert!(
        err.contains("partition 0") && err.contains("segment files are missing"),
        "{err}"
    );
    // Nothing was created in its place.
    assert!(
        std::fs::read_dir(&partition).unwrap().next().is_none(),
        "the refused start must not start a new log"
    );

    std::fs::write(&last, kept).unwrap();
    assert_all_rows(&data);
}

#[test]
fn an_unknown_table_file_is_quarantined_not_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, files) = persisted(tmp.path());
    let some = files.iter().next().unwrap();
    let stray = some.with_file_name("99999999999999999999.parquet");
    std::fs::copy(some, &stray).unwrap();

    let server = Server::start_on(data.clone(), vec![]);
    assert_eq!(server.count("db", "cpu"), 3000);
    assert_eq!(table_files(&data), files);
    let moved = data
        .join("quarantine")
        .join(stray.strip_prefix(&data).unwrap());
    assert!(moved.is_file(), "expected {} to be kept", moved.display());
}

/// `count(*)` and `sum(v)` of `cpu`, asking to skip damaged files.
fn count_skipping_damaged(server: &Server) -> serde_json::Value {
    let resp = common::client()
        .get(server.url("/api/v3/query_sql"))
        .query(&[
            ("db", "db"),
            ("q", "SELECT count(*) AS n, sum(v) AS s FROM cpu"),
            ("skip_damaged_files", "true"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().unwrap()
}

#[test]
fn a_damaged_parquet_file_is_named_marked_and_can_be_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, files) = persisted(tmp.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let mut files: Vec<PathBuf> = files.into_iter().collect();
    files.sort();
    let (damaged, deleted) = (&files[0], &files[1]);
    let original = std::fs::read(damaged).unwrap();
    std::fs::write(damaged, &original[..original.len() / 2]).unwrap();

    let server = Server::start_on(data.clone(), vec![]);
    let (code, body) = server.query_raw("db", "SELECT count(*) AS n, sum(v) AS s FROM cpu", "json");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains(&damaged.display().to_string()), "{body}");
    assert!(body.contains("skip_damaged_files"), "{body}");
    let marked = server.query("db", "SELECT path, damaged FROM system.files ORDER BY path");
    assert!(marked[0]["damaged"].is_string(), "{marked:?}");
    assert!(marked[1]["damaged"].is_null(), "{marked:?}");

    // Per query: answer from the rest.
    let rows = count_skipping_damaged(&server);
    assert_eq!(rows[0]["n"], 1500);
    // Read from the data pages, not only from footers.
    assert_eq!(rows[0]["s"], (1500..3000).sum::<i64>() as f64);

    // A deleted file is found and left out the same way.
    let kept = std::fs::read(deleted).unwrap();
    std::fs::remove_file(deleted).unwrap();
    let rows = count_skipping_damaged(&server);
    assert_eq!(rows[0]["n"], 0, "{rows}");
    let marked = server.query("db", "SELECT damaged FROM system.files ORDER BY path");
    assert!(marked[1]["damaged"].is_string(), "{marked:?}");
    drop(server);
    let server = Server::start_on(data.clone(), vec!["--skip-damaged-files".into()]);
    let rows = server.query("db", "SELECT count(*) AS n, sum(v) AS s FROM cpu");
    assert_eq!(rows[0]["n"], 0, "{rows:?}");

    // Restored, everything is back (marks last until the restart).
    drop(server);
    std::fs::write(damaged, &original).unwrap();
    std::fs::write(deleted, kept).unwrap();
    assert_all_rows(&data);
}

/// Runs `tidemark repair` on `data`; returns (success, stdout and stderr).
fn repair(data: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["repair", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn repair_rebuilds_a_lost_or_damaged_catalog_from_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, files) = persisted(tmp.path());

    // Not under a running server.
    let server = Server::start_on(data.clone(), vec![]);
    let (ok, out) = repair(&data);
    assert!(!ok && out.contains("another tidemark process"), "{out}");
    drop(server);

    // A damaged catalog: refused at start, rebuilt by repair, every row back.
    let log = newest_catalog_log(&data);
    let mut damaged = std::fs::read(&log).unwrap();
    let at = damaged.len() - 10;
    damaged[at] ^= 0x20;
    std::fs::write(&log, &damaged).unwrap();
    assert!(refused_start(&data).contains("tidemark repair"));
    let (ok, out) = repair(&data);
    assert!(ok, "{out}");
    assert!(out.contains("from 2 table files (3000 rows)"), "{out}");
    assert!(out.contains("catalog.before-repair-"), "{out}");
    assert_eq!(table_files(&data), files);
    assert_all_rows(&data);

    // A missing catalog, after more writes that are only in the log.
    let server = Server::start_on(data.clone(), vec![]);
    assert_eq!(
        server
            .write_v3("db", "cpu,host=h0 v=7 1700000000000000000")
            .0,
        204
    );
    assert_eq!(
        server
            .write_v3("db", "cpu,host=new v=1 1700000000000000001")
            .0,
        204
    );
    drop(server); // kill -9: the last rows are in the log only
    std::fs::remove_dir_all(data.join("catalog")).unwrap();
    let (ok, out) = repair(&data);
    assert!(ok, "{out}");
    let server = Server::start_on(data.clone(), vec![]);
    assert_eq!(server.count("db", "cpu"), 3001);
    // The overwrite in the log wins over the file's row, as before.
    let rows = server.query(
        "db",
        "SELECT v FROM cpu WHERE host = 'h0' AND time = '2023-11-14T22:13:20Z'",
    );
    assert_eq!(rows[0]["v"], 7.0);
}

/// Garbage inside a data page (the footer intact): the failed decode is traced to its
/// file, which is named, marked and skipped like a truncated one.
#[test]
fn a_garbled_data_page_is_traced_to_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, files) = persisted(tmp.path());
    let mut files: Vec<PathBuf> = files.into_iter().collect();
    files.sort();
    let garbled = &files[1];
    let mut bytes = std::fs::read(garbled).unwrap();
    let middle = bytes.len() / 3;
    for b in &mut bytes[middle..middle + 64] {
        *b = 0xA5;
    }
    std::fs::write(garbled, &bytes).unwrap();

    let server = Server::start_on(data.clone(), vec![]);
    let (code, body) = server.query_raw("db", "SELECT count(*) AS n, sum(v) AS s FROM cpu", "json");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains(&garbled.display().to_string()), "{body}");
    let rows = count_skipping_damaged(&server);
    assert_eq!(rows[0]["n"], 1500, "{rows}");
    assert_eq!(rows[0]["s"], (0..1500).sum::<i64>() as f64);
}
