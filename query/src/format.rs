//! Encodes query results in the formats the HTTP API and the CLI offer.
//!
//! Tags are dictionary-encoded in memory; every text format sees them as plain strings,
//! Parquet keeps them dictionary-encoded. JSON, JSON lines and CSV are also written batch
//! by batch ([`StreamEncoder`]) so that a large result streams to the client.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// Output format of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A JSON array of row objects.
    #[default]
    Json,
    /// One JSON object per line.
    Jsonl,
    Csv,
    /// A human-readable table.
    Pretty,
    Parquet,
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "json" => Format::Json,
            "jsonl" => Format::Jsonl,
            "csv" => Format::Csv,
            "pretty" => Format::Pretty,
            "parquet" => Format::Parquet,
            _ => return Err(Error::UnknownFormat(s.to_string())),
        })
    }
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Jsonl => "application/jsonl",
            Format::Csv => "text/csv",
            Format::Pretty => "text/plain; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

impl Format {
    /// Whether results in this format are written batch by batch as they are computed
    /// (the others need the whole result first).
    pub fn streams(self) -> bool {
        matches!(self, Format::Json | Format::Jsonl | Format::Csv)
    }
}

/// Encodes a result batch by batch, for the formats that [`Format::streams`]: each call
/// returns the bytes to send next, and together they are what [`encode`] gives for the
/// same batches.
#[derive(Debug)]
pub struct StreamEncoder {
    format: Format,
    schema: SchemaRef,
    /// Rows written so far (JSON needs a separator before every row but the first).
    rows: usize,
}

impl StreamEncoder {
    /// # Errors
    /// The format does not stream.
    pub fn new(format: Format, schema: SchemaRef) -> Result<Self> {
        if !format.streams() {
            return Err(Error::Internal(format!("{format:?} results do not stream")));
        }
        Ok(Self {
            format,
            schema,
            rows: 0,
        })
    }

    /// Bytes that start the result (before any batch).
    pub fn start(&self) -> Vec<u8> {
        match self.format {
            Format::Json => b"[".to_vec(),
            _ => Vec::new(),
        }
    }

    /// The bytes of one batch.
    ///
    /// # Errors
    /// Encoder errors.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let (_, plain) = plain(&batch.schema(), std::slice::from_ref(batch))?;
        let mut out = Vec::new();
        match self.format {
            Format::Json => {
                let mut lines = Vec::new();
                let mut w = arrow::json::LineDelimitedWriter::new(&mut lines);
                w.write_batches(&plain.iter().collect::<Vec<_>>())?;
                w.finish()?;
                drop(w);
                // One object per line, and JSON text never holds a raw newline: joining
                // the lines with commas makes array elements.
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if self.rows > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(line);
                    self.rows += 1;
                }
            }
            Format::Jsonl => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
                w.write_batches(&plain.iter().collect::<Vec<_>>())?;
                w.finish()?;
                self.rows += batch.num_rows();
            }
            Format::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(self.rows == 0)
                    .build(&mut out);
                for b in &plain {
                    w.write(b)?;
                }
                drop(w);
                self.rows += batch.num_rows();
            }
            Format::Pretty | Format::Parquet => {
                return Err(Error::Internal(format!(
                    "{:?} results do not stream",
                    self.format
                )));
            }
        }
        Ok(out)
    }

    /// Bytes that end the result.
    ///
    /// # Errors
    /// Encoder errors.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        Ok(match self.format {
            Format::Json => b"]".to_vec(),
            // No row came: still give the header.
            Format::Csv if self.rows == 0 => encode(Format::Csv, &self.schema, &[])?,
            _ => Vec::new(),
        })
    }
}

/// Replaces dictionary columns by their value type.
fn plain(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Dictionary(..)))
    {
        return Ok((Arc::clone(schema), batches.to_vec()));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) => f.as_ref().clone().with_data_type((**v).clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let out_schema = Arc::new(Schema::new(fields));
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let cols = b
            .columns()
            .iter()
            .zip(out_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        out.push(RecordBatch::try_new(Arc::clone(&out_schema), cols)?);
    }
    Ok((out_schema, out))
}

/// Encodes batches in `format`.
///
/// # Errors
/// Encoder errors (for example a type the format cannot represent).
pub fn encode(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    // Parquet keeps tags dictionary-encoded: smaller, and a re-import knows them as tags.
    let (schema, batches) = if matches!(format, Format::Parquet) {
        (Arc::clone(schema), batches.to_vec())
    } else {
        plain(schema, batches)?
    };
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let mut out = Vec::new();
    match format {
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            w.write_batches(&refs)?;
            w.finish()?;
            drop(w);
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
        }
        Format::Jsonl => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            w.write_batches(&refs)?;
            w.finish()?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                // Still give the header.
                w.write(&RecordBatch::new_empty(Arc::clone(&schema)))?;
            }
            for b in &batches {
                w.write(b)?;
            }
        }
        Format::Pretty => {
            // No rows: still the column headers, as psql and DuckDB show them.
            let empty = [RecordBatch::new_empty(Arc::clone(&schema))];
            let table = arrow::util::pretty::pretty_format_batches(if batches.is_empty() {
                &empty
            } else {
                &batches
            })?;
            out.extend_from_slice(table.to_string().as_bytes());
            out.push(b'\n');
        }
        Format::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, Arc::clone(&schema), None)
                .map_err(|e| Error::Encode(e.to_string()))?;
            for b in &batches {
                w.write(b).map_err(|e| Error::Encode(e.to_string()))?;
            }
            w.close().map_err(|e| Error::Encode(e.to_string()))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Float64Array, Int32Array, StringArray};
    use arrow::datatypes::Int32Type;

    fn batch(hosts: &[&str], values: &[f64]) -> RecordBatch {
        let keys = Int32Array::from_iter_values(0..hosts.len() as i32);
        let tags = DictionaryArray::<Int32Type>::try_new(
            keys,
            Arc::new(StringArray::from(hosts.to_vec())),
        )
        .unwrap();
        RecordBatch::try_from_iter([
            ("host", Arc::new(tags) as ArrayRef),
            (
                "v",
                Arc::new(Float64Array::from(values.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn streamed_results_equal_the_collected_encoding() {
        let batches = [
            batch(&["a", "b"], &[1.0, 2.5]),
            batch(&[], &[]),
            batch(&["c\nd"], &[3.0]),
        ];
        let schema = batches[0].schema();
        for format in [Format::Json, Format::Jsonl, Format::Csv] {
            for parts in [&batches[..], &batches[1..2], &[][..]] {
                let whole = encode(format, &schema, parts).unwrap();
                let mut enc = StreamEncoder::new(format, Arc::clone(&schema)).unwrap();
                let mut streamed = enc.start();
                for b in parts {
                    streamed.extend(enc.batch(b).unwrap());
                }
                streamed.extend(enc.finish().unwrap());
                assert_eq!(
                    String::from_utf8_lossy(&streamed),
                    String::from_utf8_lossy(&whole),
                    "{format:?} of {} batches",
                    parts.len()
                );
            }
        }
        assert!(StreamEncoder::new(Format::Parquet, schema).is_err());
    }
}
