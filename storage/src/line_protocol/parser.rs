//! A zero-copy InfluxDB line protocol parser.
//!
//! [`LineParser`] walks a request body once. Keys and values borrow from the body
//! (`Cow::Borrowed`) unless they contain escapes; the tag and field vectors are reused from
//! line to line, so steady-state parsing allocates nothing per field. Each logical line (a
//! quoted string field may span physical lines) yields either a [`Line`] or an error message;
//! the caller decides what to do with both.

use std::borrow::Cow;

use crate::batch::{FieldLayout, FieldValue, layout_bits};
use crate::catalog::FieldType;

/// Timestamp precision of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanosecond,
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
}

impl Precision {
    /// Parses a precision as the v2 and v3 APIs name it (`ns us ms s`), also accepting the
    /// v1 names (`n u ms s m h`) and the v3 long names (`nanosecond` ... `second`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ns" | "n" | "nanosecond" => Precision::Nanosecond,
            "us" | "u" | "µs" | "microsecond" => Precision::Microsecond,
            "ms" | "millisecond" => Precision::Millisecond,
            "s" | "second" => Precision::Second,
            "m" | "minute" => Precision::Minute,
            "h" | "hour" => Precision::Hour,
            _ => return None,
        })
    }

    /// The short name the query parameter uses (`ns`, `us`, `ms`, `s`, `m`, `h`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Nanosecond => "ns",
            Precision::Microsecond => "us",
            Precision::Millisecond => "ms",
            Precision::Second => "s",
            Precision::Minute => "m",
            Precision::Hour => "h",
        }
    }

    pub fn nanos(self) -> i64 {
        match self {
            Precision::Nanosecond => 1,
            Precision::Microsecond => 1_000,
            Precision::Millisecond => 1_000_000,
            Precision::Second => 1_000_000_000,
            Precision::Minute => 60_000_000_000,
            Precision::Hour => 3_600_000_000_000,
        }
    }
}

/// One parsed line. Tags and fields are in the order the line gave them.
#[derive(Debug)]
pub struct Line<'p, 'a> {
    pub measurement: Cow<'a, str>,
    pub tags: &'p [(Cow<'a, str>, Cow<'a, str>)],
    pub fields: &'p [(Cow<'a, str>, FieldValue<'a>)],
    /// The field values in [`layout_bits`] form, instead of `fields`, when the line was
    /// parsed against the [`FieldLayout`] the caller gave [`LineParser::next_with`].
    pub values: Option<&'p [u64]>,
    /// As written, not yet scaled by the precision.
    pub timestamp: Option<i64>,
}

impl Line<'_, '_> {
    pub fn field_count(&self) -> usize {
        self.values.map_or(self.fields.len(), <[u64]>::len)
    }
}

/// One logical line of the body: where it is, its text, and what came of it.
#[derive(Debug)]
pub struct ParsedLine<'p, 'a> {
    /// 1-based number of the physical line the logical line starts on.
    pub line_number: usize,
    pub text: &'a str,
    /// The measurement and tag set as written, when the line has a space that ends them
    /// (only filled in by [`LineParser::next_with`]; empty otherwise).
    pub series: &'a str,
    pub result: Result<Line<'p, 'a>, String>,
}

/// Parses a UTF-8 body line by line.
pub struct LineParser<'a> {
    src: &'a str,
    pos: usize,
    line_number: usize,
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    values: Vec<u64>,
}

/// Which characters end a token and which may be escaped in it.
#[derive(Clone, Copy)]
enum Token {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

/// Bytes that stop the scan of a token: delimiters, the escape character, and newline.
const fn stop_table(eq: bool) -> [bool; 256] {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b' ' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'\n' as usize] = true;
    if eq {
        t[b'=' as usize] = true;
    }
    t
}
static STOP_NO_EQ: [bool; 256] = stop_table(false);
static STOP_EQ: [bool; 256] = stop_table(true);

impl Token {
    fn stops(self) -> &'static [bool; 256] {
        match self {
            Token::Measurement | Token::TagValue => &STOP_NO_EQ,
            Token::TagKey | Token::FieldKey => &STOP_EQ,
        }
    }

    fn escapable(self, b: u8) -> bool {
        match self {
            Token::Measurement => b == b',' || b == b' ' || b == b'\\',
            _ => b == b',' || b == b' ' || b == b'=' || b == b'\\',
        }
    }

    fn what(self) -> &'static str {
        match self {
            Token::Measurement => "measurement",
            Token::TagKey => "tag key",
            Token::TagValue => "tag value",
            Token::FieldKey => "field key",
        }
    }
}

