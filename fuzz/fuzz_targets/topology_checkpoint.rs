//! A topology's checkpoint file and the operator states inside it: arbitrary bytes as a
//! checkpoint file, and as the state of a window (every aggregate kind; over an append
//! stream and over an upsert stream), a dedup and a join inside a valid file (so that the fuzzer gets past the CRC-32C). Decoding and
//! restoring must return `Ok` or an error, never panic; a state that restores must
//! snapshot again, and that snapshot restore.
#![no_main]

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use libfuzzer_sys::fuzz_target;
use tidemark_engine::topology::checkpoint::Checkpoint;
use tidemark_engine::topology::dedup::Dedup;
use tidemark_engine::topology::join::Join;
use tidemark_engine::topology::spec::{
    AggFunc, Aggregate, Loc, Named, WindowKind, WindowSpec,
};
use tidemark_engine::topology::window::Window;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn input() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("host", DataType::Utf8, true),
        Field::new("v", DataType::Float64, true),
        Field::new("n", DataType::Int64, true),
        Field::new("time", ts(), true),
    ]))
}

/// A window; `upsert`: over an upsert stream keyed by `host` and `time`.
fn window(upsert: bool) -> Window {
    let aggs = [
        ("c", AggFunc::Count, None, DataType::Int64),
        ("s", AggFunc::Sum, Some("n"), DataType::Int64),
        ("f", AggFunc::Sum, Some("v"), DataType::Float64),
        ("a", AggFunc::Avg, Some("v"), DataType::Float64),
        ("lo", AggFunc::Min, Some("host"), DataType::Utf8),
        ("hi", AggFunc::Max, Some("v"), DataType::Float64),
        ("first", AggFunc::First, Some("n"), DataType::Int64),
        ("last", AggFunc::Last, Some("host"), DataType::Utf8),
        ("p", AggFunc::Percentile(0.5), Some("v"), DataType::Float64),
    ];
    let mut fields = vec![
        Field::new("host", DataType::Utf8, true),
        Field::new("window_start", ts(), false),
        Field::new("window_end", ts(), false),
    ];
    fields.extend(aggs.iter().map(|(name, _, _, t)| Field::new(*name, t.clone(), true)));
    let spec = WindowSpec {
        key_by: vec![Named {
            name: "host".into(),
            loc: Loc::default(),
        }],
        kind: WindowKind::Session { gap: 10 },
        aggregates: aggs
            .iter()
            .map(|(name, func, col, _)| Aggregate {
                output: (*name).into(),
                func: *func,
                column: col.map(Into::into),
                loc: Loc::default(),
            })
            .collect(),
        allowed_lateness: 5,
    };
    let key = ["host".to_string(), "time".to_string()];
    let key = upsert.then_some(&key[..]);
    match Window::new(spec, &input(), "time", key, Arc::new(Schema::new(fields))) {
        Ok(w) => w,
        Err(e) => panic!("the window must build: {e}"),
    }
}

fn dedup() -> Dedup {
    match Dedup::new(&["host".into(), "n".into()], 10, &input(), "time") {
        Ok(d) => d,
        Err(e) => panic!("the dedup must build: {e}"),
    }
}

fn join() -> Join {
    let right = Arc::new(Schema::new(vec![
        Field::new("host", DataType::Utf8, true),
        Field::new("w", DataType::Boolean, true),
        Field::new("time", ts(), true),
    ]));
    let mut fields: Vec<Field> = input().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("w", DataType::Boolean, true));
    fields.push(Field::new("time_right", ts(), true));
    match Join::new(
        &["host".into()],
        10,
        [(&input(), "time"), (&right, "time")],
        Arc::new(Schema::new(fields)),
    ) {
        Ok(j) => j,
        Err(e) => panic!("the join must build: {e}"),
    }
}

/// Restores `state`; if that works, its snapshot restores to a snapshot of the same size
/// (entries are kept in hash maps, so the order of rows may differ).
macro_rules! round_trip {
    ($make:expr, $state:expr) => {{
        let mut op = $make;
        if op.restore($state).is_ok() {
            let Ok(again) = op.snapshot() else {
                panic!("a restored state must snapshot");
            };
            let mut other = $make;
            if let Err(e) = other.restore(&again) {
                panic!("a snapshot must restore: {e}");
            }
            assert_eq!(other.snapshot().ok().map(|s| s.len()), Some(again.len()));
        }
    }};
}

/// libfuzzer-sys's panic hook aborts on every panic, even one that is caught. Arrow's
/// IPC reader can panic on malformed metadata or buffers, and the engine catches that
/// and answers an error (`topology::state::ipc_decode`); a silent hook lets that catch
/// work here too. A panic anywhere else still unwinds out of the target and aborts.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

fuzz_target!(|data: &[u8]| {
    quiet_caught_panics();
    let _ = Checkpoint::decode(data);
    let mut c = Checkpoint {
        epoch: 1,
        ..Checkpoint::default()
    };
    c.states.insert("op".into(), data.to_vec());
    let Ok(decoded) = Checkpoint::decode(&c.encode()) else {
        panic!("a written checkpoint must decode");
    };
    let state = &decoded.states["op"];
    round_trip!(window(false), state);
    round_trip!(window(true), state);
    round_trip!(dedup(), state);
    round_trip!(join(), state);
});
