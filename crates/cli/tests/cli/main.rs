//! End-to-end tests of the `ringkv` binary: each test runs the real
//! executable with `assert_cmd` and checks its exit code, stdout and stderr.
//!
//! The modules follow the areas of the tool: the seed scenario, the output
//! format and its escapes, bad input, the JSON log, `concurrently` blocks,
//! log verbosity, and the command line (help, `--nodes`, stdin, streaming).

mod concurrent;
mod disk;
mod errors;
mod failures;
mod format;
mod limits;
mod log;
mod options;
mod scenario;
mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::Command;
use ringkv_ring::{Ring, RingConfig};
use serde_json::Value;

/// A `ringkv` command with a clean environment for logging: `RUST_LOG`
/// removed (so the default `info` applies unless a test sets it) and a
/// generous timeout so that a hung run fails instead of blocking the suite.
pub fn ringkv() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv"));
    cmd.env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(120));
    cmd
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (`None` if killed by a signal or the timeout).
    pub code: Option<i32>,
    /// Standard output, as text (the tool only prints escaped text).
    pub stdout: String,
    /// Standard error, as text.
    pub stderr: String,
}

impl Outcome {
    /// The stdout lines.
    pub fn out_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The stderr lines.
    pub fn err_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// Panics with the whole outcome unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion and collects its outcome.
pub fn outcome(cmd: &mut Command) -> Outcome {
    let output = cmd.output().expect("ringkv runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `ringkv run - ARGS...` on `script` given on stdin, with `RUST_LOG`
/// set to `log` (e.g. `"warn"` to keep stderr to the errors).
pub fn run_stdin(script: impl Into<Vec<u8>>, args: &[&str], log: &str) -> Outcome {
    outcome(
        ringkv()
            .arg("run")
            .arg("-")
            .args(args)
            .env("RUST_LOG", log)
            .write_stdin(script),
    )
}

/// The repository's `examples` directory.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Writes `script` to a fresh file under the target's temporary directory.
pub fn script_file(name: &str, script: impl AsRef<[u8]>) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ringkv-cli-tests");
    std::fs::create_dir_all(&dir).expect("create the temporary directory");
    let path = dir.join(format!("{name}-{}.ops", std::process::id()));
    std::fs::write(&path, script).expect("write the script");
    path
}

/// A `stats()` line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Stats {
    /// The ring's epoch (one per membership change).
    pub epoch: u64,
    /// Keys stored in the whole cluster.
    pub keys: u64,
    /// Keys stored per node.
    pub nodes: BTreeMap<String, u64>,
}

/// Parses a `stats()` output line, checking it has exactly the fields
/// `epoch`, `keys` and `nodes`, and that the per-node counts add up.
#[track_caller]
pub fn parse_stats(line: &str) -> Stats {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stats line {line:?} is not JSON: {e}"));
    let obj = v.as_object().expect("stats is an object");
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["epoch", "keys", "nodes"], "stats fields in {line}");
    let nodes: BTreeMap<String, u64> = obj["nodes"]
        .as_object()
        .expect("nodes is an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a node's count is a u64")))
        .collect();
    let stats = Stats {
        epoch: obj["epoch"].as_u64().expect("epoch is a u64"),
        keys: obj["keys"].as_u64().expect("keys is a u64"),
        nodes,
    };
    assert_eq!(
        stats.nodes.values().sum::<u64>(),
        stats.keys,
        "per-node counts add up to the total in {line}"
    );
    stats
}

/// A ring with the CLI's default placement (balanced partitions) after
/// adding the given `(id, weight)` nodes in this order. Balanced placement
/// depends on the order of changes, so tests replay the script's history.
pub fn ring(nodes: &[(&str, u32)]) -> Ring {
    add_all(
        ringkv_cluster::ClusterConfig::default()
            .placement
            .empty_ring()
            .expect("valid default"),
        nodes,
    )
}

/// A random-vnode ring with `config` and the given `(id, weight)` nodes
/// (placement depends on the membership only, not on the order).
pub fn ring_with(config: RingConfig, nodes: &[(&str, u32)]) -> Ring {
    add_all(Ring::new(config).expect("valid config"), nodes)
}

fn add_all(ring: Ring, nodes: &[(&str, u32)]) -> Ring {
    nodes
        .iter()
        .fold(ring, |r, &(id, w)| r.with_node(id, w).expect("valid node"))
}

/// The owner of `key` in `ring`.
pub fn owner(ring: &Ring, key: &[u8]) -> String {
    ring.owner(key).expect("the ring has nodes").to_string()
}

/// How many of `keys` each node of `ring` owns (every node listed, even with 0).
pub fn expected_counts<K: AsRef<[u8]>>(ring: &Ring, keys: &[K]) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> =
        ring.nodes().map(|(id, _)| (id.to_string(), 0)).collect();
    for key in keys {
        *counts
            .get_mut(&owner(ring, key.as_ref()))
            .expect("owner is a member") += 1;
    }
    counts
}
