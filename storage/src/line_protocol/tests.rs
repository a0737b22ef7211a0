use std::borrow::Cow;
use std::sync::Arc;

use crate::batch::{FieldValue, WriteBuilder};
use crate::catalog::DatabaseSchema;
use proptest::prelude::*;

use super::*;

type OwnedLine = (
    String,
    Vec<(String, String)>,
    Vec<(String, FieldValue<'static>)>,
    Option<i64>,
);

fn owned(v: &FieldValue<'_>) -> FieldValue<'static> {
    match v {
        FieldValue::String(s) => FieldValue::String(Cow::Owned(s.to_string())),
        FieldValue::Float(x) => FieldValue::Float(*x),
        FieldValue::Integer(x) => FieldValue::Integer(*x),
        FieldValue::UInteger(x) => FieldValue::UInteger(*x),
        FieldValue::Boolean(x) => FieldValue::Boolean(*x),
    }
}

fn parse_all(src: &str) -> Vec<(usize, Result<OwnedLine, String>)> {
    let mut p = LineParser::new(src);
    let mut out = Vec::new();
    while let Some(l) = p.next() {
        let r = l.result.map(|line| {
            (
                line.measurement.to_string(),
                line.tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                line.fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), owned(v)))
                    .collect(),
                line.timestamp,
            )
        });
        out.push((l.line_number, r));
    }
    out
}

fn one(src: &str) -> OwnedLine {
    let mut all = parse_all(src);
    assert_eq!(all.len(), 1, "{src:?} -> {all:?}");
    match all.remove(0).1 {
        Ok(l) => l,
        Err(e) => panic!("{src:?} failed: {e}"),
    }
}

fn err(src: &str) -> String {
    let all = parse_all(src);
    assert_eq!(all.len(), 1, "{src:?} -> {all:?}");
    match &all[0].1 {
        Ok(l) => panic!("{src:?} parsed as {l:?}"),
        Err(e) => e.clone(),
    }
}

#[test]
fn a_full_line() {
    let (m, tags, fields, ts) =
        one("cpu,host=a,region=us-west usage=0.5,n=3i,u=7u,s=\"hi\",ok=t 1700000000000000000");
    assert_eq!(m, "cpu");
    assert_eq!(
        tags,
        [
            ("host".into(), "a".into()),
            ("region".into(), "us-west".into())
        ]
    );
    assert_eq!(
        fields,
        [
            ("usage".into(), FieldValue::Float(0.5)),
            ("n".into(), FieldValue::Integer(3)),
            ("u".into(), FieldValue::UInteger(7)),
            ("s".into(), FieldValue::String("hi".into())),
            ("ok".into(), FieldValue::Boolean(true)),
        ]
    );
    assert_eq!(ts, Some(1_700_000_000_000_000_000));
}

#[test]
fn every_boolean_spelling() {
    for t in ["t", "T", "true", "True", "TRUE"] {
        assert_eq!(one(&format!("m v={t}")).2[0].1, FieldValue::Boolean(true));
    }
    for f in ["f", "F", "false", "False", "FALSE"] {
        assert_eq!(one(&format!("m v={f}")).2[0].1, FieldValue::Boolean(false));
    }
    assert!(err("m v=tRue").contains("invalid value"));
    let tru = err("m v=tru");
    assert!(
        tru.contains("no boolean (true, false") && !tru.contains("unsigned"),
        "{tru}"
    );
    assert!(err("m v=nope").contains("need double quotes"));
}

