//! Differential test of the storage lifecycle: a randomized workload (out-of-order and
//! duplicate points, partial field sets, several time windows, deletes) is queried from the
//! buffer only, after persisting, after more overlapping persists, after compaction and after
//! a restart; every answer must equal a reference model of last-write-wins semantics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::util::display::array_value_to_string;
use tidemark_connectors::tsbs::Rng;
use tidemark_connectors::write::{WriteOptions, write_lp};
use tidemark_engine::{MaintenanceConfig, Node, NodeConfig};

const WINDOW_NS: i64 = 10_000_000_000;

/// (host, time) -> (a, b): the last non-null value written of each field.
type Model = BTreeMap<(String, i64), (Option<i64>, Option<String>)>;

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::new(dir);
    c.partitions = 3;
    c.maintenance = MaintenanceConfig {
        window: Duration::from_nanos(WINDOW_NS as u64),
        // Small outputs so that compaction writes several files per window.
        compaction_target_bytes: 4 * 1024,
        compaction_batch_rows: 64,
        file_gc_delay: Duration::ZERO,
        ..MaintenanceConfig::default()
    };
    c
}

async fn write_random(node: &Node, model: &mut Model, rng: &mut Rng, lines: usize) {
    let mut lp = String::new();
    for _ in 0..lines {
        let host = format!("h{}", rng.below(7));
        // Five windows, written in random order, with many repeated keys.
        let t = rng.below(50) as i64 * 1_000_000_000 + rng.below(3) as i64;
        let a = (rng.below(3) > 0).then(|| rng.below(1000) as i64);
        let b = (rng.below(3) == 0).then(|| format!("s{}", rng.below(100)));
        if a.is_none() && b.is_none() {
            continue;
        }
        let mut fields = Vec::new();
        if let Some(a) = a {
            fields.push(format!("a={a}i"));
        }
        if let Some(b) = &b {
            fields.push(format!("b=\"{b}\""));
        }
        lp.push_str(&format!("m,host={host} {} {t}\n", fields.join(",")));
        let entry = model.entry((host, t)).or_default();
        if a.is_some() {
            entry.0 = a;
        }
        if b.is_some() {
            entry.1 = b;
        }
    }
    write_lp(node, "db", lp.as_bytes(), &WriteOptions::default())
        .await
        .unwrap();
}