impl<'a> LineParser<'a> {
    pub fn new(src: &'a str) -> Self {
        Self {
            src,
            pos: 0,
            line_number: 1,
            tags: Vec::new(),
            fields: Vec::new(),
            values: Vec::new(),
        }
    }

    /// The next logical line, skipping blank and `#` comment lines.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<ParsedLine<'_, 'a>> {
        self.advance(None::<fn(&'a str) -> Option<((), Option<&FieldLayout>)>>)
            .map(|(line, _)| line)
    }

    /// [`next`](Self::next) for a caller that remembers series. `known` is shown the
    /// line's measurement and tag set as written ([`ParsedLine::series`]). When it returns
    /// `Some`, the caller has parsed that exact text before: the tags are not parsed again
    /// and the line's `measurement` and `tags` are empty. When it also gives a layout, the
    /// fields are parsed against it into [`Line::values`] if they follow it exactly, and
    /// as usual if not.
    pub fn next_with<'l, K>(
        &mut self,
        known: impl FnOnce(&'a str) -> Option<(K, Option<&'l FieldLayout>)>,
    ) -> Option<(ParsedLine<'_, 'a>, Option<K>)> {
        self.advance(Some(known))
    }

    fn advance<'l, K>(
        &mut self,
        known: Option<impl FnOnce(&'a str) -> Option<(K, Option<&'l FieldLayout>)>>,
    ) -> Option<(ParsedLine<'_, 'a>, Option<K>)> {
        let bytes = self.src.as_bytes();
        // Skip blank lines, leading whitespace and comments.
        loop {
            while self.pos < bytes.len() && matches!(bytes[self.pos], b' ' | b'\t' | b'\r') {
                self.pos += 1;
            }
            if self.pos >= bytes.len() {
                return None;
            }
            match bytes[self.pos] {
                b'\n' => {
                    self.pos += 1;
                    self.line_number += 1;
                }
                b'#' => {
                    self.pos = memchr(b'\n', bytes, self.pos).unwrap_or(bytes.len());
                }
                _ => break,
            }
        }
        let start = self.pos;
        let line_number = self.line_number;
        self.tags.clear();
        self.fields.clear();
        // Newlines inside quoted string values: the only ones a line can contain.
        let mut inner_newlines = 0;
        let (series, id) = match known {
            Some(known) => match series_end(bytes, start) {
                Some(end) => {
                    let series = &self.src[start..end];
                    (series, known(series))
                }
                None => ("", None),
            },
            None => ("", None),
        };
        let mut by_layout = false;
        let (id, outcome) = match id {
            Some((id, layout)) => {
                // The same text parsed into a valid measurement and tag set before, ending
                // where the fields begin.
                self.pos = start + series.len();
                let lean = layout.and_then(|layout| {
                    let mut pos = self.pos;
                    parse_layout_fields(self.src, &mut pos, layout, &mut self.values)
                        .map(|timestamp| (pos, timestamp))
                });
                let outcome = match lean {
                    Some((pos, timestamp)) => {
                        self.pos = pos;
                        by_layout = true;
                        Ok(timestamp)
                    }
                    None => parse_fields_and_time(
                        self.src,
                        &mut self.pos,
                        &mut self.fields,
                        &mut inner_newlines,
                    ),
                };
                (
                    Some(id),
                    outcome.map(|timestamp| (Cow::Borrowed(""), timestamp)),
                )
            }
            None => (
                None,
                parse_line(
                    self.src,
                    &mut self.pos,
                    &mut self.tags,
                    &mut self.fields,
                    &mut inner_newlines,
                ),
            ),
        };
        // Whatever happened, resume after the end of this line.
        let end = match outcome {
            Ok(_) => self.pos,
            Err(_) => memchr(b'\n', bytes, self.pos).unwrap_or(bytes.len()),
        };
        self.line_number += inner_newlines;
        let text_end = if end > start && bytes[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        let text = &self.src[start..text_end.max(start)];
        if end < bytes.len() {
            // Step over the newline.
            self.pos = end + 1;
            self.line_number += 1;
        } else {
            self.pos = end;
        }
        let result = outcome.map(|(measurement, timestamp)| Line {
            measurement,
            tags: &self.tags,
            fields: &self.fields,
            values: by_layout.then_some(self.values.as_slice()),
            timestamp,
        });
        let line = ParsedLine {
            line_number,
            text,
            series,
            result,
        };
        Some((line, id))
    }
}

