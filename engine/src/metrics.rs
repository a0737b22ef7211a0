//! The node's Prometheus metrics: one registry holding every counter, gauge and histogram,
//! encoded in the OpenMetrics text format for `GET /metrics`.
//!
//! Label sets are bounded by construction: the only labels are an error `kind`, one of the
//! fixed names callers pass as `&'static str`; an HTTP route (one of the router's
//! templates, or `unmatched`), method (one of the standard ones, or `other`) and status;
//! and a topic's name, bounded by the topic limit (a deleted topic's series are removed);
//! no database, table or other user-supplied value ever becomes a label. The `process_*`
//! family (CPU, memory, file descriptors, start time) is read from `/proc` at each
//! scrape and has no `tidemark_` prefix, as Prometheus client libraries export it. Gauges that mirror state (buffer size) are set when scraped.
//! The log writer's counters live in storage ([`LogMetrics`]) and are registered here.

use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tidemark_storage::log::LogMetrics;

/// Label set of error counters: `kind`, from a fixed list.
pub type KindLabel = Vec<(&'static str, &'static str)>;

fn kind(kind: &'static str) -> KindLabel {
    vec![("kind", kind)]
}

/// Label set of topic counters: the topic's name.
pub type TopicLabel = Vec<(&'static str, String)>;

fn topic(name: &str) -> TopicLabel {
    vec![("topic", name.to_string())]
}

/// Every metric the node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub write_requests: Counter,
    pub write_lines: Counter,
    pub write_rejected_lines: Counter,
    pub write_bytes: Counter,
    write_errors: Family<KindLabel, Counter>,
    pub buffer_bytes: Gauge,
    pub buffer_limit_bytes: Gauge,
    pub persist_runs: Counter,
    pub persist_seconds: Histogram,
    pub persist_rows: Counter,
    pub persist_bytes: Counter,
    pub compaction_runs: Counter,
    pub compaction_errors: Counter,
    pub compaction_seconds: Histogram,
    pub compaction_bytes_read: Counter,
    pub compaction_bytes_written: Counter,
    pub queries: Counter,
    pub query_seconds: Histogram,
    query_errors: Family<KindLabel, Counter>,
    pub http_connections: Gauge,
    pub http_connections_accepted: Counter,
    pub http_connections_refused: Counter,
    http_requests: Family<RouteStatusLabel, Counter>,
    http_request_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// `process_*`, registered without the prefix.
    process: Registry,
    http_auth_failures: Family<Vec<(&'static str, &'static str)>, Counter>,
    topic_produced_records: Family<TopicLabel, Counter>,
    topic_produced_bytes: Family<TopicLabel, Counter>,
    topic_consumed_records: Family<TopicLabel, Counter>,
    topic_consumed_bytes: Family<TopicLabel, Counter>,
}

