//! Crash consistency under load: `tidemark load write` runs against the server, the
//! server is killed (SIGKILL) at a random moment, restarted, and every row the load
//! generator saw acknowledged must be there exactly once; then the next cycle goes on
//! over the same data directory. The server persists and compacts constantly (tiny
//! snapshot size, 1 s compaction interval), so kills land in the middle of log appends,
//! persists and compactions alike.
//!
//! CI runs a few cycles. For a longer run:
//! `TIDEMARK_CRASH_CYCLES=50 cargo nextest run --test crash --no-capture`; a failure
//! prints the seed, and `TIDEMARK_CRASH_SEED=<seed>` replays the same kill times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server};

const HOSTS: u64 = 50;
const INTERVAL_NS: i64 = 10_000_000_000;
/// Rows each cycle may write (more than a cycle has time for).
const ROWS_PER_CYCLE: u64 = 2_000_000;
/// 2026-01-01T00:00:00Z
const START_NS: i64 = 1_767_225_600_000_000_000;

/// xorshift64*: enough randomness for kill times, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seed of the kill times: `TIDEMARK_CRASH_SEED`, or the clock.
fn seed() -> u64 {
    env_u64("TIDEMARK_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    })
}

/// The acknowledged row indexes of one cycle, from the load generator's ack log.
fn acked_rows(ack_log: &std::path::Path) -> HashSet<u64> {
    let text = std::fs::read_to_string(ack_log).unwrap_or_default();
    let mut rows = HashSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace().map(|p| p.parse::<u64>().unwrap());
        let (first, end) = (parts.next().unwrap(), parts.next().unwrap());
        rows.extend(first..end);
    }
    rows
}

/// The row indexes stored for a cycle's time range, with how many times each is there.
fn stored_rows(s: &Server, cycle_start: i64) -> Vec<u64> {
    let cycle_end = cycle_start + (ROWS_PER_CYCLE / HOSTS) as i64 * INTERVAL_NS;
    let sql = format!(
        "SELECT hostname, CAST(time AS BIGINT) AS t FROM cpu \
         WHERE time >= to_timestamp_nanos({cycle_start}) AND time < to_timestamp_nanos({cycle_end})"
    );
    let (status, body) = s.query_raw("crash", &sql, "csv");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let (host, t) = line.split_once(',').unwrap();
            let host: u64 = host.trim_start_matches("host_").parse().unwrap();
            let t: i64 = t.parse().unwrap();
            ((t - cycle_start) / INTERVAL_NS) as u64 * HOSTS + host
        })
        .collect()
}

