//! The command line: help, `--nodes`, `--vnodes`, `--copy-batch`, stdin,
//! and streaming.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;

use super::*;

#[test]
fn run_help_lists_the_options() {
    let out = outcome(ringkv().args(["run", "--help"]));
    out.expect_code(0);
    for option in [
        "--vnodes",
        "--keep-going",
        "--log-format",
        "--copy-batch",
        "--nodes",
        "--max-attempts",
        "--retry-backoff-ms",
        "[SCRIPT]",
    ] {
        assert!(out.stdout.contains(option), "{option} in:\n{}", out.stdout);
    }
    assert!(out.stdout.contains("human") && out.stdout.contains("json"));

    let top = outcome(ringkv().arg("--help"));
    top.expect_code(0);
    assert!(top.stdout.contains("run"), "{}", top.stdout);
}

#[test]
fn nodes_option_starts_with_those_nodes() {
    let script = "stats()\nput(k1, v1)\nput(k2, v2)\nput(k3, v3)\nget(k2)\nstats()\n";
    let out = run_stdin(script, &["--nodes", "node1,node2"], "warn");
    out.expect_code(0);
    let lines = out.out_lines();
    let first = parse_stats(lines[0]);
    assert_eq!(first.epoch, 2);
    assert_eq!(first.keys, 0);
    assert_eq!(first.nodes.keys().collect::<Vec<_>>(), ["node1", "node2"]);
    assert_eq!(lines[1], r#""v2""#);
    let last = parse_stats(lines[2]);
    let r = ring(&[("node1", 1), ("node2", 1)]);
    assert_eq!(last.nodes, expected_counts(&r, &["k1", "k2", "k3"]));

    // Repeated flags add up too.
    let out = run_stdin("stats()\n", &["--nodes", "a", "--nodes", "b,c"], "warn");
    out.expect_code(0);
    let stats = parse_stats(out.out_lines()[0]);
    assert_eq!(stats.nodes.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
}

#[test]
fn stdin_is_read_with_dash_or_without_a_script() {
    let script = "add_node(n1)\nput(k, v)\nget(k)\n";
    let dash = outcome(
        ringkv()
            .args(["run", "-"])
            .env("RUST_LOG", "warn")
            .write_stdin(script),
    );
    dash.expect_code(0);
    assert_eq!(dash.stdout, "\"v\"\n");
    let none = outcome(
        ringkv()
            .arg("run")
            .env("RUST_LOG", "warn")
            .write_stdin(script),
    );
    none.expect_code(0);
    assert_eq!(none.stdout, "\"v\"\n");
    let empty = outcome(ringkv().arg("run").env("RUST_LOG", "warn").write_stdin(""));
    empty.expect_code(0);
    assert_eq!(empty.stdout, "");
}

#[test]
fn vnodes_option_changes_the_placement() {
    let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
    let mut script = String::from("add_node(a)\nadd_node(b)\nadd_node(c, weight=2)\n");
    for k in &keys {
        script.push_str(&format!("put({k}, x)\n"));
    }
    script.push_str("stats()\n");
    for vnodes in [1u32, 7] {
        let args = ["--placement", "random", "--vnodes", &vnodes.to_string()];
        let out = run_stdin(script.as_str(), &args, "warn");
        out.expect_code(0);
        let stats = parse_stats(out.out_lines()[0]);
        let r = ring_with(
            RingConfig {
                vnodes_per_weight: vnodes,
            },
            &[("a", 1), ("b", 1), ("c", 2)],
        );
        assert_eq!(stats.nodes, expected_counts(&r, &keys), "--vnodes {vnodes}");
    }
}

#[test]
fn copy_batch_of_one_moves_everything() {
    let mut script = String::from("add_node(a)\n");
    for i in 0..300 {
        script.push_str(&format!("put(k{i}, v{i})\n"));
    }
    script.push_str("add_node(b)\nadd_node(c)\nremove_node(a)\n");
    for i in (0..300).step_by(37) {
        script.push_str(&format!("get(k{i})\n"));
    }
    script.push_str("stats()\n");
    let out = run_stdin(script, &["--copy-batch", "1"], "warn");
    out.expect_code(0);
    let lines = out.out_lines();
    let expected: Vec<String> = (0..300).step_by(37).map(|i| format!("\"v{i}\"")).collect();
    assert_eq!(lines[..lines.len() - 1], expected);
    assert_eq!(parse_stats(lines[lines.len() - 1]).keys, 300);
}

/// A script of 300k lines through stdin.
#[test]
fn a_long_script_streams_through_stdin() {
    const PUTS: usize = 300_000;
    let mut script = String::with_capacity(PUTS * 24);
    script.push_str("add_node(n1)\nadd_node(n2)\nadd_node(n3)\n");
    let mut expected = Vec::new();
    for i in 0..PUTS {
        script.push_str(&format!("put(key{i}, value{i})\n"));
        if i % 60_000 == 0 {
            script.push_str(&format!("get(key{i})\nget(key{})\n", i + 1));
            expected.push(format!("\"value{i}\""));
            expected.push("None".to_string());
        }
    }
    script.push_str("delete(key7)\nget(key7)\nget(key299999)\nstats()\n");
    expected.push("None".to_string());
    expected.push("\"value299999\"".to_string());
    let out = run_stdin(script, &[], "warn");
    out.expect_code(0);
    let lines = out.out_lines();
    assert_eq!(lines[..lines.len() - 1], expected);
    let stats = parse_stats(lines[lines.len() - 1]);
    assert_eq!(stats.keys, PUTS as u64 - 1);
    assert_eq!(stats.nodes.len(), 3);
}

/// The tool acts on each line as it arrives: the log line of the first
/// `add_node` shows up while stdin is still open.
#[test]
fn stdin_is_processed_line_by_line() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["run", "-"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    stdin.write_all(b"add_node(n1)\n").expect("write to ringkv");
    stdin.flush().expect("flush");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("rebalance done") && line.contains("node=n1") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    if !seen {
        let _ = child.kill();
    }
    assert!(seen, "the first line ran before the input ended");

    stdin
        .write_all(b"put(k, v)\nget(k)\n")
        .expect("write to ringkv");
    drop(stdin);
    let output = child.wait_with_output().expect("ringkv finishes");
    reader.join().expect("the reader thread ends");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "\"v\"\n");
}

/// `ringkv bench --json` measures every figure; an add moves exactly the
/// optimum computed from the ring, and the remove moves them back.
#[test]
fn bench_json_reports_every_figure() {
    let out = crate::outcome(
        crate::ringkv()
            .args([
                "bench",
                "--keys",
                "3000",
                "--ops",
                "3000",
                "--nodes",
                "4",
                "--ring-sizes",
                "3,10",
                "--json",
            ])
            .env("RUST_LOG", "warn"),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    // Both placements at both sizes: random 3, random 10, balanced 3, balanced 10.
    assert_eq!(r["lookup"].as_array().unwrap().len(), 4);
    assert_eq!(r["balance"][1]["nodes"], 10);
    assert!(r["balance"][1]["busiest_over_mean"].as_f64().unwrap() >= 1.0);
    let balanced = &r["balance"][3];
    assert!(
        balanced["placement"]
            .as_str()
            .unwrap()
            .starts_with("balanced")
    );
    let busiest = balanced["busiest_over_mean"].as_f64().unwrap();
    assert!(
        (1.0..=1.05).contains(&busiest),
        "balanced busiest/mean {busiest}"
    );
    let m = &r["movement"];
    assert_eq!(m["add_keys_moved"], m["add_optimum"]);
    assert_eq!(m["remove_keys_moved"], m["remove_optimum"]);
    assert!(m["add_keys_moved"].as_u64().unwrap() > 0);
    assert!(r["throughput"]["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(r["latency"]["idle"]["ops"], 3000);
    assert!(r["latency"]["rebalancing"]["ops"].as_u64().unwrap() >= 3000);
    assert!(r["latency"]["changes"].as_u64().unwrap() >= 6);
}

#[test]
fn bench_rejects_zero_sizes() {
    let out = crate::outcome(crate::ringkv().args(["bench", "--keys", "0"]));
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("at least 1"), "{}", out.stderr);
}
