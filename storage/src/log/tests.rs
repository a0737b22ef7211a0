use std::io::Write;
use std::sync::Arc;

use super::*;

type Replayed = Vec<(u64, Vec<u8>)>;

fn open_collect(dir: &Path) -> Result<(PartitionLog, Replayed)> {
    let mut seen = Vec::new();
    let log = PartitionLog::open(dir, 0, &mut |r| {
        seen.push((r.offset, r.payload.to_vec()));
        Ok(())
    })?;
    Ok((log, seen))
}

fn append(writer: &LogWriter, log: &Arc<PartitionLog>, payload: &[u8]) -> Result<u64> {
    let offsets = writer.append_blocking(
        vec![Append {
            log: Arc::clone(log),
            kind: KIND_WRITE_BATCH,
            timestamp: None,
            payload: payload.to_vec(),
        }],
        true,
    )?;
    offsets
        .first()
        .copied()
        .ok_or_else(|| Error::Internal("no offset".into()))
}

fn only_segment(dir: &Path) -> PathBuf {
    dir.join(segment::segment_file_name(0))
}

#[test]
fn appends_survive_reopen_in_order() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    {
        let (log, seen) = open_collect(&dir)?;
        assert!(seen.is_empty());
        let log = Arc::new(log);
        let writer = LogWriter::start(LogWriterConfig::default())?;
        for i in 0..10u8 {
            assert_eq!(append(&writer, &log, &[i; 5])?, u64::from(i));
        }
    }
    let (log, seen) = open_collect(&dir)?;
    assert_eq!(seen.len(), 10);
    for (i, (offset, payload)) in seen.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(payload, &vec![i as u8; 5]);
    }
    assert_eq!(log.next_offset(), 10);
    Ok(())
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    let good_len;
    {
        let (log, _) = open_collect(&dir)?;
        let log = Arc::new(log);
        let writer = LogWriter::start(LogWriterConfig::default())?;
        for i in 0..3u8 {
            append(&writer, &log, &[i; 100])?;
        }
        writer.shutdown();
        good_len = std::fs::metadata(only_segment(&dir))
            .map_err(|e| Error::io("meta", e))?
            .len();
    }
    // Simulate a crash in the middle of writing a fourth frame: half its bytes hit the disk.
    let mut frame_bytes = Vec::new();
    frame::encode(&mut frame_bytes, 3, KIND_WRITE_BATCH, 1, &[9; 100]);
    let mut f = OpenOptions::new()
        .append(true)
        .open(only_segment(&dir))
        .map_err(|e| Error::io("open", e))?;
    f.write_all(&frame_bytes[..frame_bytes.len() / 2])
        .map_err(|e| Error::io("write", e))?;
    drop(f);

    let (log, seen) = open_collect(&dir)?;
    assert_eq!(seen.len(), 3, "the torn record is not replayed");
    let len = std::fs::metadata(only_segment(&dir))
        .map_err(|e| Error::io("meta", e))?
        .len();
    assert_eq!(len, good_len, "the torn bytes are truncated");
    let log = Arc::new(log);
    let writer = LogWriter::start(LogWriterConfig::default())?;
    assert_eq!(append(&writer, &log, b"after")?, 3);
    writer.shutdown();
    drop(log);
    let (_, seen) = open_collect(&dir)?;
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3].1, b"after".to_vec());
    Ok(())
}