#[test]
fn escapes_in_names_and_values() {
    let (m, tags, fields, _) =
        one(r#"my\ meas\,ure,tag\ key=va\,l\=ue,k=a\\b field\=key="quote \" and \\ backslash""#);
    assert_eq!(m, "my meas,ure");
    assert_eq!(tags[0], ("tag key".into(), "va,l=ue".into()));
    assert_eq!(tags[1], ("k".into(), r"a\b".into()));
    assert_eq!(fields[0].0, "field=key");
    assert_eq!(
        fields[0].1,
        FieldValue::String(r#"quote " and \ backslash"#.into())
    );
    // A backslash before an ordinary character is literal.
    assert_eq!(one(r"m,t=a\b v=1").1[0].1, r"a\b");
}

#[test]
fn newline_inside_a_string_field() {
    let all = parse_all("m s=\"one\ntwo\" 1\nm s=\"x\" 2\n");
    assert_eq!(all.len(), 2);
    let (_, Ok(first)) = &all[0] else {
        panic!("{all:?}")
    };
    assert_eq!(first.2[0].1, FieldValue::String("one\ntwo".into()));
    assert_eq!(all[1].0, 3, "the next line is numbered by physical line");
}

#[test]
fn line_numbers_stay_right_after_bad_lines_with_multiline_strings() {
    let all = parse_all("m s=\"a\nb\" 12ab\nm v=1\nm s=\"never\nclosed\n");
    let numbers: Vec<(usize, bool)> = all.iter().map(|(n, r)| (*n, r.is_ok())).collect();
    assert_eq!(numbers, [(1, false), (3, true), (4, false)]);
}

#[test]
fn comments_blank_lines_and_crlf() {
    let all = parse_all("# a comment\n\n   \nm v=1 5\r\n# another\r\nm v=2\r\n");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, 4);
    assert_eq!(all[1].0, 6);
    assert!(all.iter().all(|(_, r)| r.is_ok()), "{all:?}");
}

#[test]
fn clear_errors_per_line() {
    assert!(err("cpu").contains("missing fields"));
    assert!(err("cpu,host=a").contains("missing fields"));
    assert!(err("cpu,host v=1").contains("no '='"));
    assert!(err("cpu,host= v=1").contains("empty value"));
    assert!(err("cpu v=").contains("empty value"));
    assert!(err("cpu v=abc").contains("invalid value \"abc\""));
    assert!(err("cpu v=1x2i").contains("invalid integer"));
    assert!(err("cpu v=99999999999999999999i").contains("invalid integer"));
    assert!(err("cpu v=-1u").contains("invalid unsigned"));
    assert!(err("cpu v=\"open").contains("no closing double quote"));
    assert!(err("cpu v=1 12ab").contains("invalid timestamp"));
    assert!(err("cpu v=1 1 2").contains("unexpected"));
    assert!(err("cpu v=NaN").contains("invalid value"));
    assert!(err("cpu v=inf").contains("invalid value"));
    assert!(err(",t=1 v=1").contains("measurement name is empty"));
}

#[test]
fn an_error_does_not_swallow_the_next_line() {
    let all = parse_all("bad line here\nm v=1\nm,t v=1\nm v=2");
    let ok: Vec<bool> = all.iter().map(|(_, r)| r.is_ok()).collect();
    assert_eq!(ok, [false, true, false, true]);
    let numbers: Vec<usize> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
}

#[test]
fn precision_scales_and_overflow_is_an_error() {
    let db = Arc::new(DatabaseSchema::new("db", 1));
    let mut b = WriteBuilder::new(db, 100);
    let errors = parse_into(
        b"m v=1 1700000000\nm v=2 9223372036854775807\nm v=3\n",
        Precision::Second,
        42,
        LineLimits::default(),
        &mut b,
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line_number, 2);
    assert!(
        errors[0]
            .error_message
            .contains("outside the representable range")
    );
    let batch = b.finish().unwrap();
    let rb = &batch.partitions[0].tables[0].1;
    let time = rb
        .column_by_name("time")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::TimestampNanosecondArray>()
        .unwrap();
    assert_eq!(time.values().as_ref(), &[1_700_000_000_000_000_000, 42]);
}

#[test]
fn invalid_utf8_rejects_only_its_line() {
    let db = Arc::new(DatabaseSchema::new("db", 1));
    let mut b = WriteBuilder::new(db, 100);
    let mut body = b"m v=1\nm,t=".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(b" v=2\nm v=3\n");
    let errors = parse_into(
        &body,
        Precision::Nanosecond,
        0,
        LineLimits::default(),
        &mut b,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line_number, 2);
    assert!(errors[0].error_message.contains("UTF-8"));
    assert_eq!(b.rows(), 2);
}

#[test]
fn type_conflicts_within_a_request_name_line_field_and_types() {
    let db = Arc::new(DatabaseSchema::new("db", 2));
    let mut b = WriteBuilder::new(db, 100);
    let errors = parse_into(
        b"m,h=a v=1\nm,h=b v=1i\nm,h=c v=\"s\"\n",
        Precision::Nanosecond,
        0,
        LineLimits::default(),
        &mut b,
    );
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].line_number, 2);
    assert!(
        errors[0].error_message.contains("\"v\"")
            && errors[0].error_message.contains("float")
            && errors[0].error_message.contains("integer"),
        "{}",
        errors[0].error_message
    );
}