/// Where a line's measurement and tag set end: its first space not escaped by a
/// backslash. `None` when the line ends first, or a backslash ends the line, which only a
/// full parse can judge.
fn series_end(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(at) = memchr::memchr3(b' ', b'\\', b'\n', b.get(i..)?) {
        i += at;
        match b[i] {
            b' ' => return Some(i),
            // Every token treats a backslash before a space or a backslash as an escape
            // pair, and anything else after it is not a space: skipping two bytes finds
            // the same space the full parse stops at.
            b'\\' if !matches!(b.get(i + 1), None | Some(b'\n')) => i += 2,
            _ => return None,
        }
    }
    None
}

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(needle, hay.get(from..)?).map(|i| i + from)
}

type LineOutcome<'a> = Result<(Cow<'a, str>, Option<i64>), String>;

/// Parses one line starting at `*pos`; on success `*pos` is at the line's `\n` (or the end).
fn parse_line<'a>(
    src: &'a str,
    pos: &mut usize,
    tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: &mut Vec<(Cow<'a, str>, FieldValue<'a>)>,
    inner_newlines: &mut usize,
) -> LineOutcome<'a> {
    let b = src.as_bytes();
    let measurement = token(src, pos, Token::Measurement)?;
    if measurement.is_empty() {
        return Err("measurement name is empty".to_string());
    }

    // Tag set.
    while *pos < b.len() && b[*pos] == b',' {
        *pos += 1;
        let key = token(src, pos, Token::TagKey)?;
        if key.is_empty() {
            return Err(format!("empty tag key after measurement {measurement:?}"));
        }
        if *pos >= b.len() || b[*pos] != b'=' {
            return Err(format!("tag key {key:?} has no '=' and value"));
        }
        *pos += 1;
        let value = token(src, pos, Token::TagValue)?;
        if value.is_empty() {
            return Err(format!("tag {key:?} has an empty value"));
        }
        tags.push((key, value));
    }

    // Field set.
    if *pos >= b.len() || b[*pos] != b' ' {
        return Err(match b.get(*pos) {
            None | Some(b'\n' | b'\r') => {
                "missing fields: a line needs at least one field after the measurement and tags"
                    .to_string()
            }
            Some(&c) => format!("unexpected {:?} after the tag set", c as char),
        });
    }
    let timestamp = parse_fields_and_time(src, pos, fields, inner_newlines)?;
    Ok((measurement, timestamp))
}

/// Parses a line from the space that ends its tag set: the field set, the optional
/// timestamp and the end of the line.
fn parse_fields_and_time<'a>(
    src: &'a str,
    pos: &mut usize,
    fields: &mut Vec<(Cow<'a, str>, FieldValue<'a>)>,
    inner_newlines: &mut usize,
) -> Result<Option<i64>, String> {
    let b = src.as_bytes();
    skip_spaces(b, pos);
    loop {
        let key = token(src, pos, Token::FieldKey)?;
        if key.is_empty() {
            return Err(
                if fields.is_empty() && (*pos >= b.len() || b[*pos] == b'\n') {
                    "missing fields: a line needs at least one field after the measurement and tags"
                        .to_string()
                } else {
                    "empty field key".to_string()
                },
            );
        }
        if *pos >= b.len() || b[*pos] != b'=' {
            return Err(format!("field {key:?} has no '=' and value"));
        }
        *pos += 1;
        let value = field_value(src, pos, &key, inner_newlines)?;
        fields.push((key, value));
        match b.get(*pos) {
            Some(b',') => *pos += 1,
            _ => break,
        }
    }

    parse_time_and_end(src, pos)
}

