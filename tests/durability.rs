//! Durability through the real binary: kill -9 at any moment loses no acknowledged point and
//! duplicates nothing; a clean SIGTERM shuts down and restarts with everything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Server;

const ROWS_PER_BATCH: usize = 50;

fn batch_lp(batch: usize) -> String {
    let mut s = String::new();
    for i in 0..ROWS_PER_BATCH {
        s.push_str(&format!(
            "w,batch=b{batch},series=s{i} v={i}i,f={batch}.5 {}\n",
            1_700_000_000_000_000_000i64 + batch as i64
        ));
    }
    s
}

#[test]
fn kill_9_keeps_every_acknowledged_point_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--partitions", "3"]);
    let base = s.base.clone();

    // Writers record each batch the server acknowledged; the server is killed mid-stream.
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..3)
        .map(|w| {
            let base = base.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let client = common::client();
                let mut acked = Vec::new();
                let mut attempted = Vec::new();
                let mut batch = w;
                while !stop.load(Ordering::Relaxed) {
                    attempted.push(batch);
                    let r = client
                        .post(format!("{base}/api/v3/write_lp?db=dur"))
                        .body(batch_lp(batch))
                        .send();
                    match r {
                        Ok(resp) if resp.status().as_u16() == 204 => acked.push(batch),
                        _ => break,
                    }
                    batch += 3;
                }
                (acked, attempted)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let s = s.crash_and_restart();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut attempted = Vec::new();
    for h in handles {
        let (a, t) = h.join().unwrap();
        acked.extend(a);
        attempted.extend(t);
    }
    assert!(
        acked.len() > 5,
        "the writers got going ({} batches)",
        acked.len()
    );

    let rows = s.query(
        "dur",
        "SELECT batch, count(*) AS n, count(DISTINCT series) AS d FROM w GROUP BY batch",
    );
    let mut seen = std::collections::HashMap::new();
    for r in &rows {
        let b = r["batch"]
            .as_str()
            .unwrap()
            .trim_start_matches('b')
            .parse::<usize>()
            .unwrap();
        let n = r["n"].as_i64().unwrap();
        assert_eq!(n, r["d"].as_i64().unwrap(), "no row twice in batch {b}");
        assert!(n as usize <= ROWS_PER_BATCH);
        assert!(attempted.contains(&b), "batch {b} was never sent");
        seen.insert(b, n as usize);
    }
    for b in &acked {
        assert_eq!(
            seen.get(b),
            Some(&ROWS_PER_BATCH),
            "acknowledged batch {b} is complete"
        );
    }

    // And the restarted server keeps taking writes.
    assert_eq!(s.write_v3("dur", &batch_lp(1_000_000)).0, 204);
    let n = s.count("dur", "w");
    assert!(n as usize >= (acked.len() + 1) * ROWS_PER_BATCH);
}

#[test]
fn sigterm_shuts_down_cleanly_and_restart_keeps_data() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        tmp.path(),
        &["--durability", "async", "--async-flush-ms", "60000"],
    );
    assert_eq!(s.write_v3("db", "m,h=a v=1 1\nm,h=b v=2 2\n").0, 204);
    let data_dir = s.data_dir.clone();
    let status = s.terminate();
    assert!(status.success(), "{status}");
    // Async durability synced on shutdown: the data is there after a restart.
    let s = Server::start(data_dir.parent().unwrap(), &[]);
    assert_eq!(s.count("db", "m"), 2);
}

#[test]
fn a_second_sigterm_exits_at_once_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    // One-second windows and rows a second apart: the shutdown persist has thousands of
    // files to write, so it is still running when the second signal comes.
    let mut s = Server::start(tmp.path(), &["--window-secs", "1"]);
    let mut rows = 0;
    for b in 0..4 {
        let mut lp = String::new();
        for i in 0..5_000 {
            let t = (b * 5_000 + i) as i64 * 1_000_000_000;
            lp.push_str(&format!("m,h=h{} v={i} {t}\n", i % 7));
        }
        assert_eq!(s.write_v3("db", &lp).0, 204);
        rows += 5_000;
    }
    let data_dir = s.data_dir.clone();
    s.signal_term();
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.signal_term();
    let status = s
        .exit_status(std::time::Duration::from_secs(10))
        .expect("the second SIGTERM did not end the process");
    assert_eq!(status.code(), Some(130), "{status}");
    let s = Server::start(data_dir.parent().unwrap(), &["--window-secs", "1"]);
    assert_eq!(s.count("db", "m"), rows);
}

#[test]
fn no_sync_writes_are_acknowledged_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let (st, _) = s.post("/api/v3/write_lp?db=db&no_sync=true", "m v=1 1\n");
    assert_eq!(st, 204);
    assert_eq!(s.count("db", "m"), 1);
}

#[test]
fn a_corrupt_log_refuses_to_start_instead_of_skipping_data() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--partitions", "1"]);
    for i in 0..3 {
        assert_eq!(s.write_v3("db", &format!("m v={i} {i}\n")).0, 204);
    }
    let data_dir = s.data_dir.clone();
    drop(s);
    let seg = data_dir.join("log/db/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 30] ^= 0xff; // inside the first record
    std::fs::write(&seg, &bytes).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--http-bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") && err.contains("00000000000000000000.log"),
        "{err}"
    );
}