#[test]
fn limits_are_enforced() {
    let db = Arc::new(DatabaseSchema::new("db", 1));
    let mut b = WriteBuilder::new(db, 100);
    let limits = LineLimits {
        max_line_bytes: 20,
        max_fields: 2,
    };
    let errors = parse_into(
        b"m a=1,b=2,c=3\nm v=1,this_is_a_long_key=2\nm v=1\n",
        Precision::Nanosecond,
        0,
        limits,
        &mut b,
    );
    assert_eq!(errors.len(), 2);
    assert!(errors[0].error_message.contains("3 fields"));
    assert!(errors[1].error_message.contains("bytes"));
}

fn name() -> impl Strategy<Value = String> {
    // Printable names including every character that needs escaping somewhere.
    proptest::string::string_regex(r#"[a-zA-Z0-9_ ,="\\\-\.é]{1,12}"#)
        .expect("valid regex")
        .prop_filter("no leading #, no trailing backslash games", |s| {
            !s.starts_with('#') && !s.starts_with(' ') && s != "time"
        })
}

fn field_value() -> impl Strategy<Value = FieldValue<'static>> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Integer),
        any::<u64>().prop_map(FieldValue::UInteger),
        any::<bool>().prop_map(FieldValue::Boolean),
        proptest::string::string_regex(r#"[a-z "\\\n,=]{0,20}"#)
            .expect("valid regex")
            .prop_map(|s| FieldValue::String(Cow::Owned(s))),
    ]
}

proptest! {
    #[test]
    fn the_float_fast_path_agrees_with_the_standard_parser(
        int in 0u64..10_000_000_000, frac in 0u64..1_000_000, frac_len in 0usize..7, neg in any::<bool>()
    ) {
        let frac = format!("{frac:06}");
        let text = if frac_len == 0 {
            format!("{}{int}", if neg { "-" } else { "" })
        } else {
            format!("{}{int}.{}", if neg { "-" } else { "" }, &frac[..frac_len])
        };
        let expected: f64 = text.parse().unwrap();
        let got = one(&format!("m v={text}")).2[0].1.clone();
        prop_assert_eq!(got, FieldValue::Float(expected), "{}", text);
    }

    #[test]
    fn encoder_round_trips_through_the_parser(
        lines in proptest::collection::vec(
            (name(),
             proptest::collection::btree_map(name(), name(), 0..4),
             proptest::collection::btree_map(name(), field_value(), 1..5),
             proptest::option::of(any::<i64>())),
            1..8)
    ) {
        let mut text = String::new();
        let mut expected = Vec::new();
        for (m, tags, fields, ts) in &lines {
            // A key may not be both a tag and a field in the parser's output either way,
            // but that is a schema rule, not syntax: the parser must still round-trip it.
            let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let fields: Vec<(&str, FieldValue<'static>)> =
                fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            write_line(&mut text, m, &tags, &fields, *ts);
            text.push('\n');
            expected.push((
                m.clone(),
                tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>(),
                fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<_>>(),
                *ts,
            ));
        }
        let parsed = parse_all(&text);
        prop_assert_eq!(parsed.len(), expected.len(), "{}", text);
        for ((_, got), want) in parsed.into_iter().zip(expected) {
            match got {
                Ok(got) => prop_assert_eq!(got, want),
                Err(e) => prop_assert!(false, "{} failed: {}", text, e),
            }
        }
    }

    #[test]
    fn the_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let db = Arc::new(DatabaseSchema::new("db", 3));
        let mut b = WriteBuilder::new(db, 1000);
        let _ = parse_into(&bytes, Precision::Millisecond, 0, LineLimits::default(), &mut b);
        let _ = b.finish();
    }
}

/// Parses `body` twice, with and without remembered series, and returns both outcomes.
fn both_ways(body: &str, precision: Precision) -> [(Vec<LineError>, String); 2] {
    [true, false].map(|remember_series| {
        let db = Arc::new(DatabaseSchema::new("db", 3));
        let mut b = WriteBuilder::new(db, 1000);
        let settings = Settings {
            precision,
            default_time: 42,
            limits: LineLimits {
                max_line_bytes: 1024,
                max_fields: 3,
            },
            remember_series,
        };
        let errors = parse_with(body.as_bytes(), &settings, &mut b);
        // Debug output of the whole write: partitions, tables, every column's values,
        // dictionaries and nulls, and the columns the catalog would learn.
        (errors, format!("{:?}", b.finish().unwrap()))
    })
}

