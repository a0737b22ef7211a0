//! Keyed operator state in checkpoints: one Arrow batch, a row per entry, the key
//! columns `k0..` first and then the operator's own columns, with the operator's
//! watermark in the schema metadata (`watermark`, decimal). Encoded as an Arrow IPC
//! stream of that one batch (IPC carries its own format version).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;

use super::window::scalars_to_array;

/// One batch as an Arrow IPC stream.
pub(crate) fn ipc_encode(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
        .map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

/// The one batch of an Arrow IPC stream [`ipc_encode`] wrote.
///
/// The checkpoint's CRC-32C stops damage on disk before it gets here, but arrow-ipc's
/// reader unwraps parts of the flatbuffer metadata (the fuzz target `topology_checkpoint`
/// found a panic in `fb_to_schema` on a malformed schema message): a panic while
/// decoding becomes an error, so that no bytes can bring the server down.
pub(crate) fn ipc_decode(bytes: &[u8]) -> Result<RecordBatch, String> {
    check_ipc_lengths(bytes)?;
    let decode = || -> Result<RecordBatch, String> {
        let mut reader =
            arrow::ipc::reader::StreamReader::try_new(bytes, None).map_err(|e| e.to_string())?;
        reader
            .next()
            .ok_or_else(|| "no batch".to_string())?
            .map_err(|e| e.to_string())
    };
    std::panic::catch_unwind(decode)
        .unwrap_or_else(|_| Err("malformed Arrow IPC metadata".to_string()))
}

/// Checks that every message of an IPC stream, and the body it declares, lies within
/// `bytes`: the reader allocates what a message declares before it reads, so a damaged
/// length would otherwise ask for gigabytes.
fn check_ipc_lengths(bytes: &[u8]) -> Result<(), String> {
    let mut pos = 0usize;
    loop {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| "truncated IPC stream".to_string())
        };
        let mut len = word(pos)?;
        pos += 4;
        if len == 0xFFFF_FFFF {
            len = word(pos)?;
            pos += 4;
        }
        if len == 0 {
            return Ok(());
        }
        let meta = bytes
            .get(pos..pos + len as usize)
            .ok_or_else(|| "an IPC message past the end".to_string())?;
        let message = arrow::ipc::root_as_message(meta).map_err(|e| format!("IPC message: {e}"))?;
        let body = usize::try_from(message.bodyLength())
            .map_err(|_| "a negative IPC body length".to_string())?;
        pos = pos
            .checked_add(len as usize)
            .and_then(|p| p.checked_add(body))
            .filter(|p| *p <= bytes.len())
            .ok_or_else(|| "an IPC body past the end".to_string())?;
    }
}

/// Encodes `rows` entries: their keys (columns `key_cols` of `input`), then `fields`
/// with `columns` of the same length.
pub(crate) fn encode_keyed(
    input: &SchemaRef,
    key_cols: &[usize],
    keys: &[&Vec<ScalarValue>],
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
    watermark: i64,
) -> Result<Vec<u8>, String> {
    let mut all_fields = Vec::with_capacity(key_cols.len() + fields.len());
    let mut all_columns = Vec::with_capacity(all_fields.capacity());
    for (k, &c) in key_cols.iter().enumerate() {
        let t = input.field(c).data_type();
        all_fields.push(Field::new(format!("k{k}"), t.clone(), true));
        all_columns.push(scalars_to_array(keys.iter().map(|key| key[k].clone()), t)?);
    }
    all_fields.extend(fields);
    all_columns.extend(columns);
    let schema = Schema::new(all_fields).with_metadata(
        [("watermark".to_string(), watermark.to_string())]
            .into_iter()
            .collect(),
    );
    let batch = RecordBatch::try_new_with_options(
        Arc::new(schema),
        all_columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(keys.len())),
    )
    .map_err(|e| e.to_string())?;
    ipc_encode(&batch)
}

/// State [`encode_keyed`] wrote, read back.
pub(crate) struct KeyedState {
    pub(crate) batch: RecordBatch,
    keys: Vec<ArrayRef>,
    pub(crate) watermark: i64,
    what: &'static str,
}

impl KeyedState {
    /// # Errors
    /// Not an encoding of `key_count` keys with a watermark; `what` names the operator.
    pub(crate) fn decode(
        bytes: &[u8],
        key_count: usize,
        what: &'static str,
    ) -> Result<Self, String> {
        let bad = |why: String| format!("the checkpointed {what} state is unreadable: {why}");
        let batch = ipc_decode(bytes).map_err(bad)?;
        let watermark = batch
            .schema()
            .metadata()
            .get("watermark")
            .and_then(|w| w.parse::<i64>().ok())
            .ok_or_else(|| bad("no watermark".into()))?;
        let keys = (0..key_count)
            .map(|k| {
                batch
                    .column_by_name(&format!("k{k}"))
                    .cloned()
                    .ok_or_else(|| bad(format!("no key column k{k}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            batch,
            keys,
            watermark,
            what,
        })
    }

    pub(crate) fn bad(&self, why: &str) -> String {
        format!("the checkpointed {} state is unreadable: {why}", self.what)
    }

    pub(crate) fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The key of entry `row`.
    pub(crate) fn key(&self, row: usize) -> Result<Vec<ScalarValue>, String> {
        self.keys.iter().map(|k| self.scalar(k, row)).collect()
    }

    pub(crate) fn scalar(&self, a: &ArrayRef, row: usize) -> Result<ScalarValue, String> {
        ScalarValue::try_from_array(a, row).map_err(|e| self.bad(&e.to_string()))
    }

    pub(crate) fn column(&self, name: &str) -> Result<ArrayRef, String> {
        self.batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| self.bad(&format!("no column {name}")))
    }

    /// Column `name` as the array type `T`.
    pub(crate) fn typed<T: Array + Clone + 'static>(&self, name: &str) -> Result<T, String> {
        self.column(name)?
            .as_any()
            .downcast_ref::<T>()
            .cloned()
            .ok_or_else(|| self.bad(&format!("column {name} has another type")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `topology_checkpoint` fuzz target: arrow-ipc panicked on it.
    #[test]
    fn malformed_ipc_metadata_is_an_error() {
        let bytes = include_bytes!("testdata/malformed_ipc_schema.bin");
        assert!(ipc_decode(bytes).is_err());
        assert!(KeyedState::decode(bytes, 1, "window").is_err());
    }
}
