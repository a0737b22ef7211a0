//! Arbitrary bytes as a log segment: opening (recovery) and replaying (payload decoding)
//! must return records or a corruption error, never panic or loop. Each record's payload
//! is decoded as what its kind says: a write batch or a topic record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark_storage::log::PartitionLog;
use tidemark_storage::log::KIND_WRITE_BATCH;
use tidemark_storage::topic::KIND_TOPIC_RECORD;
use tidemark_storage::{payload, topic};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let p = dir.path().join("0");
    if std::fs::create_dir_all(&p).is_err() {
        return;
    }
    if std::fs::write(p.join("00000000000000000000.log"), data).is_err() {
        return;
    }
    let _ = PartitionLog::open(&p, 0, &mut |record| {
        match record.kind {
            KIND_WRITE_BATCH => drop(payload::decode(record.payload)),
            KIND_TOPIC_RECORD => drop(topic::decode(record.payload)),
            _ => {}
        }
        Ok(())
    });
});
