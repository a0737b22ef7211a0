//! A zero-copy InfluxDB line protocol parser.
//!
//! [`LineParser`] walks a request body once. Keys and values borrow from the body
//! (`Cow::Borrowed`) unless they contain escapes; the tag and field vectors are reused from
//! line to line, so steady-state parsing allocates nothing per field. Each logical line (a
//! quoted string field may span physical lines) yields either a [`Line`] or an error message;
//! the caller decides what to do with both.

use std::borrow::Cow;

use tidemark_storage::batch::FieldValue;

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
    /// As written, not yet scaled by the precision.
    pub timestamp: Option<i64>,
}

/// One logical line of the body: where it is, its text, and what came of it.
#[derive(Debug)]
pub struct ParsedLine<'p, 'a> {
    /// 1-based number of the physical line the logical line starts on.
    pub line_number: usize,
    pub text: &'a str,
    pub result: Result<Line<'p, 'a>, String>,
}

/// Parses a UTF-8 body line by line.
pub struct LineParser<'a> {
    src: &'a str,
    pos: usize,
    line_number: usize,
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
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
        }
    }

    /// The next logical line, skipping blank and `#` comment lines.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<ParsedLine<'_, 'a>> {
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
        let outcome = parse_line(
            self.src,
            &mut self.pos,
            &mut self.tags,
            &mut self.fields,
            &mut inner_newlines,
        );
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
            timestamp,
        });
        Some(ParsedLine {
            line_number,
            text,
            result,
        })
    }
}

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .iter()
        .position(|&b| b == needle)
        .map(|i| i + from)
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

    // Optional timestamp, then the end of the line.
    let mut timestamp = None;
    if *pos < b.len() && b[*pos] == b' ' {
        skip_spaces(b, pos);
        if *pos < b.len() && !matches!(b[*pos], b'\n' | b'\r') {
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
        None | Some(b'\n') => Ok((measurement, timestamp)),
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
    match text {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Boolean(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Boolean(false)),
        _ => {}
    }
    let last = text.as_bytes()[text.len() - 1];
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
    let mut v: u64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
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

/// Exact powers of ten representable in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Plain `[-]digits[.digits]` with at most 15 significant digits: the mantissa and the power
/// of ten are both exact f64s, so one division gives the correctly rounded value (Clinger's
/// fast path). Anything else goes to the standard parser.
fn parse_simple_decimal(d: &[u8]) -> Option<f64> {
    let (neg, digits) = match d.first() {
        Some(b'-') => (true, &d[1..]),
        _ => (false, d),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut frac_digits: Option<usize> = None;
    let mut count = 0;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
                if let Some(f) = frac_digits.as_mut() {
                    *f += 1;
                }
            }
            b'.' if frac_digits.is_none() => frac_digits = Some(0),
            _ => return None,
        }
    }
    let scale = frac_digits.unwrap_or(0);
    if count == 0 || count > 15 || scale >= POW10.len() {
        return None;
    }
    let v = mantissa as f64 / POW10[scale];
    Some(if neg { -v } else { v })
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
