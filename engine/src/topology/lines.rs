//! Text files of `file` sources (JSON lines and line protocol), read in regions of whole
//! lines, and the JSON lines reader built on them (line protocol's is `lp_file`).
//!
//! A region is at least [`REGION_BYTES`] of whole lines unless the file ends, so memory
//! stays bounded however large the file is, and a bad line is reported with its file
//! line number because each region knows the line it starts on.
//!
//! A followed file (`follow: true`) is read as `tail -f` reads one: at its end the reader
//! answers [`Region::Pending`] instead of [`Region::End`], holds a last line that has no
//! newline yet until the rest of it is written, and reads what is appended later from the
//! same open file. A followed file that gets shorter was truncated or replaced under the
//! reader: that is an error, not a silent start from an unknown place.

use std::collections::VecDeque;
use std::io::Read;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder, ReaderBuilder};

/// Bytes read at a time: a region is at least this long, unless the file ends.
pub(crate) const REGION_BYTES: usize = 1024 * 1024;
/// Longest region grown to find the end of a line.
pub(crate) const MAX_REGION_BYTES: usize = 8 * REGION_BYTES;

/// A reader that fails on a line longer than `max` bytes: readers that find a line's end
/// by themselves (CSV, schema inference) stay bounded on a file without line ends, such as
/// a device or a binary file.
pub(crate) struct LineBound<R> {
    inner: R,
    /// Bytes since the last line end.
    run: usize,
    max: usize,
}

impl<R> LineBound<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            run: 0,
            max: MAX_REGION_BYTES,
        }
    }
}

impl<R: Read> Read for LineBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        self.run = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(at) => n - at - 1,
            None => self.run + n,
        };
        if self.run > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {} bytes", self.max),
            ));
        }
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for LineBound<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.run = 0;
        self.inner.seek(pos)
    }
}

/// What a text file has next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// The first `n` unread bytes are whole lines (or the last line of an ended file).
    Lines(usize),
    /// A followed file has no whole line more yet.
    Pending,
    /// The file ended and every line was read.
    End,
}

/// What a file source's reader has next.
pub(crate) enum Next {
    Batch(RecordBatch),
    /// Followed: nothing more yet.
    Pending,
    End,
}

/// The unread lines of a text file.
pub(crate) struct Lines {
    pub(crate) path: String,
    input: Box<dyn Read + Send>,
    follow: bool,
    /// Read but not yet consumed; starts at the beginning of a line.
    buf: Vec<u8>,
    /// File line number of `buf[0]`.
    line_base: usize,
    eof: bool,
    /// Bytes read from the file so far.
    read: u64,
}

impl Lines {
    pub(crate) fn open(path: &str, follow: bool) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        Ok(Self::new(path, Box::new(file), follow))
    }

    pub(crate) fn new(path: &str, input: Box<dyn Read + Send>, follow: bool) -> Self {
        Self {
            path: path.to_string(),
            input,
            follow,
            buf: Vec::new(),
            line_base: 1,
            eof: false,
            read: 0,
        }
    }

    /// Reads until the unread bytes are at least `want` long or the file ends (for now,
    /// when followed).
    fn fill(&mut self, want: usize) -> Result<(), String> {
        if self.follow {
            // A followed file's end is only where the writer has got to so far.
            self.eof = false;
        }
        while !self.eof && self.buf.len() < want {
            let n = (&mut self.input)
                .take((want - self.buf.len()) as u64)
                .read_to_end(&mut self.buf)
                .map_err(|e| format!("reading {}: {e}", self.path))?;
            self.read += n as u64;
            self.eof = n == 0;
        }
        if self.follow && self.eof {
            // Only a path that still names a file can be checked; a deleted file is
            // still read to its end through the open handle, as `tail -f` does.
            if let Ok(meta) = std::fs::metadata(&self.path)
                && meta.len() < self.read
            {
                return Err(format!(
                    "{} was truncated or replaced while it was followed (it is {} bytes, {} were read); a followed file may only grow",
                    self.path,
                    meta.len(),
                    self.read
                ));
            }
        }
        Ok(())
    }

    /// The next region: whole lines, at least `want` bytes of them unless the file ends
    /// first. A line longer than [`MAX_REGION_BYTES`] is an error.
    pub(crate) fn region(&mut self, want: usize) -> Result<Region, String> {
        let mut want = want.max(1);
        loop {
            self.fill(want)?;
            if self.buf.is_empty() {
                return Ok(if self.follow {
                    Region::Pending
                } else {
                    Region::End
                });
            }
            let whole_lines = self.buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
            return Ok(match whole_lines {
                _ if self.eof && !self.follow => Region::Lines(self.buf.len()),
                Some(end) => Region::Lines(end),
                // Followed: the writer has not finished this line yet.
                None if self.eof => Region::Pending,
                None if want < MAX_REGION_BYTES => {
                    want += REGION_BYTES;
                    continue;
                }
                None => {
                    return Err(format!(
                        "{} line {}: a line longer than {MAX_REGION_BYTES} bytes",
                        self.path, self.line_base
                    ));
                }
            });
        }
    }

    /// Whether a region that ends at the end of the unread bytes can grow no further.
    pub(crate) fn at_end(&self) -> bool {
        self.eof
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Marks the first `n` unread bytes (whole lines) as read.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.line_base += self.buf[..n].iter().filter(|&&b| b == b'\n').count();
        self.buf.drain(..n);
    }

    /// `message` about line `i` (from 0) of the unread lines, with the line itself.
    pub(crate) fn line_error(&self, i: usize, message: &str) -> String {
        let line = self.buf.split(|&b| b == b'\n').nth(i).unwrap_or_default();
        format!(
            "{} line {}: {message} (line: {:?})",
            self.path,
            self.line_base + i,
            String::from_utf8_lossy(line)
        )
    }
}