#[test]
fn crc_mismatch_in_the_middle_is_refused() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    {
        let (log, _) = open_collect(&dir)?;
        let log = Arc::new(log);
        let writer = LogWriter::start(LogWriterConfig::default())?;
        for i in 0..3u8 {
            append(&writer, &log, &[i; 100])?;
        }
    }
    // Flip one payload byte of the first record.
    let path = only_segment(&dir);
    let mut bytes = std::fs::read(&path).map_err(|e| Error::io("read", e))?;
    let at = segment::SEGMENT_HEADER_LEN + frame::FRAME_HEADER_LEN + 10;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).map_err(|e| Error::io("write", e))?;

    match open_collect(&dir) {
        Err(Error::CorruptSegment {
            position, reason, ..
        }) => {
            assert_eq!(position, segment::SEGMENT_HEADER_LEN as u64);
            assert!(reason.contains("CRC-32C mismatch"), "{reason}");
        }
        other => panic!("expected corruption to be reported, got {other:?}"),
    }
    // The file is left as it was: nothing is silently dropped.
    assert_eq!(
        std::fs::read(&path).map_err(|e| Error::io("read", e))?,
        bytes
    );
    Ok(())
}

#[test]
fn corrupt_last_record_followed_by_nothing_is_still_corruption_when_complete() -> Result<()> {
    // A complete frame with a bad CRC at the very end is not "torn" (its length fits): it is
    // reported, because an fsynced, acknowledged record could be what got damaged.
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    {
        let (log, _) = open_collect(&dir)?;
        let log = Arc::new(log);
        let writer = LogWriter::start(LogWriterConfig::default())?;
        append(&writer, &log, &[1; 50])?;
    }
    let path = only_segment(&dir);
    let mut bytes = std::fs::read(&path).map_err(|e| Error::io("read", e))?;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).map_err(|e| Error::io("write", e))?;
    assert!(matches!(
        open_collect(&dir),
        Err(Error::CorruptSegment { .. })
    ));
    Ok(())
}

#[test]
fn replay_equals_what_was_acknowledged_under_concurrency() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dirs: Vec<PathBuf> = (0..3).map(|p| tmp.path().join(format!("p{p}"))).collect();
    let mut acked: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); 3];
    {
        let logs: Vec<Arc<PartitionLog>> = dirs
            .iter()
            .map(|d| open_collect(d).map(|(l, _)| Arc::new(l)))
            .collect::<Result<_>>()?;
        let writer = Arc::new(LogWriter::start(LogWriterConfig {
            segment_bytes: 2048,
            ..LogWriterConfig::default()
        })?);
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u8)
                .map(|t| {
                    let writer = Arc::clone(&writer);
                    let logs = logs.clone();
                    s.spawn(move || -> Result<Vec<(usize, u64, Vec<u8>)>> {
                        let mut mine = Vec::new();
                        for i in 0..50u8 {
                            let p = (usize::from(t) + usize::from(i)) % 3;
                            let payload = vec![t, i, 7, 7];
                            let off = append(&writer, &logs[p], &payload)?;
                            mine.push((p, off, payload));
                        }
                        Ok(mine)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| Error::Internal("thread".into()))?)
                .collect::<Result<Vec<_>>>()
        })?;
        for (p, off, payload) in results.into_iter().flatten() {
            acked[p].push((off, payload));
        }
        assert!(
            logs.iter().any(|l| l.segment_count() > 1),
            "segments rolled"
        );
    }
    for (p, dir) in dirs.iter().enumerate() {
        let (_, mut seen) = open_collect(dir)?;
        acked[p].sort();
        seen.sort();
        assert_eq!(seen, acked[p], "partition {p}");
    }
    Ok(())
}

#[test]
fn read_from_an_offset_spanning_segments() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    let (log, _) = open_collect(&dir)?;
    let log = Arc::new(log);
    let writer = LogWriter::start(LogWriterConfig {
        segment_bytes: 1000,
        ..LogWriterConfig::default()
    })?;
    for i in 0..100u32 {
        append(&writer, &log, &i.to_le_bytes().repeat(20))?;
    }
    assert!(log.segment_count() > 5);
    let mut got = Vec::new();
    log.read_from(37, &mut |r| {
        got.push(r.offset);
        Ok(())
    })?;
    assert_eq!(got, (37..100).collect::<Vec<_>>());

    // In bounded steps, as a stream reader does: every record once, in order, and the
    // position handed back is where the next step starts.
    let mut stepped = Vec::new();
    let mut at = 37;
    loop {
        let next = log.read_some(at, 7, &mut |r| {
            stepped.push(r.offset);
            Ok(())
        })?;
        if next == at {
            break;
        }
        at = next;
    }
    assert_eq!(stepped, got);
    assert_eq!(at, 100);
    // Past the end nothing is read and the position stays.
    assert_eq!(log.read_some(100, 7, &mut |_| Ok(()))?, 100);
    Ok(())
}

