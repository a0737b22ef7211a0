//! The `tidemark` binary: see `cli` for the commands.

mod cli;

// jemalloc returns freed memory to the OS and fragments less than glibc's malloc under the
// write path's pattern (many threads allocating large, short-lived Arrow buffers), which
// keeps the resident size close to the buffer limit instead of drifting far above it.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    tidemark_engine::install_tls_provider();
    cli::run()
}
