//! Topics through the real binary: the HTTP API and the `tidemark topic` commands, keyed
//! partitioning, bad input, long polling, metrics, a crash and restart, and delete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Server};
use serde_json::{Value, json};

fn cli(s: &Server, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("topic")
        .args(args)
        .env("TIDEMARK_HOST", &s.base)
        .output()
        .expect("run tidemark topic")
}

fn produce(s: &Server, topic: &str, lines: &str) -> (u16, Value) {
    let (status, body) = s.post(&format!("/api/v3/topics/{topic}/records"), lines);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn consume(s: &Server, topic: &str, query: &str) -> (u16, Value) {
    let (status, body) = s.request(
        "GET",
        &format!("/api/v3/topics/{topic}/records?{query}"),
        None,
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Every record of every partition: partition -> [(offset, key, value)].
fn read_all(s: &Server, topic: &str, partitions: u32) -> BTreeMap<u64, Vec<(u64, Value, Value)>> {
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        let (status, fetch) = consume(s, topic, &format!("partition={p}&limit=3"));
        assert_eq!(status, 200, "{fetch}");
        let mut records = Vec::new();
        let mut fetch = fetch;
        loop {
            let batch = fetch["records"].as_array().unwrap().clone();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 3);
            for r in batch {
                records.push((
                    r["offset"].as_u64().unwrap(),
                    r["key"].clone(),
                    r["value"].clone(),
                ));
            }
            let next = fetch["next_offset"].as_u64().unwrap();
            fetch = consume(s, topic, &format!("partition={p}&offset={next}&limit=3")).1;
        }
        all.insert(u64::from(p), records);
    }
    all
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[test]
fn topics_keep_keyed_records_in_order_across_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);

    // Create through the CLI; a second create is refused with the server's reason.
    let out = cli(&s, &["create", "orders", "--partitions", "3"]);
    assert!(out.status.success(), "{out:?}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["partitions"].as_array().unwrap().len(), 3);
    let out = cli(&s, &["create", "orders"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("409") && err.contains("already exists"),
        "{err}"
    );

    // Keyed records land in one partition per key, keyless ones spread over all three.
    let mut body = String::new();
    for i in 0..30 {
        body.push_str(&json!({"key": format!("k{}", i % 5), "value": {"n": i}}).to_string());
        body.push('\n');
    }
    for i in 0..6 {
        body.push_str(
            &json!({"value": format!("free {i}"), "timestamp": "2026-01-01T00:00:00Z"}).to_string(),
        );
        body.push('\n');
    }
    let (status, placed) = produce(&s, "orders", &body);
    assert_eq!(status, 200, "{placed}");
    let placed = placed["records"].as_array().unwrap().clone();
    assert_eq!(placed.len(), 36);
    let mut partition_of_key = BTreeMap::new();
    for (i, r) in placed.iter().take(30).enumerate() {
        let p = r["partition"].as_u64().unwrap();
        assert_eq!(
            *partition_of_key.entry(i % 5).or_insert(p),
            p,
            "key k{}",
            i % 5
        );
    }
    let keyless: std::collections::BTreeSet<u64> = placed[30..]
        .iter()
        .map(|r| r["partition"].as_u64().unwrap())
        .collect();
    assert_eq!(keyless.len(), 3, "{placed:?}");

    // A bad line refuses the whole request, naming each bad line; nothing is appended.
    let (status, err) = produce(
        &s,
        "orders",
        "{\"value\": 1}\nnot json\n\n{\"key\": \"k\"}\n{\"value\": 2, \"partition\": 1}\n",
    );
    assert_eq!(status, 400);
    let message = err["error"].as_str().unwrap();
    for expected in [
        "3 bad line(s), nothing was appended",
        "line 2:",
        "line 4:",
        "line 5:",
        "unknown field `partition`",
    ] {
        assert!(message.contains(expected), "{message}");
    }
    let info: Value =
        serde_json::from_str(&s.request("GET", "/api/v3/topics/orders", None).1).unwrap();
    let ends: u64 = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(ends, 36);

    // Reading back in pages of 3: each partition in produce order, offsets from 0.
    let read = read_all(&s, "orders", 3);
    let mut expected: BTreeMap<u64, Vec<(Value, Value)>> = BTreeMap::new();
    for (i, r) in placed.iter().enumerate() {
        let (key, value) = if i < 30 {
            (json!(format!("k{}", i % 5)), json!({"n": i}))
        } else {
            (Value::Null, json!(format!("free {}", i - 30)))
        };
        expected
            .entry(r["partition"].as_u64().unwrap())
            .or_default()
            .push((key, value));
    }
    for (p, records) in &read {
        let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(offsets, (0..records.len() as u64).collect::<Vec<_>>());
        let kv: Vec<(Value, Value)> = records.iter().map(|r| (r.1.clone(), r.2.clone())).collect();
        assert_eq!(kv, expected[p], "partition {p}");
    }
    // The producer's timestamp is kept.
    let p = placed[30]["partition"].as_u64().unwrap();
    let o = placed[30]["offset"].as_u64().unwrap();
    let (_, one) = consume(&s, "orders", &format!("partition={p}&offset={o}&limit=1"));
    assert_eq!(one["records"][0]["timestamp"], "2026-01-01T00:00:00Z");

    // Errors a reader can make.
    assert_eq!(consume(&s, "orders", "partition=0&offset=999").0, 400);
    assert_eq!(consume(&s, "orders", "partition=9").0, 400);
    assert_eq!(consume(&s, "orders", "offset=0").0, 400);
    assert_eq!(consume(&s, "nope", "partition=0").0, 404);
    assert_eq!(produce(&s, "nope", "{\"value\": 1}").0, 404);

    // A caught-up reader waits for the next record rather than answering empty.
    let p0_end = read[&0].len();
    let base = s.base.clone();
    let waiter = std::thread::spawn(move || {
        let url = format!(
            "{base}/api/v3/topics/orders/records?partition=0&offset={p0_end}&wait_ms=20000"
        );
        common::client()
            .get(url)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let key0 = (0..5)
        .find(|k| partition_of_key[k] == 0)
        .map(|k| format!("k{k}"));
    let late = match &key0 {
        Some(k) => json!({"key": k, "value": "late"}),
        None => json!({"value": "late"}),
    };
    // Keyless records go round robin: a few are enough to reach partition 0.
    let lines = format!("{late}\n{late}\n{late}\n");
    assert_eq!(produce(&s, "orders", &lines).0, 200);
    let woke = waiter.join().unwrap();
    assert_eq!(woke["records"][0]["value"], "late", "{woke}");

    // The CLI: values from a file with one key, then read back as JSON lines.
    let file = tmp.path().join("values.txt");
    std::fs::write(&file, "{\"temp\": 21.5}\nplain text\n\n").unwrap();
    let out = cli(
        &s,
        &[
            "produce",
            "orders",
            file.to_str().unwrap(),
            "--values",
            "--key",
            "sensor-9",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("produced 2 records"));
    let out = cli(&s, &["consume", "orders"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 36 + 3 + 2);
    let sensor: Vec<&Value> = lines.iter().filter(|l| l["key"] == "sensor-9").collect();
    assert_eq!(sensor.len(), 2);
    assert_eq!(sensor[0]["value"], json!({"temp": 21.5}));
    assert_eq!(sensor[1]["value"], "plain text");
    assert_eq!(sensor[0]["partition"], sensor[1]["partition"]);
    let out = cli(
        &s,
        &[
            "consume",
            "orders",
            "--partition",
            "1",
            "--offset",
            "1",
            "--limit",
            "2",
        ],
    );
    let two: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(two.len(), 2, "{out:?}");
    assert!(two[0].contains("\"offset\":1"), "{two:?}");

    // A bad line in a file is named by its line in the file; nothing of its batch is sent.
    std::fs::write(&file, "{\"value\": 1}\n{\"value\": 2}\n{\"valu\": 3}\n").unwrap();
    let out = cli(&s, &["produce", "orders", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3:") && err.contains("0 records before it"),
        "{err}"
    );

    // Metrics count what was produced and read, by topic.
    let metrics = s.request("GET", "/metrics", None).1;
    assert_eq!(
        metric(
            &metrics,
            "tidemark_topic_produced_records_total{topic=\"orders\"}"
        ),
        Some(41.0),
        "{metrics}"
    );
    let consumed = metric(
        &metrics,
        "tidemark_topic_consumed_records_total{topic=\"orders\"}",
    )
    .unwrap();
    assert!(consumed >= 36.0 + 1.0 + 41.0 + 2.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "tidemark_topic_produced_bytes_total{topic=\"orders\"}"
        )
        .unwrap()
            > 0.0
    );

    // SIGKILL: every acknowledged record is there after the restart, and offsets go on.
    let before = read_all(&s, "orders", 3);
    let s = s.crash_and_restart();
    assert_eq!(read_all(&s, "orders", 3), before);
    let (_, placed) = produce(&s, "orders", "{\"key\": \"k0\", \"value\": \"after\"}");
    let p = placed["records"][0]["partition"].as_u64().unwrap();
    assert_eq!(
        placed["records"][0]["offset"].as_u64().unwrap(),
        before[&p].len() as u64
    );
    let listed: Value = serde_json::from_str(&s.request("GET", "/api/v3/topics", None).1).unwrap();
    assert_eq!(listed["topics"][0]["name"], "orders");

    // Delete: the records, the directory and the topic's series go.
    let out = cli(&s, &["delete", "orders"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(consume(&s, "orders", "partition=0").0, 404);
    assert!(!s.data_dir.join("topics/orders").exists());
    let metrics = s.request("GET", "/metrics", None).1;
    assert!(!metrics.contains("topic=\"orders\""), "{metrics}");
    assert_eq!(cli(&s, &["delete", "orders"]).status.code(), Some(1));
}

/// Deleting a topic while producers append to it (with tiny segments, so appends roll
/// segments all the time) must not fail the log writer that database writes share.
#[test]
fn deleting_a_topic_under_produce_leaves_the_log_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--segment-bytes", "2048"]);
    for round in 0..5 {
        let (status, body) = s.request(
            "POST",
            "/api/v3/topics",
            Some(r#"{"name": "hot", "partitions": 2}"#),
        );
        assert_eq!(status, 201, "round {round}: {body}");
        let url = s.url("/api/v3/topics/hot/records");
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let client = common::client();
                    let body = "{\"value\": \"0123456789abcdef0123456789abcdef\"}\n".repeat(50);
                    let mut ok = 0;
                    loop {
                        match client.post(&url).body(body.clone()).send() {
                            Ok(r) if r.status().is_success() => ok += 1,
                            Ok(r) => {
                                assert_eq!(r.status().as_u16(), 404, "{:?}", r.text());
                                return ok;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let (status, body) = s.request("DELETE", "/api/v3/topics/hot", None);
        assert_eq!(status, 200, "round {round}: {body}");
        let acked: u32 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        assert!(
            acked > 0,
            "round {round}: no produce got in before the delete"
        );
        assert_eq!(
            s.write_v3("db", &format!("t f={round} {round}")).0,
            204,
            "round {round}"
        );
    }
    assert_eq!(s.request("GET", "/health", None).0, 200);
    assert_eq!(s.count("db", "t"), 5);
}

/// Values that JSON libraries cannot read into numbers or trees are kept and printed as
/// they were produced, in the documented field order.
#[test]
fn consume_prints_values_no_parser_can_hold_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let out = cli(&s, &["create", "odd", "--partitions", "1"]);
    assert!(out.status.success());
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let body =
        format!("{{\"value\":1e999}}\n{{\"value\":{deep},\"key\":\"k\"}}\n{{\"value\":2}}\n");
    let (code, answer) = produce(&s, "odd", &body);
    assert_eq!(code, 200, "{answer}");
    let out = cli(&s, &["consume", "odd"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("{\"partition\":0,\"offset\":0,\"timestamp\":")
            && lines[0].ends_with(",\"key\":null,\"value\":1e999}"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with(&format!("\"key\":\"k\",\"value\":{deep}}}")));
    assert!(lines[2].ends_with("\"value\":2}"), "{}", lines[2]);

    // produce --values sends such lines as they are.
    let input = tmp.path().join("values.txt");
    std::fs::write(&input, "1e999\nnot json\n").unwrap();
    let out = cli(&s, &["produce", "odd", "--values", input.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&s, &["consume", "odd", "--offset", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"value\":1e999}"), "{stdout}");
    assert!(stdout.contains("\"value\":\"not json\"}"), "{stdout}");
}

/// `consume --follow` over every partition long-polls them all at once over kept-alive
/// connections: a record in any partition is printed promptly, without a connection per
/// poll. Records print their fields in the documented order.
#[test]
fn following_every_partition_long_polls_over_kept_alive_connections() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let out = cli(&s, &["create", "events", "--partitions", "3"]);
    assert!(out.status.success(), "{out:?}");
    let accepted = |s: &Server| {
        metric(
            &s.request("GET", "/metrics", None).1,
            "tidemark_http_connections_accepted_total",
        )
        .unwrap()
    };
    let mut child = Command::new(BIN)
        .args(["topic", "consume", "events", "--follow", "--limit", "6"])
        .env("TIDEMARK_HOST", &s.base)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    // Let every partition's reader start waiting, then count connections while idle.
    std::thread::sleep(Duration::from_millis(700));
    let before = accepted(&s);
    std::thread::sleep(Duration::from_millis(2500));
    let idle = accepted(&s) - before;
    // The two scrapes are connections of their own; the readers open none while waiting.
    assert!(idle <= 2.0, "{idle} connections while idle");
    // Records in every partition arrive while the readers wait.
    let mut got = Vec::new();
    for i in 0..6 {
        let (status, body) = produce(&s, "events", &format!("{{\"key\":\"k{i}\",\"value\":{i}}}"));
        assert_eq!(status, 200, "{body}");
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a followed record");
        got.push(line);
    }
    assert!(child.wait().unwrap().success());
    let partitions: std::collections::BTreeSet<u64> = got
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["partition"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(partitions.len() >= 2, "{got:?}");
    for line in &got {
        let at = |f: &str| line.find(&format!("\"{f}\":")).unwrap();
        assert!(
            at("partition") < at("offset")
                && at("offset") < at("timestamp")
                && at("timestamp") < at("key")
                && at("key") < at("value"),
            "{line}"
        );
    }
    // One record: "1 record".
    let file = tmp.path().join("one.jsonl");
    std::fs::write(&file, "{\"value\": 1}\n").unwrap();
    let out = cli(&s, &["produce", "events", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("produced 1 record to"), "{err}");
}
