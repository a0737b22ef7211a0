//! One failing topology per kind of problem, each asserting the message and the place;
//! and a valid one, planned.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::*;

/// Knows one table, `metrics.bids_1m`, with `n` as an integer and `top` as a float.
struct OneTable;

impl TableSchemas for OneTable {
    fn table_schema(&self, database: &str, table: &str) -> Option<SchemaRef> {
        (database == "metrics" && table == "bids_1m").then(|| {
            Arc::new(Schema::new(vec![
                Field::new(
                    "auction",
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    true,
                ),
                Field::new("n", DataType::Int64, true),
                Field::new("top", DataType::Float64, true),
                Field::new(
                    "time",
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                ),
            ]))
        })
    }
}

fn problems(yaml: &str) -> Vec<(usize, usize, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    match rt.block_on(load(yaml, &OneTable)) {
        Ok(_) => Vec::new(),
        Err(p) => p
            .into_iter()
            .map(|p| {
                (
                    p.loc.line,
                    p.loc.column,
                    format!("{}: {}", p.path, p.message),
                )
            })
            .collect(),
    }
}

/// Asserts exactly one problem, at `line:column`, whose text contains `needle`.
#[track_caller]
fn one(yaml: &str, line: usize, column: usize, needle: &str) {
    let got = problems(yaml);
    assert_eq!(got.len(), 1, "{got:#?}");
    let (l, c, text) = &got[0];
    assert_eq!((*l, *c), (line, column), "{text}");
    assert!(text.contains(needle), "{text:?} lacks {needle:?}");
}

const BIDS: &str = "name: t
sources:
  bids: { type: generator, generator: bids, event_time: date_time }
";

