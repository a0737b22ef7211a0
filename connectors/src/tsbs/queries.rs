//! The TSBS `cpu-only` query set, as SQL that both Tidemark (DataFusion) and DuckDB run
//! unchanged, so that one list of queries can be timed on both.
//!
//! Each query type draws its hosts and its time window from a [`Rng`] seeded by the run's
//! seed and the query's index: the same seed gives the same queries on every machine.

use super::{Generator, Rng};

/// The query types of TSBS `cpu-only`, by their TSBS names.
pub const QUERY_TYPES: [&str; 15] = [
    "single-groupby-1-1-1",
    "single-groupby-1-1-12",
    "single-groupby-1-8-1",
    "single-groupby-5-1-1",
    "single-groupby-5-1-12",
    "single-groupby-5-8-1",
    "cpu-max-all-1",
    "cpu-max-all-8",
    "double-groupby-1",
    "double-groupby-5",
    "double-groupby-all",
    "high-cpu-1",
    "high-cpu-all",
    "lastpoint",
    "groupby-orderby-limit",
];

const HOUR_NS: i64 = 3_600_000_000_000;

/// One query to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Query {
    /// The TSBS query type.
    pub kind: String,
    pub sql: String,
}

/// The span of the data the queries run over.
#[derive(Debug, Clone, Copy)]
pub struct DataSpan {
    pub hosts: usize,
    /// First timestamp, inclusive.
    pub start_ns: i64,
    /// Last timestamp, exclusive.
    pub end_ns: i64,
}

impl DataSpan {
    /// The span of the first `rows` rows of a generator's data.
    pub fn of(generator: &Generator, rows: u64) -> Self {
        let end_ns = if rows == 0 {
            generator.start_ns()
        } else {
            generator
                .time_of(rows - 1)
                .saturating_add(generator.interval_ns())
        };
        Self {
            hosts: generator.hosts(),
            start_ns: generator.start_ns(),
            end_ns,
        }
    }
}

/// Builds query `index` of type `kind`, or `None` if `kind` is not a TSBS cpu-only type.
pub fn query(kind: &str, span: DataSpan, seed: u64, index: u64) -> Option<Query> {
    let kind_no = QUERY_TYPES.iter().position(|k| *k == kind)? as u64;
    let mut rng = Rng::for_item(seed ^ kind_no.wrapping_mul(0x1000_0000_01B3), index);
    let metrics = |n: usize| super::CPU_FIELDS[..n].to_vec();
    let sql = match kind {
        "single-groupby-1-1-1" => per_host_max(&mut rng, span, &metrics(1), 1, 1, "minute"),
        "single-groupby-1-1-12" => per_host_max(&mut rng, span, &metrics(1), 1, 12, "minute"),
        "single-groupby-1-8-1" => per_host_max(&mut rng, span, &metrics(1), 8, 1, "minute"),
        "single-groupby-5-1-1" => per_host_max(&mut rng, span, &metrics(5), 1, 1, "minute"),
        "single-groupby-5-1-12" => per_host_max(&mut rng, span, &metrics(5), 1, 12, "minute"),
        "single-groupby-5-8-1" => per_host_max(&mut rng, span, &metrics(5), 8, 1, "minute"),
        "cpu-max-all-1" => per_host_max(&mut rng, span, &metrics(10), 1, 8, "hour"),
        "cpu-max-all-8" => per_host_max(&mut rng, span, &metrics(10), 8, 8, "hour"),
        "double-groupby-1" => double_groupby(&mut rng, span, &metrics(1)),
        "double-groupby-5" => double_groupby(&mut rng, span, &metrics(5)),
        "double-groupby-all" => double_groupby(&mut rng, span, &metrics(10)),
        "high-cpu-1" => high_cpu(&mut rng, span, Some(1)),
        "high-cpu-all" => high_cpu(&mut rng, span, None),
        "lastpoint" => {
            "SELECT DISTINCT ON (hostname) * FROM cpu ORDER BY hostname, time DESC".to_string()
        }
        "groupby-orderby-limit" => {
            let (_, end) = window(&mut rng, span, HOUR_NS);
            format!(
                "SELECT date_trunc('minute', time) AS minute, max(usage_user) AS max_usage_user \
                 FROM cpu WHERE time < {} GROUP BY minute ORDER BY minute DESC LIMIT 5",
                timestamp(end)
            )
        }
        _ => return None,
    };
    Some(Query {
        kind: kind.to_string(),
        sql,
    })
}

