//! Line protocol files: read in regions that end at a newline, each region parsed locally
//! so that lines that do not parse are refused with their file line number and lines that
//! do are sent as written.
//!
//! A quoted string value may hold newlines, so a region's last lines can be a line cut in
//! two. Failed lines at the end of a region are therefore carried into the next region and
//! parsed again with what follows; only a failure that stays a failure is reported.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Batch, BatchLimits, Rejected, Source};
use crate::Error;
use crate::line_protocol::{LineParser, Precision, split_at_invalid_utf8};

/// Bytes read from the file at a time.
const READ_BYTES: usize = 1024 * 1024;
/// Most bytes of failed trailing lines carried into the next region.
const MAX_CARRY: usize = 4 * READ_BYTES;

pub(super) struct LpSource {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    precision: Precision,
    /// Read but not yet parsed; always starts at the beginning of a line.
    buf: Vec<u8>,
    /// File line number of `buf[0]`.
    line_base: u64,
    /// Bytes read at a time (a region is at least this long, but at the end of the file).
    read_bytes: usize,
    /// A region must reach a newline past this offset of `buf` (past carried lines).
    scan_from: usize,
    eof: bool,
}

impl LpSource {
    pub(super) fn new(path: &Path, input: Box<dyn Read + Send>, precision: Precision) -> Self {
        Self {
            path: path.to_path_buf(),
            input,
            precision,
            buf: Vec::new(),
            line_base: 1,
            scan_from: 0,
            read_bytes: READ_BYTES,
            eof: false,
        }
    }

    #[cfg(test)]
    pub(super) fn with_read_bytes(mut self, n: usize) -> Self {
        self.read_bytes = n.max(1);
        self
    }

    /// Reads until `buf` holds a newline after `from`, or the file ends.
    fn read_more(&mut self, from: usize) -> Result<(), Error> {
        loop {
            if self.eof || self.buf[from..].contains(&b'\n') {
                return Ok(());
            }
            let n = (&mut self.input)
                .take(self.read_bytes as u64)
                .read_to_end(&mut self.buf)
                .map_err(|e| Error::io(&self.path, e))?;
            if n == 0 {
                self.eof = true;
            }
        }
    }

    /// Parses `buf[..end]` (whole lines) into `batch`; returns how many bytes were consumed
    /// (less than `end` when failed trailing lines are carried).
    fn parse_region(&self, end: usize, batch: &mut Batch) -> usize {
        let region = &self.buf[..end];
        let mut pending: Vec<Rejected> = Vec::new();
        let mut consumed = 0;
        let mut line_offset = 0u64;
        let mut rest = region;
        while !rest.is_empty() {
            let (text, bad_line) = split_at_invalid_utf8(rest);
            let base = self.line_base + line_offset;
            let mut parser = LineParser::new(text);
            while let Some(parsed) = parser.next() {
                let location = base + parsed.line_number as u64 - 1;
                match &parsed.result {
                    Ok(_) => {
                        // Lines before this one that failed are failures for good.
                        batch.rejected.append(&mut pending);
                        batch.push_text(location, parsed.text);
                        consumed = offset_of(region, parsed.text) + parsed.text.len();
                    }
                    Err(message) => pending.push(Rejected {
                        location,
                        original: parsed.text.to_string(),
                        error: message.clone(),
                    }),
                }
            }
            line_offset += text.bytes().filter(|&b| b == b'\n').count() as u64;
            match bad_line {
                None => break,
                Some(bad) => {
                    batch.rejected.append(&mut pending);
                    let location = self.line_base + line_offset;
                    let line = String::from_utf8_lossy(&rest[bad.begin..bad.end]);
                    batch.rejected.push(Rejected {
                        location,
                        original: line.trim_end_matches('\r').to_string(),
                        error: bad.message(),
                    });
                    // Past the line and its newline.
                    let next = (bad.end + 1).min(rest.len());
                    consumed = offset_of_bytes(region, &rest[next..]);
                    line_offset += 1;
                    rest = &rest[next..];
                }
            }
        }
        if pending.is_empty() {
            return end;
        }
        // Carry from right after the last line that parsed (its newline included, so the
        // next parse counts lines on from it).
        if self.eof && end == self.buf.len() || end - consumed > MAX_CARRY {
            batch.rejected.append(&mut pending);
            return end;
        }
        consumed
    }
}

/// Byte offset of `part` in `whole` (`part` is a slice of it).
fn offset_of(whole: &[u8], part: &str) -> usize {
    offset_of_bytes(whole, part.as_bytes())
}

fn offset_of_bytes(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

impl Source for LpSource {
    fn fill(&mut self, batch: &mut Batch, limits: BatchLimits) -> Result<bool, Error> {
        batch.precision = self.precision;
        loop {
            if batch.full(limits) {
                return Ok(true);
            }
            self.read_more(self.scan_from)?;
            if self.buf.is_empty() {
                return Ok(false);
            }
            // Whole lines only, unless the file ends without a newline.
            let end = if self.eof {
                self.buf.len()
            } else {
                self.buf
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(self.buf.len(), |i| i + 1)
            };
            let consumed = self.parse_region(end, batch);
            self.line_base += self.buf[..consumed].iter().filter(|&&b| b == b'\n').count() as u64;
            self.buf.drain(..consumed);
            // Carried lines are parsed again only once more text follows them.
            self.scan_from = end - consumed;
            if self.eof && self.buf.is_empty() {
                return Ok(false);
            }
        }
    }
}