/// Parses what follows a line's field set: the optional timestamp and the end of the line.
fn parse_time_and_end(src: &str, pos: &mut usize) -> Result<Option<i64>, String> {
    let b = src.as_bytes();
    // Optional timestamp, then the end of the line.
    let mut timestamp = None;
    if *pos < b.len() && b[*pos] == b' ' {
        skip_spaces(b, pos);
        if let Some((t, n)) = short_unsigned(&b[*pos..])
            && matches!(b.get(*pos + n), None | Some(b' ' | b'\n' | b'\r' | b'\t'))
        {
            // The common case, a positive timestamp, read in the pass that finds its end.
            *pos += n;
            timestamp = Some(t);
            skip_spaces(b, pos);
        } else if *pos < b.len() && !matches!(b[*pos], b'\n' | b'\r') {
            let start = *pos;
            while *pos < b.len() && !matches!(b[*pos], b' ' | b'\n' | b'\r' | b'\t') {
                *pos += 1;
            }
            let text = &src[start..*pos];
            timestamp = Some(parse_i64(text).ok_or_else(|| {
                format!("invalid timestamp {text:?}: expected a signed 64-bit integer")
            })?);
            skip_spaces(b, pos);
        }
    }
    if *pos < b.len() && b[*pos] == b'\r' {
        *pos += 1;
    }
    match b.get(*pos) {
        None | Some(b'\n') => Ok(timestamp),
        Some(&c) => Err(format!(
            "unexpected {:?} at column {} after the {}",
            c as char,
            *pos + 1 - line_start(b, *pos),
            if timestamp.is_some() {
                "timestamp"
            } else {
                "field set"
            }
        )),
    }
}

/// Parses a field set that follows `layout` exactly (the same keys in the same order,
/// written as named, with values of the same kinds) into `values`, then the timestamp
/// and the end of the line. `None` when it does not, or the line is malformed: the
/// general parse then decides what the line is.
fn parse_layout_fields(
    src: &str,
    pos: &mut usize,
    layout: &FieldLayout,
    values: &mut Vec<u64>,
) -> Option<Option<i64>> {
    let b = src.as_bytes();
    skip_spaces(b, pos);
    values.clear();
    for (n, (name, kind)) in layout.fields().iter().enumerate() {
        if n > 0 {
            if b.get(*pos) != Some(&b',') {
                return None;
            }
            *pos += 1;
        }
        // Layout keys hold no byte that a key token stops at or escapes, so the general
        // parse would read exactly these bytes as the key.
        let end = *pos + name.len();
        if !same_bytes(b.get(*pos..end)?, name.as_bytes()) || b.get(end) != Some(&b'=') {
            return None;
        }
        *pos = end + 1;
        let start = *pos;
        // The common case, a short decimal float, read in the same pass that finds its end.
        if *kind == FieldType::Float
            && let Some((v, n)) = decimal_prefix(&b[start..])
            && matches!(
                b.get(start + n),
                None | Some(b',' | b' ' | b'\n' | b'\r' | b'\t')
            )
        {
            *pos = start + n;
            values.push(layout_bits(&FieldValue::Float(v))?);
            continue;
        }
        while *pos < b.len() && !matches!(b[*pos], b',' | b' ' | b'\n' | b'\r' | b'\t') {
            *pos += 1;
        }
        values.push(layout_value(&src[start..*pos], *kind)?);
    }
    if b.get(*pos) == Some(&b',') {
        return None;
    }
    parse_time_and_end(src, pos).ok()
}

/// `a == b`, without a call into `memcmp` for the short keys lines are made of.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_ne_bytes)
    };
    match n {
        // Two overlapping 8-byte words cover 8 to 16 bytes.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// A field value of the given kind, as [`field_value`] would read it, in [`layout_bits`]
/// form; `None` if [`field_value`] would read another kind or refuse it.
fn layout_value(text: &str, kind: FieldType) -> Option<u64> {
    let value = match kind {
        // Only digits, signs, dots and exponents parse, so the text is neither a
        // boolean nor suffixed: `field_value` reads a float too.
        FieldType::Float => FieldValue::Float(parse_f64(text)?),
        FieldType::Integer => FieldValue::Integer(parse_i64(text.strip_suffix('i')?)?),
        FieldType::UInteger => FieldValue::UInteger(parse_u64(text.strip_suffix('u')?)?),
        FieldType::Boolean => FieldValue::Boolean(parse_bool(text)?),
        FieldType::String => return None,
    };
    layout_bits(&value)
}

/// The boolean spellings line protocol accepts.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => Some(true),
        "f" | "F" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn line_start(b: &[u8], pos: usize) -> usize {
    b[..pos]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1)
}

