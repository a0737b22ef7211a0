//! The latest row of each series (`SELECT DISTINCT ON (keys) ... ORDER BY keys, time DESC`,
//! the TSBS `lastpoint` shape) without an ordered aggregation over every row.
//!
//! DataFusion plans DISTINCT ON as one `first_value(column ORDER BY keys, time DESC)` per
//! selected column, which compares every row once per column. But every group's first row
//! has `time >= T`, where T is the smallest of the groups' `max(time)`: no group's latest
//! row is older than that. So before planning, each such DISTINCT ON gets the extra filter
//! `time >= T`, with T computed by a small query over the same input that reads only the
//! keys and the time. The bound is a literal, so the table provider prunes every file and
//! buffer chunk older than T, and the DISTINCT ON itself runs over the newest rows only.
//!
//! The rewrite applies only when it cannot change the answer: the sort is exactly the keys
//! followed by a non-nullable column named `time`, descending. (A nullable time could put a
//! NULL first in a group, and `max` ignores NULLs.)

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::logical_expr::{Distinct, DistinctOn, Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::{SessionContext, col};

const LAST: &str = "__tidemark_last";
const BOUND: &str = "__tidemark_bound";

/// The time column a DISTINCT ON keeps the latest row by, when the rewrite is safe.
fn latest_by(d: &DistinctOn) -> Option<Column> {
    let sorts = d.sort_expr.as_ref()?;
    let (last, keys) = sorts.split_last()?;
    if keys.len() != d.on_expr.len() || keys.iter().zip(&d.on_expr).any(|(s, e)| &s.expr != e) {
        return None;
    }
    let Expr::Column(c) = &last.expr else {
        return None;
    };
    if last.asc || c.name != "time" {
        return None;
    }
    let (_, field) = d.input.schema().qualified_field_from_column(c).ok()?;
    (!field.is_nullable()).then(|| c.clone())
}

/// `min(max(time) GROUP BY keys)` over the DISTINCT ON's input; `None` when it has no rows.
async fn bound(ctx: &SessionContext, d: &DistinctOn, time: &Column) -> Result<Option<ScalarValue>> {
    let plan = LogicalPlanBuilder::from(d.input.as_ref().clone())
        .aggregate(
            d.on_expr.clone(),
            vec![max(Expr::Column(time.clone())).alias(LAST)],
        )?
        .aggregate(Vec::<Expr>::new(), vec![min(col(LAST)).alias(BOUND)])?
        .build()?;
    let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let value = ScalarValue::try_from_array(batch.column(0), 0)?;
    Ok((!value.is_null()).then_some(value))
}

/// Adds the `time >= T` bound under every DISTINCT ON of `plan` that keeps the latest row
/// per group. Plain EXPLAIN is left alone: it must not run queries.
///
/// # Errors
/// Errors of the bound queries.
pub async fn bound_latest_per_group(
    ctx: &SessionContext,
    plan: LogicalPlan,
) -> Result<LogicalPlan> {
    if matches!(plan, LogicalPlan::Explain(_)) {
        return Ok(plan);
    }
    let mut candidates: Vec<(DistinctOn, Column)> = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::Distinct(Distinct::On(d)) = node
            && let Some(time) = latest_by(d)
        {
            candidates.push((d.clone(), time));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if candidates.is_empty() {
        return Ok(plan);
    }
    let mut bounds = Vec::with_capacity(candidates.len());
    for (d, time) in candidates {
        if let Some(b) = bound(ctx, &d, &time).await? {
            bounds.push((d, time, b));
        }
    }
    let rewritten = plan.transform_up(|node| {
        let LogicalPlan::Distinct(Distinct::On(d)) = &node else {
            return Ok(Transformed::no(node));
        };
        let Some((_, time, b)) = bounds.iter().find(|(c, _, _)| c == d) else {
            return Ok(Transformed::no(node));
        };
        let input = LogicalPlanBuilder::from(d.input.as_ref().clone())
            .filter(Expr::Column(time.clone()).gt_eq(lit(b.clone())))?
            .build()?;
        let new = DistinctOn::try_new(
            d.on_expr.clone(),
            d.select_expr.clone(),
            d.sort_expr.clone(),
            Arc::new(input),
        )?;
        Ok(Transformed::yes(LogicalPlan::Distinct(Distinct::On(new))))
    })?;
    Ok(rewritten.data)
}
