//! `tidemark write` and `tidemark query` against a running server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{BIN, Server};

/// Runs `tidemark` with `input` on its standard input.
fn write_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn write_a_file_and_stdin_then_query_in_each_format() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let file = tmp.path().join("cpu.lp");
    let mut lp = String::new();
    for i in 0..1000 {
        lp.push_str(&format!("cpu,host=h{} usage={i} {}\n", i % 10, i));
    }
    std::fs::write(&file, &lp).unwrap();
    let out = Command::new(BIN)
        .args([
            "write",
            "--host",
            &s.base,
            "--db",
            "m",
            "--batch-bytes",
            "4096",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = write_stdin(
        &[
            "write",
            "--host",
            &s.base,
            "--db",
            "m",
            "--precision",
            "s",
            "-",
        ],
        b"mem,host=z free=1i 5\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let q = |fmt: &str, sql: &str| {
        let out = Command::new(BIN)
            .args([
                "query", "--host", &s.base, "--db", "m", "--format", fmt, sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(q("csv", "SELECT count(*) AS n FROM cpu"), "n\n1000\n");
    assert_eq!(
        q("json", "SELECT free, CAST(time AS BIGINT) AS t FROM mem"),
        "[{\"free\":1,\"t\":5000000000}]\n"
    );
    assert!(q("pretty", "SELECT count(*) AS n FROM cpu").contains("| 1000 |"));

    // Errors are reported with the server's message and a failing exit code.
    let out = Command::new(BIN)
        .args([
            "query",
            "--host",
            &s.base,
            "--db",
            "m",
            "SELECT nope FROM cpu",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let out = write_stdin(
        &["write", "--host", &s.base, "--db", "m", "-"],
        b"cpu usage=\"str\" 1\n",
    );
    assert!(!out.status.success());
}

fn serve_help() -> String {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn serve_flags_come_from_the_environment_too() {
    let help = serve_help();
    for flag in [
        "--data-dir",
        "--http-bind",
        "--durability",
        "--partitions",
        "TIDEMARK_DATA_DIR",
        "TIDEMARK_HTTP_BIND",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("TIDEMARK_DATA_DIR", tmp.path().join("envdata"))
        .env("TIDEMARK_HTTP_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("tidemark listening on http://127.0.0.1:"),
        "{line}"
    );
    assert!(tmp.path().join("envdata/log").is_dir());
}

#[test]
fn database_table_and_delete_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("TIDEMARK_HOST", &s.base)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["database", "create", "m", "--retention", "30d"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["database", "create", "m"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = run(&["database", "list"]);
    assert!(ok && out.contains("2592000000000000"), "{out}");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let lp = format!("cpu,host=a v=1 {now}\ncpu,host=b v=2 {now}\n");
    assert_eq!(s.write_v3("m", &lp).0, 204);
    let (ok, out) = run(&["table", "update", "--db", "m", "cpu", "--retention", "1d"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&[
        "delete",
        "--db",
        "m",
        "--start",
        "1970-01-01T00:00:00Z",
        "--stop",
        "2100-01-01T00:00:00Z",
        "--predicate",
        "host=\"a\"",
    ]);
    assert!(ok, "{out}");
    assert_eq!(s.count("m", "cpu"), 1);
    let (ok, out) = run(&["table", "drop", "--db", "m", "cpu"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["database", "drop", "m"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["database", "drop", "m"]);
    assert!(!ok && out.contains("not found"), "{out}");
}

#[test]
fn serve_settings_come_from_a_config_file_below_env_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tidemark.toml");
    std::fs::write(
        &config,
        "# limits for the test\nmax-databases = 1\nwindow_secs = 60\nlog-format = \"json\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let second_db = |s: &Server| {
        assert_eq!(s.write_v3("a", "m v=1 1").0, 204);
        s.write_v3("b", "m v=1 1").0
    };
    let s = Server::start(&tmp.path().join("1"), &["--config", config]);
    assert_eq!(second_db(&s), 400, "max-databases = 1 from the file");
    drop(s);
    let s = Server::start_env(
        tmp.path().join("2"),
        vec!["--config".into(), config.into()],
        &[("TIDEMARK_MAX_DATABASES", "2")],
    );
    assert_eq!(second_db(&s), 204, "the environment overrides the file");
    drop(s);
    let s = Server::start_env(
        tmp.path().join("3"),
        vec![
            "--config".into(),
            config.into(),
            "--max-databases".into(),
            "2".into(),
        ],
        &[("TIDEMARK_MAX_DATABASES", "1")],
    );
    assert_eq!(second_db(&s), 204, "the command line overrides both");
    drop(s);

    for (text, expected) in [
        ("nope = 1\n", "unknown setting \"nope\""),
        (
            "partitions = [1]\n",
            "partitions must be a string, number or boolean",
        ),
        ("partitions = \"many\"\n", "--partitions"),
        ("partitions = \n", "not valid TOML"),
    ] {
        let bad = tmp.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--http-bind", "127.0.0.1:0", "--config"])
            .arg(&bad)
            .arg("--data-dir")
            .arg(tmp.path().join("bad"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn every_serve_flag_is_documented() {
    let help = serve_help();
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let mut flags = 0;
    for word in help.split_whitespace() {
        let flag = word.trim_end_matches(',');
        if flag.starts_with("--") && flag.len() > 2 && flag != "--help" {
            flags += 1;
            assert!(
                docs.contains(&format!("`{flag}`")),
                "{flag} is not in docs/configuration.md"
            );
        }
    }
    assert!(flags >= 20, "{help}");
}
