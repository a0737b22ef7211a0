//! `sql` transforms: a statement over `input` is planned once with DataFusion and, when it
//! is a projection and filter (`SELECT exprs FROM input [WHERE cond]`), compiled into
//! physical expressions that run on each batch as it flows. Aggregation, joins, sorting
//! and limits are not stream operations here: windows and joins are their own nodes.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

/// A compiled `SELECT ... FROM input WHERE ...`.
#[derive(Debug)]
pub struct CompiledSql {
    filter: Option<Arc<dyn PhysicalExpr>>,
    projection: Vec<Arc<dyn PhysicalExpr>>,
    pub schema: SchemaRef,
    /// Output columns that are an input column of the same name, unchanged.
    pub passthrough: Vec<String>,
}

/// Plans `sql` over `input` rows of `schema` and compiles it.
///
/// # Errors
/// The statement nests too deep (`tidemark_query::complexity`), does not plan (DataFusion's message), or is not a projection and filter.
pub async fn compile(schema: &SchemaRef, sql: &str) -> Result<CompiledSql, String> {
    tidemark_query::complexity::check_depth(sql).map_err(|e| e.to_string())?;
    let ctx = SessionContext::new();
    let table = MemTable::try_new(Arc::clone(schema), vec![vec![]]).map_err(|e| e.to_string())?;
    ctx.register_table("input", Arc::new(table))
        .map_err(|e| e.to_string())?;
    let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    let out: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let plan = df.logical_plan().clone();
    let (exprs, below) = match plan {
        LogicalPlan::Projection(p) => (p.expr, Arc::unwrap_or_clone(p.input)),
        other => return Err(unsupported(&other)),
    };
    let (predicate, below) = match below {
        LogicalPlan::Filter(f) => (Some(f.predicate), Arc::unwrap_or_clone(f.input)),
        other => (None, other),
    };
    let scan_schema = match &below {
        LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
            Arc::clone(scan.projected_schema.inner())
        }
        LogicalPlan::SubqueryAlias(a) if matches!(a.input.as_ref(), LogicalPlan::TableScan(_)) => {
            Arc::clone(a.schema.inner())
        }
        other => return Err(unsupported(other)),
    };
    let df_schema = match &below {
        LogicalPlan::TableScan(scan) => Arc::clone(&scan.projected_schema),
        LogicalPlan::SubqueryAlias(a) => Arc::clone(&a.schema),
        _ => return Err("unreachable plan shape".into()),
    };
    if scan_schema.fields().len() != schema.fields().len() {
        return Err("the statement must read every column of input".into());
    }
    let state = ctx.state();
    let physical = |e: &Expr| {
        state
            .create_physical_expr(e.clone(), &df_schema)
            .map_err(|e| e.to_string())
    };
    let passthrough = exprs
        .iter()
        .zip(out.fields())
        .filter_map(|(e, f)| {
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            match inner {
                Expr::Column(c) if &c.name == f.name() => Some(c.name.clone()),
                _ => None,
            }
        })
        .collect();
    Ok(CompiledSql {
        passthrough,
        filter: predicate.as_ref().map(physical).transpose()?,
        projection: exprs.iter().map(physical).collect::<Result<_, _>>()?,
        schema: out,
    })
}

fn unsupported(plan: &LogicalPlan) -> String {
    format!(
        "a sql transform runs row by row: SELECT expressions FROM input [WHERE condition]; \
         this statement has {} (aggregate with a window transform, join with a join transform)",
        plan.display()
            .to_string()
            .split('(')
            .next()
            .unwrap_or("another operation")
            .trim()
    )
}

impl CompiledSql {
    /// Runs the statement on one batch.
    ///
    /// # Errors
    /// An expression failed on these rows (a cast of a bad string, say).
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let batch = match &self.filter {
            Some(f) => {
                let mask = f
                    .evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| e.to_string())?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or("the WHERE condition is not a boolean")?;
                filter_record_batch(batch, mask).map_err(|e| e.to_string())?
            }
            None => batch.clone(),
        };
        let columns: Vec<ArrayRef> = self
            .projection
            .iter()
            .map(|e| {
                e.evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        // Expressions keep their own types; the plan's schema names them.
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow::compute::cast(&c, f.data_type()).map_err(|e| e.to_string())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| e.to_string())
    }
}
