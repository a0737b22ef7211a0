//! Self-monitoring: the node's own metrics written into its `_internal` database every
//! `--internal-metrics-secs`, through the normal write path, so they can be queried with
//! SQL like any other data (and kept by retention like any other database).
//!
//! The OpenMetrics text that `/metrics` serves is turned into line protocol: each metric
//! family is a table named as the family without the `tidemark_` prefix, and each sample
//! a field named by what the sample adds to the family's name (`total`, `sum`, `count`),
//! or `value` for a gauge: `tidemark_write_requests_total` is `write_requests.total`,
//! `tidemark_buffer_bytes` is `buffer_bytes.value`. Labels become tags, and every value
//! is a float. Histograms keep their `sum` and `count`; their buckets are left out (a tag
//! per bucket bound would make every histogram many series).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tidemark_engine::Node;
use tidemark_storage::batch::FieldValue;

use crate::line_protocol::write_line;
use crate::write::{WriteOptions, write_lp};

/// The database the node's own metrics go to.
pub const INTERNAL_DATABASE: &str = "_internal";

/// Writes the node's metrics to [`INTERNAL_DATABASE`] every `interval` until `stop` turns
/// true. A failed write is logged and tried again at the next tick.
pub async fn run_self_metrics(
    node: Arc<Node>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let lines = to_line_protocol(&node.metrics_text(), now);
        let options = WriteOptions {
            // Losing the last few seconds of self-metrics in a crash is fine; an fsync
            // per tick is not worth it.
            durable: false,
            ..WriteOptions::default()
        };
        match write_lp(&node, INTERNAL_DATABASE, lines.as_bytes(), &options).await {
            Ok(outcome) if outcome.errors.is_empty() => {}
            Ok(outcome) => tracing::warn!(
                refused = outcome.errors.len(),
                first = %outcome.errors[0],
                "some self-metrics were refused"
            ),
            Err(e) => tracing::warn!(error = %e, "writing self-metrics failed"),
        }
    }
}

/// Label pairs of a sample, in the order given.
type Labels = Vec<(String, String)>;

/// One sample of the exposition text: name, labels, value.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (series, rest) = match line.rfind('}') {
        Some(close) if line.contains('{') => (&line[..close + 1], &line[close + 1..]),
        _ => line.split_once(' ')?,
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.find('{') {
        Some(open) => (
            &series[..open],
            parse_labels(&series[open + 1..series.len() - 1])?,
        ),
        None => (series, Vec::new()),
    };
    Some((name, labels, value))
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(s: &str) -> Option<Labels> {
    let mut labels = Vec::new();
    let mut rest = s.trim_start_matches(',');
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// The exposition text as line protocol at time `now` (ns).
pub fn to_line_protocol(text: &str, now: i64) -> String {
    // (table, sorted tags) -> fields, so that one line carries all fields of a series.
    let mut series: BTreeMap<(String, Labels), Vec<(String, f64)>> = BTreeMap::new();
    // The family the samples that follow belong to (`# TYPE <family> <type>`).
    let mut family = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split_whitespace().next().unwrap_or_default();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, mut labels, value)) = parse_sample(line) else {
            continue;
        };
        if name.ends_with("_bucket") || !value.is_finite() {
            continue;
        }
        let (table, field) = match name.strip_prefix(family) {
            Some("") if !family.is_empty() => (family, "value"),
            Some(rest) if !family.is_empty() && rest.starts_with('_') => (family, &rest[1..]),
            _ => (name, "value"),
        };
        let table = table.strip_prefix("tidemark_").unwrap_or(table);
        labels.sort();
        series
            .entry((table.to_string(), labels))
            .or_default()
            .push((field.to_string(), value));
    }
    let mut out = String::new();
    for ((table, labels), fields) in &series {
        let tags: Vec<(&str, &str)> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let fields: Vec<(&str, FieldValue<'_>)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), FieldValue::Float(*v)))
            .collect();
        write_line(&mut out, table, &tags, &fields, Some(now));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_becomes_one_line_per_series() {
        let text = "# HELP tidemark_write_requests Write requests received.\n\
                    # TYPE tidemark_write_requests counter\n\
                    tidemark_write_requests_total 5\n\
                    # TYPE tidemark_write_errors counter\n\
                    tidemark_write_errors_total{kind=\"bad_lines\"} 2\n\
                    tidemark_write_errors_total{kind=\"too \\\"large\\\"\"} 1\n\
                    # TYPE tidemark_log_fsync_duration_seconds histogram\n\
                    tidemark_log_fsync_duration_seconds_bucket{le=\"0.001\"} 3\n\
                    tidemark_log_fsync_duration_seconds_sum 0.5\n\
                    tidemark_log_fsync_duration_seconds_count 4\n\
                    # TYPE tidemark_buffer_bytes gauge\n\
                    tidemark_buffer_bytes 1024\n\
                    # TYPE tidemark_queries counter\n\
                    tidemark_queries_total 3\n\
                    # TYPE tidemark_query_duration_seconds histogram\n\
                    tidemark_query_duration_seconds_sum 0.25\n\
                    tidemark_query_duration_seconds_count 3\n\
                    # TYPE process_cpu_seconds counter\n\
                    process_cpu_seconds_total 1.5\n\
                    # EOF\n";
        let lp = to_line_protocol(text, 7);
        let lines: Vec<&str> = lp.lines().collect();
        assert_eq!(
            lines,
            vec![
                "buffer_bytes value=1024.0 7",
                "log_fsync_duration_seconds sum=0.5,count=4.0 7",
                "process_cpu_seconds total=1.5 7",
                "queries total=3.0 7",
                "query_duration_seconds sum=0.25,count=3.0 7",
                "write_errors,kind=bad_lines total=2.0 7",
                "write_errors,kind=too\\ \"large\" total=1.0 7",
                "write_requests total=5.0 7",
            ]
        );
    }
}