fn skip_spaces(b: &[u8], pos: &mut usize) {
    while *pos < b.len() && matches!(b[*pos], b' ' | b'\t') {
        *pos += 1;
    }
}

/// Reads a measurement, key or tag value, unescaping only when needed.
fn token<'a>(src: &'a str, pos: &mut usize, kind: Token) -> Result<Cow<'a, str>, String> {
    let b = src.as_bytes();
    let start = *pos;
    let mut escaped = false;
    let stops = kind.stops();
    while *pos < b.len() {
        let c = b[*pos];
        if !stops[c as usize] {
            *pos += 1;
            continue;
        }
        if c == b'\\' {
            if *pos + 1 < b.len() && kind.escapable(b[*pos + 1]) {
                escaped = true;
                *pos += 2;
            } else {
                *pos += 1;
            }
            continue;
        }
        break;
    }
    let raw = &src[start..*pos];
    if let Some(&c) = b.get(*pos)
        && c == b'\n'
        && !matches!(kind, Token::Measurement)
    {
        return Err(match kind {
            Token::TagKey | Token::FieldKey => {
                format!(
                    "{} {raw:?} has no '=' and value before the end of the line",
                    kind.what()
                )
            }
            _ => format!("unexpected end of line in {} {raw:?}", kind.what()),
        });
    }
    if !escaped {
        return Ok(Cow::Borrowed(raw));
    }
    Ok(Cow::Owned(unescape(raw, |b| kind.escapable(b))))
}

/// Drops the backslash of every escape sequence (`\` followed by a byte `escapable`
/// accepts); a backslash before anything else is literal.
fn unescape(raw: &str, escapable: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let rb = raw.as_bytes();
    let (mut i, mut run) = (0, 0);
    while i < rb.len() {
        if rb[i] == b'\\' && i + 1 < rb.len() && escapable(rb[i + 1]) {
            out.push_str(&raw[run..i]);
            run = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[run..]);
    out
}

fn field_value<'a>(
    src: &'a str,
    pos: &mut usize,
    key: &str,
    inner_newlines: &mut usize,
) -> Result<FieldValue<'a>, String> {
    let b = src.as_bytes();
    if b.get(*pos) == Some(&b'"') {
        return string_value(src, pos, key, inner_newlines);
    }
    let start = *pos;
    while *pos < b.len() && !matches!(b[*pos], b',' | b' ' | b'\n' | b'\r' | b'\t') {
        *pos += 1;
    }
    let text = &src[start..*pos];
    if text.is_empty() {
        return Err(format!("field {key:?} has an empty value"));
    }
    if let Some(b) = parse_bool(text) {
        return Ok(FieldValue::Boolean(b));
    }
    let last = text.as_bytes()[text.len() - 1];
    if !text.bytes().any(|c| c.is_ascii_digit()) && parse_f64(text).is_none() {
        // Not a number with a wrong suffix (`tru` ends in 'u'): say what it looks like.
        return Err(format!(
            "field {key:?} has invalid value {text:?}: it is no number, no boolean (true, \
             false, t, f, and their capitalized forms) and no string (strings need double \
             quotes)"
        ));
    }
    match last {
        b'i' => parse_i64(&text[..text.len() - 1])
            .map(FieldValue::Integer)
            .ok_or_else(|| {
                format!("field {key:?} has invalid integer value {text:?}: expected digits then 'i', within the signed 64-bit range")
            }),
        b'u' => parse_u64(&text[..text.len() - 1])
            .map(FieldValue::UInteger)
            .ok_or_else(|| {
                format!("field {key:?} has invalid unsigned value {text:?}: expected digits then 'u', within the unsigned 64-bit range")
            }),
        _ => parse_f64(text).map(FieldValue::Float).ok_or_else(|| {
            format!(
                "field {key:?} has invalid value {text:?}: expected a float, an integer \
                 ending in 'i', an unsigned ending in 'u', a boolean, or a string in double quotes"
            )
        }),
    }
}

