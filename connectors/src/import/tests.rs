use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use tidemark_storage::catalog::FieldType;

use super::*;
use crate::line_protocol::LineParser;

const LIMITS: BatchLimits = BatchLimits {
    max_lines: 3,
    max_bytes: 1 << 20,
};

/// Everything a file imports as: (location, line) sent and (location, error) refused.
fn import(path: &Path, format: Format, options: &Options) -> (Vec<(u64, String)>, Vec<Rejected>) {
    let mut source = open(path, format, options, Arc::new(AtomicU64::new(0))).expect("opens");
    read_all(source.as_mut())
}

fn read_all(source: &mut dyn Source) -> (Vec<(u64, String)>, Vec<Rejected>) {
    let mut lines = Vec::new();
    let mut rejected = Vec::new();
    let mut batch = Batch::default();
    loop {
        batch.clear();
        let more = source.fill(&mut batch, LIMITS).expect("reads");
        // The server numbers the body's lines; each must map back to its own line.
        for l in &batch.lines {
            assert_eq!(
                batch.line_at(l.body_line).map(|x| x.location),
                Some(l.location)
            );
            lines.push((l.location, batch.text(l).to_string()));
        }
        rejected.append(&mut batch.rejected);
        if !more {
            return (lines, rejected);
        }
    }
}

fn file_with(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("write");
    path
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// Hands out at most `n` bytes per read, so that regions end in awkward places.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    n: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.n.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn formats_are_told_by_name_through_gz() {
    let f = |s: &str| Format::from_path(Path::new(s));
    assert_eq!(f("a/cpu.lp"), Some(Format::LineProtocol));
    assert_eq!(f("cpu.csv.gz"), Some(Format::Csv));
    assert_eq!(f("x.PARQUET"), Some(Format::Parquet));
    assert_eq!(f("noext"), None);
    assert_eq!(f("data.json"), None);
}

#[test]
fn line_protocol_keeps_file_line_numbers_and_refuses_bad_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let lp = "# header comment\n\
              cpu,host=a usage=1 1\n\
              \n\
              cpu,host=a usage= 2\n\
              cpu,host=b usage=3 3\n\
              mem free=4i 4\n\
              cpu,host=c usage=5 5";
    for (name, data) in [
        ("plain.lp", lp.as_bytes().to_vec()),
        ("zipped.lp.gz", gzip(lp.as_bytes())),
    ] {
        let path = file_with(&dir, name, &data);
        let (lines, rejected) = import(&path, Format::LineProtocol, &Options::default());
        let locations: Vec<u64> = lines.iter().map(|l| l.0).collect();
        assert_eq!(locations, vec![2, 5, 6, 7], "{name}");
        assert_eq!(lines[3].1, "cpu,host=c usage=5 5");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].location, 4);
        assert_eq!(rejected[0].original, "cpu,host=a usage= 2");
        assert!(!rejected[0].error.is_empty());
    }
}

#[test]
fn a_string_spanning_lines_survives_any_read_boundary() {
    let mut lp = String::new();
    for i in 0..40 {
        lp.push_str(&format!("m,k=v s=\"a\nb\nc{i}\",n={i}i {i}\n"));
        lp.push_str(&format!("m n={i}i {}\n", 1000 + i));
    }
    lp.push_str("m s=\"never closed\nm n=1i 5\nm n=2i 6\n");
    // What one parse of the whole text says: the importer must say the same, wherever
    // its reads end.
    let mut expected_lines = Vec::new();
    let mut expected_errors = Vec::new();
    let mut parser = LineParser::new(&lp);
    while let Some(p) = parser.next() {
        match p.result {
            Ok(_) => expected_lines.push((p.line_number as u64, p.text.to_string())),
            Err(_) => expected_errors.push(p.line_number as u64),
        }
    }
    assert!(expected_lines.len() >= 80);
    assert_eq!(expected_lines[2].0, 5);
    assert_eq!(expected_errors.first(), Some(&161));
    for n in [1, 3, 7, 64, 4096] {
        let input = Trickle {
            data: lp.clone().into_bytes(),
            pos: 0,
            n,
        };
        let mut source = lp::LpSource::new(Path::new("t.lp"), Box::new(input), Precision::Second)
            .with_read_bytes(n);
        let (lines, rejected) = read_all(&mut source);
        assert_eq!(lines, expected_lines, "reads of {n} bytes");
        let errors: Vec<u64> = rejected.iter().map(|r| r.location).collect();
        assert_eq!(errors, expected_errors, "reads of {n} bytes");
    }
}

#[test]
fn invalid_utf8_is_refused_one_line_at_a_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = b"m n=1i 1\nm,t=\xff n=2i 2\nm n=3i 3\n";
    let path = file_with(&dir, "bad.lp", data);
    let (lines, rejected) = import(&path, Format::LineProtocol, &Options::default());
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].location, 2);
    assert!(rejected[0].error.contains("UTF-8"));
}

