//! Writes line protocol, escaping every name and value so that [`super::LineParser`] reads
//! back exactly what was given. Used by the load generator, the CLI and the property tests.

use std::fmt::Write;

use crate::batch::FieldValue;

fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Escapes a measurement name (commas and spaces, and a backslash that would otherwise
/// escape one of them).
pub fn escape_measurement(out: &mut String, s: &str) {
    escape_into(out, s, &[',', ' ', '\\']);
}

/// Escapes a tag key, tag value or field key.
pub fn escape_key(out: &mut String, s: &str) {
    escape_into(out, s, &[',', ' ', '=', '\\']);
}

/// Escapes the inside of a string field value.
pub fn escape_string_field(out: &mut String, s: &str) {
    escape_into(out, s, &['"', '\\']);
}

/// Appends one line (without the trailing newline).
pub fn write_line(
    out: &mut String,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, FieldValue<'_>)],
    timestamp: Option<i64>,
) {
    escape_measurement(out, measurement);
    for (k, v) in tags {
        out.push(',');
        escape_key(out, k);
        out.push('=');
        escape_key(out, v);
    }
    for (i, (k, v)) in fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        escape_key(out, k);
        out.push('=');
        // Writing to a String cannot fail.
        let _ = match v {
            FieldValue::Float(x) => write!(out, "{x:?}"),
            FieldValue::Integer(x) => write!(out, "{x}i"),
            FieldValue::UInteger(x) => write!(out, "{x}u"),
            FieldValue::Boolean(x) => write!(out, "{x}"),
            FieldValue::String(s) => {
                out.push('"');
                escape_string_field(out, s);
                out.push('"');
                Ok(())
            }
        };
    }
    if let Some(t) = timestamp {
        let _ = write!(out, " {t}");
    }
}
