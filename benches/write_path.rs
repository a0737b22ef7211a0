//! The write path end to end, in rows per second, with `sync` durability (fsync before ack):
//!
//! - `in_process`: parse + validate + log append (group commit, fdatasync) + buffer apply,
//!   `WRITERS` concurrent writers each sending a 5,000-row TSBS `cpu` batch per iteration.
//! - `http`: the same batches POSTed to `/api/v3/write_lp` of an in-process server over
//!   loopback by `WRITERS` concurrent clients.
//!
//! Each iteration writes `WRITERS * ROWS` rows (10 field values each). The buffer grows
//! over the run; the node's buffer limit is raised so that it never refuses.

// Bench harness code: a failure here should stop the bench loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidemark_connectors::http::{AppState, HttpConfig};
use tidemark_connectors::tsbs;
use tidemark_connectors::write::{WriteOptions, write_lp};
use tidemark_engine::{Node, NodeConfig};

const WRITERS: usize = 4;
const HOSTS: usize = 500;
const ROWS_PER_HOST: usize = 10;
const ROWS: usize = HOSTS * ROWS_PER_HOST;

fn batches() -> Vec<Arc<Vec<u8>>> {
    (0..WRITERS)
        .map(|w| {
            let mut s = String::new();
            tsbs::cpu_lines(
                &mut s,
                HOSTS,
                ROWS_PER_HOST,
                1_700_000_000_000_000_000,
                w as u64 + 1,
            );
            Arc::new(s.into_bytes())
        })
        .collect()
}

fn node(dir: &std::path::Path) -> Arc<Node> {
    let mut config = NodeConfig::new(dir);
    config.buffer_limit_bytes = usize::MAX;
    Arc::new(Node::open(config).expect("open node"))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data = batches();
    let mut g = c.benchmark_group("write_path_sync");
    g.throughput(Throughput::Elements((WRITERS * ROWS) as u64));
    g.sample_size(20);

    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    g.bench_function("in_process", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for body in &data {
                    let (n, body) = (Arc::clone(&n), Arc::clone(body));
                    set.spawn(async move {
                        write_lp(&n, "bench", &body, &WriteOptions::default())
                            .await
                            .expect("write")
                            .rows
                    });
                }
                let mut rows = 0;
                while let Some(r) = set.join_next().await {
                    rows += r.expect("task");
                }
                assert_eq!(rows, WRITERS * ROWS);
            })
        })
    });
    drop(n);

    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(AppState {
        node: Arc::clone(&n),
        config: HttpConfig::default(),
        topologies: None,
        auth: None,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(tidemark_connectors::http::serve(
        state,
        listener,
        None,
        async {
            let _ = stop_rx.await;
        },
    ));
    tidemark_engine::install_tls_provider();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v3/write_lp?db=bench");
    g.bench_function("http", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for body in &data {
                    let (client, url, body) = (client.clone(), url.clone(), Arc::clone(body));
                    set.spawn(async move {
                        let resp = client
                            .post(url)
                            .body(body.as_ref().clone())
                            .send()
                            .await
                            .expect("send");
                        assert_eq!(resp.status().as_u16(), 204);
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("task");
                }
            })
        })
    });
    let _ = stop_tx.send(());
    let _ = rt.block_on(server);
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
