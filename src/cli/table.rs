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
    fn an_empty_table_shows_its_headers() {
        let text = render(&["db", "retention"], &[]).unwrap();
        assert!(text.contains("| db | retention |"), "{text}");
        let text = render(&["a"], &[vec!["x".into()]]).unwrap();
        assert!(text.contains("| x |"), "{text}");
        assert!(render(&["a", "b"], &[vec!["x".into()]]).is_err());
    }
}
