//! Line protocol parsing on TSBS `cpu` lines (10 tags, 10 float fields), side by side with
//! the `influxdb-line-protocol` crate on the same bytes.
//!
//! - `tidemark/parse`: our parser, every line fully parsed (numbers included), no columns.
//! - `tidemark/parse_into_columns`: parse + validate + partition + Arrow column builders.
//! - `influxdb_line_protocol/parse`: that crate's `parse_lines` (it leaves numbers as
//!   parsed values too), collecting nothing.

// Bench harness code: a failure here should stop the bench loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidemark_connectors::line_protocol::{LineLimits, LineParser, Precision, parse_into};
use tidemark_connectors::tsbs;
use tidemark_storage::batch::WriteBuilder;
use tidemark_storage::catalog::DatabaseSchema;

fn input() -> String {
    let mut s = String::new();
    tsbs::cpu_lines(&mut s, 100, 100, 1_700_000_000_000_000_000, 7);
    s
}

fn bench(c: &mut Criterion) {
    let data = input();
    let lines = data.lines().count() as u64;
    let mut g = c.benchmark_group("line_protocol_tsbs_cpu");
    g.throughput(Throughput::Bytes(data.len() as u64));
    eprintln!(
        "input: {lines} lines, {} bytes ({} bytes/line)",
        data.len(),
        data.len() as u64 / lines
    );

    g.bench_function("tidemark/parse", |b| {
        b.iter(|| {
            let mut p = LineParser::new(black_box(&data));
            let mut fields = 0usize;
            while let Some(l) = p.next() {
                if let Ok(line) = l.result {
                    fields += line.fields.len();
                }
            }
            black_box(fields)
        })
    });

    g.bench_function("tidemark/parse_into_columns", |b| {
        b.iter(|| {
            let db = Arc::new(DatabaseSchema::new("bench", 4));
            let mut builder = WriteBuilder::new(db, 1000);
            let errors = parse_into(
                black_box(data.as_bytes()),
                Precision::Nanosecond,
                0,
                LineLimits::default(),
                &mut builder,
            );
            assert!(errors.is_empty());
            black_box(builder.finish().map(|w| w.rows).unwrap_or(0))
        })
    });

    g.bench_function("influxdb_line_protocol/parse", |b| {
        b.iter(|| {
            let mut fields = 0usize;
            for l in influxdb_line_protocol::parse_lines(black_box(&data)).flatten() {
                fields += l.field_set.len();
            }
            black_box(fields)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
