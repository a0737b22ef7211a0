//! Arbitrary bytes as a log segment: opening (recovery) and replaying (payload decoding)
//! must return records or a corruption error, never panic or loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark_storage::log::PartitionLog;
use tidemark_storage::payload;

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
        let _ = payload::decode(record.payload);
        Ok(())
    });
});
