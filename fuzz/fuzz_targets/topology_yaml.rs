//! Topology YAML as a server receives it: arbitrary text parsed, checked against a
//! server's policy (a sandbox in a temporary directory, so no path reaches the machine)
//! and validated. Reading must return a topology or problems, never panic or overflow the
//! stack, however deep the document nests (the seeds nest mappings, sequences and flow
//! collections thousands deep).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tidemark_engine::topology::{self, NoTables, Policy, Sandbox};

struct Env {
    _dir: tempfile::TempDir,
    policy: Policy,
    runtime: tokio::runtime::Runtime,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let sandbox = Sandbox::new(&dir.path().join("files"), dir.path(), &[])
            .expect("sandbox");
        Env {
            policy: Policy {
                max_parallelism: 8,
                sandbox: Some(sandbox),
            },
            _dir: dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = env();
    let _ = env
        .runtime
        .block_on(topology::load_with(text, &NoTables, &env.policy));
});
