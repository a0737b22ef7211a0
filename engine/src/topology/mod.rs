//! Dataflow topologies defined in YAML.
//!
//! `spec` reads the YAML (keeping every part's line and column), `validate` checks the
//! graph and follows schemas and event time through it, and `plan` turns a valid
//! topology into its physical plan (chains, shuffles, parallelism) and explains it.
//! `run` executes a topology in this process (one task per node, bounded channels,
//! watermarks, checkpoints), with `source` (and `lines` and `lp_file` for text files) and
//! `sink` at the ends, `sql` compiling
//! statements into per-batch expressions, `window` holding event-time window state and
//! `checkpoint` its file; `manager` keeps the topologies deployed on a server, confined by
//! `policy`. What can
//! run today is listed in `run`.

pub mod checkpoint;
pub mod dedup;
pub mod join;
mod lines;
mod lp_file;
pub mod manager;
pub mod plan;
pub mod policy;
pub mod run;
mod sink;
mod source;
pub mod spec;
pub mod sql;
mod state;
pub mod validate;
pub mod window;

pub use plan::{PhysicalPlan, explain, plan};
pub use policy::{Policy, Sandbox};
pub use spec::{Loc, Problem, Spec, parse};
pub use validate::{NoTables, TableSchemas, Validated, validate};

/// Reads and validates a topology file's text under the default [`Policy`] (local paths,
/// the default parallelism limit).
///
/// # Errors
/// Every problem found, sorted by place.
pub async fn load(text: &str, tables: &dyn TableSchemas) -> Result<Validated, Vec<Problem>> {
    load_with(text, tables, &Policy::default()).await
}

/// Reads a topology file's text, applies `policy` (confining what a server's topology
/// may touch) and validates it.
///
/// # Errors
/// Every problem found, sorted by place.
pub async fn load_with(
    text: &str,
    tables: &dyn TableSchemas,
    policy: &Policy,
) -> Result<Validated, Vec<Problem>> {
    let (spec, problems) = parse(text);
    let Some(mut spec) = spec else {
        return Err(spec::sorted(problems));
    };
    let refused = policy.apply(&mut spec).await;
    if !refused.is_empty() {
        // Validation would open the refused files: stop here.
        return Err(spec::sorted(problems.into_iter().chain(refused).collect()));
    }
    let mut problems = spec::sorted(problems);
    match validate(spec, tables).await {
        Ok(v) if problems.is_empty() => Ok(v),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(spec::sorted(problems))
        }
    }
}

#[cfg(test)]
mod tests;