#[test]
fn random_kills_under_load_lose_no_acknowledged_row() {
    let cycles = env_u64("TIDEMARK_CRASH_CYCLES").unwrap_or(3);
    let seed = seed();
    eprintln!("crash harness: {cycles} cycles, TIDEMARK_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let flags: Vec<String> = [
        "--partitions",
        "3",
        "--snapshot-mb",
        "1",
        "--snapshot-age-secs",
        "1",
        "--window-secs",
        "600",
        "--compaction-interval-secs",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let mut s = Server::start_on(data_dir.clone(), flags.clone());
    let mut total_acked = 0;
    for cycle in 0..cycles {
        let cycle_start = START_NS + cycle as i64 * 86_400_000_000_000;
        let ack_log = tmp.path().join(format!("acks-{cycle}"));
        let start = chrono_rfc3339(cycle_start);
        let mut load = Command::new(BIN)
            .args(["load", "write", "--db", "crash", "--quiet"])
            .args(["--host", &s.base, "--start", &start, "--interval", "10s"])
            .args([
                "--hosts",
                &HOSTS.to_string(),
                "--rows",
                &ROWS_PER_CYCLE.to_string(),
            ])
            .args(["--seed", &cycle.to_string(), "--workers", "3"])
            .args(["--batch-size", "500", "--retries", "1", "--max-errors", "1"])
            .arg("--ack-log")
            .arg(&ack_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill somewhere between 0.3 and 2.3 s into the load.
        let wait = Duration::from_millis(300 + rng.next() % 2000);
        std::thread::sleep(wait);
        s.kill9();
        let deadline = Instant::now() + Duration::from_secs(30);
        while load.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the load did not notice the crash"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s = Server::start_on(data_dir.clone(), flags.clone());

        let acked = acked_rows(&ack_log);
        let stored = stored_rows(&s, cycle_start);
        let distinct: HashSet<u64> = stored.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            stored.len(),
            "cycle {cycle} (seed {seed}): a row is stored twice"
        );
        let missing: Vec<u64> = acked.difference(&distinct).copied().take(5).collect();
        assert!(
            missing.is_empty(),
            "cycle {cycle} (seed {seed}, killed after {wait:?}): {} acknowledged rows missing, like {missing:?}",
            acked.difference(&distinct).count()
        );
        // Unacknowledged rows may be there (in flight at the kill), but only whole
        // batches of at most the three workers' requests.
        assert!(
            distinct.len() <= acked.len() + 3 * 500,
            "cycle {cycle}: {} stored, {} acknowledged",
            distinct.len(),
            acked.len()
        );
        total_acked += acked.len();
        eprintln!(
            "cycle {cycle}: killed after {wait:?}; {} rows acknowledged, {} stored",
            acked.len(),
            distinct.len()
        );
    }
    assert!(total_acked > 0, "the load never got a row in");
}

fn chrono_rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Every record of a topic partition: (offset, value), read in pages.
fn topic_partition(s: &Server, topic: &str, p: u32) -> Vec<(u64, serde_json::Value)> {
    let mut out = Vec::new();
    let mut next = 0u64;
    loop {
        let path = format!("/api/v3/topics/{topic}/records?partition={p}&offset={next}&limit=5000");
        let (status, body) = s.request("GET", &path, None);
        assert_eq!(status, 200, "{body}");
        let fetch: serde_json::Value = serde_json::from_str(&body).unwrap();
        let records = fetch["records"].as_array().unwrap();
        if records.is_empty() {
            return out;
        }
        for r in records {
            out.push((r["offset"].as_u64().unwrap(), r["value"].clone()));
        }
        next = fetch["next_offset"].as_u64().unwrap();
    }
}

/// The same harness for topics: two producers post keyed records, the server is killed at
/// a random moment, and every acknowledged record must be at its acknowledged partition and
/// offset after the restart, with offsets gapless and no record twice.
#[test]
fn random_kills_under_produce_lose_no_acknowledged_record() {
    const BATCH: u64 = 200;
    let cycles = env_u64("TIDEMARK_CRASH_CYCLES").unwrap_or(3);
    let seed = seed();
    eprintln!("topic crash harness: {cycles} cycles, TIDEMARK_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut s = Server::start_on(data_dir.clone(), Vec::new());
    let (status, body) = s.request(
        "POST",
        "/api/v3/topics",
        Some(r#"{"name": "t", "partitions": 3}"#),
    );
    assert_eq!(status, 201, "{body}");
    // (partition, offset) -> value of every acknowledged record, over all cycles.
    let mut acked = std::collections::HashMap::new();
    let mut unacked_before = 0;
    for cycle in 0..cycles {
        let url = s.url("/api/v3/topics/t/records");
        let producers: Vec<_> = (0..2u64)
            .map(|w| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let client = common::client();
                    let mut acks = Vec::new();
                    for batch in 0.. {
                        let values: Vec<serde_json::Value> = (0..BATCH)
                            .map(
                                |i| serde_json::json!({"c": cycle, "w": w, "n": batch * BATCH + i}),
                            )
                            .collect();
                        let body: String = values
                            .iter()
                            .enumerate()
                            .map(|(i, v)| {
                                format!(
                                    "{}\n",
                                    serde_json::json!({"key": format!("k{}", i % 7), "value": v})
                                )
                            })
                            .collect();
                        let Ok(resp) = client.post(&url).body(body).send() else {
                            return acks;
                        };
                        if !resp.status().is_success() {
                            return acks;
                        }
                        let Ok(placed) = resp.json::<serde_json::Value>() else {
                            return acks;
                        };
                        for (r, v) in placed["records"].as_array().unwrap().iter().zip(values) {
                            acks.push((
                                r["partition"].as_u64().unwrap() as u32,
                                r["offset"].as_u64().unwrap(),
                                v,
                            ));
                        }
                    }
                    acks
                })
            })
            .collect();
        let wait = Duration::from_millis(200 + rng.next() % 1500);
        std::thread::sleep(wait);
        s.kill9();
        let mut in_cycle = 0;
        for p in producers {
            for (partition, offset, value) in p.join().unwrap() {
                assert!(
                    acked.insert((partition, offset), value).is_none(),
                    "offset given twice"
                );
                in_cycle += 1;
            }
        }
        s = Server::start_on(data_dir.clone(), Vec::new());
        let mut stored_count = 0;
        let mut seen = HashSet::new();
        for p in 0..3 {
            let stored = topic_partition(&s, "t", p);
            for (i, (offset, value)) in stored.iter().enumerate() {
                assert_eq!(
                    *offset, i as u64,
                    "cycle {cycle} (seed {seed}): partition {p} has a gap"
                );
                assert!(
                    seen.insert(value.to_string()),
                    "cycle {cycle} (seed {seed}): {value} twice"
                );
            }
            for ((ap, ao), v) in acked.iter().filter(|((ap, _), _)| *ap == p) {
                assert_eq!(
                    stored.get(*ao as usize).map(|r| &r.1),
                    Some(v),
                    "cycle {cycle} (seed {seed}, killed after {wait:?}): acknowledged record at {ap}/{ao}"
                );
            }
            stored_count += stored.len();
        }
        // Unacknowledged records may be there: at most the two requests in flight at each
        // kill so far.
        assert!(
            stored_count <= acked.len() + unacked_before + 2 * BATCH as usize,
            "cycle {cycle} (seed {seed}): {stored_count} stored, {} acknowledged",
            acked.len()
        );
        unacked_before = stored_count - acked.len();
        eprintln!(
            "cycle {cycle}: killed after {wait:?}; {in_cycle} records acknowledged, {stored_count} stored in all"
        );
    }
    assert!(!acked.is_empty(), "no record was ever acknowledged");
}
