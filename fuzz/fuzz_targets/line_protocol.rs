//! Arbitrary bytes as a write body: the parser and the column builders must never panic,
//! and every line is either accepted or reported.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tidemark_storage::line_protocol::{LineLimits, Precision, parse_into};
use tidemark_storage::batch::WriteBuilder;
use tidemark_storage::catalog::DatabaseSchema;

fuzz_target!(|data: &[u8]| {
    let db = Arc::new(DatabaseSchema::new("fuzz", 3));
    let mut builder = WriteBuilder::new(db, 200);
    let errors = parse_into(data, Precision::Second, 0, LineLimits::default(), &mut builder);
    let rows = builder.rows();
    let batch = builder.finish().expect("finishing accepted rows cannot fail");
    assert_eq!(batch.rows, rows);
    let _ = errors;
});
