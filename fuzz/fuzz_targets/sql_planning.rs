//! SQL text through the query front door: the nesting bound, then DataFusion's parser and
//! planner over a table shaped like Tidemark's (a dictionary tag, fields, a time column),
//! on a thread with the query threads' stack. Either a plan or an error, never a panic or
//! a stack overflow (the seeds hold chains of thousands of operators).
#![no_main]

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SQLOptions, SessionContext};
use libfuzzer_sys::fuzz_target;
use tidemark_query::complexity::{QUERY_STACK_BYTES, check_depth};

struct Env {
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "host",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("usage", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        ]));
        let ctx = SessionContext::new();
        let table = MemTable::try_new(schema, vec![vec![]]).expect("table");
        ctx.register_table("cpu", Arc::new(table)).expect("register");
        Env {
            ctx,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let sql = sql.to_string();
    // The engine plans on threads with this stack; so does the target.
    let handle = std::thread::Builder::new()
        .stack_size(QUERY_STACK_BYTES)
        .spawn(move || {
            if check_depth(&sql).is_err() {
                return;
            }
            let env = env();
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let _ = env.runtime.block_on(async {
                let df = env.ctx.sql_with_options(&sql, options).await?;
                df.create_physical_plan().await
            });
        })
        .expect("planning thread");
    let _ = handle.join();
});
