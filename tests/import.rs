//! `tidemark import` of each file format against a running server: counts, exact values,
//! rejected rows with their file line and error, and the exit status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{BIN, Server};

fn import(s: &Server, db: &str, args: &[&str], files: &[&Path]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["import", "--quiet", "--host", &s.base, "--db", db])
        .args(args)
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn rows(s: &Server, db: &str, sql: &str) -> Vec<String> {
    s.query(db, sql).iter().map(|r| r.to_string()).collect()
}

#[test]
fn line_protocol_files_plain_and_gzip_with_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    // Batches of 1,000 lines are larger than a request may be: they go in halves.
    let s = Server::start(tmp.path(), &["--max-request-bytes", "20000"]);
    let mut lp = String::from("# exported\n");
    for i in 0..20_000 {
        lp.push_str(&format!("cpu,host=h{} usage={i} {i}\n", i % 7));
        if i == 12_345 {
            // Line 12,348 of the file: a type conflict only the server can see.
            lp.push_str("cpu,host=h1 usage=\"high\" 99999999\n");
        }
    }
    lp.push_str("cpu,host=h1 usage=\n");
    // Line 20,004: longer than a whole request may be.
    lp.push_str(&format!("big s=\"{}\" 1\n", "x".repeat(30_000)));
    let plain = tmp.path().join("a.lp");
    std::fs::write(&plain, &lp).unwrap();
    let zipped = tmp.path().join("b.lp.gz");
    std::fs::write(
        &zipped,
        gzip(b"mem,host=h1 free=1i 1\nmem,host=h2 free=2i 2\n"),
    )
    .unwrap();
    let rejects = tmp.path().join("rejects.lp");
    let (ok, stdout, stderr) = import(
        &s,
        "m",
        &[
            "--batch-size",
            "1000",
            "--rejects",
            rejects.to_str().unwrap(),
        ],
        &[&plain, &zipped],
    );
    assert!(!ok, "rejected rows make the exit status a failure");
    assert!(
        stdout.contains("20002 rows accepted, 3 rejected"),
        "{stdout}{stderr}"
    );
    assert_eq!(s.count("m", "cpu"), 20_000);
    assert_eq!(
        rows(&s, "m", "SELECT host, free FROM mem ORDER BY time"),
        vec![r#"{"free":1,"host":"h1"}"#, r#"{"free":2,"host":"h2"}"#]
    );
    assert_eq!(
        rows(&s, "m", "SELECT sum(usage) AS s FROM cpu"),
        vec![r#"{"s":199990000.0}"#]
    );
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    let lines: Vec<&str> = rejected.lines().collect();
    assert_eq!(lines.len(), 6, "{rejected}");
    assert!(
        lines[4].contains(":20004: request body exceeds the limit"),
        "{rejected}"
    );
    assert!(
        lines[0].starts_with(&format!("# {}:12348: ", plain.display())),
        "{rejected}"
    );
    assert!(lines[0].contains("float field"), "{rejected}");
    assert_eq!(lines[1], "cpu,host=h1 usage=\"high\" 99999999");
    assert!(
        lines[2].starts_with(&format!("# {}:20003: ", plain.display())),
        "{rejected}"
    );
    assert_eq!(lines[3], "cpu,host=h1 usage=");

    // The rejects file is line protocol with comments: fixed, it imports as is.
    let fixed: Vec<&str> = lines[..4].to_vec();
    let fixed = fixed
        .join("\n")
        .replace("\"high\"", "1")
        .replace("usage=", "usage=2");
    std::fs::write(&rejects, fixed).unwrap();
    let (ok, stdout, _) = import(&s, "m", &["--format", "lp"], &[&rejects]);
    assert!(ok, "{stdout}");
    assert_eq!(s.count("m", "cpu"), 20_002);
}

#[test]
fn csv_files_with_kinds_inferred_given_and_from_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    // The table exists with `n` as an integer field and `host` as a tag.
    assert_eq!(s.write_v3("m", "weather,host=x n=1i,temp=1.5 1").0, 204);
    let csv = "time,host,temp,n,raining,note\n\
               2026-01-01T00:00:00Z,a,20.5,3,false,\"sunny, warm\"\n\
               2026-01-01 00:00:10,b,21,4,true,\n\
               1767225620,c,cold,5,false,x\n\
               1767225630,d,22\n";
    let path = tmp.path().join("weather.csv.gz");
    std::fs::write(&path, gzip(csv.as_bytes())).unwrap();
    let rejects = tmp.path().join("rejects.txt");
    let (ok, stdout, stderr) = import(
        &s,
        "m",
        &[
            "--precision",
            "s",
            "--field-type",
            "temp=float",
            "--rejects",
            rejects.to_str().unwrap(),
        ],
        &[&path],
    );
    assert!(!ok);
    assert!(
        stdout.contains("2 rows accepted, 2 rejected"),
        "{stdout}{stderr}"
    );
    assert_eq!(
        rows(
            &s,
            "m",
            "SELECT host, temp, n, raining, note, time FROM weather WHERE host <> 'x' ORDER BY time"
        ),
        vec![
            r#"{"host":"a","n":3,"note":"sunny, warm","raining":false,"temp":20.5,"time":"2026-01-01T00:00:00Z"}"#,
            r#"{"host":"b","n":4,"raining":true,"temp":21.0,"time":"2026-01-01T00:00:10Z"}"#,
        ]
    );
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    let lines: Vec<&str> = rejected.lines().collect();
    assert_eq!(lines.len(), 4, "{rejected}");
    assert!(
        lines[0].contains(":4: column \"temp\": \"cold\" is not a float"),
        "{rejected}"
    );
    assert_eq!(lines[1], "1767225620,c,cold,5,false,x");
    assert!(
        lines[2].contains(":5: expected 6 columns as in the header, found 3"),
        "{rejected}"
    );

    // Without a time column the file is refused whole, naming the columns there are.
    let bad = tmp.path().join("other.csv");
    std::fs::write(&bad, "ts,v\n1,2\n").unwrap();
    let (ok, _, stderr) = import(&s, "m", &[], &[&bad]);
    assert!(!ok);
    assert!(stderr.contains("no column named \"time\""), "{stderr}");
    assert!(stderr.contains("--time-column"), "{stderr}");
}