fn series_text() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "cpu,host=a",
        "cpu,host=b,region=eu",
        "cpu,region=eu,host=a",
        "cpu",
        "m\\ x,t\\,k=v\\ 1\\=",
        "cpu,host=a,host=b",
        "cpu,time=x",
        "cpu,host=a\\\\",
        "cpu,u=tag",
        "cpu,host=",
    ])
}

fn field_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec!["u", "v", "w\\,x", "a\\=b", "time", "v\\ "]);
    let value = prop::sample::select(vec![
        "1",
        "-0.5",
        "1e3",
        "12345678901234567",
        ".5",
        "5.",
        "+3",
        "0.000001",
        "-",
        "1i",
        "-9223372036854775808i",
        "9223372036854775808i",
        "i",
        "0u",
        "18446744073709551615u",
        "18446744073709551616u",
        "t",
        "FALSE",
        "true",
        "\"s\"",
        "\"a\\\"b\\\\\"",
        "\"x\ny\"",
        "1.2.3",
        "",
        "abc",
        "1.5x",
    ]);
    (key, value).prop_map(|(k, v)| format!("{k}={v}"))
}

fn line_text() -> impl Strategy<Value = String> {
    let time = prop::sample::select(vec![
        "",
        " 1",
        " -5",
        " 9223372036854775807",
        " 9223372036854775808",
        " 12345678901234567890",
        " 0001",
        " x",
        " 1 2",
        " 1\r",
        "  7  ",
    ]);
    // Mostly the same two layouts, so that rows of remembered series follow their table's
    // previous layout (and take the shortcut); sometimes anything.
    let float = prop::sample::select(vec!["1", "-0.5", "1e3", "5.", "0.25", "+3", "7x"]);
    let int = prop::sample::select(vec!["1i", "-3i", "9223372036854775808i", "2", "t"]);
    let fields = prop_oneof![
        3 => (float.clone(), int).prop_map(|(f, i)| vec![format!("u={f}"), format!("v={i}")]),
        2 => float.prop_map(|f| vec![format!("u={f}")]),
        2 => proptest::collection::vec(field_text(), 1..4),
    ];
    (series_text(), fields, time, 0..8u8).prop_map(|(series, fields, time, shape)| match shape {
        // Mostly the usual shape; sometimes a missing field set, a stray comma, or a
        // comment and a blank line in between.
        0 => format!("{series}{time}"),
        1 => format!("{series} {},{time}", fields.join(",")),
        2 => format!("# note\n\n{series} {}{time}", fields.join(",")),
        _ => format!("{series} {}{time}", fields.join(",")),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Remembering series is an optimisation only: the same rows, columns, dictionaries and
    /// errors (line numbers and messages) come out with and without it.
    #[test]
    fn remembering_series_changes_nothing(
        lines in proptest::collection::vec(line_text(), 1..40),
        seconds in any::<bool>(),
    ) {
        let body = lines.join("\n");
        let precision = if seconds { Precision::Second } else { Precision::Nanosecond };
        let [with, without] = both_ways(&body, precision);
        prop_assert_eq!(with, without, "{}", body);
    }
}

#[test]
fn remembered_series_take_the_layout_and_survive_layout_changes() {
    // Rows of one series, with the layout changing under it: new field, other order, other
    // kind (refused), back to the first layout.
    let body = "cpu,host=a u=1,v=2 1\n\
                cpu,host=a u=3,v=4 2\n\
                cpu,host=a u=5,v=6,w=7 3\n\
                cpu,host=a v=8,u=9 4\n\
                cpu,host=a u=1i,v=2 5\n\
                cpu,host=a u=10,v=11 6\n\
                cpu,host=b u=12,v=13 7\n\
                cpu,host=a u=14,v=15";
    let [with, without] = both_ways(body, Precision::Nanosecond);
    assert_eq!(with, without);
    let (errors, batch) = with;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line_number, 5);
    assert!(errors[0].error_message.contains("integer"), "{errors:?}");
    assert!(batch.contains("rows: 7"), "{batch}");
}