#[test]
fn csv_columns_are_inferred_or_given() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = "time,host,usage,ok,note,count\n\
               2024-01-01T00:00:00Z,a,1.5,true,hello,1\n\
               2024-01-01 00:00:10,b,2,false,\"x, y\",2\n\
               1704067220000000000,c,,true,,3\n";
    let path = file_with(&dir, "cpu.csv", csv.as_bytes());
    let mut options = Options::default();
    options.columns.insert("host".into(), ColumnKind::Tag);
    options
        .columns
        .insert("count".into(), ColumnKind::Field(FieldType::Integer));
    let (lines, rejected) = import(&path, Format::Csv, &options);
    assert!(rejected.is_empty(), "{rejected:?}");
    let texts: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "cpu,host=a usage=1.5,ok=true,note=\"hello\",count=1i 1704067200000000000",
            "cpu,host=b usage=2.0,ok=false,note=\"x, y\",count=2i 1704067210000000000",
            "cpu,host=c ok=true,count=3i 1704067220000000000",
        ]
    );
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), vec![2, 3, 4]);
}

#[test]
fn csv_rows_that_do_not_fit_are_refused_with_their_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = "# an annotation line\n\
               name,time,usage\n\
               cpu,1,1.0\n\
               cpu,2,lots\n\
               cpu,yesterday,3\n\
               cpu,4\n\
               ,5,5\n\
               mem,6,NaN\n\
               disk,7,7\n";
    let path = file_with(&dir, "m.csv", csv.as_bytes());
    let mut options = Options {
        table_column: Some("name".into()),
        precision: Precision::Second,
        ..Options::default()
    };
    // Inferred, `usage` would be a string column: one of its values is not a number.
    options
        .columns
        .insert("usage".into(), ColumnKind::Field(FieldType::Float));
    let (lines, rejected) = import(&path, Format::Csv, &options);
    assert_eq!(
        lines.iter().map(|l| l.1.as_str()).collect::<Vec<_>>(),
        vec!["cpu usage=1.0 1000000000", "disk usage=7.0 7000000000"]
    );
    let got: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| (r.location, r.original.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, "cpu,2,lots"),
            (5, "cpu,yesterday,3"),
            (6, "cpu,4"),
            (7, ",5,5"),
            (8, "mem,6,NaN")
        ]
    );
    assert!(
        rejected[0].error.contains("\"usage\""),
        "{}",
        rejected[0].error
    );
    assert!(rejected[0].error.contains("float"), "{}", rejected[0].error);
    assert!(
        rejected[1].error.contains("RFC 3339"),
        "{}",
        rejected[1].error
    );
    assert!(
        rejected[2].error.contains("expected 3 columns"),
        "{}",
        rejected[2].error
    );
    assert!(
        rejected[3].error.contains("table name is empty"),
        "{}",
        rejected[3].error
    );
    assert!(rejected[4].error.contains("NaN"), "{}", rejected[4].error);
}

#[test]
fn csv_without_the_time_column_is_refused_whole() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = file_with(&dir, "x.csv", b"ts,v\n1,2\n");
    let err = open(&path, Format::Csv, &Options::default(), Arc::default())
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("no column named \"time\""), "{text}");
    assert!(text.contains("--time-column"), "{text}");
    assert!(text.contains("ts, v"), "{text}");
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).expect("create");
    let mut writer =
        ::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(batch).expect("write");
    writer.close().expect("close");
}

#[test]
fn parquet_tags_fields_and_nulls() {
    let dir = tempfile::tempdir().expect("tmp");
    let host: DictionaryArray<Int32Type> = vec![Some("a"), Some("b"), None].into_iter().collect();
    let batch = RecordBatch::try_from_iter(vec![
        ("host", Arc::new(host) as ArrayRef),
        (
            "usage",
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(f64::NAN)])) as ArrayRef,
        ),
        ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "ok",
            Arc::new(BooleanArray::from(vec![true, false, true])) as ArrayRef,
        ),
        (
            "s",
            Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
        ),
        (
            "time",
            Arc::new(TimestampNanosecondArray::from(vec![10, 20, 30]).with_timezone("UTC"))
                as ArrayRef,
        ),
    ])
    .expect("batch");
    let path = dir.path().join("cpu.parquet");
    write_parquet(&path, &batch);
    let (lines, rejected) = import(&path, Format::Parquet, &Options::default());
    assert_eq!(
        lines,
        vec![
            (
                1,
                "cpu,host=a usage=1.5,n=1i,ok=true,s=\"x\" 10".to_string()
            ),
            (2, "cpu,host=b n=2i,ok=false,s=\"y\" 20".to_string()),
        ]
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].location, 3);
    assert!(rejected[0].error.contains("NaN"));
    assert!(
        rejected[0].original.contains("n=3"),
        "{}",
        rejected[0].original
    );

    // Gzip-compressed, with a kind given and a column left out.
    let zipped = file_with(
        &dir,
        "other.parquet.gz",
        &gzip(&std::fs::read(&path).expect("read")),
    );
    let mut options = Options {
        table: Some("t".into()),
        exclude: vec!["usage".into(), "ok".into()],
        ..Options::default()
    };
    options.columns.insert("n".into(), ColumnKind::Tag);
    let (lines, rejected) = import(&zipped, Format::Parquet, &options);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(lines[2].1, "t,n=3 s=\"z\" 30");
}

#[test]
fn parquet_columns_that_cannot_be_imported_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let batch = RecordBatch::try_from_iter(vec![(
        "time",
        Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
    )])
    .expect("batch");
    let path = dir.path().join("bad.parquet");
    write_parquet(&path, &batch);
    let err = open(&path, Format::Parquet, &Options::default(), Arc::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("time column \"time\" is Utf8"), "{err}");

    let path = file_with(&dir, "notparquet.parquet", b"hello");
    let err = open(&path, Format::Parquet, &Options::default(), Arc::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("not a readable Parquet file"), "{err}");
}
