//! The README's shell examples, run in order against the real binary: every `sh` block
//! not marked `<!-- readme-test: skip (why) -->` runs under `bash -euo pipefail` in one
//! working directory, against one server, with `tidemark` (and `cargo run --release --`)
//! meaning the binary under test and `127.0.0.1:8181`/`localhost:8181` its address. A
//! `curl` that gets an error status fails its block, and a comment line that is JSON
//! (`# [...]` or `# {...}`) right after a command is the output that command must print.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{BIN, Server};

/// One runnable block: its first line in the README and its text.
struct Block {
    line: usize,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = readme.lines().enumerate().peekable();
    let mut skip = false;
    while let Some((i, line)) = lines.next() {
        if line.starts_with("<!-- readme-test: skip") {
            skip = true;
            continue;
        }
        if line.trim() == "```sh" {
            let mut text = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            if !skip {
                out.push(Block { line: i + 1, text });
            }
        }
        if !line.trim().is_empty() {
            skip = skip && !line.starts_with("```");
        }
    }
    out
}

/// The outputs a block promises: each JSON comment line that follows a command.
fn promised(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_command = false;
    for line in block.lines() {
        let t = line.trim();
        if let Some(json) = t.strip_prefix("# ")
            && after_command
            && (json.starts_with('[') || json.starts_with('{'))
        {
            out.push(json.to_string());
        }
        after_command = !t.is_empty() && !t.starts_with('#');
    }
    out
}

#[test]
fn every_readme_example_runs_in_order() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 5, "only {} runnable blocks", blocks.len());
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &["--topology-checkpoint-secs", "1"]);
    let addr = server.base.trim_start_matches("http://").to_string();
    // `tidemark` on the PATH is the binary under test.
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("tidemark")).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut checked = 0;
    for block in &blocks {
        let script = block
            .text
            .replace("cargo run --release --", "tidemark")
            .replace("127.0.0.1:8181", &addr)
            .replace("localhost:8181", &addr);
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail\ncurl() {{ command curl --silent --show-error --fail-with-body \"$@\"; }}\n{script}"
            ))
            .current_dir(&work)
            .env("PATH", &path)
            .env("TIDEMARK_HOST", &server.base)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README.md:{}: the block failed ({})\n{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            block.line,
            out.status,
            block.text
        );
        for want in promised(&block.text) {
            assert!(
                stdout.contains(&want),
                "README.md:{}: promised {want}\nstdout:\n{stdout}",
                block.line
            );
            checked += 1;
        }
    }
    // The quick start's answer and the delete's effect at least.
    assert!(checked >= 2, "{checked} promised outputs checked");
    assert!(server.terminate().success());
}

#[test]
fn blocks_and_promises_are_read_as_meant() {
    let readme = "<!-- readme-test: skip (no) -->\n```sh\nno\n```\n\n```sh\ncurl x\n# [1]\n# prose\n```\n```\nlayout\n```\n";
    let b = blocks(readme);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].text, "curl x\n# [1]\n# prose\n");
    assert_eq!(promised(&b[0].text), vec!["[1]".to_string()]);
}