/// A window of `len` inside the span, starting anywhere it fits (at the span's start if
/// the span is shorter).
fn window(rng: &mut Rng, span: DataSpan, len: i64) -> (i64, i64) {
    let room = span
        .end_ns
        .saturating_sub(span.start_ns)
        .saturating_sub(len);
    let start = if room > 0 {
        span.start_ns + rng.below(room as u64) as i64
    } else {
        span.start_ns
    };
    (start, start.saturating_add(len))
}

/// `n` distinct host names, as an SQL list.
fn hosts(rng: &mut Rng, span: DataSpan, n: usize) -> String {
    let n = n.min(span.hosts.max(1));
    let mut chosen: Vec<u64> = Vec::with_capacity(n);
    while chosen.len() < n {
        let h = rng.below(span.hosts.max(1) as u64);
        if !chosen.contains(&h) {
            chosen.push(h);
        }
    }
    chosen
        .iter()
        .map(|h| format!("'host_{h}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `TIMESTAMP '...'`, a literal both DataFusion and DuckDB read as a UTC instant (DuckDB with
/// its time zone set to UTC).
fn timestamp(ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.f"))
}

fn time_range(start: i64, end: i64) -> String {
    format!("time >= {} AND time < {}", timestamp(start), timestamp(end))
}

/// `func(m) AS prefix_m, ...` for each metric.
fn aggregates(func: &str, prefix: &str, metrics: &[&str]) -> String {
    metrics
        .iter()
        .map(|m| format!("{func}({m}) AS {prefix}_{m}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `max` of `metrics` per `bucket` (`minute` or `hour`) for `host_count` hosts over
/// `hours`: TSBS single-groupby (minute buckets) and cpu-max-all (hour buckets, all ten).
fn per_host_max(
    rng: &mut Rng,
    span: DataSpan,
    metrics: &[&str],
    host_count: usize,
    hours: i64,
    bucket: &str,
) -> String {
    let (start, end) = window(rng, span, hours * HOUR_NS);
    let hosts = hosts(rng, span, host_count);
    format!(
        "SELECT date_trunc('{bucket}', time) AS {bucket}, {} FROM cpu \
         WHERE hostname IN ({hosts}) AND {} GROUP BY {bucket} ORDER BY {bucket}",
        aggregates("max", "max", metrics),
        time_range(start, end)
    )
}

fn double_groupby(rng: &mut Rng, span: DataSpan, metrics: &[&str]) -> String {
    let (start, end) = window(rng, span, 12 * HOUR_NS);
    format!(
        "SELECT date_trunc('hour', time) AS hour, hostname, {} FROM cpu \
         WHERE {} GROUP BY hour, hostname ORDER BY hour, hostname",
        aggregates("avg", "mean", metrics),
        time_range(start, end)
    )
}

fn high_cpu(rng: &mut Rng, span: DataSpan, host_count: Option<usize>) -> String {
    let (start, end) = window(rng, span, 12 * HOUR_NS);
    let host_filter = match host_count {
        Some(n) => format!("hostname IN ({}) AND ", hosts(rng, span, n)),
        None => String::new(),
    };
    format!(
        "SELECT * FROM cpu WHERE {host_filter}usage_user > 90.0 AND {}",
        time_range(start, end)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsbs::{DEFAULT_INTERVAL_NS, UseCase};

    fn span() -> DataSpan {
        let g = Generator::new(
            UseCase::CpuOnly,
            50,
            1_767_225_600_000_000_000,
            DEFAULT_INTERVAL_NS,
            1,
        );
        // Two days of data.
        DataSpan::of(&g, 50 * 17_280)
    }

    #[test]
    fn every_type_builds_deterministically_inside_the_span() {
        for kind in QUERY_TYPES {
            let a = query(kind, span(), 7, 3).unwrap();
            assert_eq!(a, query(kind, span(), 7, 3).unwrap());
            assert_eq!(a.kind, kind);
            assert!(a.sql.contains("FROM cpu"), "{}", a.sql);
        }
        assert!(query("nope", span(), 7, 0).is_none());
        let a = query("single-groupby-1-8-1", span(), 7, 0).unwrap();
        let b = query("single-groupby-1-8-1", span(), 7, 1).unwrap();
        assert_ne!(a, b, "indexes draw different parameters");
        assert_eq!(a.sql.matches("'host_").count(), 8);
        assert!(a.sql.contains("TIMESTAMP '2026-01-0"), "{}", a.sql);
    }

    #[test]
    fn windows_fit_short_spans() {
        let mut rng = Rng::new(3);
        let s = DataSpan {
            hosts: 2,
            start_ns: 100,
            end_ns: 200,
        };
        assert_eq!(window(&mut rng, s, HOUR_NS), (100, 100 + HOUR_NS));
        assert_eq!(hosts(&mut rng, s, 8).matches("host_").count(), 2);
    }
}
