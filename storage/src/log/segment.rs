//! One segment file: a 32-byte header followed by frames (see `storage/FORMAT.md`).
//!
//! Segments are read through a read-only memory map; the active segment is appended to with
//! ordinary writes by the log writer thread only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::frame::{self, Decoded, Record};
use crate::error::{Error, Result};

pub const SEGMENT_MAGIC: &[u8; 8] = b"TDMKLOG\0";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;
/// One sparse index entry per this many bytes of records.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// Parses `<base_offset>.log`.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub fn encode_header(base_offset: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base_offset.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; `Ok(None)` when the header itself is incomplete or damaged
/// (which the caller treats as torn only for the last segment).
fn check_header(path: &Path, data: &[u8], base_offset: u64) -> Result<Option<String>> {
    if data.len() < SEGMENT_HEADER_LEN {
        return Ok(Some(format!(
            "segment header is {} bytes, expected {SEGMENT_HEADER_LEN}",
            data.len()
        )));
    }
    let h = &data[..SEGMENT_HEADER_LEN];
    if &h[0..8] != SEGMENT_MAGIC {
        return Ok(Some("bad magic".to_string()));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&h[24..28]);
    if u32::from_le_bytes(crc) != crc32c::crc32c(&h[0..24]) {
        return Ok(Some("header CRC-32C mismatch".to_string()));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&h[8..12]);
    let version = u32::from_le_bytes(v);
    if version != SEGMENT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            supported: SEGMENT_VERSION,
        });
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[16..24]);
    if u64::from_le_bytes(b) != base_offset {
        return Ok(Some(format!(
            "header base offset {} does not match the file name's {base_offset}",
            u64::from_le_bytes(b)
        )));
    }
    Ok(None)
}

/// Maps a whole file read-only. Empty files cannot be mapped, so they come back as `None`.
pub fn map_file(path: &Path) -> Result<Option<Mmap>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: segment files are only ever appended to (by this process's log writer, past
    // the length readers use) or truncated at open before any reader exists; no byte a
    // reader looks at changes while the map is alive.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(Some(map))
}

/// What a full scan of a segment found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Offset the next record appended after this segment gets.
    pub next_offset: u64,
    /// Length of the valid prefix of the file.
    pub valid_len: u64,
    /// Sparse (offset, file position) index of the valid records.
    pub index: Vec<(u64, u64)>,
    /// Set when a torn tail was found (and must be truncated away by the caller).
    pub torn_at: Option<u64>,
}

/// Scans a segment from its start, handing each valid record to `visit`.
///
/// In the last segment an incomplete trailing frame (or header) is a torn write and is
/// reported in `torn_at`; anywhere else, and for a complete frame with a bad CRC followed by
/// more data, the segment is corrupt and this fails.
pub fn scan(
    path: &Path,
    base_offset: u64,
    is_last: bool,
    visit: &mut dyn FnMut(Record<'_>) -> Result<()>,
) -> Result<ScanOutcome> {
    let map = map_file(path)?;
    let data: &[u8] = map.as_deref().unwrap_or(&[]);
    if let Some(reason) = check_header(path, data, base_offset)? {
        if is_last && data.len() <= SEGMENT_HEADER_LEN {
            return Ok(ScanOutcome {
                next_offset: base_offset,
                valid_len: 0,
                index: Vec::new(),
                torn_at: Some(0),
            });
        }
        return Err(Error::CorruptSegment {
            path: path.to_path_buf(),
            position: 0,
            reason,
        });
    }
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expected = base_offset;
    let mut index = Vec::new();
    let mut last_indexed_pos: Option<u64> = None;
    loop {
        match frame::decode(data, pos) {
            Decoded::End => break,
            Decoded::Record(record, next) => {
                if record.offset != expected {
                    return Err(Error::CorruptSegment {
                        path: path.to_path_buf(),
                        position: pos as u64,
                        reason: format!("record has offset {}, expected {expected}", record.offset),
                    });
                }
                if last_indexed_pos.is_none_or(|p| pos as u64 >= p + INDEX_INTERVAL_BYTES) {
                    index.push((record.offset, pos as u64));
                    last_indexed_pos = Some(pos as u64);
                }
                visit(record)?;
                expected += 1;
                pos = next;
            }
            Decoded::Truncated if is_last => {
                return Ok(ScanOutcome {
                    next_offset: expected,
                    valid_len: pos as u64,
                    index,
                    torn_at: Some(pos as u64),
                });
            }
            Decoded::Truncated => {
                return Err(Error::CorruptSegment {
                    path: path.to_path_buf(),
                    position: pos as u64,
                    reason: "incomplete frame in a sealed segment".to_string(),
                });
            }
            Decoded::Invalid(reason) => {
                return Err(Error::CorruptSegment {
                    path: path.to_path_buf(),
                    position: pos as u64,
                    reason,
                });
            }
        }
    }
    Ok(ScanOutcome {
        next_offset: expected,
        valid_len: pos as u64,
        index,
        torn_at: None,
    })
}

/// Creates a new segment file holding only its header, durably (file and directory synced).
pub fn create(dir: &Path, base_offset: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_file_name(base_offset));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.write_all(&encode_header(base_offset))
        .map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// Makes a directory entry change (create, rename, delete) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