async fn dump(node: &Node) -> Vec<String> {
    let out = node
        .query("db", "SELECT host, time, a, b FROM m ORDER BY host, time")
        .await
        .unwrap();
    let mut rows = Vec::new();
    for batch in &out.batches {
        for r in 0..batch.num_rows() {
            let cells: Vec<String> = (0..batch.num_columns())
                .map(|c| array_value_to_string(batch.column(c), r).unwrap())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows
}

fn expected(model: &Model) -> Vec<String> {
    model
        .iter()
        .map(|((host, t), (a, b))| {
            let time = chrono::DateTime::from_timestamp_nanos(*t)
                .format("%Y-%m-%dT%H:%M:%S%.9fZ")
                .to_string();
            let time = time.replace(".000000000Z", "Z");
            format!(
                "{host}|{time}|{}|{}",
                a.map(|v| v.to_string()).unwrap_or_default(),
                b.clone().unwrap_or_default()
            )
        })
        .collect()
}

async fn check(node: &Node, model: &Model, stage: &str) {
    let got = dump(node).await;
    let want = expected(model);
    assert_eq!(got.len(), want.len(), "{stage}: row count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{stage}");
    }
    // An aggregate and a pruned query agree with the model too.
    let out = node
        .query(
            "db",
            "SELECT count(*) AS n FROM m WHERE host = 'h3' AND time >= '1970-01-01T00:00:20Z' AND time < '1970-01-01T00:00:30Z'",
        )
        .await
        .unwrap();
    let n = array_value_to_string(out.batches[0].column(0), 0).unwrap();
    let want_n = model
        .keys()
        .filter(|(h, t)| h == "h3" && (20_000_000_000..30_000_000_000).contains(t))
        .count();
    assert_eq!(n, want_n.to_string(), "{stage}: pruned count");
}

fn file_count(node: &Node) -> usize {
    node.store().read(|s| {
        s.databases
            .values()
            .flat_map(|d| d.tables.values())
            .map(|t| t.files.len())
            .sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_files_compaction_and_restart_answer_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(42);
    let mut model = Model::new();
    let node = Arc::new(Node::open(config(tmp.path())).unwrap());
    write_random(&node, &mut model, &mut rng, 400).await;
    write_random(&node, &mut model, &mut rng, 400).await;
    check(&node, &model, "buffer only").await;

    node.persist_all().await.unwrap();
    assert!(node.buffer().bytes() == 0, "persist drained the buffer");
    assert!(file_count(&node) >= 5, "one file per window at least");
    check(&node, &model, "after one persist").await;

    // Overlapping data: the same keys again, in a second generation of files and the buffer.
    write_random(&node, &mut model, &mut rng, 400).await;
    node.persist_all().await.unwrap();
    write_random(&node, &mut model, &mut rng, 300).await;
    check(&node, &model, "two generations of files plus the buffer").await;

    // A delete hides rows in files and in the buffer; later writes are unaffected.
    node.delete(
        "db",
        Some("m"),
        10_000_000_000,
        24_999_999_999,
        vec![("host".into(), "h2".into())],
    )
    .await
    .unwrap();
    model.retain(|(h, t), _| !(h == "h2" && (10_000_000_000..25_000_000_000).contains(t)));
    check(&node, &model, "after a delete").await;
    write_random(&node, &mut model, &mut rng, 200).await;
    check(&node, &model, "writes after the delete").await;

    node.persist_all().await.unwrap();
    let before = file_count(&node);
    let compacted = node.compact_all().await.unwrap();
    assert!(compacted > 0);
    check(&node, &model, "after compaction").await;
    node.delete_due_files(true);
    assert_eq!(
        common::table_files(tmp.path()).len(),
        file_count(&node),
        "replaced files are deleted (before: {before})"
    );
    let tombstones = node.store().read(|s| s.databases["db"].tombstones.len());
    assert_eq!(tombstones, 0, "compaction applied the delete physically");
    let runs = node
        .query(
            "db",
            "SELECT count(*) FROM system.compactions WHERE error IS NULL",
        )
        .await
        .unwrap();
    assert_eq!(
        array_value_to_string(runs.batches[0].column(0), 0).unwrap(),
        compacted.to_string()
    );

    write_random(&node, &mut model, &mut rng, 200).await;
    node.shutdown().await;
    drop(node);
    let node = Node::open(config(tmp.path())).unwrap();
    check(&node, &model, "after restart").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_truncated_after_persist_and_replay_skips_what_files_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.log.segment_bytes = 4 * 1024;
    let mut rng = Rng::new(7);
    let mut model = Model::new();
    let node = Node::open(c.clone()).unwrap();
    for _ in 0..20 {
        write_random(&node, &mut model, &mut rng, 50).await;
    }
    let segments = |dir: &std::path::Path| {
        (0..3)
            .map(|p| {
                std::fs::read_dir(dir.join("log/db").join(p.to_string()))
                    .unwrap()
                    .count()
            })
            .sum::<usize>()
    };
    let before = segments(tmp.path());
    node.persist_all().await.unwrap();
    let after = segments(tmp.path());
    assert!(after < before, "segments {before} -> {after}");
    assert!(after <= 3, "only the active segments remain");
    node.shutdown().await;
    drop(node);
    let node = Node::open(c).unwrap();
    assert_eq!(node.buffer().bytes(), 0, "nothing persisted is replayed");
    check(&node, &model, "after restart").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_during_a_persist_are_persisted_by_age() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.maintenance.snapshot_age = Duration::from_millis(30);
    c.maintenance.tick = Duration::from_millis(5);
    let node = Arc::new(Node::open(c).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(Arc::clone(&node).run_background(stop_rx));
    let mut rng = Rng::new(11);
    let mut model = Model::new();
    // Each round writes while age-triggered persists run, then stops at a random point of
    // the persist cycle: over the rounds the last write lands inside a persist, and its rows
    // must still be persisted once they are old enough.
    for round in 0..8 {
        let until = std::time::Instant::now() + Duration::from_millis(150 + round * 17);
        while std::time::Instant::now() < until {
            write_random(&node, &mut model, &mut rng, 40).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while node.buffer().bytes() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {} buffered bytes never persisted",
                node.buffer().bytes()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    check(&node, &model, "after age-triggered persists").await;
    stop_tx.send(true).unwrap();
    background.await.unwrap();
    node.shutdown().await;
}
