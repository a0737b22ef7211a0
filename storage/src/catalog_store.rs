//! The persisted catalog on disk: an append-only log of [`CatalogOp`]s plus checkpoints.
//!
//! `<data-dir>/catalog/` holds at most one checkpoint `<seq>.ckpt` (the whole
//! [`CatalogState`] after `seq` ops) and the log `<seq>.clog` of the ops after it. A commit
//! validates the op against the state, appends it, fsyncs, and only then applies it: an op
//! is either durable and applied or neither. Every `CHECKPOINT_EVERY` ops the state is
//! written to a new checkpoint (temp file, fsync, rename, fsync dir), a new log is started
//! and the old files are removed, so start-up reads one checkpoint and a short log.
//!
//! A torn last record (a crash mid-append: shorter than its length says) was never
//! acknowledged and is cut off on open; any complete record that fails its checksum, the
//! last one included, stops the node with the file and byte. Formats: `storage/FORMAT.md`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::log::sync_dir;
use crate::manifest::{CatalogOp, CatalogState};

pub const CHECKPOINT_MAGIC: &[u8; 8] = b"TDMKCKP\0";
pub const CATALOG_LOG_MAGIC: &[u8; 8] = b"TDMKCLG\0";
pub const CATALOG_FORMAT_VERSION: u32 = 1;
/// A checkpoint is a sealed file (`sealed`).
const CHECKPOINT_HEADER_LEN: usize = crate::sealed::HEADER_LEN;
/// magic | u32 version | u32 reserved (0) | u64 sequence of the first op.
const LOG_HEADER_LEN: usize = 24;
/// u32 length of body | u32 crc32c(body); body = u8 version | JSON op.
const RECORD_HEADER_LEN: usize = 8;
const OP_VERSION: u8 = 1;
const CHECKPOINT_EVERY: u64 = 1000;

fn log_name(seq: u64) -> String {
    format!("{seq:020}.clog")
}

fn checkpoint_name(seq: u64) -> String {
    format!("{seq:020}.ckpt")
}

#[derive(Debug)]
struct Inner {
    state: CatalogState,
    log: File,
    log_path: PathBuf,
    /// Sequence number of the next op (ops applied since the catalog was created).
    seq: u64,
    ops_in_log: u64,
}

/// The node's persisted catalog.
#[derive(Debug)]
pub struct CatalogStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
    Error::CorruptCatalog {
        path: path.to_path_buf(),
        position,
        reason: reason.into(),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes a checkpoint file.
///
/// # Errors
/// [`Error::CorruptCatalog`] on any damage; the checkpoint is never partially trusted.
pub fn decode_checkpoint(path: &Path, data: &[u8]) -> Result<CatalogState> {
    let body = crate::sealed::decode(data, CHECKPOINT_MAGIC, CATALOG_FORMAT_VERSION).map_err(
        |(position, reason)| corrupt(path, position, format!("catalog checkpoint: {reason}")),
    )?;
    serde_json::from_slice(body)
        .map_err(|e| corrupt(path, CHECKPOINT_HEADER_LEN as u64, e.to_string()))
}

/// Decodes a catalog log: its base sequence, its ops, and the length of the valid prefix
/// (shorter than `data` when the last record is torn).
///
/// # Errors
/// [`Error::CorruptCatalog`] for damage other than a torn tail.
pub fn decode_log(path: &Path, data: &[u8]) -> Result<(u64, Vec<CatalogOp>, usize)> {
    if data.len() < LOG_HEADER_LEN || &data[..8] != CATALOG_LOG_MAGIC {
        return Err(corrupt(path, 0, "not a catalog log (bad magic)"));
    }
    let version = u32_at(data, 8);
    if version != CATALOG_FORMAT_VERSION {
        return Err(corrupt(
            path,
            8,
            format!("unsupported catalog log version {version}"),
        ));
    }
    let base = u64_at(data, 16);
    let mut ops = Vec::new();
    let mut pos = LOG_HEADER_LEN;
    while pos < data.len() {
        if data.len() - pos < RECORD_HEADER_LEN {
            break; // torn header
        }
        let len = u32_at(data, pos) as usize;
        let end = pos + RECORD_HEADER_LEN + len;
        if end > data.len() {
            break; // torn body
        }
        let body = &data[pos + RECORD_HEADER_LEN..end];
        if crc32c::crc32c(body) != u32_at(data, pos + 4) {
            // A complete record whose checksum fails is damage, even the last one: an
            // append that was cut short leaves a record shorter than its length (above).
            // Cutting it off would drop an acknowledged change (and the files it owns).
            return Err(corrupt(
                path,
                pos as u64,
                format!(
                    "record {} of {} bytes fails its CRC-32C (the file is damaged, not torn)",
                    ops.len(),
                    len
                ),
            ));
        }
        if body.first() != Some(&OP_VERSION) {
            return Err(corrupt(path, pos as u64, "unsupported op version"));
        }
        let op: CatalogOp = serde_json::from_slice(&body[1..])
            .map_err(|e| corrupt(path, pos as u64, e.to_string()))?;
        ops.push(op);
        pos = end;
    }
    Ok((base, ops, pos))
}

/// Encodes a checkpoint of `state` (header and JSON body).
///
/// # Errors
/// The state cannot be encoded as JSON (not expected).
pub fn encode_checkpoint(state: &CatalogState) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(state)
        .map_err(|e| Error::Internal(format!("encode catalog checkpoint: {e}")))?;
    Ok(crate::sealed::encode(
        CHECKPOINT_MAGIC,
        CATALOG_FORMAT_VERSION,
        &body,
    ))
}