#[test]
fn a_valid_topology_plans_with_shuffles_and_chains() {
    let yaml = format!(
        "{BIDS}transforms:
  cheap: {{ inputs: [bids], sql: \"SELECT auction, price, date_time FROM input WHERE price < 100\" }}
  keyed: {{ inputs: [cheap], type: key_by, columns: [auction], parallelism: 2 }}
  w: {{ inputs: [keyed], type: window, key_by: [auction], window: {{ tumbling: 1m }},
       aggregates: {{ n: count(*), top: max(price) }}, parallelism: 2 }}
sinks:
  out: {{ inputs: [w], type: stdout, parallelism: 2 }}
"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let v = rt.block_on(load(&yaml, &NoTables)).expect("valid");
    let p = plan(&v);
    let names = |c: &plan::Chain| {
        c.nodes
            .iter()
            .map(|&i| v.spec.nodes[i].name.clone())
            .collect::<Vec<_>>()
    };
    // bids -> cheap chained; a shuffle into the keyed tasks; the window finds its rows
    // grouped already, so it chains with key_by and the sink.
    assert_eq!(p.chains.len(), 2, "{}", explain(&v));
    assert_eq!(names(&p.chains[0]), vec!["bids", "cheap"]);
    assert_eq!(names(&p.chains[1]), vec!["keyed", "w", "out"]);
    assert_eq!(p.chains[1].parallelism, 2);
    assert!(
        p.edges
            .iter()
            .any(|e| e.exchange == plan::Exchange::Shuffle(vec!["auction".into()]))
    );
    let text = explain(&v);
    assert!(
        text.contains("w [window tumbling 1m by auction, n=count(*), top=max(price)]"),
        "{text}"
    );
    assert!(text.contains("out: auction Int64, window_start"), "{text}");
}

#[test]
fn yaml_syntax_errors_have_their_place() {
    let got = problems("name: t\nsources: { a: [\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].2.contains("not a valid YAML"), "{got:?}");
    assert_eq!(got[0].0, 3);
}

#[test]
fn unknown_keys_types_and_missing_fields() {
    one(
        &format!("{BIDS}sinks:\n  out: {{ inputs: [bids], type: stdout, colour: red }}\n"),
        5,
        40,
        "unknown key \"colour\"",
    );
    one(
        &format!("{BIDS}sinks:\n  out: {{ inputs: [bids], type: kafka }}\n"),
        5,
        32,
        "unknown sink type \"kafka\"; expected one of: table, file, stdout, blackhole, http",
    );
    one(
        &format!("{BIDS}sinks:\n  out: {{ inputs: [bids], type: table, table: x }}\n"),
        5,
        3,
        "missing \"database\"",
    );
    one(
        "name: t\nsources:\n  s: { type: generator, generator: bids }\n",
        1,
        1,
        "missing \"sinks\"",
    );
    one(
        &format!("{BIDS}sinks:\n  out: {{ inputs: [bids] }}\n"),
        5,
        3,
        "missing \"type\"",
    );
}

#[test]
fn bad_durations_and_windows() {
    let yaml = format!(
        "{BIDS}transforms:
  w: {{ inputs: [bids], type: window, window: {{ tumbling: soon }}, aggregates: {{ n: count(*) }} }}
sinks:
  out: {{ inputs: [w], type: stdout }}
"
    );
    one(
        &yaml,
        5,
        58,
        "\"tumbling\" is \"soon\": expected a positive duration",
    );
    let yaml = format!(
        "{BIDS}transforms:
  w: {{ inputs: [bids], type: window, window: {{ sliding: {{ size: 1m, slide: 5m }} }}, aggregates: {{ n: count(*) }} }}
sinks:
  out: {{ inputs: [w], type: stdout }}
"
    );
    one(&yaml, 5, 57, "slide must not be longer than size");
}

#[test]
fn unknown_inputs_outputs_and_sinks_as_inputs() {
    one(
        &format!("{BIDS}sinks:\n  out: {{ inputs: [bid], type: stdout }}\n"),
        5,
        19,
        "unknown input \"bid\"; the sources and transforms are bids",
    );
    one(
        &format!("{BIDS}sinks:\n  out: {{ inputs: [bids.late], type: stdout }}\n"),
        5,
        19,
        "\"bids\" (generator) has no named output \"late\"",
    );
    one(
        &format!(
            "{BIDS}sinks:\n  a: {{ inputs: [bids], type: stdout }}\n  b: {{ inputs: [a], type: stdout }}\n"
        ),
        6,
        17,
        "\"a\" is a sink: it has no output to read",
    );
    one(
        &format!(
            "{BIDS}transforms:\n  bids: {{ inputs: [bids], sql: \"SELECT * FROM input\" }}\nsinks:\n  o: {{ inputs: [bids], type: stdout }}\n"
        ),
        5,
        3,
        "the name \"bids\" is already used by sources.bids",
    );
}

#[test]
fn cycles_are_named() {
    let yaml = format!(
        "{BIDS}transforms:
  a: {{ inputs: [bids, b], type: union }}
  b: {{ inputs: [a], sql: \"SELECT * FROM input\" }}
sinks:
  out: {{ inputs: [b], type: stdout }}
"
    );
    one(&yaml, 5, 3, "a cycle: a, b read from each other");
}

#[test]
fn unknown_columns_and_type_mismatches() {
    // In SQL: DataFusion's message, at the statement.
    let yaml = format!(
        "{BIDS}transforms:
  s: {{ inputs: [bids], sql: \"SELECT auction, cost FROM input\" }}
sinks:
  out: {{ inputs: [s], type: stdout }}
"
    );
    one(&yaml, 5, 29, "the SQL does not plan over its input");
    assert!(problems(&yaml)[0].2.contains("cost"));
    // In a window: the key and the aggregate, each where it is written.
    let yaml = format!(
        "{BIDS}transforms:
  w: {{ inputs: [bids], type: window, key_by: [bidder, shop], window: {{ tumbling: 1m }},
       aggregates: {{ a: avg(channel), b: sum(amount) }} }}
sinks:
  out: {{ inputs: [w], type: stdout }}
"
    );
    let got = problems(&yaml);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!((got[0].0, got[0].1), (5, 55));
    assert!(
        got[0]
            .2
            .contains("unknown column \"shop\"; the input has auction, bidder, price"),
        "{got:?}"
    );
    assert_eq!((got[1].0, got[1].1), (6, 25));
    assert!(
        got[1]
            .2
            .contains("avg(channel) needs a numeric column; \"channel\" is Utf8"),
        "{got:?}"
    );
    assert_eq!((got[2].0, got[2].1), (6, 42));
    assert!(got[2].2.contains("unknown column \"amount\""), "{got:?}");
}

#[test]
fn windows_and_joins_need_event_time() {
    let yaml = "name: t
sources:
  bids: { type: generator, generator: bids }
transforms:
  w: { inputs: [bids], type: window, window: { tumbling: 1m }, aggregates: { n: count(*) } }
sinks:
  out: { inputs: [w], type: stdout }
";
    one(yaml, 5, 3, "a window needs event time");
    // Event time is lost when SQL drops (or retypes) its column.
    let yaml = format!(
        "{BIDS}transforms:
  s: {{ inputs: [bids], sql: \"SELECT auction, price FROM input\" }}
  w: {{ inputs: [s], type: window, window: {{ tumbling: 1m }}, aggregates: {{ n: count(*) }} }}
sinks:
  out: {{ inputs: [w], type: stdout }}
"
    );
    one(&yaml, 6, 3, "a window needs event time");
    let yaml = "name: t
sources:
  bids: { type: generator, generator: bids, event_time: date_time }
  people: { type: generator, generator: persons }
transforms:
  j: { inputs: [bids, people], type: join, on: [id], within: 10s }
sinks:
  out: { inputs: [j], type: stdout }
";
    let got = problems(yaml);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got.iter().any(|p| p.2.contains("the right one has none")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.2.contains("unknown column \"id\"; the input has auction")),
        "{got:?}"
    );
}

#[test]
fn unions_need_the_same_columns() {
    let yaml = "name: t
sources:
  a: { type: generator, generator: sequence }
  b: { type: generator, generator: bids }
transforms:
  u: { inputs: [a, b], type: union }
sinks:
  out: { inputs: [u], type: stdout }
";
    one(
        yaml,
        6,
        20,
        "a union's inputs must have the same columns: a has (value Int64",
    );
}

#[test]
fn sinks_whose_rows_do_not_fit_their_table() {
    // No time column.
    let yaml = format!(
        "{BIDS}transforms:
  s: {{ inputs: [bids], sql: \"SELECT auction, price FROM input\" }}
sinks:
  out: {{ inputs: [s], type: table, database: metrics, table: anything }}
"
    );
    one(&yaml, 7, 3, "need a timestamp column named \"time\"");
    // The table has `n` as an integer; this writes a float.
    let yaml = format!(
        "{BIDS}transforms:
  s: {{ inputs: [bids], sql: \"SELECT CAST(auction AS VARCHAR) AS auction, price * 1.5 AS n, date_time AS time FROM input\" }}
sinks:
  out: {{ inputs: [s], type: table, database: metrics, table: bids_1m }}
"
    );
    one(
        &yaml,
        7,
        3,
        "column \"n\" is Float64 here but Int64 in the table",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "name: t
sources:
  s: { type: generator, generator: bogus }
transforms:
  w: { inputs: [nothing], type: window, window: { tumbling: -1s }, aggregates: { n: count(*) } }
sinks:
  out: { inputs: [w, nowhere], type: stdout, parallelism: 0 }
";
    let got = problems(yaml);
    assert_eq!(got.len(), 4, "{got:#?}");
    let lines: Vec<usize> = got.iter().map(|p| p.0).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "sorted by place: {lines:?}"
    );
}

#[test]
fn file_source_options_fit_the_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "v,time\n1,2026-01-01T00:00:00Z\n").expect("write");
    let check = |option: &str, value: &str, needle: &str| {
        let source = format!(
            "  f: {{ type: file, path: {}, event_time: time, {option}: {value} }}",
            csv.display()
        );
        let yaml = format!(
            "name: t\nsources:\n{source}\nsinks:\n  out: {{ inputs: [f], type: stdout }}\n"
        );
        let column = source.rfind(value).expect("value") + 1;
        one(&yaml, 3, column, needle);
    };
    check(
        "follow",
        "true",
        "\"follow\" reads jsonl and line protocol files (a csv or parquet file is read once)",
    );
    check(
        "follow",
        "always",
        "\"follow\" is \"always\": expected true or false",
    );
    check(
        "precision",
        "s",
        "\"precision\" and \"measurement\" apply to line protocol files",
    );
    // Not following is what a csv file does anyway.
    let yaml = format!(
        "name: t\nsources:\n  f: {{ type: file, path: {}, event_time: time, follow: false }}\nsinks:\n  out: {{ inputs: [f], type: stdout }}\n",
        csv.display()
    );
    assert_eq!(problems(&yaml), Vec::new());
}

#[test]
fn an_http_sink_ca_file_must_hold_certificates_and_serve_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let check = |url: &str, ca: &str, needle: &str| {
        let sink =
            format!("  hook: {{ inputs: [bids], type: http, url: \"{url}\", ca_file: {ca} }}");
        let yaml = format!("{BIDS}sinks:\n{sink}\n");
        let column = sink.rfind(ca).expect("ca") + 1;
        one(&yaml, 5, column, needle);
    };
    check(
        "http://127.0.0.1:1/x",
        &junk.display().to_string(),
        "\"ca_file\" applies to https:// URLs",
    );
    check(
        "https://127.0.0.1:1/x",
        &junk.display().to_string(),
        "holds no PEM certificate",
    );
    check(
        "https://127.0.0.1:1/x",
        "/nonexistent/ca.pem",
        "cannot read /nonexistent/ca.pem",
    );
}
