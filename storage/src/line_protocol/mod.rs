//! InfluxDB line protocol: the parser, the encoder, and the glue that turns a request body
//! into a validated, partitioned [`WriteBatch`](crate::batch::WriteBatch).
//!
//! Flow: body bytes -> UTF-8 check (whole body at once; per line only if it fails) ->
//! [`LineParser`] -> timestamp scaled by the precision (or the server's time) ->
//! [`WriteBuilder::push_row`] which validates against the catalog and appends to Arrow
//! column builders. Every refused line becomes a [`LineError`] with its number and text.
//!
//! Lines whose measurement and tag set (as written) match an earlier accepted line of the
//! request skip parsing their tags: the parser hands back the series the builder
//! remembered, and its fields are parsed against the table's previous field layout
//! straight into 64-bit values when they follow it. Any line that does not is parsed and
//! pushed in full, so the result is the same either way (a proptest checks it).

mod encoder;
mod parser;

pub use encoder::{escape_key, escape_measurement, escape_string_field, write_line};
pub use parser::{Line, LineParser, ParsedLine, Precision};

use serde::Serialize;
use std::collections::HashMap;

use crate::batch::{FieldLayout, SeriesId, WriteBuilder};
use foldhash::fast::FixedState;

/// Longest `original_line` echoed back in an error, so that a bad multi-megabyte line does
/// not make a multi-megabyte error.
const MAX_ECHOED_LINE: usize = 1024;

/// A refused line, in the shape InfluxDB 3 reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line_number: usize,
    pub original_line: String,
    pub error_message: String,
}

impl LineError {
    fn new(line_number: usize, text: &str, error_message: String) -> Self {
        let original_line = if text.len() > MAX_ECHOED_LINE {
            let mut cut = MAX_ECHOED_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}...", &text[..cut])
        } else {
            text.to_string()
        };
        Self {
            line_number,
            original_line,
            error_message,
        }
    }
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: {} (line: {:?})",
            self.line_number, self.error_message, self.original_line
        )
    }
}

/// Limits a parse enforces per line.
#[derive(Debug, Clone, Copy)]
pub struct LineLimits {
    pub max_line_bytes: usize,
    pub max_fields: usize,
}

impl Default for LineLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 1024 * 1024,
            max_fields: 1000,
        }
    }
}

/// Parses a body into `builder`, returning the lines it refused.
///
/// `default_time` (ns) stamps lines without a timestamp; it is taken once per request,
/// before anything is logged, so replay reproduces it.
pub fn parse_into(
    body: &[u8],
    precision: Precision,
    default_time: i64,
    limits: LineLimits,
    builder: &mut WriteBuilder,
) -> Vec<LineError> {
    let settings = Settings {
        precision,
        default_time,
        limits,
        remember_series: true,
    };
    parse_with(body, &settings, builder)
}

fn parse_with(body: &[u8], settings: &Settings, builder: &mut WriteBuilder) -> Vec<LineError> {
    let mut errors = Vec::new();
    let mut rest = body;
    let mut line_offset = 0;
    // Parse the longest valid UTF-8 prefix; report the line holding a bad byte; go on.
    while !rest.is_empty() {
        let (head, bad) = split_at_invalid_utf8(rest);
        parse_str(head, line_offset, settings, builder, &mut errors);
        let Some(bad) = bad else {
            break;
        };
        let lines_in_head = head.bytes().filter(|&b| b == b'\n').count();
        errors.push(LineError::new(
            line_offset + lines_in_head + 1,
            &String::from_utf8_lossy(&rest[bad.begin..bad.end]),
            bad.message(),
        ));
        line_offset += lines_in_head + 1;
        rest = rest.get(bad.end + 1..).unwrap_or_default();
    }
    errors
}

/// The physical line holding the first byte that is not UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct BadUtf8Line {
    /// Where the line starts.
    pub begin: usize,
    /// Where it ends, before its newline (or at the end of the text).
    pub end: usize,
    /// 1-based column of the bad byte.
    pub column: usize,
}

impl BadUtf8Line {
    pub fn message(&self) -> String {
        format!(
            "line is not valid UTF-8 (bad byte at column {})",
            self.column
        )
    }
}

