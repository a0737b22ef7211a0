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

/// Runs `tidemark ARGS` against `s`: whether it succeeded, and its stdout then stderr.
fn run_against(s: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("TIDEMARK_HOST", &s.base)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
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
    let run = |args: &[&str]| run_against(&s, args);
    let (ok, out) = run(&["database", "create", "m", "--retention", "30d"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["database", "create", "m"]);
    assert!(!ok && out.contains("already exists"), "{out}");
    // Tables as `query` prints them, retention as it was written.
    let (ok, out) = run(&["database", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("| db | partitions | retention |") && out.contains("| 30d       |"),
        "{out}"
    );
    assert!(!out.contains("2592000000000000"), "{out}");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let lp = format!("cpu,host=a v=1 {now}\ncpu,host=b v=2 {now}\n");
    assert_eq!(s.write_v3("m", &lp).0, 204);
    let (ok, out) = run(&["table", "update", "--db", "m", "cpu", "--retention", "1d"]);
    assert!(ok && out.contains("| m  | cpu   | 1d        |"), "{out}");
    let (ok, out) = run(&[
        "table",
        "update",
        "--db",
        "m",
        "--table",
        "cpu",
        "--retention",
        "1h30m",
    ]);
    assert!(ok && out.contains("1h30m"), "{out}");
    let (ok, out) = run(&["table", "update", "--db", "m", "--retention", "1d"]);
    assert!(!ok && out.contains("--table"), "{out}");
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
    let (ok, out) = run(&["table", "drop", "--db", "m", "--table", "cpu"]);
    assert!(ok && out.contains("dropped table m.cpu"), "{out}");
    let (ok, out) = run(&["database", "drop", "m"]);
    assert!(ok && out.contains("dropped database m"), "{out}");
    let (ok, out) = run(&["database", "list"]);
    assert!(
        ok && out.contains("| db | partitions | retention |"),
        "{out}"
    );
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

/// Every argument of the admin commands says what it is for.
#[test]
fn every_admin_argument_has_help() {
    for cmd in [
        &["database", "create"][..],
        &["database", "update"],
        &["database", "drop"],
        &["table", "update"],
        &["table", "drop"],
        &["delete"],
        &["topology", "deploy"],
        &["topology", "status"],
        &["topology", "delete"],
    ] {
        let out = Command::new(BIN).args(cmd).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let mut in_args = false;
        for line in help.lines() {
            if line.starts_with("Arguments:") || line.starts_with("Options:") {
                in_args = true;
                continue;
            }
            // An argument line: its name, then (after spaces) its help.
            let t = line.trim_start();
            if in_args && (t.starts_with('-') || t.starts_with('<') || t.starts_with('[')) {
                assert!(
                    t.split("  ").filter(|p| !p.trim().is_empty()).count() >= 2,
                    "{cmd:?}: {line:?} has no help\n{help}"
                );
            }
        }
    }
}

/// A command that cannot reach its server says where it tried and how to change it.
#[test]
fn a_refused_connection_names_the_host_and_the_setting() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("http://127.0.0.1:{port}");
    for args in [
        &["database", "list"][..],
        &["query", "--db", "m", "SELECT 1"],
        &["topology", "list"],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env("TIDEMARK_HOST", &host)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!("could not connect to {host}"))
                && err.contains("--host or TIDEMARK_HOST"),
            "{args:?}: {err}"
        );
    }
}

/// `tidemark topology deploy|list|status|delete` against a server.
#[test]
fn topologies_are_deployed_listed_and_deleted_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &[]);
    let run = |args: &[&str]| run_against(&s, args);
    let (_, help) = run(&["topology", "--help"]);
    for sub in [
        "validate", "explain", "run", "deploy", "list", "status", "delete",
    ] {
        assert!(help.contains(&format!("  {sub} ")), "{sub}: {help}");
    }
    let (_, top) = run(&["--help"]);
    let line = top
        .lines()
        .find(|l| l.trim_start().starts_with("topology"))
        .unwrap();
    for sub in [
        "validate", "explain", "run", "deploy", "list", "status", "delete",
    ] {
        assert!(line.contains(sub), "{sub}: {line}");
    }
    assert_eq!(
        s.write_v3("m", "cpu,host=a usage=1 1767225600000000000").0,
        204
    );
    let file = tmp.path().join("rollup.yaml");
    let yaml = "name: rollup
sources:
  cpu_in: { type: table_stream, database: m, table: cpu, from: earliest, event_time: time }
transforms:
  per_1m:
    inputs: [cpu_in]
    type: window
    key_by: [host]
    window: { tumbling: 1m }
    aggregates: { n: count(*), top: max(usage_nope) }
sinks:
  store: { inputs: [per_1m], type: table, database: m, table: cpu_1m }
";
    std::fs::write(&file, yaml).unwrap();
    let (ok, out) = run(&["topology", "deploy", file.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}:10:", file.display())) && out.contains("usage_nope"),
        "{out}"
    );
    assert!(out.contains("nothing was deployed"), "{out}");
    std::fs::write(&file, yaml.replace("usage_nope", "usage")).unwrap();
    let (ok, out) = run(&["topology", "deploy", file.to_str().unwrap()]);
    assert!(
        ok && out.contains("deployed topology rollup (running)"),
        "{out}"
    );
    let (ok, out) = run(&["topology", "list"]);
    assert!(ok && out.contains("| rollup | running |"), "{out}");
    let (ok, out) = run(&["topology", "status", "rollup"]);
    assert!(ok, "{out}");
    assert!(out.contains("topology rollup: running"), "{out}");
    for node in [
        "cpu_in",
        "per_1m",
        "store",
        "| rows_in |",
        "watermark",
        "lag",
    ] {
        assert!(out.contains(node), "{node}: {out}");
    }
    let (ok, out) = run(&["topology", "status", "nope"]);
    assert!(!ok && out.contains("no topology named"), "{out}");
    let (ok, out) = run(&["topology", "delete", "rollup"]);
    assert!(ok && out.contains("deleted topology rollup"), "{out}");
    let (ok, out) = run(&["topology", "list"]);
    assert!(ok && !out.contains("rollup"), "{out}");
}