/// A JSON lines file as batches of the source's columns.
pub(crate) struct JsonlFile {
    lines: Lines,
    schema: SchemaRef,
    decoder: Decoder,
    ready: VecDeque<RecordBatch>,
}

impl JsonlFile {
    pub(crate) fn new(lines: Lines, schema: SchemaRef, batch_rows: usize) -> Result<Self, String> {
        let decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(batch_rows)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            lines,
            schema,
            decoder,
            ready: VecDeque::new(),
        })
    }

    pub(crate) fn next(&mut self) -> Result<Next, String> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Next::Batch(b));
            }
            let end = match self.lines.region(REGION_BYTES)? {
                Region::Lines(end) => end,
                Region::Pending => return Ok(Next::Pending),
                Region::End => return Ok(Next::End),
            };
            if let Err(e) = self.decode(end) {
                return Err(self.locate(end).unwrap_or(e));
            }
            self.lines.consume(end);
        }
    }

    /// Decodes the first `end` unread bytes into `ready`.
    fn decode(&mut self, end: usize) -> Result<(), String> {
        let bytes = &self.lines.bytes()[..end];
        let mut at = 0;
        loop {
            // Stops early when a batch is full: flushed, then it goes on.
            at += self
                .decoder
                .decode(&bytes[at..])
                .map_err(|e| e.to_string())?;
            let batch = self.decoder.flush().map_err(|e| e.to_string())?;
            let flushed = batch.is_some();
            self.ready.extend(batch);
            if at >= bytes.len() {
                return Ok(());
            }
            if !flushed {
                return Err("the JSON decoder stopped before the end of the region".into());
            }
        }
    }

    /// The first line of the first `end` unread bytes that does not decode, as an error;
    /// only called after the region failed, so its cost does not matter.
    fn locate(&self, end: usize) -> Option<String> {
        let bytes = &self.lines.bytes()[..end];
        bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .find_map(|(i, line)| {
                let mut one = ReaderBuilder::new(self.schema.clone())
                    .with_batch_size(1)
                    .build_decoder()
                    .ok()?;
                let err = one
                    .decode(line)
                    .and_then(|_| one.flush())
                    .err()?
                    .to_string();
                Some(self.lines.line_error(i, &err))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]))
    }

    fn values(next: Next) -> Vec<i64> {
        match next {
            Next::Batch(b) => b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.values().to_vec())
                .unwrap_or_default(),
            Next::Pending => vec![-1],
            Next::End => vec![-2],
        }
    }

    #[test]
    fn a_bad_json_line_is_reported_with_its_file_line() {
        let text = "{\"v\": 1}\n\n{\"v\": 2}\n{\"v\": \"x\"}\n{\"v\": 3}";
        let lines = Lines::new("t.jsonl", Box::new(std::io::Cursor::new(text)), false);
        let mut f = JsonlFile::new(lines, schema(), 10).expect("decoder");
        let err = f.next().err().expect("an error");
        assert!(err.starts_with("t.jsonl line 4: "), "{err}");
        assert!(err.contains("(line: \"{\\\"v\\\": \\\"x\\\"}\")"), "{err}");

        // The last line needs no newline; batches hold at most `batch_rows`.
        let text = "{\"v\": 1}\n{\"v\": 2}\n{\"v\": 3}";
        let lines = Lines::new("t.jsonl", Box::new(std::io::Cursor::new(text)), false);
        let mut f = JsonlFile::new(lines, schema(), 2).expect("decoder");
        let got: Vec<Vec<i64>> = (0..3).map(|_| values(f.next().expect("next"))).collect();
        assert_eq!(got, vec![vec![1, 2], vec![3], vec![-2]]);
    }

    #[test]
    fn a_followed_file_yields_whole_lines_as_they_are_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.jsonl");
        let path_str = path.to_string_lossy().into_owned();
        let mut w = std::fs::File::create(&path).expect("create");
        w.write_all(b"{\"v\": 1}\n{\"v\":").expect("write");
        let lines = Lines::open(&path_str, true).expect("open");
        let mut f = JsonlFile::new(lines, schema(), 10).expect("decoder");
        assert_eq!(values(f.next().expect("next")), vec![1]);
        // The second line is half written: nothing yet, and no error.
        assert_eq!(values(f.next().expect("next")), vec![-1]);
        w.write_all(b" 2}\n{\"v\": 3}\n").expect("write");
        assert_eq!(values(f.next().expect("next")), vec![2, 3]);
        assert_eq!(values(f.next().expect("next")), vec![-1]);

        // Cut back under the reader: refused, not read from an unknown place.
        std::fs::write(&path, "{\"v\": 9}\n").expect("truncate");
        let err = f.next().err().expect("an error");
        assert!(err.contains("was truncated or replaced"), "{err}");
    }
}
