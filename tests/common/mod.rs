//! Test harness: runs the real `tidemark` binary on a free port over a temporary data
//! directory, and talks to it over HTTP like a user would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// A running server; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server on a fresh data directory inside `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_on(
            dir.join("data"),
            extra.iter().map(|s| s.to_string()).collect(),
        )
    }

    pub fn start_on(data_dir: PathBuf, extra: Vec<String>) -> Server {
        Self::start_env(data_dir, extra, &[])
    }

    /// Starts a server on `data_dir` (kept or fresh) with extra environment variables.
    pub fn start_env(data_dir: PathBuf, extra: Vec<String>, env: &[(&str, &str)]) -> Server {
        Self::spawn(data_dir, extra, env, None)
    }

    /// Starts a server in the working directory `cwd`, where `data_dir` may be relative.
    pub fn start_in(cwd: &Path, data_dir: &str, extra: &[&str]) -> Server {
        let extra = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(PathBuf::from(data_dir), extra, &[], Some(cwd))
    }

    fn spawn(
        data_dir: PathBuf,
        extra: Vec<String>,
        env: &[(&str, &str)],
        cwd: Option<&Path>,
    ) -> Server {
        let mut command = Command::new(BIN);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--http-bind")
            .arg("127.0.0.1:0")
            .args(&extra)
            .env("TIDEMARK_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tidemark serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        let base = loop {
            line.clear();
            let n = reader.read_line(&mut line).expect("read server stdout");
            if n == 0 {
                let status = child.wait().expect("wait");
                panic!("server exited before listening: {status}");
            }
            if let Some(rest) = line.trim().strip_prefix("tidemark listening on ") {
                break rest.to_string();
            }
            assert!(Instant::now() < deadline, "server did not start");
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Server {
            child,
            base,
            data_dir,
            extra,
        }
    }

    /// Waits up to `timeout` for the process to exit by itself (a failpoint abort).
    pub fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        self.exit_status(timeout).is_some()
    }

    /// Sends a request with any method and an optional JSON body.
    pub fn request(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client().request(method, self.url(path));
        if let Some(body) = json {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL, then start again on the same data directory.
    pub fn crash_and_restart(mut self) -> Server {
        self.kill9();
        let (dir, extra) = (self.data_dir.clone(), self.extra.clone());
        Self::start_on(dir, extra)
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
    }

    /// The exit status, waiting up to `timeout` for it.
    pub fn exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        self.exit_status(Duration::from_secs(30))
            .expect("server ignored SIGTERM")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs a body; returns (status, body text).
    pub fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> (u16, String) {
        let resp = client()
            .post(self.url(path))
            .body(body.into())
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    pub fn post_with(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        let mut req = client().post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().expect("POST");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    pub fn write_v3(&self, db: &str, lp: &str) -> (u16, String) {
        self.post(&format!("/api/v3/write_lp?db={db}"), lp)
    }

    /// Runs SQL; returns (status, body).
    pub fn query_raw(&self, db: &str, sql: &str, format: &str) -> (u16, Vec<u8>) {
        let resp = client()
            .post(self.url("/api/v3/query_sql"))
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(&serde_json::json!({"db": db, "q": sql, "format": format}))
                    .unwrap(),
            )
            .send()
            .expect("query");
        let status = resp.status().as_u16();
        (status, resp.bytes().unwrap_or_default().to_vec())
    }

    /// Runs SQL that must succeed; returns the rows as JSON objects.
    pub fn query(&self, db: &str, sql: &str) -> Vec<serde_json::Value> {
        let (status, body) = self.query_raw(db, sql, "json");
        assert_eq!(status, 200, "{sql}: {}", String::from_utf8_lossy(&body));
        match serde_json::from_slice(&body).expect("json") {
            serde_json::Value::Array(rows) => rows,
            other => panic!("not an array: {other}"),
        }
    }

    pub fn count(&self, db: &str, table: &str) -> i64 {
        let rows = self.query(db, &format!("SELECT count(*) AS n FROM {table}"));
        rows[0]["n"].as_i64().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> reqwest::blocking::Client {
    tidemark_engine::install_tls_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Every file under `<data_dir>/tables` (Parquet files, and anything left behind there).
pub fn table_files(data_dir: &Path) -> std::collections::HashSet<PathBuf> {
    let mut out = std::collections::HashSet::new();
    let mut stack = vec![data_dir.join("tables")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}
