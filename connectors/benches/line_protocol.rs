//! Line protocol parsing on TSBS `cpu` lines (10 tags, 10 float fields), side by side with
//! the `influxdb-line-protocol` crate on the same bytes.
//!
//! - `tidemark/parse`: our parser, every line fully parsed (numbers included), no columns.
//! - `tidemark/parse_into_columns`: parse + validate + partition + Arrow column builders.
//! - `influxdb_line_protocol/parse`: that crate's `parse_lines` (it leaves numbers as
//!   parsed values too), collecting nothing.
//!
//! Before the criterion groups, the binary prints the ratio of parse-into-columns to the
//! crate measured in alternating rounds. Criterion runs one function after the other, so
//! on a shared machine a burst of noise can land on one side only; alternating short
//! runs makes the noise hit both alike.

// Bench harness code: a failure here should stop the bench loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn parse_into_columns(data: &str) -> usize {
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
}

fn crate_parse(data: &str) -> usize {
    let mut fields = 0usize;
    for l in influxdb_line_protocol::parse_lines(black_box(data)).flatten() {
        fields += l.field_set.len();
    }
    black_box(fields)
}

/// The time of one run of `f`.
fn time_one(f: impl FnOnce() -> usize) -> Duration {
    let start = Instant::now();
    black_box(f());
    start.elapsed()
}

/// The alternating-runs ratio described in the module header: one run of each side in
/// turn, the order swapped every pair. Reported two ways that machine noise barely moves:
/// the ratio of each side's fastest run (the least disturbed), and the median pair.
fn interleaved_ratio(data: &str) {
    const PAIRS: usize = 200;
    let mib = data.len() as f64 / (1024.0 * 1024.0);
    for _ in 0..3 {
        black_box(parse_into_columns(data));
        black_box(crate_parse(data));
    }
    let mut pairs: Vec<(Duration, Duration)> = (0..PAIRS)
        .map(|r| {
            if r % 2 == 0 {
                let ours = time_one(|| parse_into_columns(data));
                (ours, time_one(|| crate_parse(data)))
            } else {
                let theirs = time_one(|| crate_parse(data));
                (time_one(|| parse_into_columns(data)), theirs)
            }
        })
        .collect();
    let rate = |d: Duration| mib / d.as_secs_f64();
    let ratio = |(o, t): (Duration, Duration)| t.as_secs_f64() / o.as_secs_f64();
    let best_ours = pairs.iter().map(|p| p.0).min().unwrap_or_default();
    let best_theirs = pairs.iter().map(|p| p.1).min().unwrap_or_default();
    pairs.sort_by(|x, y| ratio(*x).total_cmp(&ratio(*y)));
    eprintln!(
        "parse_into_columns vs influxdb_line_protocol, {PAIRS} alternating runs each: \
         fastest runs {:.0} vs {:.1} MiB/s = {:.1}x; per pair median {:.1}x (quartiles {:.1}x..{:.1}x)",
        rate(best_ours),
        rate(best_theirs),
        ratio((best_ours, best_theirs)),
        ratio(pairs[PAIRS / 2]),
        ratio(pairs[PAIRS / 4]),
        ratio(pairs[3 * PAIRS / 4]),
    );
}

fn bench(c: &mut Criterion) {
    let data = input();
    interleaved_ratio(&data);
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
        b.iter(|| parse_into_columns(&data))
    });

    g.bench_function("influxdb_line_protocol/parse", |b| {
        b.iter(|| crate_parse(&data))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