/// Label set of HTTP request counts: route, method and status.
pub type RouteStatusLabel = Vec<(&'static str, String)>;

/// Label set of HTTP request latencies: route and method.
pub type RouteLabel = Vec<(&'static str, String)>;

/// 1 ms to about 8 minutes.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

impl Metrics {
    /// Registers every metric, with the log writer's counters given by `log`.
    pub fn new(log: &LogMetrics) -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("tidemark"),
            write_requests: Counter::default(),
            write_lines: Counter::default(),
            write_rejected_lines: Counter::default(),
            write_bytes: Counter::default(),
            write_errors: Family::default(),
            buffer_bytes: Gauge::default(),
            buffer_limit_bytes: Gauge::default(),
            persist_runs: Counter::default(),
            persist_seconds: seconds_histogram(),
            persist_rows: Counter::default(),
            persist_bytes: Counter::default(),
            compaction_runs: Counter::default(),
            compaction_errors: Counter::default(),
            compaction_seconds: seconds_histogram(),
            compaction_bytes_read: Counter::default(),
            compaction_bytes_written: Counter::default(),
            queries: Counter::default(),
            query_seconds: seconds_histogram(),
            query_errors: Family::default(),
            http_connections: Gauge::default(),
            http_connections_accepted: Counter::default(),
            http_connections_refused: Counter::default(),
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(seconds_histogram),
            process: Registry::default(),
            http_auth_failures: Family::default(),
            topic_produced_records: Family::default(),
            topic_produced_bytes: Family::default(),
            topic_consumed_records: Family::default(),
            topic_consumed_bytes: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "write_requests",
            "Write requests received",
            m.write_requests.clone(),
        );
        r.register(
            "write_lines",
            "Line protocol lines accepted",
            m.write_lines.clone(),
        );
        r.register(
            "write_rejected_lines",
            "Line protocol lines rejected",
            m.write_rejected_lines.clone(),
        );
        r.register_with_unit(
            "write_request",
            "Write request bodies received, as sent",
            Unit::Bytes,
            m.write_bytes.clone(),
        );
        r.register(
            "write_errors",
            "Write requests refused, by kind",
            m.write_errors.clone(),
        );
        r.register(
            "http_connections",
            "HTTP connections open",
            m.http_connections.clone(),
        );
        r.register(
            "http_connections_accepted",
            "HTTP connections accepted (a client that keeps its connection alive opens one)",
            m.http_connections_accepted.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response's start, by route and method",
            Unit::Seconds,
            m.http_request_seconds.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections answered 503 because --max-connections were open",
            m.http_connections_refused.clone(),
        );
        r.register(
            "http_auth_failures",
            "HTTP requests refused by --auth, by reason: missing (no token), invalid (unknown or revoked token), forbidden (the token may not do that)",
            m.http_auth_failures.clone(),
        );
        r.register("log_appends", "Log records appended", log.appends.clone());
        r.register_with_unit(
            "log_written",
            "Bytes written to log segments",
            Unit::Bytes,
            log.bytes.clone(),
        );
        r.register(
            "log_commit_rounds",
            "Group-commit rounds of the log writer",
            log.commit_rounds.clone(),
        );
        r.register(
            "log_fsyncs",
            "fdatasync calls on log segments",
            log.fsyncs.clone(),
        );
        r.register_with_unit(
            "log_fsync_duration",
            "Time one fdatasync of a log segment took",
            Unit::Seconds,
            log.fsync_seconds.clone(),
        );
        r.register_with_unit(
            "buffer",
            "Memory held by the write buffer",
            Unit::Bytes,
            m.buffer_bytes.clone(),
        );
        r.register_with_unit(
            "buffer_limit",
            "Write buffer size past which writes wait",
            Unit::Bytes,
            m.buffer_limit_bytes.clone(),
        );
        r.register(
            "persist_runs",
            "Persists of a database's buffer to Parquet",
            m.persist_runs.clone(),
        );
        r.register_with_unit(
            "persist_duration",
            "Time one persist took",
            Unit::Seconds,
            m.persist_seconds.clone(),
        );
        r.register(
            "persist_rows",
            "Rows written by persists",
            m.persist_rows.clone(),
        );
        r.register_with_unit(
            "persist_written",
            "Parquet bytes written by persists",
            Unit::Bytes,
            m.persist_bytes.clone(),
        );
        r.register(
            "compaction_runs",
            "Compactions of one table window",
            m.compaction_runs.clone(),
        );
        r.register(
            "compaction_errors",
            "Compactions that failed",
            m.compaction_errors.clone(),
        );
        r.register_with_unit(
            "compaction_duration",
            "Time one compaction took",
            Unit::Seconds,
            m.compaction_seconds.clone(),
        );
        r.register_with_unit(
            "compaction_read",
            "Parquet bytes compactions replaced",
            Unit::Bytes,
            m.compaction_bytes_read.clone(),
        );
        r.register_with_unit(
            "compaction_written",
            "Parquet bytes compactions wrote",
            Unit::Bytes,
            m.compaction_bytes_written.clone(),
        );
        r.register("queries", "SQL queries run", m.queries.clone());
        r.register_with_unit(
            "query_duration",
            "Time from planning a query to its collected result",
            Unit::Seconds,
            m.query_seconds.clone(),
        );
        r.register(
            "query_errors",
            "Queries that failed, by kind",
            m.query_errors.clone(),
        );
        r.register(
            "topic_produced_records",
            "Records appended to a topic",
            m.topic_produced_records.clone(),
        );
        r.register_with_unit(
            "topic_produced",
            "Key and value bytes appended to a topic",
            Unit::Bytes,
            m.topic_produced_bytes.clone(),
        );
        r.register(
            "topic_consumed_records",
            "Records read from a topic",
            m.topic_consumed_records.clone(),
        );
        r.register_with_unit(
            "topic_consumed",
            "Key and value bytes read from a topic",
            Unit::Bytes,
            m.topic_consumed_bytes.clone(),
        );
        m.process
            .register_collector(Box::new(crate::process_metrics::ProcessCollector));
        m
    }

    /// Counts an answered HTTP request. `route` is the router's template (bounded);
    /// a method outside the standard ones counts as `other`.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
        let method = if METHODS.contains(&method) {
            method
        } else {
            "other"
        };
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_request_seconds
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
            ])
            .observe(elapsed.as_secs_f64());
    }

    /// The counters of records and bytes appended to a topic, to count a produce from the
    /// task that sees it written.
    pub fn topic_produced(&self, name: &str) -> (Counter, Counter) {
        let label = topic(name);
        (
            self.topic_produced_records.get_or_create(&label).clone(),
            self.topic_produced_bytes.get_or_create(&label).clone(),
        )
    }

    /// Counts records read from a topic.
    pub fn topic_consumed(&self, name: &str, records: u64, bytes: u64) {
        let label = topic(name);
        self.topic_consumed_records
            .get_or_create(&label)
            .inc_by(records);
        self.topic_consumed_bytes
            .get_or_create(&label)
            .inc_by(bytes);
    }

    /// Starts a topic's series at zero, so a topic shows before its first record.
    pub fn register_topic(&self, name: &str) {
        let _ = self.topic_produced(name);
        self.topic_consumed(name, 0, 0);
    }

    /// Drops a deleted topic's series, so the label set stays bounded by the live topics.
    pub fn forget_topic(&self, name: &str) {
        let label = topic(name);
        for family in [
            &self.topic_produced_records,
            &self.topic_produced_bytes,
            &self.topic_consumed_records,
            &self.topic_consumed_bytes,
        ] {
            family.remove(&label);
        }
    }

    /// Counts a refused write; `kind` is one of a fixed set of names.
    pub fn write_error(&self, kind: &'static str) {
        self.write_errors.get_or_create(&self::kind(kind)).inc();
    }

    /// Counts a failed query; `kind` is one of a fixed set of names.
    pub fn query_error(&self, kind: &'static str) {
        self.query_errors.get_or_create(&self::kind(kind)).inc();
    }

    /// Counts a request refused by authentication; `reason` is missing, invalid or
    /// forbidden.
    pub fn auth_failure(&self, reason: &'static str) {
        self.http_auth_failures
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Records a finished query.
    pub fn query_done(&self, elapsed: Duration) {
        self.queries.inc();
        self.query_seconds.observe(elapsed.as_secs_f64());
    }

    /// The registry in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Saturating conversion for gauges, which are `i64`.
pub fn gauge_value(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