#[test]
fn parquet_exported_by_a_query_imports_back_the_same_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let mut lp = String::new();
    for i in 0..5000 {
        lp.push_str(&format!(
            "cpu,host=h{},dc=d{} usage={}.25,n={i}i,up=true,label=\"l{}\" {}\n",
            i % 13,
            i % 3,
            i % 100,
            i % 5,
            1_700_000_000_000_000_000i64 + i * 1_000_000_000
        ));
    }
    assert_eq!(s.write_v3("src", &lp).0, 204);
    let (status, parquet) = s.query_raw("src", "SELECT * FROM cpu", "parquet");
    assert_eq!(status, 200);
    let path = tmp.path().join("cpu.parquet");
    std::fs::write(&path, &parquet).unwrap();
    let zipped = tmp.path().join("again.parquet.gz");
    std::fs::write(&zipped, gzip(&parquet)).unwrap();

    let (ok, stdout, stderr) = import(&s, "dst", &["--batch-size", "700"], &[&path]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("5000 rows accepted, 0 rejected"),
        "{stdout}"
    );
    let digest = "SELECT host, dc, count(*) AS c, sum(usage) AS u, sum(n) AS n, \
                  count(up) AS up, min(label) AS l, min(time) AS t0, max(time) AS t1 \
                  FROM cpu GROUP BY host, dc ORDER BY host, dc";
    assert_eq!(rows(&s, "dst", digest), rows(&s, "src", digest));
    let types = "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_name = 'cpu' ORDER BY column_name";
    assert_eq!(rows(&s, "dst", types), rows(&s, "src", types));

    // The same file gzip-compressed into another table; duplicates of the same points
    // change nothing.
    let (ok, stdout, _) = import(&s, "dst", &["--table", "cpu"], &[&zipped]);
    assert!(ok, "{stdout}");
    assert_eq!(rows(&s, "dst", digest), rows(&s, "src", digest));
}
