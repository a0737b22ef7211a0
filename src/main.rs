//! The `tidemark` binary: `serve` runs a node; `write` and `query` talk to one over HTTP.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
