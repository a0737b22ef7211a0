//! Payload of a `KIND_WRITE_BATCH` log record: the rows of one write for one partition,
//! as one Arrow IPC stream per table (layout in `storage/FORMAT.md`).
//!
//! Arrow IPC keeps the schema with the data, so replay rebuilds the catalog's columns as
//! well as the buffer without re-parsing line protocol.

use std::io::Cursor;
use std::sync::Arc;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// Version byte of the payload layout.
pub const PAYLOAD_VERSION: u8 = 1;

/// Encodes the tables of one partition's share of a write.
///
/// # Errors
/// Only on an internal Arrow error.
pub fn encode(tables: &[(Arc<str>, RecordBatch)]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(
        16 + tables
            .iter()
            .map(|(_, b)| b.get_array_memory_size() + 512)
            .sum::<usize>(),
    );
    out.push(PAYLOAD_VERSION);
    out.extend_from_slice(&(tables.len() as u32).to_le_bytes());
    for (name, batch) in tables {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let len_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        let start = out.len();
        {
            let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
            w.write(batch)?;
            w.finish()?;
        }
        let ipc_len = (out.len() - start) as u32;
        out[len_at..len_at + 4].copy_from_slice(&ipc_len.to_le_bytes());
    }
    Ok(out)
}

fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize, what: &str) -> Result<&'a [u8]> {
    let end = pos
        .checked_add(n)
        .filter(|e| *e <= data.len())
        .ok_or_else(|| Error::Payload(format!("{what} runs past the end of the payload")))?;
    let s = &data[*pos..end];
    *pos = end;
    Ok(s)
}

fn take_u32(data: &[u8], pos: &mut usize, what: &str) -> Result<u32> {
    let b = take(data, pos, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a payload written by [`encode`].
///
/// # Errors
/// [`Error::Payload`] for any malformed byte; never panics on bad input.
pub fn decode(data: &[u8]) -> Result<Vec<(Arc<str>, RecordBatch)>> {
    let mut pos = 0;
    let version = take(data, &mut pos, 1, "version")?[0];
    if version != PAYLOAD_VERSION {
        return Err(Error::Payload(format!(
            "unsupported payload version {version} (this build reads {PAYLOAD_VERSION})"
        )));
    }
    let count = take_u32(data, &mut pos, "table count")?;
    let mut out = Vec::with_capacity((count as usize).min(1024));
    for _ in 0..count {
        let name_len = take_u32(data, &mut pos, "table name length")? as usize;
        let name = std::str::from_utf8(take(data, &mut pos, name_len, "table name")?)
            .map_err(|_| Error::Payload("table name is not UTF-8".to_string()))?;
        let ipc_len = take_u32(data, &mut pos, "IPC length")? as usize;
        let ipc = take(data, &mut pos, ipc_len, "IPC stream")?;
        let reader = StreamReader::try_new(Cursor::new(ipc), None)?;
        for batch in reader {
            out.push((Arc::from(name), batch?));
        }
    }
    if pos != data.len() {
        return Err(Error::Payload(format!(
            "{} trailing bytes after the last table",
            data.len() - pos
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{FieldValue, WriteBuilder};
    use crate::catalog::DatabaseSchema;
    use std::borrow::Cow;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let db = Arc::new(DatabaseSchema::new("db", 1));
        let mut w = WriteBuilder::new(db, 100);
        w.push_row(
            "cpu",
            &[(Cow::Borrowed("host"), Cow::Borrowed("a"))],
            &[(Cow::Borrowed("u"), FieldValue::String("x y".into()))],
            5,
        )
        .unwrap();
        let wb = w.finish().unwrap();
        let tables = &wb.partitions[0].tables;
        let bytes = encode(tables).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(&*back[0].0, "cpu");
        assert_eq!(back[0].1, tables[0].1);
        for cut in [0, 1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
