//! The catalog's on-disk decoders: checkpoints and catalog logs, as arbitrary files and
//! as arbitrary JSON inside valid frames (so that the fuzzer gets past the CRC-32C and
//! reaches the JSON decoding and the replay of ops). Decoding must return a state or a
//! corruption error, and replaying decoded ops must return `Ok` or an error, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tidemark_storage::catalog_store::{
    CATALOG_FORMAT_VERSION, CATALOG_LOG_MAGIC, CHECKPOINT_MAGIC, decode_checkpoint, decode_log,
};
use tidemark_storage::manifest::CatalogState;

/// A checkpoint file around `body` (layout in storage/FORMAT.md).
fn checkpoint(body: &[u8]) -> Vec<u8> {
    let mut f = CHECKPOINT_MAGIC.to_vec();
    f.extend_from_slice(&CATALOG_FORMAT_VERSION.to_le_bytes());
    f.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    f.extend_from_slice(&(body.len() as u64).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// A catalog log whose records are the `0xff`-separated parts of `ops`.
fn log(ops: &[u8]) -> Vec<u8> {
    let mut f = CATALOG_LOG_MAGIC.to_vec();
    f.extend_from_slice(&CATALOG_FORMAT_VERSION.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    for op in ops.split(|&b| b == 0xff) {
        let mut body = vec![1u8];
        body.extend_from_slice(op);
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        f.extend_from_slice(&body);
    }
    f
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz");
    match mode % 4 {
        0 => drop(decode_checkpoint(path, rest)),
        1 => drop(decode_log(path, rest)),
        2 => drop(decode_checkpoint(path, &checkpoint(rest))),
        _ => {
            if let Ok((_, ops, _)) = decode_log(path, &log(rest)) {
                let mut state = CatalogState::default();
                for op in &ops {
                    let _ = state.apply(op);
                }
            }
        }
    }
});
