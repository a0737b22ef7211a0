//! `tidemark topology validate|explain FILE`: check a topology file and show its physical
//! plan, without a server. Checks that need a table's schema (a `table_stream` source's
//! columns, a `table` sink's column types) are left to deployment, where the node's
//! catalog knows them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tidemark_engine::topology::{self, NoTables};

#[derive(Debug, clap::Subcommand)]
pub enum TopologyCommand {
    /// Check a topology file; print every problem with its line and column.
    Validate {
        /// The topology's YAML file.
        file: PathBuf,
    },
    /// Print the physical plan of a topology file: chains, shuffles, parallelism, and each
    /// node's output columns and event time.
    Explain {
        /// The topology's YAML file.
        file: PathBuf,
    },
}

pub fn run(cmd: TopologyCommand) -> anyhow::Result<ExitCode> {
    let (file, explain) = match cmd {
        TopologyCommand::Validate { file } => (file, false),
        TopologyCommand::Explain { file } => (file, true),
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(topology::load(&text, &NoTables)) {
        Ok(v) => {
            if explain {
                print!("{}", topology::explain(&v));
            } else {
                println!(
                    "{}: topology {:?} is valid ({} nodes)",
                    file.display(),
                    v.spec.name,
                    v.spec.nodes.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{}:{p}", file.display());
            }
            eprintln!("{} problem(s)", problems.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
