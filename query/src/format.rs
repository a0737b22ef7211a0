//! Encodes query results in the formats the HTTP API and the CLI offer.
//!
//! Tags are dictionary-encoded in memory; every text format sees them as plain strings,
//! Parquet keeps them dictionary-encoded.

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
            let table = arrow::util::pretty::pretty_format_batches(&batches)?;
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