/// Splits `bytes` into the valid UTF-8 text before the line with the first bad byte, and
/// that line; the whole text and `None` when it is all valid. Line protocol text that is
/// not UTF-8 is refused a physical line at a time, and the text around it parsed.
pub fn split_at_invalid_utf8(bytes: &[u8]) -> (&str, Option<BadUtf8Line>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let bad = e.valid_up_to();
            let begin = bytes[..bad]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let end = bytes[bad..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| bad + i);
            // Everything before the bad line is valid UTF-8.
            let head = std::str::from_utf8(&bytes[..begin]).unwrap_or_default();
            let line = BadUtf8Line {
                begin,
                end,
                column: bad - begin + 1,
            };
            (head, Some(line))
        }
    }
}

/// What every line of one request is parsed with.
#[derive(Clone, Copy)]
struct Settings {
    precision: Precision,
    default_time: i64,
    limits: LineLimits,
    /// Whether lines of a series seen before skip their tags. Always on, except for the
    /// tests that check it changes nothing.
    remember_series: bool,
}

fn parse_str<'a>(
    text: &'a str,
    line_offset: usize,
    settings: &Settings,
    builder: &mut WriteBuilder,
    errors: &mut Vec<LineError>,
) {
    let Settings {
        precision,
        default_time,
        limits,
        remember_series,
    } = *settings;
    let scale = precision.nanos();
    // Series this request wrote, by their text as written: a line of one of them skips
    // its tags, which are most of a line (see `WriteBuilder::push_known`).
    let mut known: HashMap<&'a str, SeriesId, FixedState> = HashMap::default();
    let mut parser = LineParser::new(text);
    loop {
        let next = parser.next_with(|s| {
            if !remember_series {
                return None;
            }
            let id = *known.get(s)?;
            let layout = builder.known_layout(id);
            Some(((id, layout.map(FieldLayout::generation)), layout))
        });
        let Some((parsed, series)) = next else {
            break;
        };
        let line_number = parsed.line_number + line_offset;
        let line = match parsed.result {
            Ok(line) => line,
            Err(msg) => {
                errors.push(LineError::new(line_number, parsed.text, msg));
                continue;
            }
        };
        let over_limit = if parsed.text.len() > limits.max_line_bytes {
            Some(format!(
                "line is {} bytes, more than the limit of {}",
                parsed.text.len(),
                limits.max_line_bytes
            ))
        } else if line.field_count() > limits.max_fields {
            Some(format!(
                "line has {} fields, more than the limit of {}",
                line.field_count(),
                limits.max_fields
            ))
        } else {
            None
        };
        if let Some(msg) = over_limit {
            errors.push(LineError::new(line_number, parsed.text, msg));
            continue;
        }
        let time = match line.timestamp {
            None => default_time,
            Some(t) => match t.checked_mul(scale) {
                Some(ns) => ns,
                None => {
                    errors.push(LineError::new(
                        line_number,
                        parsed.text,
                        format!(
                            "timestamp {t} in precision {precision:?} is outside the \
                             representable range (years 1677 to 2262)"
                        ),
                    ));
                    continue;
                }
            },
        };
        let pushed = match (series, line.values) {
            (Some((id, Some(generation))), Some(values))
                if builder.push_known_values(id, generation, values, time) =>
            {
                Ok(())
            }
            (Some((id, _)), None) if builder.push_known(id, line.fields, time) => Ok(()),
            // A known series whose fields differ from its table's previous row: the
            // checks need the tags, so parse the line whole.
            (Some(_), _) => push_whole(parsed.text, time, builder),
            (None, _) => builder
                .push_row_remembered(&line.measurement, line.tags, line.fields, time)
                .map_err(|e| e.to_string())
                .map(|id| {
                    if let Some(id) = id
                        && !parsed.series.is_empty()
                    {
                        known.insert(parsed.series, id);
                    }
                }),
        };
        if let Err(e) = pushed {
            errors.push(LineError::new(line_number, parsed.text, e));
        }
    }
}

/// Parses one line that parsed before without its tags, and pushes it with them.
fn push_whole(text: &str, time: i64, builder: &mut WriteBuilder) -> Result<(), String> {
    let mut parser = LineParser::new(text);
    match parser.next().map(|p| p.result) {
        Some(Ok(line)) => builder
            .push_row(&line.measurement, line.tags, line.fields, time)
            .map_err(|e| e.to_string()),
        Some(Err(e)) => Err(e),
        None => Err("internal error: the line vanished when parsed again".to_string()),
    }
}

#[cfg(test)]
mod tests;
