//! `tidemark repair`: rebuild a lost or damaged catalog from the table files
//! (`tidemark_storage::repair`). The server must be stopped: the data directory's lock
//! says whether one runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The data directory whose catalog to rebuild (its server must be stopped).
    #[arg(long, env = "TIDEMARK_DATA_DIR", default_value = "./tidemark-data")]
    data_dir: PathBuf,
    /// Length of the time windows the files were cut by (the server's --window-secs);
    /// used only for files written before files described themselves.
    #[arg(long, default_value_t = 600)]
    window_secs: u64,
    /// Partitions of a database that has table files but no log directory.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
}

pub fn run(args: RepairArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.data_dir.is_dir(),
        "{} is not a data directory",
        args.data_dir.display()
    );
    let _lock = tidemark_engine::lock_data_dir(&args.data_dir)
        .context("the server must be stopped before a repair")?;
    let window_ns = i64::try_from(args.window_secs.max(1))
        .unwrap_or(600)
        .saturating_mul(1_000_000_000);
    let report =
        tidemark_storage::repair::rebuild_catalog(&args.data_dir, window_ns, args.partitions)
            .with_context(|| format!("repairing {}", args.data_dir.display()))?;
    if let Some(old) = &report.old_catalog {
        println!("the previous catalog was moved to {}", old.display());
    }
    for (db, partitions) in &report.databases {
        println!("database {db}: {partitions} partitions");
    }
    println!(
        "rebuilt the catalog from {} table files ({} rows); the logs replay over them at the next start",
        report.files, report.rows
    );
    if report.inferred > 0 {
        println!(
            "{} files were written before files described themselves: their compaction level and dedup order were taken from their ids",
            report.inferred
        );
    }
    println!(
        "not recoverable from files: retention settings (set them again) and deletes whose rows were still in files (run them again)"
    );
    Ok(ExitCode::SUCCESS)
}
