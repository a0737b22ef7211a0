//! Text tables and durations for the client commands' output, drawn as `tidemark query`
//! draws its results (Arrow's pretty printer), so every command's output looks alike.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

/// `rows` under `headers` as a bordered text table; with no rows, the headers alone.
///
/// # Errors
/// A row has another number of cells than there are headers.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<String> {
    let schema = Arc::new(Schema::new(
        headers
            .iter()
            .map(|h| Field::new(*h, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let columns = (0..headers.len())
        .map(|c| {
            let cells = rows
                .iter()
                .map(|r| r.get(c).map(String::as_str))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| anyhow::anyhow!("a row has fewer cells than headers"))?;
            Ok(Arc::new(StringArray::from(cells)) as ArrayRef)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(schema, columns)?;
    Ok(arrow::util::pretty::pretty_format_batches(&[batch])?.to_string())
}

/// A duration in nanoseconds as the API and the CLI accept it: `30d`, `1h30m`, `250ms`.
pub fn duration(ns: u64) -> String {
    const UNITS: [(&str, u64); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    if ns == 0 {
        return "0s".to_string();
    }
    let mut left = ns;
    let mut out = String::new();
    for (unit, size) in UNITS {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

/// A JSON value as a table cell: strings bare, null as empty.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_they_are_written() {
        assert_eq!(duration(30 * 86_400_000_000_000), "30d");
        assert_eq!(duration(5_400_000_000_000), "1h30m");
        assert_eq!(duration(250_000_000), "250ms");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(86_400_000_000_001), "1d1ns");
    }

    #[test]
    fn an_empty_table_shows_its_headers() {
        let text = render(&["db", "retention"], &[]).unwrap();
        assert!(text.contains("| db | retention |"), "{text}");
        let text = render(&["a"], &[vec!["x".into()]]).unwrap();
        assert!(text.contains("| x |"), "{text}");
        assert!(render(&["a", "b"], &[vec!["x".into()]]).is_err());
    }
}