/// A double-quoted string: `\"` and `\\` are escapes; newlines are allowed inside.
fn string_value<'a>(
    src: &'a str,
    pos: &mut usize,
    key: &str,
    inner_newlines: &mut usize,
) -> Result<FieldValue<'a>, String> {
    let b = src.as_bytes();
    *pos += 1; // opening quote
    let start = *pos;
    let mut escaped = false;
    loop {
        match b.get(*pos) {
            None => return Err(format!("string field {key:?} has no closing double quote")),
            Some(b'\\') if matches!(b.get(*pos + 1), Some(b'"' | b'\\')) => {
                escaped = true;
                *pos += 2;
            }
            Some(b'"') => break,
            Some(b'\n') => {
                *inner_newlines += 1;
                *pos += 1;
            }
            Some(_) => *pos += 1,
        }
    }
    let raw = &src[start..*pos];
    *pos += 1; // closing quote
    if !escaped {
        return Ok(FieldValue::String(Cow::Borrowed(raw)));
    }
    Ok(FieldValue::String(Cow::Owned(unescape(raw, |b| {
        b == b'"' || b == b'\\'
    }))))
}

fn parse_u64(s: &str) -> Option<u64> {
    let d = s.as_bytes();
    if d.is_empty() || d.len() > 20 {
        return None;
    }
    // Up to 19 digits cannot overflow (10^19 - 1 < 2^64): no checks in the loop.
    let (head, last) = if d.len() == 20 {
        (&d[..19], Some(d[19]))
    } else {
        (d, None)
    };
    let mut v: u64 = 0;
    for &c in head {
        let digit = c.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        v = v * 10 + u64::from(digit);
    }
    match last {
        None => Some(v),
        Some(c) if c.is_ascii_digit() => v.checked_mul(10)?.checked_add(u64::from(c - b'0')),
        Some(_) => None,
    }
}

fn parse_i64(s: &str) -> Option<i64> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let v = parse_u64(digits)?;
    if neg {
        if v == 1u64 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(v).ok().map(|x| -x)
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// The value of the leading run of 1 to 19 digits of `d` and its length, when it fits an
/// `i64`; `None` when `d` does not start with a digit, the run is longer, or too large.
#[inline]
fn short_unsigned(d: &[u8]) -> Option<(i64, usize)> {
    // 19 digits cannot overflow a u64 (10^19 - 1 < 2^64).
    let mut v: u64 = 0;
    let mut n = 0;
    while let Some(&c) = d.get(n)
        && c.is_ascii_digit()
    {
        if n == 19 {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
        n += 1;
    }
    if n == 0 {
        return None;
    }
    i64::try_from(v).ok().map(|v| (v, n))
}

/// Exact powers of ten representable in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Plain `[-]digits[.digits]` with at most 15 significant digits: the mantissa and the power
/// of ten are both exact f64s, so one division gives the correctly rounded value (Clinger's
/// fast path). Anything else goes to the standard parser.
fn parse_simple_decimal(d: &[u8]) -> Option<f64> {
    decimal_prefix(d).and_then(|(v, n)| (n == d.len()).then_some(v))
}

/// The value of the longest `[-]digits[.digits]` prefix of `d` and its length, when it has
/// 1 to 15 digits (see [`parse_simple_decimal`]).
#[inline]
fn decimal_prefix(d: &[u8]) -> Option<(f64, usize)> {
    let neg = d.first() == Some(&b'-');
    let mut i = usize::from(neg);
    // Wrapping: a mantissa of more than 15 digits is refused below anyway.
    let mut mantissa: u64 = 0;
    let int_start = i;
    while let Some(&c) = d.get(i)
        && c.is_ascii_digit()
    {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        i += 1;
    }
    let int_digits = i - int_start;
    let mut scale = 0;
    if d.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while let Some(&c) = d.get(i)
            && c.is_ascii_digit()
        {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            i += 1;
        }
        scale = i - frac_start;
    }
    let count = int_digits + scale;
    if count == 0 || count > 15 {
        return None;
    }
    let v = mantissa as f64 / POW10[scale];
    Some((if neg { -v } else { v }, i))
}

/// Floats as InfluxDB accepts them: decimal or exponent notation, no NaN or infinity.
fn parse_f64(s: &str) -> Option<f64> {
    if let Some(v) = parse_simple_decimal(s.as_bytes()) {
        return Some(v);
    }
    let d = s.as_bytes();
    let mut digits = 0;
    for &c in d {
        match c {
            b'0'..=b'9' => digits += 1,
            b'.' | b'-' | b'+' | b'e' | b'E' => {}
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}