/// The header of a catalog log whose first op is number `seq`.
pub fn encode_log_header(seq: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(LOG_HEADER_LEN);
    header.extend_from_slice(CATALOG_LOG_MAGIC);
    header.extend_from_slice(&CATALOG_FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&seq.to_le_bytes());
    header
}

/// One record of a catalog log.
///
/// # Errors
/// The op cannot be encoded as JSON (not expected).
pub fn encode_record(op: &CatalogOp) -> Result<Vec<u8>> {
    let json =
        serde_json::to_vec(op).map_err(|e| Error::Internal(format!("encode catalog op: {e}")))?;
    let mut body = Vec::with_capacity(json.len() + 1);
    body.push(OP_VERSION);
    body.extend_from_slice(&json);
    let mut out = Vec::with_capacity(body.len() + RECORD_HEADER_LEN);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn create_log(dir: &Path, seq: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(log_name(seq));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all(&encode_log_header(seq))
        .map_err(|e| Error::io(&path, e))?;
    f.sync_all().map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok((f, path))
}

/// Whether `dir` holds a catalog (a checkpoint or a log).
pub fn exists(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".ckpt") || name.ends_with(".clog")
        })
    })
}

impl CatalogStore {
    /// Opens (creating if needed) the catalog in `dir` and replays it.
    ///
    /// # Errors
    /// I/O errors and corruption (named by file and byte).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut checkpoints = Vec::new();
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let seq = |suffix: &str| {
                name.strip_suffix(suffix)
                    .and_then(|s| s.parse::<u64>().ok())
            };
            if let Some(s) = seq(".ckpt") {
                checkpoints.push(s);
            } else if let Some(s) = seq(".clog") {
                logs.push(s);
            } else if name.ends_with(".tmp") {
                // A checkpoint that was never renamed into place.
                let p = entry.path();
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        checkpoints.sort_unstable();
        logs.sort_unstable();

        let (mut state, mut seq) = match checkpoints.last() {
            Some(&s) => {
                let path = dir.join(checkpoint_name(s));
                let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                (decode_checkpoint(&path, &data)?, s)
            }
            None => (CatalogState::default(), 0),
        };
        // The log to continue is the one starting at the checkpoint; older ones are
        // covered by it (a crash can leave them behind during a checkpoint).
        let mut ops_in_log = 0;
        let current = dir.join(log_name(seq));
        let log = if logs.contains(&seq) {
            let data = std::fs::read(&current).map_err(|e| Error::io(&current, e))?;
            let (base, ops, valid) = decode_log(&current, &data)?;
            if base != seq {
                return Err(corrupt(
                    &current,
                    16,
                    format!("log starts at op {base}, its name says {seq}"),
                ));
            }
            for (i, op) in ops.iter().enumerate() {
                state
                    .apply(op)
                    .map_err(|e| corrupt(&current, i as u64, format!("op {i}: {e}")))?;
            }
            ops_in_log = ops.len() as u64;
            seq += ops_in_log;
            let f = OpenOptions::new()
                .write(true)
                .open(&current)
                .map_err(|e| Error::io(&current, e))?;
            if valid < data.len() {
                tracing::warn!(
                    path = %current.display(),
                    cut = data.len() - valid,
                    "cut a torn record off the catalog log"
                );
                f.set_len(valid as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io(&current, e))?;
            }
            f
        } else {
            create_log(dir, seq)?.0
        };
        let mut log = log;
        std::io::Seek::seek(&mut log, std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(&current, e))?;
        let keep_ckpt = checkpoints.last().copied();
        let keep_log = seq - ops_in_log;
        for s in checkpoints.iter().filter(|s| Some(**s) != keep_ckpt) {
            remove(&dir.join(checkpoint_name(*s)))?;
        }
        for s in logs.iter().filter(|s| **s != keep_log) {
            remove(&dir.join(log_name(*s)))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                state,
                log,
                log_path: current,
                seq,
                ops_in_log,
            }),
        })
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&CatalogState) -> R) -> R {
        f(&self.inner.lock().state)
    }

    /// Durably commits the op `build` makes from the current state, then applies it.
    /// `build` runs under the catalog's lock, so it can take ids.
    ///
    /// # Errors
    /// Whatever `build` returns, an op that does not apply, I/O errors.
    pub fn update<R>(
        &self,
        build: impl FnOnce(&mut CatalogState) -> Result<(CatalogOp, R)>,
    ) -> Result<R> {
        let mut inner = self.inner.lock();
        let mut next = inner.state.clone();
        let (op, out) = build(&mut next)?;
        next.apply(&op)?;
        let record = encode_record(&op)?;
        let path = inner.log_path.clone();
        inner
            .log
            .write_all(&record)
            .and_then(|()| inner.log.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        inner.state = next;
        inner.seq += 1;
        inner.ops_in_log += 1;
        if inner.ops_in_log >= CHECKPOINT_EVERY {
            self.checkpoint(&mut inner)?;
        }
        Ok(out)
    }

    /// Durably commits one op.
    ///
    /// # Errors
    /// See [`CatalogStore::update`].
    pub fn commit(&self, op: CatalogOp) -> Result<()> {
        self.update(|_| Ok((op, ())))
    }

    fn checkpoint(&self, inner: &mut Inner) -> Result<()> {
        let seq = inner.seq;
        let data = encode_checkpoint(&inner.state)?;
        let tmp = self.dir.join(format!("{}.tmp", checkpoint_name(seq)));
        let fin = self.dir.join(checkpoint_name(seq));
        std::fs::write(&tmp, &data).map_err(|e| Error::io(&tmp, e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        // The new log must exist before the checkpoint names it as the one to continue.
        let (log, log_path) = create_log(&self.dir, seq)?;
        std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
        sync_dir(&self.dir)?;
        let old_log = std::mem::replace(&mut inner.log_path, log_path);
        inner.log = log;
        inner.ops_in_log = 0;
        remove(&old_log)?;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "ckpt") && p != fin {
                remove(&p)?;
            }
        }
        Ok(())
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str) -> CatalogOp {
        CatalogOp::CreateDatabase {
            name: name.into(),
            partitions: 1,
            retention_ns: None,
        }
    }

    #[test]
    fn ops_survive_reopen_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let n = CHECKPOINT_EVERY + 5;
        {
            let store = CatalogStore::open(dir.path()).unwrap();
            for i in 0..n {
                store.commit(create(&format!("db{i}"))).unwrap();
            }
            assert!(store.commit(create("db0")).is_err(), "invalid op refused");
        }
        let store = CatalogStore::open(dir.path()).unwrap();
        assert_eq!(store.read(|s| s.databases.len()) as u64, n);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "one checkpoint and one log: {names:?}");
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_corrupt_middle_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CatalogStore::open(dir.path()).unwrap();
            store.commit(create("a")).unwrap();
            store.commit(create("b")).unwrap();
        }
        let path = dir.path().join(log_name(0));
        let data = std::fs::read(&path).unwrap();
        // Torn: drop the last 3 bytes.
        std::fs::write(&path, &data[..data.len() - 3]).unwrap();
        {
            let store = CatalogStore::open(dir.path()).unwrap();
            assert_eq!(store.read(|s| s.databases.len()), 1);
            store.commit(create("c")).unwrap();
        }
        let store = CatalogStore::open(dir.path()).unwrap();
        assert_eq!(store.read(|s| s.databases.len()), 2);
        drop(store);
        let mut data = std::fs::read(&path).unwrap();
        data[LOG_HEADER_LEN + RECORD_HEADER_LEN + 3] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let err = CatalogStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("CRC-32C") && err.contains(".clog"), "{err}");
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_damage_not_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CatalogStore::open(dir.path()).unwrap();
            store.commit(create("a")).unwrap();
            store.commit(create("b")).unwrap();
        }
        let path = dir.path().join(log_name(0));
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 2;
        data[last] ^= 0x01;
        std::fs::write(&path, &data).unwrap();
        let err = CatalogStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("record 1") && err.contains("damaged"), "{err}");
        // Nothing was cut: the file is as it was.
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(exists(dir.path()));
        assert!(!exists(&dir.path().join("nothing")));
    }

    /// A state and the ops that built it, touching every part of the state.
    fn sample() -> (CatalogState, Vec<CatalogOp>) {
        let ops = vec![
            create("a"),
            create("b"),
            CatalogOp::SetRetention {
                db: "a".into(),
                table: Some("cpu".into()),
                retention_ns: Some(3_600_000_000_000),
            },
            CatalogOp::Intent {
                op_id: 1,
                paths: vec!["tables/a/cpu/1.parquet".into()],
                next_file_id: 2,
            },
            CatalogOp::AbortIntent { op_id: 1 },
        ];
        let mut state = CatalogState::default();
        for op in &ops {
            state.apply(op).unwrap();
        }
        (state, ops)
    }

    fn log_of(ops: &[CatalogOp]) -> Vec<u8> {
        let mut data = encode_log_header(0);
        for op in ops {
            data.extend_from_slice(&encode_record(op).unwrap());
        }
        data
    }

    // The properties the `catalog` fuzz target checks at length (docs/fuzzing.md).
    proptest::proptest! {
        #[test]
        fn any_damage_to_a_checkpoint_is_refused(bit in proptest::prelude::any::<usize>(), cut in proptest::prelude::any::<usize>(), truncate in proptest::prelude::any::<bool>()) {
            let (state, _) = sample();
            let mut data = encode_checkpoint(&state).unwrap();
            proptest::prop_assert_eq!(decode_checkpoint(Path::new("c"), &data).unwrap(), state);
            if truncate {
                data.truncate(cut % data.len());
            } else {
                let bit = bit % (data.len() * 8);
                data[bit / 8] ^= 1 << (bit % 8);
            }
            proptest::prop_assert!(decode_checkpoint(Path::new("c"), &data).is_err());
        }

        #[test]
        fn a_damaged_log_gives_a_prefix_of_its_ops_or_an_error(bit in proptest::prelude::any::<usize>(), cut in proptest::prelude::any::<usize>()) {
            let (_, ops) = sample();
            let mut data = log_of(&ops);
            let bit = bit % (data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
            data.truncate(LOG_HEADER_LEN.max(cut % (data.len() + 1)));
            if let Ok((_, got, valid)) = decode_log(Path::new("l"), &data) {
                proptest::prop_assert!(ops.starts_with(&got));
                proptest::prop_assert!(valid <= data.len());
            }
        }

        #[test]
        fn mangled_ops_in_valid_frames_decode_or_fail_cleanly(at in proptest::prelude::any::<usize>(), byte in proptest::prelude::any::<u8>()) {
            let (_, ops) = sample();
            let mut data = encode_log_header(0);
            for op in &ops {
                let mut body = vec![OP_VERSION];
                body.extend_from_slice(&serde_json::to_vec(op).unwrap());
                let i = 1 + at % (body.len() - 1);
                body[i] = byte;
                data.extend_from_slice(&(body.len() as u32).to_le_bytes());
                data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
                data.extend_from_slice(&body);
            }
            if let Ok((_, got, _)) = decode_log(Path::new("l"), &data) {
                let mut state = CatalogState::default();
                for op in &got {
                    let _ = state.apply(op);
                }
            }
        }
    }
}