#[test]
fn a_failed_fsync_poisons_the_log() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    let (log, _) = open_collect(&dir)?;
    let log = Arc::new(log);
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail_in = Arc::clone(&fail);
    let writer = LogWriter::start(LogWriterConfig {
        syncer: Arc::new(move |f: &File| {
            if fail_in.load(std::sync::atomic::Ordering::SeqCst) {
                Err(std::io::Error::other("injected EIO"))
            } else {
                f.sync_data()
            }
        }),
        ..LogWriterConfig::default()
    })?;
    append(&writer, &log, b"ok")?;
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        append(&writer, &log, b"lost"),
        Err(Error::Poisoned { .. })
    ));
    // Even once the disk "recovers", the log keeps refusing: no silent retry.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        append(&writer, &log, b"again"),
        Err(Error::Poisoned { .. })
    ));
    assert!(writer.poisoned().is_some());
    Ok(())
}

/// A segment is rolled before the append that filled it is answered, so a caller that has
/// its answer can remove the log's directory (drop a database, delete a topic) without a
/// later roll failing there and poisoning the writer.
#[test]
fn the_roll_happens_before_the_answer() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    let (log, _) = open_collect(&dir)?;
    let log = Arc::new(log);
    let other_dir = tmp.path().join("p1");
    let (other, _) = open_collect(&other_dir)?;
    let other = Arc::new(other);
    let writer = LogWriter::start(LogWriterConfig {
        segment_bytes: 100,
        ..LogWriterConfig::default()
    })?;
    append(&writer, &log, &[7u8; 200])?;
    assert_eq!(
        log.segment_count(),
        2,
        "the full segment was not rolled yet"
    );
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // The writer goes on with other logs.
    assert_eq!(append(&writer, &other, b"next")?, 0);
    assert_eq!(writer.poisoned(), None);
    Ok(())
}

#[test]
fn a_log_shorter_than_the_catalog_saw_is_refused_untouched() -> Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
    let dir = tmp.path().join("p0");
    {
        let log = Arc::new(open_collect(&dir)?.0);
        let writer = LogWriter::start(LogWriterConfig::default())?;
        for i in 0..4u8 {
            append(&writer, &log, &[i; 3])?;
        }
        // What the writer fsynced is what a persist may record.
        assert_eq!(log.synced_next_offset(), 4);
    }
    let before = std::fs::read(only_segment(&dir)).map_err(|e| Error::io("read", e))?;
    let err = PartitionLog::open_reaching(&dir, 0, 9, &mut |_| Ok(()));
    assert!(
        matches!(
            err,
            Err(Error::LogEndsEarly {
                end: 4,
                expected: 9,
                ..
            })
        ),
        "{err:?}"
    );
    // Missing entirely: refused, and no new segment takes its place.
    std::fs::remove_file(only_segment(&dir)).map_err(|e| Error::io("rm", e))?;
    assert!(PartitionLog::open_reaching(&dir, 0, 4, &mut |_| Ok(())).is_err());
    let left = std::fs::read_dir(&dir)
        .map_err(|e| Error::io("ls", e))?
        .count();
    assert_eq!(left, 0);
    std::fs::write(only_segment(&dir), &before).map_err(|e| Error::io("write", e))?;
    let log = PartitionLog::open_reaching(&dir, 0, 4, &mut |_| Ok(()))?;
    assert_eq!(log.next_offset(), 4);
    Ok(())
}
